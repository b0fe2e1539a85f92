//! What surrounds Codex's config: `configure` refusing bad input and exempting loopback from a
//! proxy, `install-startup` into a temporary home (checked by `systemd-analyze verify`), and
//! `cma setup` end to end followed by turns of the real Codex CLI.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::operator::{
    assert_kept, assert_points_at_router, backup, free_port, has, read, Machine, Router, EVERYDAY,
};
use crate::support::{AccountSpec, OK_TEXT};

const UNIT: &str = "home/.config/systemd/user/codex-app-account-router.service";
const CODEX_BIN: &str =
    ".tools/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex";

/// The pinned Codex CLI (see codex_cli.rs), or `None` when skipped with CMA_SKIP_CODEX_E2E=1.
pub(crate) fn codex_bin() -> Option<PathBuf> {
    if std::env::var("CMA_SKIP_CODEX_E2E").as_deref() == Ok("1") {
        eprintln!("skipped the Codex CLI part: CMA_SKIP_CODEX_E2E=1");
        return None;
    }
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join(CODEX_BIN);
    let bin = std::env::var_os("CMA_CODEX_BIN").map_or(default, PathBuf::from);
    assert!(
        bin.is_file(),
        "no Codex CLI at {}: run scripts/test, which installs it",
        bin.display()
    );
    Some(bin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_is_not_toml_is_refused_with_its_line_and_left_alone() {
    let m = Machine::new(&[]).await;
    let broken = "model = \"gpt-5.5\"\n[broken\n";
    std::fs::write(m.config(), broken).unwrap();
    let out = m.run(&["configure"]);
    assert!(!out.ok, "{out}");
    has(&out.stderr, &m.config().display().to_string());
    has(&out.stderr, "line 2");
    assert_eq!(read(&m.config()), broken);
    assert!(!backup(&m).exists(), "a backup of an unchanged file");
}

/// Keeps a folder unwritable until dropped: by its mode, or (for root, which modes do not
/// stop) by the immutable attribute where the file system has one. Unix only: Windows
/// ignores the read-only attribute of a folder.
#[cfg(unix)]
struct ReadOnlyDir(PathBuf);

#[cfg(unix)]
impl ReadOnlyDir {
    fn make(dir: &Path) -> Option<ReadOnlyDir> {
        let writable = || {
            let probe = dir.join(".probe");
            std::fs::write(&probe, "").is_ok() && std::fs::remove_file(&probe).is_ok()
        };
        set_mode(dir, 0o555);
        let guard = ReadOnlyDir(dir.to_path_buf());
        if !writable() {
            return Some(guard);
        }
        (chattr("+i", dir) && !writable()).then_some(guard)
    }
}

#[cfg(unix)]
impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        chattr("-i", &self.0);
        set_mode(&self.0, 0o755);
    }
}

#[cfg(unix)]
fn chattr(flag: &str, path: &Path) -> bool {
    let status = std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .stderr(Stdio::null())
        .status();
    status.is_ok_and(|s| s.success())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_codex_home_is_a_clear_error() {
    let m = Machine::new(&[]).await;
    std::fs::write(m.config(), EVERYDAY).unwrap();
    let Some(_read_only) = ReadOnlyDir::make(&m.codex_home()) else {
        return eprintln!("skipped the read-only home assertion: running as root, where chmod 0555 does not stop writes, and chattr +i is unavailable");
    };
    let out = m.run(&["configure"]);
    assert!(!out.ok, "{out}");
    let home = m.codex_home().display().to_string();
    has(&out.stderr, &format!("cannot write {home}"));
    has(&out.stderr, "writable");
    assert_eq!(read(&m.config()), EVERYDAY);
    assert!(!backup(&m).exists());
}

/// Fails today: `store::write_atomic` renames a new file over config.toml, which a file mode
/// does not stop, so a read-only config.toml (0444, or a link into a read-only dotfiles or
/// Nix store) is replaced by a writable 0600 copy instead of being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_config_file_is_refused_and_not_replaced() {
    let m = Machine::new(&[]).await;
    std::fs::write(m.config(), EVERYDAY).unwrap();
    // No write bit on Unix (0444 here), the read-only attribute on Windows.
    let mut permissions = std::fs::metadata(m.config()).unwrap().permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(m.config(), permissions).unwrap();
    let out = m.run(&["configure"]);
    let now = std::fs::metadata(m.config()).unwrap().permissions();
    let replaced = read(&m.config()) != EVERYDAY || !now.readonly();
    assert!(
        !replaced,
        "the read-only config.toml was replaced (now {now:?}): {out}"
    );
    assert!(!out.ok, "{out}");
    has(&out.stderr, &m.config().display().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_configure_exempts_loopback_in_the_codex_env_file_once() {
    let mut m = Machine::new(&[]).await;
    m.set("HTTPS_PROXY", "http://127.0.0.1:9");
    let env_file = m.codex_home().join(".env");
    let dry = m.run(&["configure", "--dry-run"]);
    has(&dry.stderr, "NO_PROXY");
    assert!(dry.ok && !env_file.exists(), "--dry-run wrote .env: {dry}");
    let no_env = m.run(&["configure", "--no-env"]);
    assert!(no_env.ok && !env_file.exists(), "--no-env: {no_env}");

    let loopback = "NO_PROXY=127.0.0.1,localhost,::1\n";
    let out = m.run(&["configure"]);
    assert!(out.ok, "{out}");
    has(&out.stdout, "added NO_PROXY");
    assert_eq!(read(&env_file), loopback);
    assert!(m.run(&["configure"]).ok);
    assert_eq!(read(&env_file), loopback, "a second run changed .env");

    let mine = "OPENAI_LOG=debug\n# my corporate proxy\nNO_PROXY=corp.example\n";
    std::fs::write(&env_file, mine).unwrap();
    assert!(m.run(&["configure"]).ok);
    let wanted = mine.replace("corp.example", "corp.example,127.0.0.1,localhost,::1");
    assert_eq!(read(&env_file), wanted);
    assert!(m.run(&["configure"]).ok);
    assert_eq!(read(&env_file), wanted, "a second run changed .env");
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_startup_writes_one_verified_systemd_unit_for_the_installed_binary() {
    let mut m = Machine::new(&[]).await;
    m.set("CODEX_PROXY_STRATEGY", "round-robin");
    let bin = m.installed_cma();
    for _ in 0..2 {
        let out = m.run_at(&bin, &["install-startup", "--no-activate"]);
        assert!(out.ok, "{out}");
        has(
            &out.stdout,
            &format!("installed {}", m.path(UNIT).display()),
        );
    }
    let unit = std::fs::read_to_string(m.path(UNIT)).expect("the unit is written");
    let lines: Vec<&str> = unit.lines().collect();
    let exec = format!("ExecStart={} start", bin.display());
    assert!(
        lines.contains(&exec.as_str()) && lines.contains(&"Restart=on-failure"),
        "{unit}"
    );
    for (k, v) in m
        .vars
        .iter()
        .filter(|(k, _)| k.starts_with("CODEX_PROXY_") || *k == "CODEX_HOME")
    {
        assert!(
            lines.contains(&format!("Environment={k}={v}").as_str()),
            "{k}:\n{unit}"
        );
    }
    let units = std::fs::read_dir(m.path(UNIT).parent().unwrap())
        .unwrap()
        .count();
    assert_eq!(units, 1, "installing twice left {units} files");

    verify_unit(&m, &m.path(UNIT), &m.path("home"));

    let out = m.run_at(&bin, &["uninstall-startup", "--no-activate"]);
    assert!(out.ok && !m.path(UNIT).exists(), "{out}");
    has(&out.stdout, "removed");
    has(
        &m.run_at(&bin, &["uninstall-startup", "--no-activate"])
            .stdout,
        "not installed",
    );

    let built = m.run(&["install-startup", "--no-activate"]);
    assert!(
        !built.ok && !m.path(UNIT).exists(),
        "a build-folder binary was installed: {built}"
    );
    has(&built.stderr, "install cma first");
}

/// `systemd-analyze verify --user` on `unit` with `home` as HOME: silent, or the test fails.
#[cfg(target_os = "linux")]
fn verify_unit(m: &Machine, unit: &Path, home: &Path) {
    let text = read(unit);
    let runtime = m.path("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .args(["verify", "--user"])
        .arg(unit)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .output();
    match verify {
        Ok(out) => {
            let said = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(
                out.status.success() && said.trim().is_empty(),
                "systemd-analyze verify: {said}\n{text}"
            );
        }
        Err(e) => eprintln!("systemd-analyze is unavailable ({e}): the unit was not verified"),
    }
}

/// systemd reads `%h`, `%u`... in `ExecStart=` and `Environment=` as specifiers: a `%` in the
/// home, the binary's folder or a variable must reach the unit as `%%`, or the router would
/// start another path (here `%h` would become the home) or not start at all.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_startup_escapes_a_percent_in_the_home_and_binary_paths_for_systemd() {
    let mut m = Machine::new(&[]).await;
    let home = m.path("home 100%h");
    let bin = home.join(".local/bin/cma");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::hard_link(m.installed_cma(), &bin).unwrap();
    m.set("HOME", home.display());
    m.set("CODEX_HOME", m.path("codex 50%u").display());
    let out = m.run_at(&bin, &["install-startup", "--no-activate"]);
    assert!(out.ok, "{out}");
    let unit = home.join(".config/systemd/user/codex-app-account-router.service");
    let text = read(&unit);
    let escaped = |p: &Path| p.display().to_string().replace('%', "%%");
    let lines: Vec<&str> = text.lines().collect();
    let exec = format!("ExecStart=\"{}\" start", escaped(&bin));
    assert!(lines.contains(&exec.as_str()), "{exec}\n{text}");
    let codex_home = format!("Environment=\"CODEX_HOME={}\"", escaped(&m.codex_home()));
    assert!(lines.contains(&codex_home.as_str()), "{codex_home}\n{text}");
    verify_unit(&m, &unit, &home);
}

/// `codex exec --skip-git-repo-check --json "say hi"` in the machine, killed after 60 s, and
/// checked: exit 0 and the fake's text as the one agent message. `behind_proxy`: with
/// HTTP(S)_PROXY pointing nowhere and no NO_PROXY but what `$CODEX_HOME/.env` says.
async fn codex_says_hi(codex: &Path, m: &Machine, router: &Router, behind_proxy: bool) {
    let mut command = tokio::process::Command::new(codex);
    command.args(["exec", "--skip-git-repo-check", "--json", "say hi"]);
    command
        .current_dir(m.path("work"))
        .env_clear()
        .stdin(Stdio::null());
    command.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
        .env("HOME", m.path("home"))
        .env("CODEX_HOME", m.codex_home());
    if behind_proxy {
        let nowhere = "http://127.0.0.1:9";
        command
            .env("HTTP_PROXY", nowhere)
            .env("HTTPS_PROXY", nowhere);
    } else {
        command.env("NO_PROXY", "127.0.0.1,localhost");
    }
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = child.spawn().expect("codex starts").wait_with_output();
    let output = tokio::time::timeout(Duration::from_secs(60), child).await;
    let output = output
        .expect("codex finished within 60 s")
        .expect("codex output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("{stdout}\nstderr:\n{stderr}\ncma:\n{}", router.log());
    assert!(output.status.success(), "codex failed\n{context}");
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let messages: Vec<&Value> = (events.iter())
        .filter(|e| e["type"] == "item.completed" && e["item"]["type"] == "agent_message")
        .map(|e| &e["item"]["text"])
        .collect();
    assert_eq!(messages, [OK_TEXT], "{context}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_signs_in_configures_and_installs_then_codex_completes_a_turn() {
    let took = Instant::now();
    let mut m = Machine::new(&[]).await;
    std::fs::remove_file(m.path("openai-accounts.json")).unwrap();
    let spec = AccountSpec::new("a@example.com", "acct-a", "user-acct-a");
    m.fake.add_account(spec);
    m.set("CODEX_PROXY_PORT", free_port());
    m.set("HTTPS_PROXY", "http://127.0.0.1:9");
    let quiet = "# my Codex settings\nmodel = \"gpt-5.5\"\ncheck_for_update_on_startup = false\n\n\
                 [analytics]\nenabled = false\n\n[features]\nplugins = false\n";
    std::fs::write(m.config(), quiet).unwrap();
    let bin = m.installed_cma();

    let out = m.run_at(&bin, &["setup", "--device", "--no-activate"]);
    assert!(out.ok, "{out}");
    let steps = [
        "FAKE-0001",
        "added a@example.com",
        "configured",
        "added NO_PROXY",
    ];
    for said in steps
        .iter()
        .chain(&["installed", "== status", "a@example.com"])
    {
        has(&out.stdout, said);
    }
    let configured = read(&m.config());
    assert_points_at_router(&configured, m.port(), false);
    assert_kept(quiet, &configured);
    has(
        &read(&m.path(UNIT)),
        &format!("ExecStart={} start", bin.display()),
    );
    eprintln!("cma setup took {:?}", took.elapsed());

    let router = Router::start(&m);
    if let Some(codex) = codex_bin() {
        codex_says_hi(&codex, &m, &router, false).await;
        codex_says_hi(&codex, &m, &router, true).await;
        eprintln!("two codex exec done after {:?}", took.elapsed());
    }

    let env_file = read(&m.codex_home().join(".env"));
    let again = m.run_at(&bin, &["setup", "--device", "--no-activate"]);
    assert!(again.ok, "{again}");
    has(&again.stdout, "accounts: already set up");
    has(&again.stdout, "already points Codex at");
    assert!(!again.stdout.contains("FAKE-"), "signed in again: {again}");
    assert_eq!(read(&m.config()), configured);
    assert_eq!(read(&m.codex_home().join(".env")), env_file);
    let file: Value = serde_json::from_str(&read(&m.path("openai-accounts.json"))).unwrap();
    assert_eq!(file["accounts"].as_array().map(Vec::len), Some(1), "{file}");
    let units = std::fs::read_dir(m.path(UNIT).parent().unwrap()).unwrap();
    assert_eq!(units.count(), 1);
}
