//! Upgrades and frames the router refuses, each with a clear answer, and the router serving
//! on afterwards.

use super::handshake::{advertised, connect_answer, frame_of};
use super::*;

#[tokio::test]
async fn upgrades_get_426_when_websockets_are_turned_off() {
    let h = Harness::start_with(&[A], &[("CODEX_PROXY_WEBSOCKETS", "0")]).await;
    let refusal = match WsClient::connect(&ws_url(&h), &[]).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(refusal) => refusal,
    };
    assert_eq!(refusal.status, 426);
    assert!(h.fake.requests().iter().all(|r| !r.websocket));
    assert_http_still_serves(&h).await;
}

#[tokio::test]
async fn a_get_without_websocket_headers_gets_400() {
    let h = Harness::start(&[A]).await;
    for path in ["/v1/responses", "/backend-api/codex/responses"] {
        let response = h
            .http
            .get(format!("{}{path}", h.base))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "not_a_websocket_upgrade");
    }
    assert_http_still_serves(&h).await;
}

#[tokio::test]
async fn malformed_frames_get_an_error_frame_and_the_socket_keeps_working() {
    let h = Harness::start(&[A]).await;
    let mut raw = connect_raw(&h, "ws-bad").await;
    let bad = [
        Message::text("this is not json"),
        Message::text(r#"{"type":"response.cancel"}"#),
        Message::binary(vec![1u8, 2, 3]),
    ];
    for message in bad {
        raw.send(message).await.expect("send");
        let error = next_raw(&mut raw)
            .await
            .expect("an error frame, not a close");
        assert_eq!(error["type"], "error");
        assert_eq!(error["status"], 400);
        assert_eq!(error["error"]["code"], "invalid_frame", "{error}");
    }
    raw.send(Message::Ping(b"hi".to_vec().into()))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(WAIT, raw.next())
        .await
        .expect("pong in time");
    assert!(matches!(pong, Some(Ok(Message::Pong(_)))), "{pong:?}");
    assert!(h.fake.ws_frames().is_empty(), "nothing bad went upstream");
    raw.send(Message::text(request("ws-bad").to_string()))
        .await
        .expect("send");
    let events = read_raw_response(&mut raw).await;
    assert_eq!(types(&events).last(), Some(&"response.completed"));
    assert_eq!(text_of(&events), OK_TEXT);
}

#[tokio::test]
async fn a_message_over_the_limit_gets_an_error_codex_does_not_retry_and_the_socket_serves_on() {
    // No limit from the upstream: the router advertises what its socket reads, twice its
    // own limit, so that Codex 0.171 sends a request over the limit on the socket (and gets
    // an error it does not retry) instead of moving the session to HTTP for good.
    let h = Harness::start_with(&[A], &[("CODEX_PROXY_MAX_BODY_BYTES", "4096")]).await;
    h.fake.set_ws_max_message(None);
    for session in [Some("ws-big"), None] {
        let (mut raw, answer) = connect_answer(&h, session).await;
        assert_eq!(advertised(&answer), 8192, "session {session:?}");
        raw.send(Message::text(frame_of("ws-big", 6000)))
            .await
            .expect("send");
        // A 400 (Codex's InvalidRequest: not retried, no fall back to HTTP), not a close.
        let error = next_raw(&mut raw)
            .await
            .expect("an error frame, not a close");
        assert_eq!(error["status"], 400, "{error}");
        assert_eq!(
            error["error"]["code"], "websocket_message_too_large",
            "{error}"
        );
        let message = error["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("4096"),
            "the message names the limit: {message}"
        );
        assert!(h.fake.ws_frames().is_empty(), "nothing went upstream");
        // The same socket serves the next request.
        raw.send(Message::text(request("ws-big").to_string()))
            .await
            .expect("send");
        let events = read_raw_response(&mut raw).await;
        assert_eq!(types(&events).last(), Some(&"response.completed"));
        h.fake.clear_requests();
    }
    // Far over the limit (more than twice), the message is not read: 1009, and the router
    // keeps serving.
    let (mut raw, _) = connect_answer(&h, Some("ws-huge")).await;
    raw.send(Message::text(frame_of("ws-huge", 10_000)))
        .await
        .expect("send");
    assert_eq!(next_raw(&mut raw).await.err(), Some(Some(1009)));
    let mut ws = connect(&h, "ws-small").await;
    let events = ws.create(&codex_body("ws-small", "gpt-5.5")).await;
    assert_eq!(types(&events).last(), Some(&"response.completed"));
    assert_http_still_serves(&h).await;
}
