//! Proves the fakes in `support/` behave like the real issuer and backend, so the router's
//! tests can trust them. `fakes/wire.rs` covers zstd bodies, account-bound
//! `encrypted_content`, remote compaction and the WebSocket.

mod wire;

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest::RequestBuilder;
use serde_json::{json, Value};

use crate::support::{
    decode_payload, encrypted_content_owner, pkce_challenge, sse_events, AccountSpec, Behaviour,
    FakeOpenAi, IssuedTokens,
};

const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
const CALLBACK: &str = "http://localhost:1455/auth/callback";

fn client() -> reqwest::Client {
    let builder = reqwest::Client::builder();
    builder
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn post(url: impl reqwest::IntoUrl) -> RequestBuilder {
    client().post(url)
}

fn add_ada(fake: &FakeOpenAi) -> IssuedTokens {
    fake.add_account(AccountSpec::new("ada@example.com", "acct-ada", "user-ada"))
}

async fn start_with_ada() -> (FakeOpenAi, IssuedTokens) {
    let fake = FakeOpenAi::start().await;
    let tokens = add_ada(&fake);
    (fake, tokens)
}

/// Status and JSON body (`Null` if none) of a request.
async fn send(request: RequestBuilder) -> (u16, Value) {
    let reply = request.send().await.unwrap();
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap_or(Value::Null))
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

async fn post_responses(fake: &FakeOpenAi, access_token: &str) -> reqwest::Response {
    let body = json!({"model": "gpt-5.5", "input": [], "stream": true, "store": false});
    let request = post(format!("{}/responses", fake.upstream_url)).bearer_auth(access_token);
    let request = request.header("chatgpt-account-id", "acct-ada").json(&body);
    request.send().await.unwrap()
}

async fn responses_status(fake: &FakeOpenAi, access_token: &str) -> u16 {
    post_responses(fake, access_token).await.status().as_u16()
}

async fn refresh(fake: &FakeOpenAi, refresh_token: &str) -> (u16, Value) {
    let body = json!({"client_id": CLIENT_ID, "grant_type": "refresh_token",
                      "refresh_token": refresh_token});
    send(post(format!("{}/oauth/token", fake.issuer_url)).json(&body)).await
}

async fn exchange(fake: &FakeOpenAi, code: &str, verifier: &str, redirect: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
        ("code_verifier", verifier),
    ];
    send(post(format!("{}/oauth/token", fake.issuer_url)).form(&form)).await
}

/// Runs `/oauth/authorize` for bo@example.com and returns the code from the redirect.
async fn authorize(fake: &FakeOpenAi, verifier: &str) -> String {
    let challenge = pkce_challenge(verifier);
    let query = [
        ("response_type", "code"),
        ("redirect_uri", CALLBACK),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("state", "xyz"),
        ("login_hint", "bo@example.com"),
    ];
    let request = client().get(format!("{}/oauth/authorize", fake.issuer_url));
    let reply = request.query(&query).send().await.unwrap();
    assert_eq!(reply.status(), 302);
    let location = reply.headers()["location"].to_str().unwrap();
    let code = location.strip_prefix(&format!("{CALLBACK}?code=")).unwrap();
    code.strip_suffix("&state=xyz").unwrap().to_owned()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn refresh_rotates_tokens_and_reuse_revokes_the_family() {
    let (fake, first) = start_with_ada().await;
    let claims = decode_payload(&first.access_token).unwrap();
    let auth = &claims["https://api.openai.com/auth"];
    assert_eq!(auth["chatgpt_account_id"], "acct-ada");
    assert_eq!(claims["exp"].as_i64().unwrap() * 1000, first.expires_at_ms);

    let (status, second) = refresh(&fake, &first.refresh_token).await;
    assert_eq!(status, 200);
    let second_refresh = second["refresh_token"].as_str().unwrap();
    let second_access = second["access_token"].as_str().unwrap();
    assert_ne!(second_refresh, first.refresh_token);
    let current = fake.current_tokens("acct-ada");
    assert_eq!(current.refresh_token, second_refresh);
    assert_eq!(responses_status(&fake, second_access).await, 200);
    // The rotation superseded the first access token.
    assert_eq!(responses_status(&fake, &first.access_token).await, 401);

    let (status, reused) = refresh(&fake, &first.refresh_token).await;
    assert_eq!(status, 401);
    let expected = json!({"message": "Your refresh token has already been used to generate a \
        new access token. Please try signing in again.", "type": "invalid_request_error",
        "param": null, "code": "refresh_token_reused"});
    assert_eq!(reused["error"], expected);
    // Reuse revoked the whole family: the newest tokens stop working too.
    assert_eq!(responses_status(&fake, second_access).await, 401);
    let (status, after) = refresh(&fake, second_refresh).await;
    assert_eq!(
        (status, error_code(&after)),
        (401, "refresh_token_invalidated")
    );
    assert_eq!(fake.refresh_count("acct-ada"), 3);
}

#[tokio::test]
async fn refresh_accepts_forms_and_fails_on_demand() {
    let (fake, first) = start_with_ada().await;
    fake.fail_next_refresh("acct-ada", Some("server_error"), 500);
    let (status, body) = refresh(&fake, &first.refresh_token).await;
    assert_eq!((status, error_code(&body)), (500, "server_error"));

    // A transient failure leaves the refresh token usable; forms work like JSON.
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", &first.refresh_token),
    ];
    let (status, _) = send(post(format!("{}/oauth/token", fake.issuer_url)).form(&form)).await;
    assert_eq!(status, 200);
    assert_eq!(fake.refresh_count("acct-ada"), 2);
    let seen = fake.issuer_requests();
    assert_eq!(seen[1].body["refresh_token"], first.refresh_token.as_str());

    fake.fail_next_refresh("acct-ada", Some("refresh_token_expired"), 401);
    let current = fake.current_tokens("acct-ada").refresh_token;
    assert_eq!(
        error_code(&refresh(&fake, &current).await.1),
        "refresh_token_expired"
    );
    // An expired chain stays dead.
    assert_eq!(refresh(&fake, &current).await.0, 401);
}

#[tokio::test]
async fn expired_or_revoked_access_token_gets_401() {
    let fake = FakeOpenAi::start().await;
    let bo = AccountSpec::new("bo@example.com", "acct-bo", "user-bo").expired();
    let expired = fake.add_account(bo);
    let request = client()
        .get(&fake.models_url)
        .bearer_auth(&expired.access_token);
    let reply = request.send().await.unwrap();
    assert_eq!(reply.status(), 401);
    assert_eq!(reply.headers()["x-fake-account-id"], "acct-bo");
    assert_eq!(error_code(&reply.json().await.unwrap()), "token_expired");

    let tokens = add_ada(&fake);
    fake.expire_access_token("acct-ada");
    assert_eq!(responses_status(&fake, &tokens.access_token).await, 401);
    let (_, renewed) = refresh(&fake, &tokens.refresh_token).await;
    let renewed = renewed["access_token"].as_str().unwrap();
    assert_eq!(responses_status(&fake, renewed).await, 200);

    let usage = client().get(&fake.usage_url).bearer_auth(renewed);
    assert_eq!(
        send(usage.header("chatgpt-account-id", "acct-bo")).await.0,
        403
    );
    assert_eq!(responses_status(&fake, "not-a-token").await, 401);

    // Refused requests are recorded too, with the account their bearer belongs to.
    let seen = fake.requests();
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[0].account_id.as_deref(), Some("acct-bo"));
    assert_eq!(seen[4].account_id, None);
    let bearer = format!("Bearer {}", tokens.access_token);
    assert_eq!(seen[1].header("Authorization"), Some(bearer.as_str()));
}

#[tokio::test]
async fn usage_limit_answers_429_with_reset_time() {
    let (fake, tokens) = start_with_ada().await;
    let limit = Behaviour::UsageLimit {
        resets_in_seconds: 120,
    };
    fake.push_behaviour("acct-ada", limit);
    let reply = post_responses(&fake, &tokens.access_token).await;
    assert_eq!(reply.status(), 429);
    let headers = reply.headers().clone();
    assert_eq!(headers["x-codex-primary-used-percent"], "100");
    let reset_at: i64 = headers["x-codex-primary-reset-at"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = reply.json().await.unwrap();
    let error = &body["error"];
    assert_eq!(error["type"], "usage_limit_reached");
    assert_eq!(error["plan_type"], "plus");
    assert_eq!(error["resets_in_seconds"], 120);
    assert_eq!(error["resets_at"].as_i64().unwrap(), reset_at);
    // The queued behaviour was used up; the default answers again.
    assert_eq!(responses_status(&fake, &tokens.access_token).await, 200);
}

#[tokio::test]
async fn ok_stream_parses_event_by_event() {
    let (fake, tokens) = start_with_ada().await;
    fake.set_usage("acct-ada", 42.0, 17.5);
    let gap = Duration::from_millis(30);
    let text = "one two three".to_owned();
    fake.push_behaviour(
        "acct-ada",
        Behaviour::Ok {
            text,
            deltas: 3,
            gap,
        },
    );
    let started = Instant::now();
    let reply = post_responses(&fake, &tokens.access_token).await;
    let headers = reply.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["x-codex-primary-used-percent"], "42");
    assert_eq!(headers["x-codex-secondary-window-minutes"], "10080");
    assert_eq!(headers["x-fake-account-id"], "acct-ada");
    let events = sse_events(&reply.text().await.unwrap());
    assert!(started.elapsed() >= 2 * gap);

    // The order of codex-capture §5.1, plus `codex.rate_limits` after `response.created`.
    let expected = "created codex.rate_limits in_progress output_item.added content_part.added \
                    output_text.delta output_text.delta output_text.delta output_text.done \
                    content_part.done output_item.done completed";
    let kinds = types(&events);
    let short: Vec<&str> = kinds
        .iter()
        .map(|t| t.trim_start_matches("response."))
        .collect();
    assert_eq!(short.join(" "), expected);
    let deltas: String = events.iter().filter_map(|e| e["delta"].as_str()).collect();
    assert_eq!(deltas, "one two three");
    assert_eq!(events[1]["rate_limits"]["secondary"]["used_percent"], 17.5);
    assert_eq!(events[10]["item"]["content"][0]["text"], "one two three");
    let completed = &events[11]["response"];
    assert_eq!(completed["id"], events[0]["response"]["id"]);
    assert_eq!(completed["usage"]["input_tokens"], 1234);
}

#[tokio::test]
async fn cut_after_really_drops_the_connection() {
    let (fake, tokens) = start_with_ada().await;
    let cut = Behaviour::CutAfter {
        deltas_before_cut: 2,
    };
    fake.push_behaviour("acct-ada", cut);
    let reply = post_responses(&fake, &tokens.access_token).await;
    assert_eq!(reply.status(), 200);
    let (mut text, mut stream, mut failed) = (String::new(), reply.bytes_stream(), false);
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => failed = true,
        }
    }
    // A transport error, not a clean end of body.
    assert!(failed);
    let events = sse_events(&text);
    let deltas = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta");
    assert_eq!(deltas.count(), 2);
    assert!(!types(&events).contains(&"response.completed"));
}

#[tokio::test]
async fn reset_stall_and_failed_first_never_complete() {
    let (fake, tokens) = start_with_ada().await;
    let failed = Behaviour::FailedFirst {
        code: "insufficient_quota".into(),
    };
    let stall = Behaviour::StallBeforeHeaders {
        d: Duration::from_secs(5),
    };
    for behaviour in [Behaviour::Reset, failed, stall] {
        fake.push_behaviour("acct-ada", behaviour);
    }
    let request = post(format!("{}/responses", fake.upstream_url)).json(&json!({"input": []}));
    let reset = request.bearer_auth(&tokens.access_token).send().await;
    assert!(reset.is_err(), "no HTTP response at all");

    let reply = post_responses(&fake, &tokens.access_token).await;
    let events = sse_events(&reply.text().await.unwrap());
    assert_eq!(types(&events), ["response.failed"]);
    assert_eq!(events[0]["response"]["error"]["code"], "insufficient_quota");

    let stalled = post_responses(&fake, &tokens.access_token);
    let waited = tokio::time::timeout(Duration::from_millis(300), stalled).await;
    assert!(waited.is_err(), "headers arrived during the stall");
}

#[tokio::test]
async fn compact_models_and_usage_answer_their_shapes() {
    let (fake, tokens) = start_with_ada().await;
    let bearer = tokens.access_token.as_str();
    fake.set_usage("acct-ada", 100.0, 20.0);
    let hi = json!([{"type": "input_text", "text": "hi"}]);
    let user = json!({"type": "message", "role": "user", "content": hi});
    let developer = json!({"type": "message", "role": "developer", "content": []});
    let body = json!({"model": "gpt-5.5", "input": [user, developer]});
    let compact = post(format!("{}/responses/compact", fake.upstream_url)).bearer_auth(bearer);
    let (_, compact) = send(compact.json(&body)).await;
    let output = compact["output"].as_array().unwrap();
    assert_eq!(output.len(), 2, "{compact}");
    assert_eq!(output[0], user);
    assert_eq!(output[1]["type"], "compaction");
    let blob = output[1]["encrypted_content"].as_str().unwrap();
    assert_eq!(encrypted_content_owner(blob), Some("acct-ada"));

    let models_url = format!("{}?client_version=0.169.0", fake.models_url);
    let models = client()
        .get(models_url)
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    assert!(models.headers().contains_key("etag"));
    assert_eq!(models.json::<Value>().await.unwrap(), json!({"models": []}));
    let seen = fake.requests();
    assert_eq!(seen[1].query.as_deref(), Some("client_version=0.169.0"));

    let (_, usage) = send(client().get(&fake.usage_url).bearer_auth(bearer)).await;
    let limits = &usage["rate_limit"];
    assert_eq!(limits["limit_reached"], true);
    assert_eq!(limits["secondary_window"]["used_percent"], 20.0);
    assert_eq!(limits["primary_window"]["limit_window_seconds"], 18000);
}

#[tokio::test]
async fn browser_login_checks_pkce_and_signs_in_the_hinted_account() {
    let fake = FakeOpenAi::start().await;
    add_ada(&fake);
    fake.add_account(AccountSpec::new("bo@example.com", "acct-bo", "user-bo"));
    let verifier = "a-verifier-long-enough-for-pkce-0123456789";
    let code = authorize(&fake, verifier).await;
    let (_, refused) = exchange(&fake, &code, "wrong-verifier", CALLBACK).await;
    assert_eq!(refused["error"], "invalid_grant");

    let code = authorize(&fake, verifier).await;
    let (status, tokens) = exchange(&fake, &code, verifier, CALLBACK).await;
    assert_eq!(status, 200);
    let claims = decode_payload(tokens["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["email"], "bo@example.com");
    let current = fake.current_tokens("acct-bo");
    assert_eq!(current.access_token, tokens["access_token"]);
    // Codes are single-use.
    let (_, again) = exchange(&fake, &code, verifier, CALLBACK).await;
    assert_eq!(again["error"], "invalid_grant");
}

#[tokio::test]
async fn device_login_is_pending_once_then_yields_a_code() {
    let (fake, _) = start_with_ada().await;
    let usercode_url = format!("{}/api/accounts/deviceauth/usercode", fake.issuer_url);
    let (_, start) = send(post(usercode_url).json(&json!({"client_id": CLIENT_ID}))).await;
    assert_eq!(start["interval"], "1");
    let poll = json!({"device_auth_id": start["device_auth_id"],
                      "user_code": start["user_code"]});
    let token_url = format!("{}/api/accounts/deviceauth/token", fake.issuer_url);
    assert_eq!(send(post(&token_url).json(&poll)).await.0, 403);
    let (status, granted) = send(post(&token_url).json(&poll)).await;
    assert_eq!(status, 200);
    let code = granted["authorization_code"].as_str().unwrap();
    let verifier = granted["code_verifier"].as_str().unwrap();
    let callback = format!("{}/deviceauth/callback", fake.issuer_url);
    assert_eq!(exchange(&fake, code, verifier, &callback).await.0, 200);
}
