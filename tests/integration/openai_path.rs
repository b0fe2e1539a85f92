//! Codex's "OpenAI" provider path through the router: `/backend-api/codex/*` aliases, zstd
//! request bodies (read to route, forwarded intact), bad and oversized encodings, and the
//! pooled usage endpoints Codex reads to show (and enforce) its limits.

use serde_json::Value;

use crate::harness::*;
use crate::support::Behaviour;

const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");

fn zstd(bytes: &[u8]) -> Vec<u8> {
    let level = ruzstd::encoding::CompressionLevel::Fastest;
    ruzstd::encoding::compress_to_vec(bytes, level)
}

impl Harness {
    async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.body(body).send().await.expect("router answers")
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self.http.get(format!("{}{path}", self.base)).send().await;
        let response = response.expect("router answers");
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("json")
    }
}

#[tokio::test]
async fn backend_api_codex_paths_serve_like_v1() {
    let h = Harness::start(&[A]).await;
    let body = codex_body("alias-1", "gpt-5.5");
    let response = h
        .post(
            "/backend-api/codex/responses",
            &body,
            &[("session-id", "alias-1")],
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "acct-a");
    let types = event_types(response).await;
    assert_eq!(
        types.last().map(String::as_str),
        Some("response.completed"),
        "{types:?}"
    );
}

#[tokio::test]
async fn a_zstd_body_is_routed_by_its_session_and_forwarded_as_it_came() {
    let h = Harness::start_with(&[A, B], &[("CODEX_PROXY_STRATEGY", "round-robin")]).await;
    // The session's key is only inside the compressed body.
    let json = codex_body("zstd-session", "gpt-5.5").to_string();
    let compressed = zstd(json.as_bytes());
    let headers = [("content-encoding", "zstd")];
    let first = h
        .post_raw("/v1/responses", compressed.clone(), &headers)
        .await;
    assert_eq!(first.status(), 200);
    let account = served_by(&first);
    let _ = first.bytes().await;
    // Round robin would move a new session on; this one stays, found by its key.
    for _ in 0..3 {
        let again = h
            .post_raw("/v1/responses", compressed.clone(), &headers)
            .await;
        assert_eq!(
            served_by(&again),
            account,
            "the session stays on its account"
        );
        let _ = again.bytes().await;
    }
    let seen = h.model_requests();
    let last = seen.last().expect("the fake saw the requests");
    assert_eq!(last.content_encoding.as_deref(), Some("zstd"));
    assert_eq!(
        &last.raw_body[..],
        &compressed[..],
        "the compressed bytes, untouched"
    );
    assert_eq!(last.body["prompt_cache_key"], "zstd-session");
}

#[tokio::test]
async fn bad_zstd_a_zstd_bomb_and_unknown_encodings_get_clear_errors_and_the_router_serves_on() {
    let h = Harness::start_with(&[A], &[("CODEX_PROXY_MAX_BODY_BYTES", "1048576")]).await;
    let not_zstd = codex_body("bad-1", "gpt-5.5").to_string().into_bytes();
    let response = h
        .post_raw(
            "/v1/responses",
            not_zstd.clone(),
            &[("content-encoding", "zstd")],
        )
        .await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "bad_content_encoding", "{error}");
    // 16 MiB of spaces inside a JSON string: a few KB compressed, far over the 1 MiB limit.
    let mut bomb = br#"{"model":"gpt-5.5","input":""#.to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 16 << 20));
    bomb.extend(br#""}"#);
    let bomb = zstd(&bomb);
    assert!(
        bomb.len() < 1 << 20,
        "the bomb itself is small: {}",
        bomb.len()
    );
    let response = h
        .post_raw("/v1/responses", bomb, &[("content-encoding", "zstd")])
        .await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "body_too_large", "{error}");
    let response = h
        .post_raw("/v1/responses", not_zstd, &[("content-encoding", "br")])
        .await;
    assert_eq!(response.status(), 415);
    assert!(h.model_requests().is_empty(), "nothing bad went upstream");
    assert_eq!(h.respond("bad-after").await.status(), 200, "still serving");
}

#[tokio::test]
async fn pooled_usage_shows_the_pool_not_one_account() {
    let h = Harness::start(&[A, B]).await;
    h.fake.set_usage("acct-a", 40.0, 10.0);
    h.fake.set_usage("acct-b", 20.0, 30.0);
    // Usage arrives with answers; one request for each account.
    let _ = h
        .post(
            "/v1/responses",
            &codex_body("u-a", "gpt-5.5"),
            &[("x-cma-account", "acct-a/user-acct-a")],
        )
        .await
        .bytes()
        .await;
    let _ = h
        .post(
            "/v1/responses",
            &codex_body("u-b", "gpt-5.5"),
            &[("x-cma-account", "acct-b/user-acct-b")],
        )
        .await
        .bytes()
        .await;
    for path in ["/backend-api/wham/usage", "/api/codex/usage"] {
        let u = h.get_json(path).await;
        let limit = &u["rate_limit"];
        assert_eq!(limit["allowed"], true, "{u}");
        assert_eq!(limit["limit_reached"], false, "{u}");
        assert_eq!(limit["primary_window"]["used_percent"], 30.0, "{u}");
        assert_eq!(limit["secondary_window"]["used_percent"], 20.0, "{u}");
        assert!(limit["primary_window"]["reset_at"].is_i64(), "{u}");
    }
    // A reaches its limit: B takes over, the pool is still allowed, A counts as full.
    let limit = Behaviour::UsageLimit {
        resets_in_seconds: 3600,
    };
    h.fake.push_behaviour("acct-a", limit.clone());
    let served = h.respond("u-1").await;
    assert_eq!(served_by(&served), "acct-b");
    let _ = served.bytes().await;
    let u = h.get_json("/backend-api/wham/usage").await;
    assert_eq!(u["rate_limit"]["allowed"], true, "{u}");
    assert_eq!(
        u["rate_limit"]["primary_window"]["used_percent"], 60.0,
        "{u}"
    );
    // B too: now the pool is limited, and says when the first account comes back.
    h.fake.push_behaviour("acct-b", limit);
    let refused = h.respond("u-2").await;
    assert_eq!(refused.status(), 429);
    let u = h.get_json("/api/codex/usage").await;
    assert_eq!(u["rate_limit"]["limit_reached"], true, "{u}");
    assert_eq!(u["rate_limit"]["allowed"], false, "{u}");
    assert_eq!(
        u["rate_limit_reached_type"]["type"], "rate_limit_reached",
        "{u}"
    );
    let reset = u["rate_limit"]["primary_window"]["reset_after_seconds"].as_i64();
    assert!(reset.is_some_and(|s| (3000..=3600).contains(&s)), "{u}");
}
