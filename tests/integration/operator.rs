//! `cma configure` on realistic Codex configs: the patch, idempotence, the backup and the exact
//! revert; plus the machine every operator test (operator_setup.rs, operator_doctor.rs) runs
//! `cma` in.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::support::FakeOpenAi;

/// A user's machine in miniature under target/tmp (not /tmp, which Codex and
/// `install-startup` refuse): a home, a Codex home, the fakes and `cma`'s variables.
pub(crate) struct Machine {
    pub fake: FakeOpenAi,
    pub root: tempfile::TempDir,
    pub vars: HashMap<String, String>,
}

/// One finished `cma` run.
pub(crate) struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (ok, out, err) = (self.ok, &self.stdout, &self.stderr);
        write!(f, "success: {ok}\nstdout:\n{out}\nstderr:\n{err}")
    }
}

impl Machine {
    pub async fn new(accounts: &[TestAccount]) -> Machine {
        let fake = FakeOpenAi::start().await;
        let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        for dir in ["home", "codex-home", "work", "bin", "logs"] {
            std::fs::create_dir_all(root.path().join(dir)).expect("dirs");
        }
        let records: Vec<_> = accounts.iter().map(|a| register(&fake, a)).collect();
        write_accounts(&root.path().join("openai-accounts.json"), &records);
        let mut vars = fake_vars(&fake, root.path());
        vars.insert("CODEX_PROXY_PORT".into(), "18787".into());
        Machine { fake, root, vars }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    pub fn codex_home(&self) -> PathBuf {
        PathBuf::from(&self.vars["CODEX_HOME"])
    }

    pub fn config(&self) -> PathBuf {
        self.codex_home().join("config.toml")
    }

    pub fn set(&mut self, name: &str, value: impl ToString) {
        self.vars.insert(name.into(), value.to_string());
    }

    pub fn port(&self) -> &str {
        &self.vars["CODEX_PROXY_PORT"]
    }

    /// `bin` with exactly these variables, HOME in the machine, and PATH (unless set).
    pub fn cma_at(&self, bin: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(bin);
        command.args(args).env_clear().env("NO_COLOR", "1");
        command.env("PATH", std::env::var_os("PATH").unwrap_or_default());
        command.env("HOME", self.path("home")).envs(&self.vars);
        command
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_at(Path::new(env!("CARGO_BIN_EXE_cma")), args)
    }

    /// Runs to the end, killed after 90 s; output through files, so no pipe can fill up.
    pub fn run_at(&self, bin: &Path, args: &[&str]) -> Out {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let log = self.path(&format!("logs/{}", RUNS.fetch_add(1, Ordering::Relaxed)));
        let (out, err) = (log.with_extension("out"), log.with_extension("err"));
        let file = |p: &Path| std::fs::File::create(p).expect("log file");
        let mut command = self.cma_at(bin, args);
        command
            .stdin(Stdio::null())
            .stdout(file(&out))
            .stderr(file(&err));
        let mut child = command.spawn().expect("cma runs");
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            match child.try_wait().expect("wait") {
                Some(status) => break Some(status),
                None if Instant::now() > deadline => break None,
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let _ = (child.kill(), child.wait());
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let (stdout, stderr) = (read(&out), read(&err));
        let status = status.unwrap_or_else(|| panic!("cma {args:?} ran 90 s\n{stdout}{stderr}"));
        let ok = status.success();
        Out { ok, stdout, stderr }
    }

    /// `cma` hard-linked (copied where links fail) into the machine's `bin/`, which is neither
    /// a temp nor a cargo build folder: where `install-startup` accepts to point at it.
    pub fn installed_cma(&self) -> PathBuf {
        // Where a user installs it: inside their home, which is what makes it not temporary
        // even when the whole test tree sits under /tmp.
        let bin = self.path("home/.local/bin/cma");
        std::fs::create_dir_all(bin.parent().expect("bin dir")).expect("bin dir");
        if !bin.exists() {
            let built = env!("CARGO_BIN_EXE_cma");
            let copy = |_| std::fs::copy(built, &bin).map(drop);
            std::fs::hard_link(built, &bin)
                .or_else(copy)
                .expect("install cma");
        }
        bin
    }
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    probe.local_addr().expect("address").port()
}

/// `cma start` in the background on the machine's `CODEX_PROXY_PORT`, killed on drop.
pub(crate) struct Router {
    child: Child,
    log: PathBuf,
    pub base: String,
}

impl Router {
    pub fn start(m: &Machine) -> Router {
        let log = m.path(&format!("logs/router-{}.log", m.port()));
        let mut command = m.cma_at(Path::new(env!("CARGO_BIN_EXE_cma")), &["start"]);
        let stderr = std::fs::File::create(&log).expect("router log");
        let child = command.stdout(Stdio::piped()).stderr(stderr).spawn();
        let mut child = child.expect("cma start");
        let (mut line, stdout) = (String::new(), child.stdout.take().expect("stdout"));
        let _ = BufReader::new(stdout).read_line(&mut line);
        let base = format!("http://127.0.0.1:{}", m.port());
        let router = Router { child, log, base };
        assert!(line.contains(&router.base), "{line:?}\n{}", router.log());
        router
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = (self.child.kill(), self.child.wait());
    }
}

#[track_caller]
pub(crate) fn has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} is not in:\n{text}");
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The block `cma configure` writes, checked key by key on the parsed file.
#[track_caller]
pub(crate) fn assert_points_at_router(text: &str, port: &str, token: bool) {
    let doc: toml_edit::DocumentMut = text.parse().expect("the configured file parses");
    let block = doc["model_providers"]["multi-auth-proxy"].as_table();
    let block = block.unwrap_or_else(|| panic!("no router block in:\n{text}"));
    let get = |key: &str| block.get(key).and_then(|i| i.as_str());
    let base_url = format!("http://127.0.0.1:{port}/v1");
    let name = "Codex App Account Router";
    let got = [
        get("name"),
        get("base_url"),
        get("wire_api"),
        get("env_key"),
    ];
    let env_key = token.then_some("CODEX_PROXY_TOKEN");
    let wanted = [Some(name), Some(&base_url), Some("responses"), env_key];
    assert_eq!(got, wanted, "{text}");
    assert_eq!(doc["model_provider"].as_str(), Some("multi-auth-proxy"));
    let websockets = block.get("supports_websockets").and_then(|i| i.as_bool());
    assert_eq!(websockets, Some(false), "{text}");
    assert!(block.get("requires_openai_auth").is_none(), "{text}");
}

/// Every line of `original` is still in `after`, in the same order, but for those the router
/// owns: the root `model_provider` and its own keys in its own block.
#[track_caller]
pub(crate) fn assert_kept(original: &str, after: &str) {
    let ours = "name base_url wire_api supports_websockets env_key requires_openai_auth";
    let (mut root, mut in_block, mut rest) = (true, false, after.lines());
    for line in original.lines() {
        if line.starts_with('[') {
            (root, in_block) = (false, line == "[model_providers.multi-auth-proxy]");
        }
        let key = line.split('=').next().unwrap_or_default().trim();
        let owned =
            (root && key == "model_provider") || (in_block && ours.split(' ').any(|k| k == key));
        assert!(owned || rest.any(|l| l == line), "{line:?} lost:\n{after}");
    }
}

pub(crate) const EVERYDAY: &str = r#"# Codex settings for my laptop
model = "gpt-5.5"   # the default model
# go through OpenAI unless a profile says otherwise
model_provider = "openai"
approval_policy = "on-request"

[profiles.fast]
model = "gpt-5.4-mini"
model_reasoning_effort = "low"

# a local model for offline work
[model_providers.ollama]
name = "Ollama"
base_url = "http://localhost:11434/v1"
wire_api = "chat"

[mcp_servers.docs]
command = "npx"
args = ["-y", "docs-mcp"]
"#;

/// The seed's own block from an older set-up: the wrong port and `requires_openai_auth`.
const STALE: &str = r#"model = "gpt-5.5"
model_provider = "multi-auth-proxy"

# set up by hand last year
[model_providers.multi-auth-proxy]
name = "multi-auth proxy"
base_url = "http://127.0.0.1:8787/v1"
wire_api = "responses"
requires_openai_auth = true
env_key = "CODEX_PROXY_TOKEN"
stream_idle_timeout_ms = 600000 # slow network

[profiles.review]
model = "gpt-5.5"
"#;

/// No provider at all yet: `model_providers` does not exist.
const BARE: &str = "# nothing but a profile\n[profiles.deep]\nmodel_reasoning_effort = \"high\"\n";

pub(crate) fn backup(m: &Machine) -> PathBuf {
    m.codex_home().join("config.toml.cma-backup")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_patches_realistic_configs_idempotently_and_reverts_to_the_original_bytes() {
    let mut m = Machine::new(&[]).await;
    let samples = [
        ("everyday", EVERYDAY, "-model_provider = \"openai\""),
        ("stale", STALE, "-requires_openai_auth = true"),
        ("bare", BARE, "+[model_providers.multi-auth-proxy]"),
    ];
    for (name, original, diff_line) in samples {
        m.set("CODEX_HOME", m.path(&format!("codex-{name}")).display());
        std::fs::create_dir_all(m.codex_home()).unwrap();
        std::fs::write(m.config(), original).unwrap();
        let base_url = format!("http://127.0.0.1:{}/v1", m.port());

        let dry = m.run(&["configure", "--dry-run"]);
        assert!(dry.ok, "{name}: {dry}");
        has(&dry.stdout, diff_line);
        has(&dry.stdout, &format!("+base_url = \"{base_url}\""));
        assert_eq!(read(&m.config()), original, "{name}: --dry-run wrote");
        assert!(!backup(&m).exists(), "{name}: --dry-run made a backup");

        let first = m.run(&["configure"]);
        assert!(first.ok, "{name}: {first}");
        let configured = read(&m.config());
        assert_points_at_router(&configured, m.port(), false);
        assert_kept(original, &configured);
        assert_eq!(read(&backup(&m)), original, "{name}: the backup");

        let second = m.run(&["configure"]);
        assert!(second.ok, "{name}: {second}");
        has(
            &second.stdout,
            &format!("already points Codex at {base_url}"),
        );
        assert_eq!(read(&m.config()), configured, "{name}: changed twice");

        let revert = m.run(&["configure", "--revert"]);
        assert!(revert.ok, "{name}: {revert}");
        assert_eq!(read(&m.config()), original, "{name}: not the original");
        assert!(!backup(&m).exists(), "{name}: the backup is left");
    }
    // No config.toml at all: configure creates it, revert removes it again.
    m.set("CODEX_HOME", m.path("codex-none").display());
    let first = m.run(&["configure"]);
    assert!(first.ok, "{first}");
    assert_points_at_router(&read(&m.config()), m.port(), false);
    assert!(m.run(&["configure", "--revert"]).ok);
    assert!(!m.config().exists() && !backup(&m).exists(), "left files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_token_the_block_names_it_in_env_key_and_drops_it_without() {
    let mut m = Machine::new(&[]).await;
    std::fs::write(m.config(), EVERYDAY).unwrap();
    m.set("CODEX_PROXY_TOKEN", "s3cret-client-token");
    let out = m.run(&["configure"]);
    assert!(out.ok, "{out}");
    let configured = read(&m.config());
    assert_points_at_router(&configured, m.port(), true);
    assert!(
        !configured.contains("s3cret"),
        "the token itself is written"
    );
    m.vars.remove("CODEX_PROXY_TOKEN");
    assert!(m.run(&["configure"]).ok);
    assert_points_at_router(&read(&m.config()), m.port(), false);
}

/// Configures `original`, lets the user change `model`, reverts: (wanted, what came back).
async fn edit_then_revert(original: &str) -> (String, String) {
    let m = Machine::new(&[]).await;
    std::fs::write(m.config(), original).unwrap();
    assert!(m.run(&["configure"]).ok);
    let (old, new) = ("model = \"gpt-5.5\"", "model = \"gpt-6\"");
    std::fs::write(m.config(), read(&m.config()).replacen(old, new, 1)).unwrap();
    let out = m.run(&["configure", "--revert"]);
    assert!(out.ok && !backup(&m).exists(), "{out}");
    (original.replacen(old, new, 1), read(&m.config()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_after_a_user_edit_keeps_the_edit_and_takes_out_only_the_routers_lines() {
    let (wanted, got) = edit_then_revert(EVERYDAY).await;
    assert_eq!(got, wanted);
}

/// Fails today: after an edit, revert (codex_config/mod.rs `revert`, patch.rs `remove_block`)
/// deletes the whole `[model_providers.multi-auth-proxy]` table and `model_provider`, though
/// here the user wrote both (their comment and `stream_idle_timeout_ms` go too; `State` even
/// drops an original provider equal to ours, mod.rs:165).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_after_a_user_edit_gives_back_a_provider_block_the_user_had_before() {
    let (wanted, got) = edit_then_revert(STALE).await;
    let why = "the revert after an edit removed a provider block the user had written";
    assert_eq!(got, wanted, "{why}");
}

/// Fails today: patch.rs `apply_block`/`remove_block` assign a fresh `value(..)` to
/// `model_provider`, which has no decor, so the comment at the end of that line is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_keeps_a_comment_at_the_end_of_the_model_provider_line() {
    let line = "model_provider = \"openai\"";
    let original = EVERYDAY.replace(line, &format!("{line} # my own login; see the wiki"));
    let (wanted, got) = edit_then_revert(&original).await;
    assert_eq!(got, wanted, "the comment after model_provider was lost");
}

/// What a user does to the configured file between two applies: a changed line, a line added
/// to a block they wrote (STALE's), and a table of their own at the end.
fn user_edit(text: &str) -> String {
    let text = text.replacen("model = \"gpt-5.5\"", "model = \"gpt-6\"", 1);
    let text = text.replace("600000 # slow network", "900000 # slower network");
    format!("{text}\n[profiles.mine] # added by hand\nmodel = \"gpt-6-mini\"\n")
}

/// Fails before the fix: the backup was written at the first apply only and the written hash
/// at every apply, so after a second apply the file looked untouched and revert put back the
/// original from before the first apply, dropping everything the user wrote in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_after_a_second_apply_keeps_the_lines_the_user_wrote_between_the_applies() {
    let mut m = Machine::new(&[]).await;
    let apply_on = |m: &mut Machine, port: &str| {
        m.set("CODEX_PROXY_PORT", port);
        let out = m.run(&["configure"]);
        assert!(out.ok, "{out}");
        assert_points_at_router(&read(&m.config()), port, false);
    };
    // Nothing edited: two applies (the second one writes: another port) still revert to the
    // original bytes.
    m.set("CODEX_HOME", m.path("codex-untouched").display());
    std::fs::create_dir_all(m.codex_home()).unwrap();
    std::fs::write(m.config(), EVERYDAY).unwrap();
    apply_on(&mut m, "18787");
    apply_on(&mut m, "18788");
    assert!(m.run(&["configure", "--revert"]).ok);
    assert_eq!(read(&m.config()), EVERYDAY, "two applies, no edit");
    assert!(!backup(&m).exists());

    for (name, original) in [("everyday", EVERYDAY), ("stale", STALE), ("none", "")] {
        m.set(
            "CODEX_HOME",
            m.path(&format!("codex-edited-{name}")).display(),
        );
        std::fs::create_dir_all(m.codex_home()).unwrap();
        if !original.is_empty() {
            std::fs::write(m.config(), original).unwrap();
        }
        apply_on(&mut m, "18787");
        std::fs::write(m.config(), user_edit(&read(&m.config()))).unwrap();
        apply_on(&mut m, "18788");
        let out = m.run(&["configure", "--revert"]);
        assert!(out.ok && !backup(&m).exists(), "{name}: {out}");
        assert!(
            m.config().exists(),
            "{name}: revert deleted the user's file"
        );
        let got = read(&m.config());
        if original.is_empty() {
            let mine = "[profiles.mine] # added by hand\nmodel = \"gpt-6-mini\"\n";
            assert_eq!(got.trim_start(), mine, "{name}: the user's table");
        } else {
            assert_eq!(got, user_edit(original), "{name}: the user's edits");
        }
    }
}
