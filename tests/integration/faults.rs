//! The router under faults: `cma start` killed with SIGKILL at each step of a refresh, a full
//! disk and a read-only accounts folder, the token endpoint down or slow, and an upstream that
//! resets, cuts or trickles. Nothing may burn an account, lose one, or hang past the router's
//! timeouts.

mod disk;
mod keychain;
mod kill;
mod upstream;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::codex_body;
use crate::support::FakeOpenAi;

/// `cma start` as a child process, killed (SIGKILL) on drop; its stderr goes to a file.
pub(crate) struct CmaStart {
    child: Child,
    pub base: String,
    log: PathBuf,
}

impl CmaStart {
    /// Starts `cma start` with these variables and waits for the address it prints.
    pub fn spawn(vars: &HashMap<String, String>, log: PathBuf) -> CmaStart {
        CmaStart::spawn_command(crate::keychain::cma(vars, &["start"]), log)
    }

    /// Starts `command` (which ends in `cma start`) and waits for the address it prints.
    pub fn spawn_command(mut command: Command, log: PathBuf) -> CmaStart {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("cma start runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("cma start prints its address");
        let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
            let _ = (child.kill(), child.wait());
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("no address in {line:?}; stderr:\n{log}");
        };
        let base = url.trim_end_matches("/v1").to_string();
        CmaStart { child, base, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reaps the process.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the router wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CmaStart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// `POST /v1/responses` for a session, read to the end: (status, served by, body).
pub(crate) async fn respond(base: &str, session: &str) -> (u16, String, String) {
    let response = client()
        .post(format!("{base}/v1/responses"))
        .header("content-type", "application/json")
        .header("session-id", session)
        .body(codex_body(session, "gpt-5.5").to_string())
        .send()
        .await
        .expect("the router answers");
    let status = response.status().as_u16();
    let served = crate::harness::served_by(&response);
    (status, served, response.text().await.unwrap_or_default())
}

/// The account's entry in `/status` (matched by account id).
pub(crate) async fn account_status(base: &str, account_id: &str) -> Value {
    let status: Value = client()
        .get(format!("{base}/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status json");
    status["accounts"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|x| x["key"].as_str().is_some_and(|k| k.starts_with(account_id)))
        })
        .cloned()
        .unwrap_or_else(|| panic!("{account_id} missing from {status}"))
}

/// Refresh tokens the issuer was sent more than once: each is a replay, which the real issuer
/// answers `refresh_token_reused` and punishes by revoking the whole family.
pub(crate) fn replayed_refresh_tokens(fake: &FakeOpenAi) -> usize {
    let mut seen = std::collections::HashSet::new();
    fake.issuer_requests()
        .iter()
        .filter(|r| r.body["grant_type"] == "refresh_token")
        .filter(|r| !seen.insert(r.body["refresh_token"].to_string()))
        .count()
}

/// Polls `done` every 20 ms until it holds or `limit` passes; whether it held.
pub(crate) async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}
