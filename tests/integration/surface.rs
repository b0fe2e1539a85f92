//! The HTTP surface: streaming passthrough, header rewriting, endpoints, and bad input.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::harness::*;
use crate::support::Behaviour;

#[tokio::test]
async fn streams_events_as_they_come_without_buffering() {
    let h = Harness::start(&[account("a@example.com", "acct-a")]).await;
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::Ok {
            text: "one two three four".into(),
            deltas: 4,
            gap: Duration::from_millis(300),
        },
    );
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let started = Instant::now();
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    let mut first_delta_at = None;
    while let Some(chunk) = stream.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        if first_delta_at.is_none() && seen.contains("response.output_text.delta") {
            first_delta_at = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    let first = first_delta_at.expect("a delta arrived");
    // Four deltas 300 ms apart: a buffering proxy would deliver the first with the last.
    assert!(
        total - first >= Duration::from_millis(700),
        "first delta at {first:?}, end at {total:?}"
    );
    assert!(seen.contains("response.completed"));
}

#[tokio::test]
async fn rewrites_credentials_and_never_forwards_the_client_bearer() {
    let h = Harness::start_with(
        &[account("a@example.com", "acct-a")],
        &[("CODEX_PROXY_TOKEN", "proxy-secret")],
    )
    .await;
    let response = h
        .post(
            "/v1/responses",
            &codex_body("s1", "gpt-5.5"),
            &[
                ("authorization", "Bearer proxy-secret"),
                ("chatgpt-account-id", "someone-else"),
                ("session-id", "s1"),
                ("originator", "codex_exec"),
                ("x-codex-turn-metadata", "{\"turn_id\":\"t\"}"),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let seen = h
        .fake
        .requests()
        .into_iter()
        .last()
        .expect("the fake saw the request");
    let expected = format!("Bearer {}", h.fake.current_tokens("acct-a").access_token);
    assert_eq!(seen.header("authorization"), Some(expected.as_str()));
    assert_eq!(seen.header("chatgpt-account-id"), Some("acct-a"));
    assert_eq!(seen.header("originator"), Some("codex_exec"));
    assert_eq!(seen.header("session-id"), Some("s1"));
    assert_eq!(
        seen.header("x-codex-turn-metadata"),
        Some("{\"turn_id\":\"t\"}")
    );
    assert!(
        seen.headers
            .iter()
            .all(|(_, v)| !v.contains("proxy-secret")),
        "client bearer leaked: {:?}",
        seen.headers
    );
    assert_eq!(
        seen.body["prompt_cache_key"], "s1",
        "the body goes through unchanged"
    );
}

#[tokio::test]
async fn compact_and_models_are_forwarded() {
    let h = Harness::start(&[account("a@example.com", "acct-a")]).await;
    let body = json!({"model": "gpt-5.5", "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]});
    let compact = h.post("/v1/responses/compact", &body, &[]).await;
    assert_eq!(compact.status(), 200);
    let compacted: Value = compact.json().await.unwrap();
    let last = compacted["output"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["type"], "compaction");
    let models = h
        .http
        .get(format!("{}/v1/models?client_version=0.169.0", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    assert!(models.json::<Value>().await.unwrap()["models"].is_array());
    let seen = h.model_requests();
    assert!(seen
        .iter()
        .any(|r| r.path.ends_with("/models") && r.account_id.as_deref() == Some("acct-a")));
}

#[tokio::test]
async fn status_shows_accounts_and_never_a_token() {
    let h = Harness::start(&[
        account("a@example.com", "acct-a"),
        account("b@example.com", "acct-b"),
    ])
    .await;
    assert_eq!(h.respond("s1").await.status(), 200);
    let status = h.status().await;
    assert_eq!(status["accounts"].as_array().unwrap().len(), 2);
    assert_eq!(status["accounts"][0]["email"], "a@example.com");
    assert_eq!(status["accounts"][0]["state"], "ok");
    assert_eq!(status["strategy"], "sticky");
    assert_eq!(status["bindings"], 1);
    let text = status.to_string();
    for id in ["acct-a", "acct-b"] {
        let tokens = h.fake.current_tokens(id);
        for secret in [
            &tokens.access_token,
            &tokens.refresh_token,
            &tokens.id_token,
        ] {
            assert!(!text.contains(secret.as_str()), "/status leaked a token");
        }
    }
}

#[tokio::test]
async fn malformed_bodies_get_a_json_400() {
    let h = Harness::start(&[account("a@example.com", "acct-a")]).await;
    for body in ["not json", "{\"model\":\"gpt-5.5\",\"input\":[", "[1,2]"] {
        let response = h
            .http
            .post(format!("{}/v1/responses", h.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_json", "{body}");
    }
    assert!(h.model_requests().is_empty(), "nothing bad went upstream");
}

#[tokio::test]
async fn oversized_body_gets_413_and_the_router_keeps_serving() {
    let h = Harness::start_with(
        &[account("a@example.com", "acct-a")],
        &[("CODEX_PROXY_MAX_BODY_BYTES", "4096")],
    )
    .await;
    let mut body = codex_body("s1", "gpt-5.5");
    body["input"][0]["content"][0]["text"] = Value::String("x".repeat(10_000));
    let response = h.post("/v1/responses", &body, &[]).await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("CODEX_PROXY_MAX_BODY_BYTES"));
    // A chunked body without a length is cut at the limit too.
    let chunks =
        futures_util::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
    let response = h
        .http
        .post(format!("{}/v1/responses", h.base))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(h.respond("s1").await.status(), 200);
}

#[tokio::test]
async fn proxy_token_is_required_except_for_health() {
    let h = Harness::start_with(
        &[account("a@example.com", "acct-a")],
        &[("CODEX_PROXY_TOKEN", "proxy-secret")],
    )
    .await;
    let body = codex_body("s1", "gpt-5.5");
    assert_eq!(h.post("/v1/responses", &body, &[]).await.status(), 401);
    let wrong = h
        .post(
            "/v1/responses",
            &body,
            &[("authorization", "Bearer proxy-secreT")],
        )
        .await;
    assert_eq!(wrong.status(), 401);
    let error: Value = wrong.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_proxy_token");
    assert_eq!(
        h.http
            .get(format!("{}/status", h.base))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        h.http
            .get(format!("{}/health", h.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ok = h
        .post(
            "/v1/responses",
            &body,
            &[("authorization", "Bearer proxy-secret")],
        )
        .await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn foreign_hosts_and_browser_origins_are_refused() {
    let h = Harness::start(&[account("a@example.com", "acct-a")]).await;
    let body = codex_body("s1", "gpt-5.5");
    let rebound = h
        .post("/v1/responses", &body, &[("host", "attacker.example:8787")])
        .await;
    assert_eq!(rebound.status(), 403);
    let browser = h
        .post(
            "/v1/responses",
            &body,
            &[("origin", "https://attacker.example")],
        )
        .await;
    assert_eq!(browser.status(), 403);
    let status = h
        .http
        .get(format!("{}/status", h.base))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 403);
    assert!(h.model_requests().is_empty());
    let localhost = h
        .post("/v1/responses", &body, &[("host", "localhost")])
        .await;
    assert_eq!(localhost.status(), 200);
}

/// The dashboard talks to the app through Tauri commands, never to the proxy, so no Origin
/// is ours: not even the default ones every Tauri app's webview has.
#[tokio::test]
async fn no_browser_origin_is_accepted_not_even_tauris_own() {
    let h = Harness::start(&[account("a@example.com", "acct-a")]).await;
    for origin in [
        "tauri://localhost",
        "http://tauri.localhost",
        "https://tauri.localhost",
        "null",
    ] {
        let response = h
            .http
            .get(format!("{}/status", h.base))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "origin {origin}");
    }
    let plain = h
        .http
        .get(format!("{}/status", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
}

#[tokio::test]
async fn no_account_at_all_says_to_run_cma_login() {
    let h = Harness::start(&[]).await;
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "no_accounts");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cma login"));
}

#[tokio::test]
async fn unknown_paths_get_a_json_404() {
    // Outside `/v1/` and `/backend-api/codex/` (whose unknown paths go upstream: other_paths).
    let h = Harness::start(&[account("a@example.com", "acct-a")]).await;
    let response = h.http.get(format!("{}/nope", h.base)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "not_found");
}

#[tokio::test]
async fn what_a_newer_codex_or_backend_sends_passes_through_unchanged() {
    let h = Harness::start(&[account("a@example.com", "acct-a")]).await;
    h.fake.push_behaviour("acct-a", Behaviour::Unfamiliar);
    // A header no release of Codex sent so far goes upstream as it came.
    let response = h
        .post(
            "/v1/responses",
            &codex_body("newer", "gpt-5.5"),
            &[
                ("session-id", "newer"),
                ("x-codex-future-feature", "on; v=2"),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("body");
    // An event type no Codex knows yet reaches the client in place, byte for byte.
    let unfamiliar = r#"{"type":"codex.unfamiliar_event","from":"a newer backend"}"#;
    let at = body
        .find("codex.unfamiliar_event")
        .expect("the unfamiliar event");
    assert!(body.contains(&format!("data: {unfamiliar}\n")), "{body}");
    let created = body.find("response.created").expect("response.created");
    let completed = body.find("response.completed").expect("response.completed");
    assert!(created < at && at < completed, "in its place: {body}");
    let seen = h.model_requests();
    let sent = seen.last().expect("the request went upstream");
    assert_eq!(sent.header("x-codex-future-feature"), Some("on; v=2"));
}
