//! Fake OAuth issuer (protocol §10.2): refresh with rotation and reuse detection, the browser
//! code flow with PKCE, the device-code flow, and revoke, all on the shared account registry.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Response, Uri};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::accounts::{IssuedTokens, RefreshOutcome};
use super::fake_backend::{json_response, response, SeenRequest};
use super::{lock, Shared};

/// An authorization code waiting for its exchange.
struct PendingCode {
    account: usize,
    code_challenge: Option<String>,
    redirect_uri: String,
}

/// A device-code login waiting for its polls.
struct DeviceLogin {
    account: usize,
    polls: usize,
}

/// Issuer-side login state, kept in the shared registry.
#[derive(Default)]
pub(super) struct LoginState {
    codes: HashMap<String, PendingCode>,
    devices: HashMap<String, DeviceLogin>,
    /// Account the next browser or device login signs in as, overriding `login_hint`.
    pub next_login: Option<String>,
    /// Description for an `error=access_denied` redirect on the next authorize.
    pub next_login_error: Option<String>,
}

pub(super) fn router(shared: Shared) -> Router {
    Router::new()
        .route("/oauth/authorize", get(authorize))
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
        .route("/api/accounts/deviceauth/usercode", post(device_usercode))
        .route("/api/accounts/deviceauth/token", post(device_token))
        .route(
            "/codex/device",
            get(|| async { "Enter the code shown by Codex (fake issuer)." }),
        )
        .with_state(shared)
}

/// base64url-no-pad(SHA-256(verifier)), the S256 PKCE challenge.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Token-endpoint parameters from a JSON body (how Codex refreshes) or a form (how it logs in).
fn parse_params(headers: &HeaderMap, body: &[u8]) -> Map<String, Value> {
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json {
        return serde_json::from_slice(body).unwrap_or_default();
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), Value::String(percent_decode(value)))
        })
        .collect()
}

fn param<'a>(params: &'a Map<String, Value>, name: &str) -> &'a str {
    params.get(name).and_then(Value::as_str).unwrap_or("")
}

fn record(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    params: &Map<String, Value>,
    account_id: Option<String>,
) {
    let mut seen = SeenRequest::capture(method, uri, headers, Value::Object(params.clone()));
    seen.account_id = account_id;
    let mut registry = lock(shared);
    if registry.recording {
        registry.issuer_requests.push(seen);
    }
}

fn invalid_grant(description: &str) -> Response<Body> {
    json_response(
        400,
        &[],
        &json!({"error": "invalid_grant", "error_description": description}),
    )
}

fn tokens_json(tokens: &IssuedTokens, ttl_seconds: u64) -> Value {
    json!({
        "access_token": tokens.access_token, "refresh_token": tokens.refresh_token,
        "id_token": tokens.id_token, "token_type": "Bearer", "expires_in": ttl_seconds,
        "scope": "openid profile email offline_access",
    })
}

/// The account a new login signs in as: the forced one, the hinted e-mail, else the first.
fn choose_login_account(shared: &Shared, login_hint: Option<&str>) -> Option<usize> {
    let mut registry = lock(shared);
    if let Some(forced) = registry.login.next_login.take() {
        return registry.find(&forced);
    }
    let hinted =
        login_hint.and_then(|email| registry.accounts.iter().position(|a| a.spec.email == email));
    hinted.or((!registry.accounts.is_empty()).then_some(0))
}

async fn authorize(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let params: Map<String, Value> = query
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    record(&shared, &method, &uri, &headers, &params, None);
    let Some(redirect_uri) = query.get("redirect_uri") else {
        return invalid_grant("redirect_uri is required");
    };
    let state = percent_encode(query.get("state").map(String::as_str).unwrap_or(""));
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let redirect = |tail: String| {
        response(
            302,
            &[(
                "location".to_owned(),
                format!("{redirect_uri}{separator}{tail}&state={state}"),
            )],
            Body::empty(),
        )
    };
    let deny = |description: &str| {
        redirect(format!(
            "error=access_denied&error_description={}",
            percent_encode(description)
        ))
    };
    let forced_error = lock(&shared).login.next_login_error.take();
    if let Some(description) = forced_error {
        return deny(&description);
    }
    let Some(account) = choose_login_account(&shared, query.get("login_hint").map(String::as_str))
    else {
        return deny("no account is registered with the fake issuer");
    };
    let mut registry = lock(&shared);
    let code = registry.unique("ac");
    let pending = PendingCode {
        account,
        code_challenge: query.get("code_challenge").cloned(),
        redirect_uri: redirect_uri.clone(),
    };
    registry.login.codes.insert(code.clone(), pending);
    redirect(format!("code={}", percent_encode(&code)))
}

async fn token(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let params = parse_params(&headers, &body);
    let owner = {
        let registry = lock(&shared);
        let owner = registry.owner_of_refresh(param(&params, "refresh_token"));
        owner.map(|i| registry.accounts[i].spec.account_id.clone())
    };
    record(&shared, &method, &uri, &headers, &params, owner);
    match param(&params, "grant_type") {
        "refresh_token" => refresh(&shared, param(&params, "refresh_token")).await,
        "authorization_code" => exchange_code(&shared, &params),
        "urn:ietf:params:oauth:grant-type:token-exchange" => json_response(
            200,
            &[],
            &json!({"access_token": format!("sk-fake-{}", lock(&shared).unique("key"))}),
        ),
        other => json_response(
            400,
            &[],
            &json!({"error": "unsupported_grant_type", "error_description": format!("grant_type {other:?} is not supported")}),
        ),
    }
}

async fn refresh(shared: &Shared, refresh_token: &str) -> Response<Body> {
    let delay = lock(shared).refresh_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (outcome, omits, answer_delay) = {
        let mut registry = lock(shared);
        let outcome = registry.refresh(refresh_token);
        let omits = registry
            .owner_of_refresh(refresh_token)
            .map(|i| registry.accounts[i].refresh_omits.clone())
            .unwrap_or_default();
        (outcome, omits, registry.refresh_answer_delay)
    };
    if !answer_delay.is_zero() {
        tokio::time::sleep(answer_delay).await;
    }
    match outcome {
        RefreshOutcome::Issued(tokens, ttl) => {
            let mut answer = tokens_json(&tokens, ttl.as_secs());
            if let Some(fields) = answer.as_object_mut() {
                for omitted in &omits {
                    fields.remove(omitted);
                }
            }
            json_response(200, &[], &answer)
        }
        RefreshOutcome::Failed { status, body } => json_response(status, &[], &body),
    }
}

fn exchange_code(shared: &Shared, params: &Map<String, Value>) -> Response<Body> {
    let mut registry = lock(shared);
    // A code is single-use even when the exchange fails, as with a real OAuth server.
    let Some(pending) = registry.login.codes.remove(param(params, "code")) else {
        return invalid_grant("the authorization code is unknown or was already used");
    };
    if param(params, "redirect_uri") != pending.redirect_uri {
        return invalid_grant("redirect_uri does not match the authorize request");
    }
    if let Some(challenge) = &pending.code_challenge {
        if pkce_challenge(param(params, "code_verifier")) != *challenge {
            return invalid_grant("code_verifier does not match the code_challenge");
        }
    }
    let tokens = registry.sign_in(pending.account, false);
    let ttl = registry.accounts[pending.account].spec.access_ttl;
    json_response(200, &[], &tokens_json(&tokens, ttl.as_secs()))
}

async fn revoke(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let params = parse_params(&headers, &body);
    record(&shared, &method, &uri, &headers, &params, None);
    lock(&shared).revoke(param(&params, "token"));
    json_response(200, &[], &json!({}))
}

async fn device_usercode(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let params = parse_params(&headers, &body);
    record(&shared, &method, &uri, &headers, &params, None);
    let Some(account) = choose_login_account(&shared, None) else {
        return json_response(
            400,
            &[],
            &json!({"error": {"code": "no_account", "message": "no account is registered with the fake issuer"}}),
        );
    };
    let mut registry = lock(&shared);
    let device_auth_id = registry.unique("deviceauth");
    let user_code = format!("FAKE-{:04}", registry.login.devices.len() + 1);
    registry
        .login
        .devices
        .insert(device_auth_id.clone(), DeviceLogin { account, polls: 0 });
    // `interval` must be a string: Codex parses it through `String` (protocol §1.6).
    json_response(
        200,
        &[],
        &json!({"device_auth_id": device_auth_id, "user_code": user_code, "interval": "1"}),
    )
}

async fn device_token(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let params = parse_params(&headers, &body);
    record(&shared, &method, &uri, &headers, &params, None);
    let mut registry = lock(&shared);
    let id = param(&params, "device_auth_id").to_owned();
    let Some(login) = registry.login.devices.get_mut(&id) else {
        return json_response(
            400,
            &[],
            &json!({"error": {"code": "unknown_device_auth", "message": "unknown device_auth_id"}}),
        );
    };
    login.polls += 1;
    if login.polls == 1 {
        // Codex treats 403 and 404 as "the user has not entered the code yet".
        return json_response(
            403,
            &[],
            &json!({"error": {"code": "deviceauth_authorization_pending", "message": "pending"}}),
        );
    }
    let account = login.account;
    registry.login.devices.remove(&id);
    let code_verifier = format!("{}{}", registry.unique("verifier"), registry.unique("v"));
    let code = registry.unique("ac");
    let code_challenge = pkce_challenge(&code_verifier);
    let redirect_uri = format!("{}/deviceauth/callback", registry.issuer_url);
    let pending = PendingCode {
        account,
        code_challenge: Some(code_challenge.clone()),
        redirect_uri,
    };
    registry.login.codes.insert(code.clone(), pending);
    json_response(
        200,
        &[],
        &json!({"authorization_code": code, "code_challenge": code_challenge, "code_verifier": code_verifier}),
    )
}
