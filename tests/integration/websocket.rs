//! WebSocket on `/v1/responses` (protocol §5.4): upgrades, frames, failover before the first
//! output, the 1012 close that moves a session, and the 426 that sends Codex back to HTTP when
//! WebSocket is turned off.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::harness::*;
use crate::support::{response_create, Behaviour, WsClient, OK_TEXT};

mod bad_input;
mod handshake;
mod reuse;

const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");
const WAIT: Duration = Duration::from_secs(10);

/// The handshake headers Codex sends with the built-in provider (codex-capture §3.4).
fn codex_headers(session: &str) -> Vec<(&'static str, String)> {
    vec![
        ("openai-beta", "responses_websockets=2026-02-06".to_string()),
        ("originator", "codex_exec".to_string()),
        ("version", "0.169.0".to_string()),
        ("session-id", session.to_string()),
        ("x-client-request-id", session.to_string()),
        ("authorization", "Bearer sk-client-key".to_string()),
    ]
}

fn ws_url(h: &Harness) -> String {
    format!("{}/v1/responses", h.base.replacen("http://", "ws://", 1))
}

async fn connect(h: &Harness, session: &str) -> WsClient {
    let headers = codex_headers(session);
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    WsClient::connect(&ws_url(h), &pairs)
        .await
        .unwrap_or_else(|r| panic!("the router refused the upgrade: {r:?}"))
}

type Raw = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A bare socket to the router, for what `WsClient` does not do: binary frames, pings and
/// close codes.
async fn connect_raw(h: &Harness, session: &str) -> Raw {
    let mut request = ws_url(h).into_client_request().expect("ws request");
    for (k, v) in codex_headers(session) {
        request
            .headers_mut()
            .insert(k, v.parse().expect("header value"));
    }
    tokio_tungstenite::connect_async(request)
        .await
        .expect("the router accepts the upgrade")
        .0
}

/// The next text frame as JSON, or the close code the socket ended with (`Err`).
async fn next_raw(raw: &mut Raw) -> Result<Value, Option<u16>> {
    loop {
        let message = tokio::time::timeout(WAIT, raw.next())
            .await
            .expect("a frame or a close within the wait");
        match message {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).expect("JSON")),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(Message::Pong(_) | Message::Ping(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Binary(_))) => panic!("binary frame from the router"),
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// Reads an answer on a raw socket up to its terminal event.
async fn read_raw_response(raw: &mut Raw) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let event = next_raw(raw).await.expect("the socket stays open");
        let done = ["response.completed", "response.failed", "error"]
            .contains(&event["type"].as_str().unwrap_or(""));
        events.push(event);
        if done {
            return events;
        }
    }
}

fn request(session: &str) -> Value {
    response_create(&codex_body(session, "gpt-5.5"))
}

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect()
}

fn text_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect()
}

/// Which accounts the fake's sockets received `response.create` frames as, in order.
fn frame_accounts(h: &Harness) -> Vec<String> {
    h.fake
        .ws_frames()
        .iter()
        .map(|f| f.account_id.clone())
        .collect()
}

async fn assert_http_still_serves(h: &Harness) {
    let response = h.respond("after-ws").await;
    assert_eq!(response.status(), 200);
    let events = event_types(response).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("response.completed")
    );
}

#[tokio::test]
async fn streams_the_upstream_frames_to_the_client_as_one_account() {
    let h = Harness::start(&[A, B]).await;
    let mut ws = connect(&h, "ws-s1").await;
    let events = ws.create(&codex_body("ws-s1", "gpt-5.5")).await;
    assert_eq!(
        types(&events).first(),
        Some(&"response.created"),
        "{events:?}"
    );
    assert_eq!(types(&events).last(), Some(&"response.completed"));
    assert_eq!(text_of(&events), OK_TEXT);
    // A second request on the socket reuses the upstream socket and its account.
    let again = ws.create(&codex_body("ws-s1", "gpt-5.5")).await;
    assert_eq!(types(&again).last(), Some(&"response.completed"));
    let frames = h.fake.ws_frames();
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0].socket, frames[1].socket, "one upstream socket");
    assert_eq!(frames[0].account_id, frames[1].account_id);
    assert_eq!(frames[0].body["type"], "response.create");
    assert_eq!(frames[0].body["prompt_cache_key"], "ws-s1");
    // The handshake went out as the account, with Codex's own headers kept.
    let handshakes: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.websocket)
        .collect();
    assert_eq!(handshakes.len(), 1);
    let header = |name: &str| {
        handshakes[0]
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        handshakes[0].account_id.as_deref(),
        Some(frames[0].account_id.as_str())
    );
    assert_ne!(
        header("authorization").as_deref(),
        Some("Bearer sk-client-key")
    );
    assert_eq!(
        header("chatgpt-account-id").as_deref(),
        Some(frames[0].account_id.as_str())
    );
    assert_eq!(
        header("openai-beta").as_deref(),
        Some("responses_websockets=2026-02-06")
    );
    assert_eq!(header("session-id").as_deref(), Some("ws-s1"));
    // The dashboard lists both requests.
    let recent = h.status().await;
    let served = recent.to_string().matches("gpt-5.5").count();
    assert!(served >= 2, "{recent}");
    ws.close().await;
}

#[tokio::test]
async fn fails_over_before_output_when_the_first_account_answers_a_limit_frame() {
    let h = Harness::start(&[A, B]).await;
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::UsageLimit {
            resets_in_seconds: 3600,
        },
    );
    let mut ws = connect(&h, "ws-failover").await;
    let events = ws.create(&codex_body("ws-failover", "gpt-5.5")).await;
    assert!(!types(&events).contains(&"error"), "{events:?}");
    let created = types(&events)
        .iter()
        .filter(|t| **t == "response.created")
        .count();
    assert_eq!(created, 1, "{events:?}");
    assert_eq!(types(&events).last(), Some(&"response.completed"));
    assert_eq!(text_of(&events), OK_TEXT);
    assert_eq!(frame_accounts(&h), ["acct-a", "acct-b"]);
    assert_eq!(h.account_status("acct-a").await["state"], "limited");
    // The session now lives on B: the next request goes there without asking A.
    let again = ws.create(&codex_body("ws-failover", "gpt-5.5")).await;
    assert_eq!(types(&again).last(), Some(&"response.completed"));
    assert_eq!(frame_accounts(&h), ["acct-a", "acct-b", "acct-b"]);
}

#[tokio::test]
async fn fails_over_when_the_first_account_refuses_the_upgrade() {
    let h = Harness::start(&[A, B]).await;
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::Status {
            status: 503,
            body: json!({"error": {"type": "server_error"}}),
        },
    );
    let mut ws = connect(&h, "ws-503").await;
    let events = ws.create(&codex_body("ws-503", "gpt-5.5")).await;
    assert_eq!(
        types(&events).last(),
        Some(&"response.completed"),
        "{events:?}"
    );
    assert_eq!(
        frame_accounts(&h).last().map(String::as_str),
        Some("acct-b")
    );
}

#[tokio::test]
async fn all_accounts_limited_gives_one_429_error_frame_and_the_socket_stays_usable() {
    let h = Harness::start(&[A, B]).await;
    for id in ["acct-a", "acct-b"] {
        h.fake.push_behaviour(
            id,
            Behaviour::UsageLimit {
                resets_in_seconds: 600,
            },
        );
    }
    let mut ws = connect(&h, "ws-limited").await;
    let events = ws.create(&codex_body("ws-limited", "gpt-5.5")).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let error = &events[0];
    assert_eq!(error["type"], "error");
    assert_eq!(error["status"], 429);
    assert_eq!(error["error"]["type"], "usage_limit_reached");
    let resets_in = error["error"]["resets_in_seconds"]
        .as_i64()
        .expect("resets_in_seconds");
    assert!((500..=600).contains(&resets_in), "{error}");
    assert!(error["error"]["resets_at"].is_i64(), "{error}");
    assert!(!ws.closed);
    // Still usable: the next request gets the same answer from the router alone.
    let frames = h.fake.ws_frames().len();
    let again = ws.create(&codex_body("ws-limited", "gpt-5.5")).await;
    assert_eq!(types(&again), ["error"]);
    assert_eq!(again[0]["status"], 429);
    assert_eq!(
        h.fake.ws_frames().len(),
        frames,
        "no account was asked again"
    );
    assert!(!ws.closed);
}

/// Every account answered a moment's 503 and rests: the socket's next request is tried, not
/// refused until the rests end.
#[tokio::test]
async fn after_every_account_failed_once_the_sockets_next_request_is_tried() {
    let h = Harness::start(&[A, B]).await;
    h.fake
        .fail_each_once(&["acct-a", "acct-b"], 503, "upstream connect error");
    let mut ws = connect(&h, "ws-outage").await;
    let events = ws.create(&codex_body("ws-outage", "gpt-5.5")).await;
    assert_eq!(types(&events), ["error"], "{events:?}");
    assert_eq!(events[0]["status"], 503, "{events:?}");
    assert!(!ws.closed);
    let again = ws.create(&codex_body("ws-outage", "gpt-5.5")).await;
    assert_eq!(
        types(&again).last().copied(),
        Some("response.completed"),
        "the upstream is back and the request is tried: {again:?}"
    );
    // Both rest again (an HTTP request met the outage): the socket's own account, though
    // resting, is tried rather than the request refused.
    h.fake
        .fail_each_once(&["acct-a", "acct-b"], 503, "upstream connect error");
    assert_eq!(h.respond("http-outage").await.status(), 503);
    let third = ws.create(&codex_body("ws-outage", "gpt-5.5")).await;
    assert_eq!(
        types(&third).last().copied(),
        Some("response.completed"),
        "tried on its resting account: {third:?}"
    );
    assert!(!ws.closed);
}

#[tokio::test]
async fn a_session_whose_account_becomes_limited_is_closed_with_1012_and_moves() {
    let h = Harness::start(&[A, B]).await;
    let mut raw = connect_raw(&h, "ws-move").await;
    raw.send(Message::text(request("ws-move").to_string()))
        .await
        .expect("send");
    let first = read_raw_response(&mut raw).await;
    assert_eq!(types(&first).last(), Some(&"response.completed"));
    let served = frame_accounts(&h)[0].clone();
    let other = if served == "acct-a" {
        "acct-b"
    } else {
        "acct-a"
    };
    h.fake.push_behaviour(
        &served,
        Behaviour::UsageLimit {
            resets_in_seconds: 3600,
        },
    );
    raw.send(Message::text(request("ws-move").to_string()))
        .await
        .expect("send");
    // No error reaches Codex: only the close that makes it reconnect.
    assert_eq!(next_raw(&mut raw).await.err(), Some(Some(1012)));
    assert_eq!(h.account_status(&served).await["state"], "limited");
    // Codex reconnects; the new socket is routed to the other account.
    let mut ws = connect(&h, "ws-move").await;
    let events = ws.create(&codex_body("ws-move", "gpt-5.5")).await;
    assert_eq!(
        types(&events).last(),
        Some(&"response.completed"),
        "{events:?}"
    );
    assert_eq!(frame_accounts(&h).last().map(String::as_str), Some(other));
}

#[tokio::test]
async fn a_limit_learned_elsewhere_moves_the_session_at_its_next_request() {
    let h = Harness::start(&[A, B]).await;
    let mut raw = connect_raw(&h, "ws-learned").await;
    raw.send(Message::text(request("ws-learned").to_string()))
        .await
        .expect("send");
    read_raw_response(&mut raw).await;
    let served = frame_accounts(&h)[0].clone();
    // An HTTP request pinned to the same account meets its limit meanwhile.
    h.fake.push_behaviour(
        &served,
        Behaviour::UsageLimit {
            resets_in_seconds: 3600,
        },
    );
    let key = h.account_status(&served).await["key"]
        .as_str()
        .expect("key")
        .to_string();
    let pinned = h
        .post(
            "/v1/responses",
            &codex_body("elsewhere", "gpt-5.5"),
            &[("x-cma-account", key.as_str())],
        )
        .await;
    assert_eq!(pinned.status(), 429);
    let frames = h.fake.ws_frames().len();
    raw.send(Message::text(request("ws-learned").to_string()))
        .await
        .expect("send");
    assert_eq!(next_raw(&mut raw).await.err(), Some(Some(1012)));
    assert_eq!(
        h.fake.ws_frames().len(),
        frames,
        "the limited account was not asked"
    );
}

#[tokio::test]
async fn a_prewarm_that_moves_the_session_keeps_the_old_accounts_reasoning_out() {
    let h = Harness::start(&[A, B]).await;
    let mut ws = connect(&h, "ws-prewarm").await;
    let first = ws.create(&codex_body("ws-prewarm", "gpt-5.5")).await;
    let served = frame_accounts(&h)[0].clone();
    let reasoning: Vec<Value> = first
        .iter()
        .filter(|e| e["type"] == "response.output_item.done" && e["item"]["type"] == "reasoning")
        .map(|e| e["item"].clone())
        .collect();
    assert!(!reasoning.is_empty(), "the fake wrote reasoning: {first:?}");
    ws.close().await;
    h.fake.push_behaviour(
        &served,
        Behaviour::UsageLimit {
            resets_in_seconds: 3600,
        },
    );
    // Codex reconnects: a prewarm without history moves the session, then the real request
    // carries the old account's reasoning on the same socket.
    let mut ws = connect(&h, "ws-prewarm").await;
    let mut prewarm = codex_body("ws-prewarm", "gpt-5.5");
    prewarm["generate"] = json!(false);
    let events = ws.create(&prewarm).await;
    assert_eq!(
        types(&events).last(),
        Some(&"response.completed"),
        "{events:?}"
    );
    let mut body = codex_body("ws-prewarm", "gpt-5.5");
    let input = body["input"].as_array_mut().expect("input");
    input.extend(reasoning);
    input.push(json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "again"}]}));
    let events = ws.create(&body).await;
    assert_eq!(
        types(&events).last(),
        Some(&"response.completed"),
        "{events:?}"
    );
    let last = h.fake.ws_frames().last().cloned().expect("frames");
    assert_ne!(last.account_id, served);
    assert!(
        !last.body.to_string().contains(&format!("enc:{served}")),
        "{}",
        last.body
    );
}
