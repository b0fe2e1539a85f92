//! The real Codex CLI (npm `@openai/codex`, pinned) through `cma start` against the fakes:
//! a first `codex exec`, a failover inside a resumed session, and the session staying moved.
//! `scripts/test` installs the CLI into `.tools/`; `CMA_CODEX_BIN` points elsewhere, and
//! `CMA_SKIP_CODEX_E2E=1` skips this test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;
use crate::support::{Behaviour, FakeOpenAi, SeenRequest, OK_TEXT};

/// The Codex CLI version the suite runs against; `CMA_CODEX_VERSION` names another (then
/// `scripts/setup` installs that one), to check a new release before it is pinned here.
const CODEX_VERSION: &str = "0.171.0";
const CODEX_BIN: &str =
    ".tools/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex";
const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");

/// The pinned Codex binary, or `None` when the test is skipped on purpose.
pub fn codex_version() -> String {
    std::env::var("CMA_CODEX_VERSION")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| CODEX_VERSION.to_string())
}

pub fn codex_bin() -> Option<PathBuf> {
    if std::env::var("CMA_SKIP_CODEX_E2E").as_deref() == Ok("1") {
        eprintln!("skipped: CMA_SKIP_CODEX_E2E=1, the real Codex CLI end-to-end test did not run");
        return None;
    }
    let bin = std::env::var_os("CMA_CODEX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(CODEX_BIN));
    let wanted = codex_version();
    let install = format!(
        "run `scripts/test`, which installs @openai/codex {wanted} into .tools/ \
         (or set CMA_CODEX_BIN; CMA_SKIP_CODEX_E2E=1 skips this test)"
    );
    assert!(
        bin.is_file(),
        "no Codex CLI at {}: {install}",
        bin.display()
    );
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .expect("codex --version");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.trim() == format!("codex-cli {wanted}"),
        "{} is {version:?}, not {wanted}: {install}",
        bin.display()
    );
    Some(bin)
}

/// `cma start` in the background, killed on drop; its stderr goes to a file for failures.
pub struct Router {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

pub type CmaRouter = Router;
pub type CodexRun = Run;

/// A folder for one Codex run against the router: `home`, `work` and `codex-home`, and the
/// router's accounts file with A and B registered in the fake. Under target/tmp: Codex
/// refuses to set up its helpers under /tmp (codex-capture §4.2).
pub fn codex_root(fake: &FakeOpenAi) -> tempfile::TempDir {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    for dir in ["home", "work", "codex-home"] {
        std::fs::create_dir_all(root.path().join(dir)).expect("dirs");
    }
    let records = [register(fake, &A), register(fake, &B)];
    write_accounts(&root.path().join("openai-accounts.json"), &records);
    root
}

/// `cma start` against the fakes, with its files in `root`.
pub fn cma_router(fake: &FakeOpenAi, root: &Path) -> Router {
    Router::start(&fake_vars(fake, root), root)
}

/// The same with more variables (or other values).
pub fn cma_router_with(fake: &FakeOpenAi, root: &Path, extra: &[(&str, &str)]) -> Router {
    let mut vars = fake_vars(fake, root);
    for (name, value) in extra {
        vars.insert(name.to_string(), value.to_string());
    }
    Router::start(&vars, root)
}

impl Router {
    fn start(vars: &HashMap<String, String>, dir: &Path) -> Router {
        let log = dir.join("cma.log");
        let mut child = cma(vars, dir, &["start"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("cma log"))
            .spawn()
            .expect("cma starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("cma prints its address");
        let port = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://127.0.0.1:"))
            .and_then(|rest| rest.trim_end_matches("/v1").parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Router { child, port, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The router's `/status`.
    pub async fn status(&self) -> Value {
        let url = format!("http://127.0.0.1:{}/status", self.port);
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let response = http.get(url).send().await.expect("status");
        response.json().await.expect("status json")
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cma(vars: &HashMap<String, String>, dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cma"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.join("home"))
        .env("NO_COLOR", "1")
        .envs(vars);
    command
}

/// One `codex exec` run: its exit, its JSONL events, what it printed and how long it took.
pub struct Run {
    ok: bool,
    events: Vec<Value>,
    pub printed: String,
    took: Duration,
}

impl Run {
    pub fn thread_id(&self) -> &str {
        let started = self.events.iter().find(|e| e["type"] == "thread.started");
        started
            .and_then(|e| e["thread_id"].as_str())
            .unwrap_or_else(|| panic!("no thread.started in {}", self.printed))
    }

    /// Exit 0, the fake's answer as the agent message, and no error event on the way.
    pub fn assert_answered(&self, router: &Router) {
        let context = format!("{}\ncma:\n{}", self.printed, router.log());
        let messages: Vec<&Value> = (self.events.iter())
            .filter(|e| e["type"] == "item.completed" && e["item"]["type"] == "agent_message")
            .map(|e| &e["item"]["text"])
            .collect();
        assert!(self.ok, "codex failed\n{context}");
        assert_eq!(messages, [OK_TEXT], "{context}");
        assert!(
            !self.events.iter().any(|e| e["type"] == "error"),
            "{context}"
        );
    }
}

/// `codex exec [resume --last] --skip-git-repo-check --json <prompt>`, killed after 60 s.
async fn codex(bin: &Path, root: &Path, resume: bool, prompt: &str) -> Run {
    codex_with(bin, root, resume, prompt, &[]).await
}

/// `codex`, with more environment variables.
pub async fn codex_with(
    bin: &Path,
    root: &Path,
    resume: bool,
    prompt: &str,
    env: &[(&str, String)],
) -> Run {
    let mut args = vec!["exec"];
    if resume {
        args.extend(["resume", "--last"]);
    }
    args.extend(["--skip-git-repo-check", "--json", prompt]);
    let started = Instant::now();
    let child = tokio::process::Command::new(bin)
        .args(&args)
        .current_dir(root.join("work"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root.join("home"))
        .env("CODEX_HOME", root.join("codex-home"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("codex starts");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("codex {args:?} did not finish within 60 s; killed"))
        .expect("codex output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    Run {
        ok: output.status.success(),
        events: stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        printed: format!(
            "stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        took: started.elapsed(),
    }
}

/// Codex's quiet config (codex-capture §9) with no retries of its own: any failover must
/// happen inside the router.
fn write_codex_config(root: &Path, port: u16) {
    let config = format!(
        r#"model = "gpt-5.5"
model_provider = "multi-auth-proxy"
check_for_update_on_startup = false
[model_providers.multi-auth-proxy]
name = "Codex App Account Router"
base_url = "http://127.0.0.1:{port}/v1"
wire_api = "responses"
supports_websockets = false
stream_max_retries = 0
request_max_retries = 0
[analytics]
enabled = false
[features]
plugins = false
"#
    );
    std::fs::write(root.join("codex-home/config.toml"), config).expect("codex config");
}

/// The `/responses` calls the fake backend saw since the last clear.
pub fn responses(fake: &FakeOpenAi) -> Vec<SeenRequest> {
    let mut calls = fake.requests();
    calls.retain(|r| r.path.ends_with("/codex/responses"));
    calls
}

/// Which account served each call, and for which session (`prompt_cache_key`).
fn routed(calls: &[SeenRequest]) -> Vec<(&str, &str)> {
    calls
        .iter()
        .map(|r| (r.account_id.as_deref(), r.body["prompt_cache_key"].as_str()))
        .map(|(account, key)| (account.unwrap_or("<none>"), key.unwrap_or("<none>")))
        .collect()
}

/// The texts of the `role` messages in a request's input, in order.
fn texts(body: &Value, role: &str) -> Vec<String> {
    let items = body["input"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    items
        .iter()
        .filter(|i| i["type"] == "message" && i["role"] == role)
        .flat_map(|i| i["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["text"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_exec_fails_over_inside_the_router_and_a_resumed_session_stays_moved() {
    let Some(bin) = codex_bin() else { return };
    let fake = FakeOpenAi::start().await;
    let root = codex_root(&fake);
    let root = root.path();
    let mut vars = fake_vars(&fake, root);
    let router = Router::start(&vars, root);
    write_codex_config(root, router.port);

    // (a) A new session goes to the first account.
    let first = codex(&bin, root, false, "say hi").await;
    first.assert_answered(&router);
    let calls = responses(&fake);
    let session = first.thread_id();
    assert_eq!(
        routed(&calls),
        [("acct-a", session)],
        "prompt_cache_key = thread id"
    );

    // (b) A is out of quota: the resumed turn is answered by B, with no retry by Codex.
    fake.clear_requests();
    fake.push_behaviour(
        "acct-a",
        Behaviour::UsageLimit {
            resets_in_seconds: 3600,
        },
    );
    let second = codex(&bin, root, true, "second turn").await;
    second.assert_answered(&router);
    assert_eq!(second.thread_id(), session);
    let calls = responses(&fake);
    assert_eq!(routed(&calls), [("acct-a", session), ("acct-b", session)]);
    let users = texts(&calls[1].body, "user");
    assert!(
        users.iter().any(|t| t == "say hi") && users.last().is_some_and(|t| t == "second turn"),
        "the resumed input carries the first turn: {users:?}"
    );
    assert_eq!(
        texts(&calls[1].body, "assistant"),
        [OK_TEXT],
        "first answer in history"
    );

    // (c) The session now lives on B: the next turn goes there directly.
    fake.clear_requests();
    let third = codex(&bin, root, true, "third turn").await;
    third.assert_answered(&router);
    assert_eq!(routed(&responses(&fake)), [("acct-b", session)]);

    // (d) `cma status` shows A limited.
    vars.insert("CODEX_PROXY_PORT".into(), router.port.to_string());
    let out = cma(&vars, root, &["status", "--json"])
        .output()
        .expect("cma status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).expect("status json");
    let state = |email: &str| {
        status["router"]["accounts"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["email"] == email))
            .map(|x| x["state"].clone())
            .unwrap_or_else(|| panic!("{email} missing from {status}"))
    };
    assert_eq!(state("a@example.com"), "limited", "{status}");
    assert_eq!(state("b@example.com"), "ok", "{status}");
    assert_eq!(
        status["router"]["bindings"], 1,
        "one session for three runs: {status}"
    );
    eprintln!(
        "codex exec took {:?}, resume with failover {:?}, resume {:?}",
        first.took, second.took, third.took
    );
}
