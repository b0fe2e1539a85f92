//! What Codex reads about limits in answers: the serving account's `x-codex-*` headers and,
//! over WebSocket, its `codex.rate_limits` events carry the pool's figures, the same as
//! `/backend-api/wham/usage`. Codex 0.171 shows them (footer, "less than N % left") and
//! nudges to a cheaper model from them (tests/integration/codex_tui.rs shows it on screen).

use serde_json::Value;

use crate::harness::*;
use crate::support::WsClient;

const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");

/// A router with A at 90 % and B at 10 % used (5-hour window), once it knows both.
async fn pool_at_half() -> Harness {
    let h = Harness::start(&[A, B]).await;
    h.fake.set_usage("acct-a", 90.0, 40.0);
    h.fake.set_usage("acct-b", 10.0, 20.0);
    let url = format!("{}/backend-api/wham/usage", h.base);
    for _ in 0..200 {
        let pool: Value = h.http.get(&url).send().await.unwrap().json().await.unwrap();
        if pool["rate_limit"]["primary_window"]["used_percent"] == 50.0 {
            return h;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the router did not learn both accounts' usage within 10 s");
}

#[tokio::test]
async fn an_answers_usage_headers_are_the_pools_not_the_serving_accounts() {
    let h = pool_at_half().await;
    // Whichever serves (A says 90 %, B 10 %), the answer says the pool's figure.
    let answer = h.respond("pooled-http").await;
    assert_eq!(answer.status(), 200);
    let header = |name: &str| {
        let value = answer.headers().get(name).and_then(|v| v.to_str().ok());
        value.map(str::to_string)
    };
    // The pool is (90 + 10) / 2 and (40 + 20) / 2.
    assert_eq!(
        header("x-codex-primary-used-percent").as_deref(),
        Some("50")
    );
    assert_eq!(
        header("x-codex-secondary-used-percent").as_deref(),
        Some("30")
    );
    assert_eq!(
        header("x-codex-primary-window-minutes").as_deref(),
        Some("300")
    );
    let _ = event_types(answer).await;
}

#[tokio::test]
async fn a_rate_limits_event_over_websocket_carries_the_pools_figures() {
    let h = pool_at_half().await;
    let url = format!("{}/v1/responses", h.base.replacen("http://", "ws://", 1));
    let headers = [("session-id", "pooled-ws")];
    let mut ws = WsClient::connect(&url, &headers).await.expect("upgrade");
    let events = ws.create(&codex_body("pooled-ws", "gpt-5.5")).await;
    let limits: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "codex.rate_limits")
        .collect();
    assert!(!limits.is_empty(), "the fake sends one: {events:?}");
    for event in limits {
        assert_eq!(
            event["rate_limits"]["primary"]["used_percent"], 50.0,
            "{event}"
        );
        assert_eq!(
            event["rate_limits"]["secondary"]["used_percent"], 30.0,
            "{event}"
        );
    }
}
