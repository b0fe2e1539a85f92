//! The `cma` binary as a user runs it: start, status, accounts, remove, logout, and the
//! errors that must name what is wrong.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

use crate::harness::*;
use crate::support::FakeOpenAi;

const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");

struct Setup {
    fake: FakeOpenAi,
    dir: tempfile::TempDir,
    vars: HashMap<String, String>,
}

async fn setup(accounts: &[TestAccount]) -> Setup {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Value> = accounts.iter().map(|a| register(&fake, a)).collect();
    write_accounts(&dir.path().join("openai-accounts.json"), &records);
    let vars = fake_vars(&fake, dir.path());
    Setup { fake, dir, vars }
}

fn cma(vars: &HashMap<String, String>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cma"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", vars.get("CODEX_HOME").cloned().unwrap_or_default())
        .env("NO_COLOR", "1")
        .envs(vars);
    command
}

fn run(vars: &HashMap<String, String>, args: &[&str]) -> Output {
    cma(vars, args).output().expect("cma runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// `cma start` in the background; returns the child and its base URL.
fn start(vars: &HashMap<String, String>) -> (Child, String) {
    let mut child = cma(vars, &["start"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches("/v1")
        .to_string();
    (child, url)
}

struct Stop(Child);
impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn start_refuses_a_corrupt_accounts_file_and_leaves_it_untouched() {
    let s = setup(&[]).await;
    let path = s.dir.path().join("openai-accounts.json");
    let broken =
        "{\n  \"version\": 1,\n  \"accounts\": [\n    {\"email\": \"a@example.com\",}\n  ]\n}\n";
    std::fs::write(&path, broken).unwrap();
    let out = run(&s.vars, &["start"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains(&path.display().to_string()) && err.contains("line 4"),
        "{err}"
    );
    assert!(err.contains(".bak"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), broken);
}

#[tokio::test]
async fn start_refuses_a_public_host_without_a_token() {
    let mut s = setup(&[]).await;
    s.vars.insert("CODEX_PROXY_HOST".into(), "0.0.0.0".into());
    let out = run(&s.vars, &["start"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("CODEX_PROXY_TOKEN"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn start_refuses_a_custom_upstream_without_the_opt_in() {
    let mut s = setup(&[]).await;
    s.vars.remove("CODEX_PROXY_ALLOW_CUSTOM_UPSTREAM");
    let out = run(&s.vars, &["start"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("CODEX_PROXY_ALLOW_CUSTOM_UPSTREAM=1"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn start_on_a_busy_port_names_what_holds_it() {
    let mut s = setup(&[]).await;
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    s.vars.insert("CODEX_PROXY_PORT".into(), port.clone());
    let out = run(&s.vars, &["start"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("port {port}")) && err.contains("CODEX_PROXY_PORT"),
        "{err}"
    );
    if cfg!(target_os = "linux") {
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_second_start_says_the_router_is_already_running() {
    let mut s = setup(&[A]).await;
    let (child, url) = start(&s.vars);
    let _stop = Stop(child);
    s.vars.insert(
        "CODEX_PROXY_PORT".into(),
        url.rsplit(':').next().unwrap().to_string(),
    );
    let out = run(&s.vars, &["start"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already running"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn status_json_reports_the_running_router_and_its_accounts() {
    let mut s = setup(&[A, B]).await;
    let (child, url) = start(&s.vars);
    let _stop = Stop(child);
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{url}/v1/responses"))
        .body(codex_body("s1", "gpt-5.5").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    s.vars.insert(
        "CODEX_PROXY_PORT".into(),
        url.rsplit(':').next().unwrap().to_string(),
    );
    let out = run(&s.vars, &["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["router"]["accounts"][0]["email"], "a@example.com");
    assert!(
        status["router"]["accounts"][0]["usage"]["primary"]["usedPercent"].is_number(),
        "{status}"
    );
    let human = text(&run(&s.vars, &["status"]).stdout);
    assert!(
        human.contains("router: running") && human.contains("b@example.com"),
        "{human}"
    );
    assert!(human.contains("5h used"), "{human}");
    let tokens = s.fake.current_tokens("acct-a");
    assert!(
        !human.contains(&tokens.access_token) && !text(&out.stdout).contains(&tokens.refresh_token)
    );
}

#[tokio::test]
async fn status_without_a_router_reads_the_file() {
    let s = setup(&[A]).await;
    let out = run(&s.vars, &["status"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("not running") && stdout.contains("a@example.com"),
        "{stdout}"
    );
    let accounts: Value =
        serde_json::from_slice(&run(&s.vars, &["accounts", "--json"]).stdout).unwrap();
    assert_eq!(accounts[0]["plan"], "plus");
    assert_eq!(accounts[0]["state"], "ok");
}

#[tokio::test]
async fn remove_takes_an_email_an_index_or_an_id_and_refuses_ambiguity() {
    let s = setup(&[A, B, account("a@example.com", "acct-team")]).await;
    let out = run(&s.vars, &["remove", "a@example.com"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("matches 2 accounts"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&s.vars, &["remove", "acct-team"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&s.vars, &["remove", "1"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("b@example.com"));
    let out = run(&s.vars, &["remove", "nobody@example.com"]);
    assert!(!out.status.success());
    let accounts: Value =
        serde_json::from_slice(&run(&s.vars, &["accounts", "--json"]).stdout).unwrap();
    assert_eq!(accounts.as_array().unwrap().len(), 1);
    assert_eq!(accounts[0]["email"], "a@example.com");
}

#[tokio::test]
async fn a_running_router_drops_an_account_removed_with_cma() {
    let s = setup(&[A, B]).await;
    let (child, url) = start(&s.vars);
    let _stop = Stop(child);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let send = || {
        client
            .post(format!("{url}/v1/responses"))
            .body(codex_body("s1", "gpt-5.5").to_string())
            .send()
    };
    assert_eq!(served_by(&send().await.unwrap()), "acct-a");
    assert!(run(&s.vars, &["remove", "a@example.com"]).status.success());
    assert_eq!(served_by(&send().await.unwrap()), "acct-b");
}

#[tokio::test]
async fn logout_needs_confirmation() {
    let s = setup(&[A, B]).await;
    let out = run(&s.vars, &["logout"]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("--yes"));
    let accounts: Value =
        serde_json::from_slice(&run(&s.vars, &["accounts", "--json"]).stdout).unwrap();
    assert_eq!(accounts.as_array().unwrap().len(), 2);
    assert!(run(&s.vars, &["logout", "--yes"]).status.success());
    let accounts: Value =
        serde_json::from_slice(&run(&s.vars, &["accounts", "--json"]).stdout).unwrap();
    assert_eq!(accounts.as_array().unwrap().len(), 0);
}
