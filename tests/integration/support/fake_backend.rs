//! Fake ChatGPT Codex backend (protocol §10.1): checks bearers against the fake issuer's tokens
//! and answers `/responses` with whatever behaviour the test queued for that account.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Response, Uri};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::accounts::{now_s, AccessCheck};
use super::behaviour::{event_words, OK_DELTAS};
pub use super::behaviour::{Behaviour, OK_TEXT};
use super::connection::Connection;
use super::quota::{usage_limit_body, Usage};
pub use super::seen_request::SeenRequest;
use super::sse::{self, Step, StreamContext};
use super::{lock, Shared};

/// Routes of the backend; mount at the server root (paths include `/backend-api`).
pub(super) fn router(shared: Shared) -> Router {
    Router::new()
        .route("/backend-api/codex/responses", post(responses))
        .route("/backend-api/codex/responses/compact", post(compact))
        .route("/backend-api/codex/models", get(models))
        .route("/backend-api/wham/usage", get(usage))
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

pub(super) fn response(status: u16, headers: &[(String, String)], body: Body) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(body)
        .expect("the fake only builds valid status codes and header values")
}

pub(super) fn json_response(
    status: u16,
    headers: &[(String, String)],
    body: &Value,
) -> Response<Body> {
    let mut headers = headers.to_vec();
    headers.push(("content-type".to_owned(), "application/json".to_owned()));
    response(status, &headers, Body::from(body.to_string()))
}

/// A request that passed the bearer check.
struct Admitted {
    account: usize,
    body: Value,
    /// `x-fake-account-id` and `x-request-id`, sent on every answer.
    headers: Vec<(String, String)>,
    plan: String,
    usage: Usage,
}

/// Why a request was refused before any behaviour applied.
struct Refusal {
    status: u16,
    code: &'static str,
    headers: Vec<(String, String)>,
}

impl Refusal {
    fn into_response(self) -> Response<Body> {
        let message = match self.code {
            "token_expired" => {
                "Provided authentication token is expired. Please try signing in again."
            }
            "account_mismatch" => "ChatGPT-Account-ID does not match the token's account.",
            "missing_authorization" => "Missing bearer authentication in header.",
            _ => "Could not parse your authentication token. Please try signing in again.",
        };
        let body = json!({"error": {"code": self.code, "message": message, "type": "invalid_request_error", "param": null}});
        json_response(self.status, &self.headers, &body)
    }
}

/// Records the request, then checks the bearer and `ChatGPT-Account-ID` (protocol §10.1.2).
fn admit(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Admitted, Refusal> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
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
    registry.record(seen);

    let mut answer_headers = vec![("x-request-id".to_owned(), registry.unique("req"))];
    if let Some(id) = &owner_id {
        answer_headers.push(("x-fake-account-id".to_owned(), id.clone()));
    }
    let claimed = headers
        .get("chatgpt-account-id")
        .and_then(|v| v.to_str().ok());
    let (status, code) = match bearer.map(|t| registry.check_access(t)) {
        None => (401, "missing_authorization"),
        Some(AccessCheck::Unknown) => (401, "token_invalid"),
        Some(AccessCheck::Rejected) => (401, "token_expired"),
        Some(AccessCheck::Valid(_)) if claimed.is_some_and(|c| Some(c) != owner_id.as_deref()) => {
            (403, "account_mismatch")
        }
        Some(AccessCheck::Valid(account)) => {
            let state = &registry.accounts[account];
            return Ok(Admitted {
                account,
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
        headers: answer_headers,
    })
}

fn rate_limit_headers(admitted: &Admitted, primary: Option<(f64, i64)>) -> Vec<(String, String)> {
    let mut headers = admitted.headers.clone();
    headers.extend(admitted.usage.headers(&admitted.plan, primary));
    headers
}

/// Answers for the behaviours that are plain JSON errors, the same on both POST endpoints.
fn error_answer(behaviour: &Behaviour, admitted: &Admitted) -> Option<Response<Body>> {
    let (status, body, headers) = match behaviour {
        Behaviour::UsageLimit { resets_in_seconds } => {
            let seconds = i64::try_from(*resets_in_seconds).unwrap_or(i64::MAX / 2);
            let resets_at = now_s() + seconds;
            let body = usage_limit_body(&admitted.plan, resets_at, *resets_in_seconds);
            (
                429,
                body,
                rate_limit_headers(admitted, Some((100.0, resets_at))),
            )
        }
        Behaviour::RateLimited => {
            let body = json!({"error": {"type": "rate_limit_exceeded", "code": "rate_limit_exceeded", "message": "Rate limit reached for requests on this account. Please try again in 1.5s."}});
            (429, body, admitted.headers.clone())
        }
        Behaviour::Overloaded => {
            let body = json!({"error": {"type": "server_error", "code": "server_is_overloaded", "message": "Our servers are currently overloaded. Please try again later."}});
            (503, body, admitted.headers.clone())
        }
        Behaviour::Status { status, body } => (*status, body.clone(), admitted.headers.clone()),
        _ => return None,
    };
    Some(json_response(status, &headers, &body))
}

fn stream_answer(admitted: &Admitted, steps: Vec<Step>, connection: Connection) -> Response<Body> {
    let mut headers = rate_limit_headers(admitted, None);
    headers.push(("content-type".to_owned(), "text/event-stream".to_owned()));
    headers.push(("cache-control".to_owned(), "no-cache".to_owned()));
    response(200, &headers, sse::body(steps, connection))
}

async fn responses(
    State(shared): State<Shared>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let admitted = match admit(&shared, &method, &uri, &headers, &body) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    if admitted.body.is_null() {
        let body = json!({"error": {"type": "invalid_request_error", "code": "invalid_json", "message": "The request body is not valid JSON."}});
        return json_response(400, &admitted.headers, &body);
    }
    let (behaviour, context) = {
        let mut registry = lock(&shared);
        let behaviour = registry.next_behaviour(admitted.account);
        let context = StreamContext {
            response_id: registry.unique("resp"),
            message_id: registry.unique("msg"),
            model: admitted.body["model"]
                .as_str()
                .unwrap_or("gpt-5.5")
                .to_owned(),
            plan: admitted.plan.clone(),
            usage: admitted.usage,
            created_at: now_s(),
        };
        (behaviour, context)
    };
    if let Some(answer) = error_answer(&behaviour, &admitted) {
        return answer;
    }
    let account_id = admitted
        .headers
        .iter()
        .find(|(n, _)| n == "x-fake-account-id")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let wants_compaction = admitted.body["input"]
        .as_array()
        .and_then(|items| items.last())
        .is_some_and(|item| item["type"] == "compaction_trigger");
    let success = |text: &str, deltas: usize, gap: Duration| {
        if wants_compaction {
            context.compaction_steps(&format!("fake-compacted-{account_id}"))
        } else {
            context.ok_steps(text, deltas, gap)
        }
    };
    let default_steps = || success(OK_TEXT, OK_DELTAS, Duration::ZERO);
    let steps = match behaviour {
        Behaviour::Ok { text, deltas, gap } => success(&text, deltas, gap),
        Behaviour::Timed { deltas, gap } if !wants_compaction => context.timed_steps(deltas, gap),
        Behaviour::Timed { deltas, gap } => success(&event_words(deltas), deltas, gap),
        Behaviour::FailedFirst { code } => vec![Step::Event(context.failed(&code))],
        Behaviour::ErrorEventFirst { code } => vec![Step::Event(sse::error_event(&code))],
        Behaviour::CutAfter { deltas_before_cut } => context.cut_steps(deltas_before_cut),
        Behaviour::StallBeforeHeaders { d } => {
            tokio::time::sleep(d).await;
            default_steps()
        }
        Behaviour::StallAfterFirstEvent { d } => {
            let mut steps = default_steps();
            steps.insert(1, Step::Sleep(d));
            steps
        }
        Behaviour::Reset => {
            connection.kill();
            return json_response(500, &[], &json!({}));
        }
        Behaviour::UsageLimit { .. }
        | Behaviour::RateLimited
        | Behaviour::Overloaded
        | Behaviour::Status { .. } => {
            unreachable!("error behaviours were answered above")
        }
    };
    stream_answer(&admitted, steps, connection)
}

/// `/responses/compact`: the user messages of the input plus one compaction item (§6).
async fn compact(
    State(shared): State<Shared>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let admitted = match admit(&shared, &method, &uri, &headers, &body) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    if admitted.body.is_null() {
        return json_response(
            400,
            &admitted.headers,
            &json!({"error": {"code": "invalid_json", "message": "The request body is not valid JSON."}}),
        );
    }
    let behaviour = lock(&shared).next_behaviour(admitted.account);
    if let Some(answer) = error_answer(&behaviour, &admitted) {
        return answer;
    }
    match behaviour {
        // A unary endpoint has no stream to cut: these become a dropped connection.
        Behaviour::Reset | Behaviour::CutAfter { .. } => {
            connection.kill();
            return json_response(500, &[], &json!({}));
        }
        Behaviour::StallBeforeHeaders { d } | Behaviour::StallAfterFirstEvent { d } => {
            tokio::time::sleep(d).await
        }
        _ => {}
    }
    let account_id = lock(&shared).accounts[admitted.account]
        .spec
        .account_id
        .clone();
    let mut output: Vec<Value> = admitted.body["input"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|item| {
                    item["role"] == "user" && item.get("type").is_none_or(|t| t == "message")
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    output.push(
        json!({"type": "compaction", "encrypted_content": format!("fake-compacted-{account_id}")}),
    );
    json_response(
        200,
        &rate_limit_headers(&admitted, None),
        &json!({ "output": output }),
    )
}

async fn models(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    match admit(&shared, &method, &uri, &headers, &body) {
        Ok(admitted) => {
            let mut headers = admitted.headers;
            headers.push(("etag".to_owned(), "\"fake-models-v1\"".to_owned()));
            json_response(200, &headers, &json!({"models": []}))
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// `/wham/usage` in the shape of protocol §3.4, from the numbers given to `set_usage`.
async fn usage(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let admitted = match admit(&shared, &method, &uri, &headers, &body) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let body = admitted.usage.status_body(&admitted.plan, now_s());
    json_response(200, &admitted.headers, &body)
}

async fn not_found(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
    lock(&shared).record(SeenRequest::capture(&method, &uri, &headers, parsed));
    json_response(
        404,
        &[],
        &json!({"error": {"code": "not_found", "message": format!("the fake backend has no {}", uri.path())}}),
    )
}
