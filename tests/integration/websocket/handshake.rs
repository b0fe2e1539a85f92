//! The handshake: what the router's upgrade answer carries (the upstream's headers when the
//! session is named, else the router's own message limit), and an upstream that refuses
//! WebSocket.

use super::*;

/// A `response.create` of about `bytes` bytes.
pub(super) fn frame_of(session: &str, bytes: usize) -> String {
    let mut body = codex_body(session, "gpt-5.5");
    body["input"][0]["content"][0]["text"] = json!("x".repeat(bytes));
    response_create(&body).to_string()
}

/// The limit the router's upgrade answer advertises (Codex 0.171 sends nothing larger).
pub(super) fn advertised(
    raw_answer: &tokio_tungstenite::tungstenite::handshake::client::Response,
) -> usize {
    let value = raw_answer
        .headers()
        .get("x-codex-websocket-max-message-bytes");
    let value = value.expect("the upgrade answer advertises a message limit");
    value.to_str().unwrap().parse().expect("a number")
}

pub(super) async fn connect_answer(
    h: &Harness,
    session: Option<&str>,
) -> (
    Raw,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    let mut request = ws_url(h).into_client_request().expect("ws request");
    if let Some(session) = session {
        for (k, v) in codex_headers(session) {
            request
                .headers_mut()
                .insert(k, v.parse().expect("header value"));
        }
    }
    tokio_tungstenite::connect_async(request)
        .await
        .expect("the router accepts the upgrade")
}

#[tokio::test]
async fn a_handshake_naming_its_session_is_answered_with_the_upstreams_headers() {
    let h = Harness::start(&[A, B]).await;
    let (mut raw, answer) = connect_answer(&h, Some("ws-greeting")).await;
    let header = |name: &str| {
        let value = answer.headers().get(name);
        value.and_then(|v| v.to_str().ok()).map(str::to_string)
    };
    // The upstream socket was opened before the answer: Codex gets the upstream's turn state
    // (for sticky routing), its models etag and its message limit, as without the router.
    let handshakes = || h.fake.requests().iter().filter(|r| r.websocket).count();
    assert_eq!(handshakes(), 1, "one upstream handshake, before the answer");
    let turn = header("x-codex-turn-state").expect("the upstream's turn state");
    assert!(turn.starts_with("ts-acct-"), "{turn}");
    assert_eq!(
        header("x-models-etag").as_deref(),
        Some("\"fake-models-1\"")
    );
    assert_eq!(advertised(&answer), 10 * 1024 * 1024);
    // The first request goes over that same upstream socket, as the account the turn state
    // names.
    raw.send(Message::text(request("ws-greeting").to_string()))
        .await
        .expect("send");
    let events = read_raw_response(&mut raw).await;
    assert_eq!(types(&events).last(), Some(&"response.completed"));
    assert_eq!(handshakes(), 1, "no second upstream socket");
    let served = frame_accounts(&h);
    assert!(
        turn.starts_with(&format!("ts-{}-", served[0])),
        "{turn} vs {served:?}"
    );

    // Without a session name there is nothing to choose by: the router answers itself, with
    // what its socket reads (twice its 128 MiB limit) and no turn state.
    let (_raw, answer) = connect_answer(&h, None).await;
    assert!(answer.headers().get("x-codex-turn-state").is_none());
    assert_eq!(advertised(&answer), 256 * 1024 * 1024);
    assert_eq!(handshakes(), 1, "no upstream socket before a request");
}

#[tokio::test]
async fn an_upstream_without_websocket_sends_codex_back_to_http() {
    let h = Harness::start(&[A]).await;
    h.fake.refuse_websockets(true);
    // A handshake that names its session is tried upstream at once: the upstream's 426 is the
    // answer, which switches Codex to HTTP without a retry.
    let headers = codex_headers("ws-426");
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refusal = match WsClient::connect(&ws_url(&h), &pairs).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(refusal) => refusal,
    };
    assert_eq!(refusal.status, 426);
    // From then on every upgrade gets 426, a session named or not.
    let refusal = match WsClient::connect(&ws_url(&h), &[]).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(refusal) => refusal,
    };
    assert_eq!(refusal.status, 426);
    assert_http_still_serves(&h).await;
}

#[tokio::test]
async fn a_socket_without_a_session_learns_of_an_upstream_without_websocket_at_its_first_request() {
    let h = Harness::start(&[A]).await;
    h.fake.refuse_websockets(true);
    // Nothing names the session at the handshake: the router answers 101 itself, and the
    // upstream's refusal comes with the first request, as a 1012 close.
    let request_without_session = ws_url(&h).into_client_request().expect("ws request");
    let mut raw = tokio_tungstenite::connect_async(request_without_session)
        .await
        .expect("the router accepts the upgrade")
        .0;
    raw.send(Message::text(request("ws-426-later").to_string()))
        .await
        .expect("send");
    assert_eq!(next_raw(&mut raw).await.err(), Some(Some(1012)));
    assert_http_still_serves(&h).await;
}

#[tokio::test]
async fn the_upstreams_message_limit_is_advertised_and_kept_even_above_the_routers() {
    let h = Harness::start_with(&[A], &[("CODEX_PROXY_MAX_BODY_BYTES", "4096")]).await;
    h.fake.set_ws_max_message(Some(65_536));
    let (mut raw, answer) = connect_answer(&h, Some("ws-upstream-limit")).await;
    assert_eq!(advertised(&answer), 65_536);
    // Over the router's own limit, under the upstream's: passed on and served.
    raw.send(Message::text(frame_of("ws-upstream-limit", 20_000)))
        .await
        .expect("send");
    let events = read_raw_response(&mut raw).await;
    assert_eq!(types(&events).last(), Some(&"response.completed"));
    assert_eq!(h.fake.ws_frames().len(), 1);
    // And an upstream with a lower limit than the router's: its limit is the one kept.
    let h = Harness::start(&[A]).await;
    h.fake.set_ws_max_message(Some(8192));
    let (mut raw, answer) = connect_answer(&h, Some("ws-low-limit")).await;
    assert_eq!(advertised(&answer), 8192);
    raw.send(Message::text(frame_of("ws-low-limit", 10_000)))
        .await
        .expect("send");
    let error = next_raw(&mut raw)
        .await
        .expect("an error frame, not a close");
    assert_eq!(
        error["error"]["code"], "websocket_message_too_large",
        "{error}"
    );
    assert!(h.fake.ws_frames().is_empty(), "nothing went upstream");
}
