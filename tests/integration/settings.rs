//! `settings.toml` through `cma` as a user runs it: set and get keep the user's comments, the
//! environment wins and `cma doctor` says so, a broken file names its line and is left alone
//! while the router runs on defaults, and refused values name what is allowed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use crate::harness::*;
use crate::operator::{free_port, has, read, Machine, Out, Router};

const A: TestAccount = account("a@example.com", "acct-a");

fn settings_file(m: &Machine) -> PathBuf {
    PathBuf::from(&m.vars["CODEX_PROXY_SETTINGS_FILE"])
}

fn json(out: &Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// One key of `cma settings --json`.
#[track_caller]
fn setting(m: &Machine, key: &str) -> Value {
    let out = m.run(&["settings", "--json"]);
    assert!(out.ok, "{out}");
    let all = json(&out)["settings"].as_array().expect("settings").clone();
    all.into_iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

/// The first line `cma start` prints, and the router, stopped on drop.
fn start_without_port_variable(m: &Machine) -> (String, StopOnDrop) {
    let mut command = m.cma_at(Path::new(env!("CARGO_BIN_EXE_cma")), &["start"]);
    command.env_remove("CODEX_PROXY_PORT");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cma start");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    let _ = BufReader::new(stdout).read_line(&mut line);
    (line, StopOnDrop(child))
}

struct StopOnDrop(std::process::Child);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = (self.0.kill(), self.0.wait());
    }
}

#[tokio::test]
async fn set_then_get_round_trips_and_keeps_the_users_comments() {
    let m = Machine::new(&[]).await;
    let path = settings_file(&m);
    let original = "# my router, my rules\nstrategy = \"hybrid\" # most headroom\n\n# timeouts\nfirst_byte_timeout_ms = 30000\n";
    std::fs::write(&path, original).unwrap();

    let set = m.run(&["settings", "set", "strategy", "round_robin"]);
    assert!(set.ok, "{set}");
    has(&set.stdout, "strategy = round-robin saved in");
    has(&set.stdout, "after a restart");
    let set = m.run(&["settings", "set", "first-byte-timeout-ms", "45000"]);
    assert!(set.ok, "{set}");

    let get = m.run(&["settings", "get", "strategy"]);
    assert!(get.ok, "{get}");
    assert_eq!(get.stdout, "round-robin\n");
    assert_eq!(
        read(&path),
        "# my router, my rules\nstrategy = \"round-robin\" # most headroom\n\n# timeouts\nfirst_byte_timeout_ms = 45000\n"
    );
    let strategy = setting(&m, "strategy");
    assert_eq!(strategy["source"], "file", "{strategy}");

    let unset = m.run(&["settings", "unset", "strategy"]);
    assert!(unset.ok, "{unset}");
    assert_eq!(m.run(&["settings", "get", "strategy"]).stdout, "sticky\n");
    assert_eq!(setting(&m, "strategy")["source"], "default");
    has(&read(&path), "# my router, my rules");
}

#[tokio::test]
async fn a_router_started_without_variables_takes_its_settings_from_the_file() {
    let mut m = Machine::new(&[A]).await;
    let port = free_port().to_string();
    let set = m.run(&["settings", "set", "port", &port]);
    assert!(set.ok, "{set}");
    assert!(m.run(&["settings", "set", "strategy", "hybrid"]).ok);
    let (line, _router) = start_without_port_variable(&m);
    has(&line, &format!("http://127.0.0.1:{port}/v1"));
    has(&line, "strategy hybrid");

    // A change while it runs: saved, and the running router is named as needing a restart.
    m.vars.remove("CODEX_PROXY_PORT");
    let set = m.run(&["settings", "set", "strategy", "sticky"]);
    assert!(set.ok, "{set}");
    has(
        &set.stderr,
        &format!("hint: the router running at http://127.0.0.1:{port}/v1 still uses the old value"),
    );
    let same = m.run(&["settings", "set", "strategy", "sticky"]);
    has(&same.stdout, "unchanged: no restart needed");
    assert!(!same.stderr.contains("hint:"), "{same}");
}

#[tokio::test]
async fn the_environment_wins_over_the_file_and_doctor_says_so() {
    let mut m = Machine::new(&[]).await;
    let in_env = free_port().to_string();
    m.set("CODEX_PROXY_PORT", &in_env);
    std::fs::write(settings_file(&m), "port = 8788\nstrategy = \"hybrid\"\n").unwrap();

    assert_eq!(
        m.run(&["settings", "get", "port"]).stdout,
        format!("{in_env}\n")
    );
    let port = setting(&m, "port");
    assert_eq!(port["source"], "env", "{port}");
    assert_eq!(port["fileValue"], "8788", "{port}");
    let list = m.run(&["settings"]);
    has(&list.stdout, "env CODEX_PROXY_PORT (the file says 8788)");

    let set = m.run(&["settings", "set", "port", "8789"]);
    assert!(set.ok, "{set}");
    has(
        &set.stdout,
        &format!("CODEX_PROXY_PORT={in_env} in this environment still wins"),
    );

    let doctor = m.run(&["doctor", "--json"]);
    let findings = json(&doctor)["findings"].as_array().unwrap().clone();
    let settings: Vec<&Value> = findings
        .iter()
        .filter(|f| f["check"] == "settings")
        .collect();
    assert_eq!(settings.len(), 1, "only the port differs: {settings:?}");
    assert_eq!(settings[0]["verdict"], "warn");
    let detail = settings[0]["detail"].as_str().unwrap();
    has(
        detail,
        &format!("CODEX_PROXY_PORT={in_env} in the environment wins over port = 8789"),
    );
    has(
        settings[0]["fix"].as_str().unwrap(),
        "cma settings set port",
    );

    // The same value in both places is no finding to act on.
    m.set("CODEX_PROXY_PORT", "8789");
    let doctor = json(&m.run(&["doctor", "--json"]));
    let ok = doctor["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["check"] == "settings" && f["verdict"] == "ok");
    assert!(ok, "{doctor:#}");
}

#[tokio::test]
async fn a_broken_file_names_its_line_is_never_overwritten_and_the_router_runs_on_defaults() {
    let mut m = Machine::new(&[A]).await;
    m.set("CODEX_PROXY_PORT", free_port());
    let path = settings_file(&m);
    let broken = "# mine\nstrategy = \"hybrid\"\nport = \n";
    std::fs::write(&path, broken).unwrap();

    let set = m.run(&["settings", "set", "strategy", "round-robin"]);
    assert!(!set.ok, "{set}");
    has(&set.stderr, "error: ");
    has(&set.stderr, &path.display().to_string());
    has(&set.stderr, "line 3");
    has(&set.stderr, "hint: open");
    assert_eq!(read(&path), broken, "the file is left as it is");

    let doctor = json(&m.run(&["doctor", "--json"]));
    let fail = doctor["findings"].as_array().unwrap().iter().any(|f| {
        f["check"] == "settings"
            && f["verdict"] == "fail"
            && f["detail"].as_str().unwrap().contains("line 3")
    });
    assert!(fail, "{doctor:#}");

    let router = Router::start(&m);
    let status: Value = reqwest::get(format!("{}/status", router.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["strategy"], "sticky",
        "the file's hybrid is not used"
    );
    let log = router.log();
    has(&log, "warning: ");
    has(&log, "line 3");
    drop(router);
    assert_eq!(read(&path), broken, "the router left it alone too");

    let status = m.run(&["status"]);
    assert!(status.ok, "{status}");
    has(&status.stderr, "line 3");
}

#[tokio::test]
async fn an_unknown_key_is_warned_by_name_with_the_known_ones() {
    let m = Machine::new(&[]).await;
    std::fs::write(settings_file(&m), "prot = 8788\ntoken = \"secret\"\n").unwrap();
    let status = m.run(&["status"]);
    assert!(status.ok, "{status}");
    has(&status.stderr, "warning: ");
    has(&status.stderr, "line 1: unknown setting `prot`");
    has(&status.stderr, "host, port,");
    has(&status.stderr, "line 2: `token` is a secret");
    has(&status.stderr, "CODEX_PROXY_TOKEN");
    assert!(!status.stderr.contains("\"secret\""), "{status}");
    let unknown = m.run(&["settings", "get", "prot"]);
    assert!(!unknown.ok, "{unknown}");
    has(&unknown.stderr, "error: unknown setting `prot`");
}

#[tokio::test]
async fn port_zero_and_strategy_fast_are_refused_with_the_allowed_values() {
    let mut m = Machine::new(&[]).await;
    let path = settings_file(&m);
    let port = m.run(&["settings", "set", "port", "0"]);
    assert!(!port.ok, "{port}");
    has(
        &port.stderr,
        "error: port = \"0\" is refused: allowed is a port number from 1 to 65535",
    );
    let strategy = m.run(&["settings", "set", "strategy", "fast"]);
    assert!(!strategy.ok, "{strategy}");
    has(&strategy.stderr, "allowed is sticky, round-robin or hybrid");
    let timeout = m.run(&["settings", "set", "first_byte_timeout_ms", "soon"]);
    assert!(!timeout.ok, "{timeout}");
    has(&timeout.stderr, "a whole number");
    assert!(!path.exists(), "nothing was written");

    // The same values written by hand: warned, and the defaults used.
    std::fs::write(&path, "port = 0\nstrategy = \"fast\"\n").unwrap();
    m.vars.remove("CODEX_PROXY_PORT");
    let out = m.run(&["settings", "--json"]);
    assert!(out.ok, "{out}");
    has(&out.stderr, "line 1: port = 0 is refused (allowed: a port number from 1 to 65535); using the default, 8787");
    has(
        &out.stderr,
        "line 2: strategy = \"fast\" is refused (allowed: sticky, round-robin or hybrid)",
    );
    assert_eq!(setting(&m, "port")["value"], "8787");
    assert_eq!(setting(&m, "strategy")["value"], "sticky");
}

// The rule for macOS and Windows is a unit test in paths.rs: their folders are not Linux's.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_file_lives_in_the_apps_config_folder() {
    let mut m = Machine::new(&[]).await;
    m.vars.remove("CODEX_PROXY_SETTINGS_FILE");
    let path = m.run(&["settings", "path"]);
    let expected = m.path("home/.config/dev.codex-app-account-router/settings.toml");
    assert_eq!(path.stdout.trim(), expected.display().to_string(), "{path}");
    m.set("XDG_CONFIG_HOME", m.path("xdg").display());
    let path = m.run(&["settings", "path"]);
    let expected = m.path("xdg/dev.codex-app-account-router/settings.toml");
    assert_eq!(path.stdout.trim(), expected.display().to_string(), "{path}");
    let set = m.run(&["settings", "set", "websockets", "false"]);
    assert!(set.ok, "{set}");
    has(&read(&expected), "websockets = false");
}
