//! Upgrades and frames the router refuses, each with a clear answer, and the router serving
//! on afterwards.

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
async fn a_message_over_the_body_limit_closes_with_1009_and_the_router_keeps_serving() {
    let h = Harness::start_with(&[A], &[("CODEX_PROXY_MAX_BODY_BYTES", "4096")]).await;
    let mut raw = connect_raw(&h, "ws-big").await;
    let mut body = codex_body("ws-big", "gpt-5.5");
    body["input"][0]["content"][0]["text"] = json!("x".repeat(8192));
    raw.send(Message::text(response_create(&body).to_string()))
        .await
        .expect("send");
    assert_eq!(next_raw(&mut raw).await.err(), Some(Some(1009)));
    assert!(h.fake.ws_frames().is_empty());
    // A new socket with a small request works, and so does HTTP.
    let mut ws = connect(&h, "ws-small").await;
    let events = ws.create(&codex_body("ws-small", "gpt-5.5")).await;
    assert_eq!(types(&events).last(), Some(&"response.completed"));
    assert_http_still_serves(&h).await;
}
