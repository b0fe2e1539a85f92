//! Later requests on a socket: the bound on requests queued behind a streaming response, and
//! encrypted content from another account healed on the socket's own account.

use std::time::Duration;

use futures_util::SinkExt as _;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{codex_headers, connect_raw, next_raw, request, types, ws_url, A, B};
use crate::harness::*;
use crate::support::{Behaviour, WsClient};

const KEY_B: &str = "acct-b/user-acct-b";

#[tokio::test]
async fn requests_beyond_eight_queued_get_an_error_frame_and_the_socket_keeps_serving() {
    let h = Harness::start(&[A]).await;
    h.fake
        .push_behaviour("acct-a", Behaviour::events(5, Duration::from_millis(100)));
    let mut raw = connect_raw(&h, "ws-queue").await;
    let frame = Message::text(request("ws-queue").to_string());
    // One streams; ten more come meanwhile: eight wait, two are refused.
    for _ in 0..11 {
        raw.send(frame.clone()).await.expect("send");
    }
    let (mut completed, mut refused) = (0, Vec::new());
    while completed < 9 {
        let event = next_raw(&mut raw).await.expect("the socket stays open");
        match event["type"].as_str() {
            Some("response.completed") => completed += 1,
            Some("error") => refused.push(event),
            _ => {}
        }
    }
    assert_eq!(refused.len(), 2, "{refused:?}");
    for event in &refused {
        assert_eq!(event["status"], 400, "{event}");
        assert_eq!(
            event["error"]["code"], "too_many_queued_requests",
            "{event}"
        );
    }
    assert_eq!(
        h.fake.ws_frames().len(),
        9,
        "the refused never went upstream"
    );
}

/// The encrypted reasoning of an HTTP answer (`response.output_item.done`).
async fn reasoning_of(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("body");
    let item = text.split("\n\n").find_map(|event| {
        let data = event.lines().find_map(|l| l.strip_prefix("data: "))?;
        let v: Value = serde_json::from_str(data).ok()?;
        (v["type"] == "response.output_item.done" && v["item"]["type"] == "reasoning")
            .then(|| v["item"].clone())
    });
    item.expect("the answer carries encrypted reasoning")
}

fn user(text: &str) -> Value {
    json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
}

fn encrypted_count(body: &Value) -> usize {
    let items = body["input"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter(|i| i["encrypted_content"].is_string())
        .count()
}

#[tokio::test]
async fn reasoning_from_another_account_on_an_open_socket_is_dropped_after_one_400() {
    // A restart forgot where the item came from: the socket's account refuses it once, the
    // router retries without it on the same socket.
    let h = Harness::start(&[A, B]).await;
    let pin_a = [
        ("x-cma-account", "acct-a/user-acct-a"),
        ("session-id", "heal-http"),
    ];
    let first = h
        .post("/v1/responses", &codex_body("heal-http", "gpt-5.5"), &pin_a)
        .await;
    assert_eq!(served_by(&first), "acct-a");
    let from_a = reasoning_of(first).await;

    let mut headers = codex_headers("heal-ws");
    headers.push(("x-cma-account", KEY_B.to_string()));
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut ws = WsClient::connect(&ws_url(&h), &pairs)
        .await
        .expect("the router accepts the upgrade");
    let opened = ws.create(&codex_body("heal-ws", "gpt-5.5")).await;
    assert_eq!(types(&opened).last(), Some(&"response.completed"));

    let mut body = codex_body("heal-ws", "gpt-5.5");
    body["input"] = json!([user("one"), from_a, user("two")]);
    let events = ws.create(&body).await;
    assert_eq!(
        types(&events).last(),
        Some(&"response.completed"),
        "{events:?}"
    );
    let frames = h.fake.ws_frames();
    let to_b: Vec<_> = frames.iter().filter(|f| f.account_id == "acct-b").collect();
    assert_eq!(to_b.len(), 3, "opened, refused once, then served");
    assert_eq!(to_b[1].socket, to_b[2].socket, "the same socket");
    assert_eq!(encrypted_count(&to_b[1].body), 1);
    assert_eq!(encrypted_count(&to_b[2].body), 0);
}
