//! An upstream that says an account (or its workspace) is deactivated: the request is served
//! by another account before Codex sees anything, the account "needs attention" (not a limit
//! with a reset) in `/status` and `cma status`, it is not tried again, and its sessions move.

use std::process::Command;

use serde_json::Value;

use crate::harness::*;
use crate::support::{Behaviour, Deactivation, WsClient, OK_TEXT};

const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");

/// The plain words `/status` gives for each shape, and the code it keeps.
fn expected(shape: Deactivation) -> (&'static str, &'static str) {
    match shape {
        Deactivation::Account401 | Deactivation::AccountInHeader403 => (
            "ChatGPT says this account is deactivated",
            "account_deactivated",
        ),
        Deactivation::Workspace402 => (
            "ChatGPT says its workspace is deactivated",
            "deactivated_workspace",
        ),
        Deactivation::Workspace403 => (
            "ChatGPT says its workspace is deactivated",
            "workspace_deactivated",
        ),
        Deactivation::GovernmentWorkspace403 => (
            "ChatGPT says this workspace requires a government account",
            "governmentWorkspaceRequired",
        ),
    }
}

fn requests_as(h: &Harness, account_id: &str) -> usize {
    h.model_requests()
        .iter()
        .filter(|r| r.account_id.as_deref() == Some(account_id))
        .count()
}

/// A in need of attention for `shape`: the reason, the code, and no reset or limit.
async fn assert_needs_attention(h: &Harness, shape: Deactivation) {
    let (text, code) = expected(shape);
    let a = h.account_status("acct-a").await;
    assert_eq!(a["state"], "needs-attention", "{shape:?}: {a}");
    assert_eq!(a["attention"], text, "{shape:?}: {a}");
    assert_eq!(a["needsLoginReason"], code, "{shape:?}: {a}");
    assert!(a["until"].is_null(), "no reset time: {a}");
    assert_eq!(a["limits"], serde_json::json!({}), "not a limit: {a}");
    let status = h.status().await.to_string();
    assert!(!status.contains("Bearer"), "never a token: {status}");
}

/// A serves a session; then answers `shape`: B serves that request and every later one, A is
/// never asked again, and the session's move says why.
async fn fails_over_and_needs_attention(shape: Deactivation) {
    let h = Harness::start(&[A, B]).await;
    let s = "deactivated-1";
    let first = h.respond(s).await;
    assert_eq!(served_by(&first), "acct-a");
    let _ = first.bytes().await;

    h.fake
        .push_behaviour("acct-a", Behaviour::Deactivated(shape));
    let second = h.respond(s).await;
    assert_eq!(second.status(), 200, "{shape:?}");
    assert_eq!(served_by(&second), "acct-b", "{shape:?}");
    assert!(event_types(second)
        .await
        .contains(&"response.completed".to_string()));
    assert_needs_attention(&h, shape).await;
    assert_eq!(
        h.fake.refresh_count("acct-a"),
        0,
        "{shape:?}: no refresh token is spent on a deactivated account"
    );

    let status = h.status().await;
    let moves = status["moves"].as_array().cloned().unwrap_or_default();
    assert_eq!(moves.len(), 1, "{shape:?}: {status}");
    let m = &moves[0];
    assert_eq!(
        (m["from"].as_str(), m["to"].as_str()),
        (Some("a@example.com"), Some("b@example.com")),
        "{m}"
    );
    assert!(
        m["reason"]
            .as_str()
            .unwrap_or("")
            .contains(expected(shape).0),
        "{shape:?}: {m}"
    );

    // The bound session, and a new one, go to B without asking A.
    let asked_a = requests_as(&h, "acct-a");
    for session in [s, "deactivated-2"] {
        let again = h.respond(session).await;
        assert_eq!(served_by(&again), "acct-b", "{shape:?}");
        let _ = again.bytes().await;
    }
    assert_eq!(requests_as(&h, "acct-a"), asked_a, "{shape:?}: A not tried");
}

#[tokio::test]
async fn a_401_account_deactivated_fails_over_and_the_account_needs_attention() {
    fails_over_and_needs_attention(Deactivation::Account401).await;
}

#[tokio::test]
async fn a_402_deactivated_workspace_fails_over_and_the_account_needs_attention() {
    fails_over_and_needs_attention(Deactivation::Workspace402).await;
}

#[tokio::test]
async fn a_403_workspace_deactivated_fails_over_and_the_account_needs_attention() {
    fails_over_and_needs_attention(Deactivation::Workspace403).await;
}

#[tokio::test]
async fn a_403_government_workspace_required_fails_over_and_the_account_needs_attention() {
    fails_over_and_needs_attention(Deactivation::GovernmentWorkspace403).await;
}

#[tokio::test]
async fn a_403_with_the_code_only_in_x_error_json_fails_over_and_the_account_needs_attention() {
    fails_over_and_needs_attention(Deactivation::AccountInHeader403).await;
}

#[tokio::test]
async fn on_the_websocket_each_shape_fails_over_before_output() {
    for shape in Deactivation::ALL {
        let h = Harness::start(&[A, B]).await;
        h.fake
            .push_behaviour("acct-a", Behaviour::Deactivated(shape));
        let url = format!("{}/v1/responses", h.base.replacen("http://", "ws://", 1));
        let mut ws = WsClient::connect(
            &url,
            &[
                ("openai-beta", "responses_websockets=2026-02-06"),
                ("session-id", "ws-deactivated"),
            ],
        )
        .await
        .unwrap_or_else(|r| panic!("upgrade refused: {r:?}"));
        let events = ws.create(&codex_body("ws-deactivated", "gpt-5.5")).await;
        let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert!(!types.contains(&"error"), "{shape:?}: {events:?}");
        assert_eq!(types.last(), Some(&"response.completed"), "{shape:?}");
        let text: String = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .filter_map(|e| e["delta"].as_str())
            .collect();
        assert_eq!(text, OK_TEXT, "{shape:?}");
        assert_needs_attention(&h, shape).await;
        ws.close().await;
    }
}

#[tokio::test]
async fn when_every_account_is_deactivated_codex_gets_the_needs_login_answer() {
    let h = Harness::start(&[A, B]).await;
    h.fake
        .push_behaviour("acct-a", Behaviour::Deactivated(Deactivation::Account401));
    h.fake
        .push_behaviour("acct-b", Behaviour::Deactivated(Deactivation::Workspace402));
    let response = h.respond("deactivated-all").await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "accounts_need_login", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("a@example.com") && message.contains("b@example.com"),
        "{message}"
    );
    assert!(message.contains("deactivated"), "{message}");
}

#[tokio::test]
async fn the_state_survives_a_restart_and_cma_status_says_it_in_words() {
    let mut h = Harness::start(&[A, B]).await;
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::Deactivated(Deactivation::GovernmentWorkspace403),
    );
    let served = h.respond("deactivated-restart").await;
    assert_eq!(served_by(&served), "acct-b");
    let _ = served.bytes().await;
    // The file is written in the background, as for a limit: wait for it, then restart.
    let saved = |h: &Harness| h.accounts_file()["accounts"][0]["needsLogin"]["code"].clone();
    for _ in 0..100 {
        if saved(&h) == "governmentWorkspaceRequired" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(saved(&h), "governmentWorkspaceRequired");
    h.restart().await;
    assert_needs_attention(&h, Deactivation::GovernmentWorkspace403).await;

    let port = h.base.rsplit(':').next().expect("port").to_string();
    let mut cma = Command::new(env!("CARGO_BIN_EXE_cma"));
    cma.arg("status")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", h.dir.path())
        .env("NO_COLOR", "1")
        .envs(&h.vars)
        .env("CODEX_PROXY_PORT", port);
    // Off the test's one runtime thread, which the router in this process answers on.
    let output = tokio::task::spawn_blocking(move || cma.output())
        .await
        .expect("joined")
        .expect("cma runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("router: running"),
        "the live router: {stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("a@example.com") && l.contains("needs-attention"))
        .unwrap_or_else(|| panic!("A needs attention: {stdout}"));
    assert!(!line.contains("limited"), "{line}");
    assert!(
        stdout.contains("a@example.com: ChatGPT says this workspace requires a government account"),
        "{stdout}"
    );
}
