//! The gate every backend request passes (protocol §10.1.2): record it, undo its
//! `Content-Encoding`, check the bearer and `ChatGPT-Account-ID`.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Response, Uri};
use serde_json::{json, Value};

use super::accounts::AccessCheck;
use super::content_encoding;
use super::fake_backend::json_response;
use super::quota::Usage;
use super::seen_request::SeenRequest;
use super::{lock, Shared};

/// A request that passed the bearer check.
pub(super) struct Admitted {
    pub account: usize,
    pub account_id: String,
    /// The decoded JSON body (`Null` if none or not JSON), or a WebSocket frame.
    pub body: Value,
    /// `x-fake-account-id` and `x-request-id`, sent on every answer.
    pub headers: Vec<(String, String)>,
    pub plan: String,
    pub usage: Usage,
}

impl Admitted {
    /// One `response.create` frame on a socket admitted earlier, with the account's usage as
    /// it is now (tests change it between frames).
    pub fn frame(shared: &Shared, socket: &Admitted, body: Value) -> Admitted {
        let mut registry = lock(shared);
        let mut headers = socket.headers.clone();
        if let Some(request_id) = headers.iter_mut().find(|(n, _)| n == "x-request-id") {
            request_id.1 = registry.unique("req");
        }
        let state = &registry.accounts[socket.account];
        Admitted {
            account: socket.account,
            account_id: socket.account_id.clone(),
            body,
            headers,
            plan: state.spec.plan.clone(),
            usage: state.usage,
        }
    }

    /// The answer headers plus the `x-codex-*` rate-limit headers (protocol §3.1);
    /// `primary` overrides the primary percent and reset.
    pub fn rate_limit_headers(&self, primary: Option<(f64, i64)>) -> Vec<(String, String)> {
        let mut headers = self.headers.clone();
        headers.extend(self.usage.headers(&self.plan, primary));
        headers
    }
}

/// Why a request was refused before any behaviour applied.
pub(super) struct Refusal {
    status: u16,
    code: &'static str,
    /// Overrides the standard message of `code`.
    message: Option<String>,
    headers: Vec<(String, String)>,
}

impl Refusal {
    pub fn into_response(self) -> Response<Body> {
        let standard = match self.code {
            "token_expired" => {
                "Provided authentication token is expired. Please try signing in again."
            }
            "account_mismatch" => "ChatGPT-Account-ID does not match the token's account.",
            "missing_authorization" => "Missing bearer authentication in header.",
            _ => "Could not parse your authentication token. Please try signing in again.",
        };
        let message = self.message.unwrap_or_else(|| standard.to_owned());
        let body = json!({"error": {"code": self.code, "message": message, "type": "invalid_request_error", "param": null}});
        json_response(self.status, &self.headers, &body)
    }
}

/// Records the request, then checks the bearer and `ChatGPT-Account-ID`; an authorized body
/// that cannot be decoded is refused with 400 `invalid_request`.
pub(super) fn admit(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    websocket: bool,
) -> Result<Admitted, Refusal> {
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok());
    let decoded = content_encoding::decode(encoding, body);
    let parsed: Option<Value> = decoded
        .as_ref()
        .ok()
        .and_then(|bytes| serde_json::from_slice(bytes).ok());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let mut registry = lock(shared);
    let owner = bearer.and_then(|t| registry.owner_of_access(t));
    let owner_id = owner.map(|i| registry.accounts[i].spec.account_id.clone());
    let mut seen =
        SeenRequest::capture(method, uri, headers, parsed.clone().unwrap_or(Value::Null));
    seen.account_id = owner_id.clone();
    seen.raw_body = body.clone();
    seen.websocket = websocket;
    registry.record(seen);

    let mut answer_headers = vec![("x-request-id".to_owned(), registry.unique("req"))];
    if let Some(id) = &owner_id {
        answer_headers.push(("x-fake-account-id".to_owned(), id.clone()));
    }
    let claimed = headers
        .get("chatgpt-account-id")
        .and_then(|v| v.to_str().ok());
    let (status, code, message) = match bearer.map(|t| registry.check_access(t)) {
        None => (401, "missing_authorization", None),
        Some(AccessCheck::Unknown) => (401, "token_invalid", None),
        Some(AccessCheck::Rejected) => (401, "token_expired", None),
        Some(AccessCheck::Valid(_)) if claimed.is_some_and(|c| Some(c) != owner_id.as_deref()) => {
            (403, "account_mismatch", None)
        }
        Some(AccessCheck::Valid(_)) if decoded.is_err() => (400, "invalid_request", decoded.err()),
        Some(AccessCheck::Valid(account)) => {
            let state = &registry.accounts[account];
            return Ok(Admitted {
                account,
                account_id: state.spec.account_id.clone(),
                body: parsed.unwrap_or(Value::Null),
                headers: answer_headers,
                plan: state.spec.plan.clone(),
                usage: state.usage,
            });
        }
    };
    Err(Refusal {
        status,
        code,
        message,
        headers: answer_headers,
    })
}
