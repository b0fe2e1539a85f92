//! The opening of a stream is held back at most 5 s (the router's stated hold) while it waits
//! for output or a limit failure; a stream that said `response.created` and then queues is
//! passed on to Codex on the same account after that, not held until the first-byte timeout
//! and then sent to a second account (which would spend both).

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::support::{response_create, Behaviour, WsClient, OK_TEXT};

const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");

/// The stated hold, plus what a loaded 2-core machine adds to it.
const HOLD_BOUND: Duration = Duration::from_millis(5_900);

/// A first-byte timeout above the hold and a stall above both: only the hold can pass the
/// stream on before the upstream resumes.
async fn queueing_router() -> Harness {
    let h = Harness::start_with(
        &[A, B],
        &[
            ("CODEX_PROXY_FIRST_BYTE_TIMEOUT_MS", "6500"),
            ("CODEX_PROXY_STREAM_IDLE_TIMEOUT_MS", "30000"),
        ],
    )
    .await;
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::StallAfterFirstEvent {
            d: Duration::from_secs(9),
        },
    );
    h
}

#[tokio::test]
async fn a_queued_http_stream_is_passed_on_after_the_hold_on_the_same_account() {
    let h = queueing_router().await;
    let started = Instant::now();
    let response = h.respond("queued-http").await;
    let headers_after = started.elapsed();
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "acct-a");
    assert!(
        headers_after < HOLD_BOUND,
        "the answer began after {headers_after:?}, past the 5 s hold"
    );
    let events = event_types(response).await;
    assert_eq!(events.first().map(String::as_str), Some("response.created"));
    assert_eq!(
        events.last().map(String::as_str),
        Some("response.completed")
    );
    let accounts: Vec<Option<String>> = h
        .model_requests()
        .into_iter()
        .map(|r| r.account_id)
        .collect();
    assert_eq!(
        accounts,
        [Some("acct-a".to_string())],
        "B must not be spent"
    );
}

#[tokio::test]
async fn a_queued_websocket_response_is_passed_on_after_the_hold_on_the_same_account() {
    let h = queueing_router().await;
    let url = format!("{}/v1/responses", h.base.replacen("http://", "ws://", 1));
    let mut ws = WsClient::connect(&url, &[("session-id", "queued-ws")])
        .await
        .unwrap_or_else(|r| panic!("the router refused the upgrade: {r:?}"));
    let started = Instant::now();
    ws.send_json(&response_create(&codex_body("queued-ws", "gpt-5.5")))
        .await;
    let first = ws
        .next_event(Duration::from_secs(20))
        .await
        .expect("a first frame");
    let first_after = started.elapsed();
    assert_eq!(first["type"], "response.created", "{first}");
    assert!(
        first_after < HOLD_BOUND,
        "the first frame came after {first_after:?}, past the 5 s hold"
    );
    let mut events = vec![first];
    while let Some(event) = ws.next_event(Duration::from_secs(20)).await {
        let done = event["type"] == "response.completed";
        events.push(event);
        if done {
            break;
        }
    }
    assert_eq!(
        events.last().map(|e| e["type"].clone()),
        Some("response.completed".into()),
        "{events:?}"
    );
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(text, OK_TEXT);
    let accounts: Vec<String> = h
        .fake
        .ws_frames()
        .into_iter()
        .map(|f| f.account_id)
        .collect();
    assert_eq!(accounts, ["acct-a"], "B must not be spent");
    ws.close().await;
}
