//! Fake ChatGPT Codex backend (protocol §10.1): checks bearers against the fake issuer's tokens
//! and answers `/responses` with whatever behaviour the test queued for that account. The
//! WebSocket form of `/responses` lives in `websocket.rs`.

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Response, Uri};
use axum::routing::{any, get, post};
use axum::Router;
use futures_util::StreamExt as _;
use serde_json::{json, Value};

use super::accounts::now_s;
use super::admission::{admit, Admitted};
use super::answer::{self, Answer, JsonError};
pub use super::behaviour::{Behaviour, OK_TEXT};
use super::connection::Connection;
use super::org_binding::compaction_encrypted_content;
pub use super::seen_request::{SeenFrame, SeenRequest};
use super::sse::{self, Step};
use super::websocket;
use super::{lock, Shared};

/// Routes of the backend; mount at the server root (paths include `/backend-api`).
pub(super) fn router(shared: Shared) -> Router {
    Router::new()
        .route(
            "/backend-api/codex/responses",
            post(responses).get(websocket::upgrade),
        )
        .route("/backend-api/codex/responses/compact", post(compact))
        .route("/backend-api/codex/models", get(models))
        .route("/backend-api/wham/usage", get(usage))
        .route("/backend-api/codex/{*rest}", any(other_path))
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

fn error_response(error: &JsonError) -> Response<Body> {
    json_response(error.status, &error.headers, &error.body)
}

fn stream_answer(admitted: &Admitted, steps: Vec<Step>, connection: Connection) -> Response<Body> {
    let mut headers = admitted.rate_limit_headers(None);
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
    let admitted = match admit(&shared, &method, &uri, &headers, &body, false) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    match answer::plan(&shared, &admitted) {
        Answer::Error(error) => error_response(&error),
        Answer::Stream { delay, steps } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            stream_answer(&admitted, steps, connection)
        }
        Answer::Reset => {
            connection.kill();
            json_response(500, &[], &json!({}))
        }
    }
}

/// `/responses/compact`: the user messages of the input plus one compaction item (§6), bound
/// to the account like the compaction items of remote compaction v2.
async fn compact(
    State(shared): State<Shared>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let admitted = match admit(&shared, &method, &uri, &headers, &body, false) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    if let Some(refused) = answer::refusal(&admitted) {
        return error_response(&refused);
    }
    let behaviour = lock(&shared).next_behaviour(admitted.account);
    if let Some(error) = answer::error_answer(&behaviour, &admitted) {
        return error_response(&error);
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
    let blob = compaction_encrypted_content(&admitted.account_id, lock(&shared).serial());
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
    output.push(json!({"type": "compaction", "encrypted_content": blob}));
    json_response(
        200,
        &admitted.rate_limit_headers(None),
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
    match admit(&shared, &method, &uri, &headers, &body, false) {
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
    let admitted = match admit(&shared, &method, &uri, &headers, &body, false) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let body = admitted.usage.status_body(&admitted.plan, now_s());
    json_response(200, &admitted.headers, &body)
}

/// Any other path under Codex's base (Codex sends `/files`, `/files/{id}/uploaded`,
/// `/transcribe`, `/alpha/search`): checked like `/responses`, then answered with what it saw
/// as JSON. A path ending in `/content` is a download in two pieces, the second sent only
/// when the test releases it.
async fn other_path(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let admitted = match admit(&shared, &method, &uri, &headers, &body, false) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    if uri.path().ends_with("/content") {
        let gate = lock(&shared).download_gate.clone();
        let first = futures_util::stream::once(async {
            Ok::<_, std::convert::Infallible>(Bytes::from_static(b"first piece;"))
        });
        let second = futures_util::stream::once(async move {
            gate.notified().await;
            Ok(Bytes::from_static(b"second piece"))
        });
        let mut headers = admitted.headers.clone();
        headers.push((
            "content-type".to_owned(),
            "application/octet-stream".to_owned(),
        ));
        return response(200, &headers, Body::from_stream(first.chain(second)));
    }
    let seen = json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "bytes": body.len(),
        "account": admitted.account_id,
    });
    json_response(200, &admitted.headers, &seen)
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
