//! The usage history against the fake: what a run records (requests, usage readings, the
//! tokens of each completed response), that it survives a restart, and that it holds no token.

use std::time::Duration;

use router::history::{History, FILE_NAME};

use crate::harness::*;

const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");

/// The history's days once the writer has caught up with `requests` requests.
async fn days_after(h: &Harness, requests: i64) -> Vec<router::history::Day> {
    let path = h.accounts_path().with_file_name(FILE_NAME);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(history)) = History::open_read_only(&path) {
            if let Ok(days) = history.days(0, None) {
                let seen: i64 = days.iter().map(|d| d.requests).sum();
                let tokens: i64 = days.iter().map(|d| d.input_tokens).sum();
                if seen >= requests && tokens >= requests * 1234 {
                    return days;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the history did not get {requests} requests"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_run_is_recorded_with_usage_and_tokens_and_survives_a_restart() {
    let mut h = Harness::start_with(&[A, B], &[("CODEX_PROXY_STRATEGY", "round-robin")]).await;
    h.fake.set_usage("acct-a", 42.0, 7.0);
    h.fake.set_usage("acct-b", 13.0, 3.0);
    for session in ["s1", "s2", "s3", "s4"] {
        let response = h.respond(session).await;
        assert_eq!(response.status(), 200);
        response.text().await.expect("the whole stream");
    }
    let days = days_after(&h, 4).await;
    let a = days
        .iter()
        .find(|d| d.account == "a@example.com")
        .expect("A's day");
    let b = days
        .iter()
        .find(|d| d.account == "b@example.com")
        .expect("B's day");
    assert_eq!((a.requests, b.requests), (2, 2), "{days:?}");
    // The fake's response.completed says 1234 input tokens, none cached, one output token
    // per delta.
    assert_eq!(a.input_tokens, 2 * 1234);
    assert!(a.output_tokens > 0);
    assert_eq!(a.cached_tokens, 0);
    assert_eq!(a.peak_primary, Some(42.0));
    assert_eq!(b.peak_secondary, Some(3.0));

    h.restart().await;
    let response = h.respond("s5").await;
    response.text().await.expect("the whole stream");
    let days = days_after(&h, 5).await;
    assert_eq!(
        days.iter().map(|d| d.requests).sum::<i64>(),
        5,
        "kept across the restart"
    );

    let path = h.accounts_path().with_file_name(FILE_NAME);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let bytes = std::fs::read(&path).expect("the history file");
    for account in ["acct-a", "acct-b"] {
        let tokens = h.fake.current_tokens(account);
        for secret in [&tokens.access_token, &tokens.refresh_token] {
            assert!(
                absent(&bytes, secret.as_bytes()),
                "a token of {account} is in the history"
            );
        }
    }
}

/// True when `needle` is nowhere in `hay`.
fn absent(hay: &[u8], needle: &[u8]) -> bool {
    !hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_corrupt_history_is_moved_aside_and_the_router_serves_and_records_on() {
    let mut h = Harness::start(&[A]).await;
    let path = h.accounts_path().with_file_name(FILE_NAME);
    let garbage = b"not a database".repeat(64);
    std::fs::write(&path, &garbage).unwrap();
    h.restart().await;
    let moved: Vec<_> = std::fs::read_dir(h.accounts_path().parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("history.sqlite.corrupt-")
        })
        .collect();
    assert_eq!(moved.len(), 1, "moved aside with a timestamp");
    let notice = h.router.as_ref().and_then(|r| r.history_notice.clone());
    let notice = notice.expect("the app is told, to say so");
    assert!(
        notice.contains("could not be used") && notice.contains("history.sqlite.corrupt-"),
        "{notice}"
    );
    assert_eq!(
        std::fs::read(moved[0].path()).unwrap(),
        garbage,
        "untouched"
    );
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 200);
    response.text().await.expect("the whole stream");
    days_after(&h, 1).await;
}

/// `cma` on the same files, as a user runs it.
fn cma(h: &Harness, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cma"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "HOME",
            h.vars.get("CODEX_HOME").cloned().unwrap_or_default(),
        )
        .env("NO_COLOR", "1")
        .envs(&h.vars)
        .output()
        .expect("cma runs")
}

#[tokio::test]
async fn cma_history_shows_the_days_as_a_table_and_as_json() {
    let h = Harness::start(&[A, B]).await;
    let empty = cma(&h, &["history"]);
    assert!(empty.status.success());
    assert!(
        String::from_utf8_lossy(&empty.stdout).contains("no usage recorded in the last 7 days"),
        "{empty:?}"
    );
    h.fake.set_usage("acct-a", 61.0, 9.0);
    for session in ["s1", "s2"] {
        h.respond(session)
            .await
            .text()
            .await
            .expect("the whole stream");
    }
    days_after(&h, 2).await;

    let out = cma(&h, &["history", "--json", "--days", "3"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let days = json["days"].as_array().expect("days");
    let a = days
        .iter()
        .find(|d| d["account"] == "a@example.com")
        .unwrap_or_else(|| panic!("A's day: {json}"));
    assert_eq!(a["requests"], 2);
    assert_eq!(a["inputTokens"], 2 * 1234);
    assert_eq!(a["peakPrimary"], 61.0);
    // B served nothing, but its usage was read at start.
    let b = days.iter().find(|d| d["account"] == "b@example.com");
    assert!(b.is_none_or(|b| b["requests"] == 0), "{json}");

    let table = cma(&h, &["history", "--account", "a@example.com"]);
    let text = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(text.starts_with("day "), "{text}");
    assert!(text.contains("a@example.com  2 "), "{text}");
    assert!(text.contains("61%"), "{text}");
    assert!(
        !text.contains("b@example.com"),
        "only the account asked for: {text}"
    );
    assert!(
        !text.contains('▁') && !text.contains('█'),
        "no sparkline into a pipe: {text}"
    );

    let refused = cma(&h, &["history", "--days", "0"]);
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        error.contains("--days") && error.contains("1..=90"),
        "{error}"
    );
}

#[tokio::test]
async fn a_response_over_websocket_is_recorded_with_its_tokens() {
    use crate::support::{response_create, WsClient};
    let h = Harness::start(&[A]).await;
    let url = format!("{}/v1/responses", h.base.replacen("http://", "ws://", 1));
    let headers = [
        ("openai-beta", "responses_websockets=2026-02-06"),
        ("session-id", "ws-history"),
    ];
    let mut ws = WsClient::connect(&url, &headers)
        .await
        .unwrap_or_else(|r| panic!("the router refused the upgrade: {r:?}"));
    for _ in 0..2 {
        let events = ws
            .create(&response_create(&codex_body("ws-history", "gpt-5.5")))
            .await;
        assert!(events.iter().any(|e| e["type"] == "response.completed"));
    }
    ws.close().await;
    let days = days_after(&h, 2).await;
    assert_eq!(days[0].account, "a@example.com");
    assert_eq!(days[0].input_tokens, 2 * 1234, "{days:?}");
}
