//! The Responses WebSocket of the fake backend (protocol §5.4, §10.1.8): `GET /responses` with
//! an upgrade, checked like HTTP at the handshake, then one answer per `response.create`
//! frame, the same behaviours as HTTP expressed as JSON text frames.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, Uri};
use serde_json::{json, Map, Value};

use super::admission::{admit, Admitted};
use super::answer::{self, Answer, JsonError};
use super::behaviour::clock_ns;
use super::connection::Connection;
use super::fake_backend::json_response;
use super::seen_request::SeenFrame;
use super::sse::Step;
use super::{lock, Shared};

/// The fake's WebSocket state, inside the shared registry.
#[derive(Default)]
pub(super) struct SocketLog {
    /// Answer every upgrade with 426, as a server without WebSocket support does.
    pub refuse: bool,
    /// Upgrades accepted so far; the last one's number.
    pub accepted: usize,
    pub frames: Vec<SeenFrame>,
    /// Sockets still open, by number, with their TCP connection so a test can drop them.
    pub open: Vec<(usize, Connection)>,
    /// The `x-codex-websocket-max-message-bytes` of the upgrade answer, also the largest
    /// message the fake reads (a larger one closes the socket with 1009, as a server's
    /// message limit does); `None` leaves the header out. Default `DEFAULT_MAX_MESSAGE`.
    pub max_message: Option<Option<usize>>,
}

/// The fake's message limit unless a test sets another: 10 MiB, an assumption (the real
/// backend's figure is not known here; Codex 0.171 reads the header).
pub const DEFAULT_MAX_MESSAGE: usize = 10 * 1024 * 1024;

/// `GET /backend-api/codex/responses`: 426 when refused or not an upgrade, 401/403 for a bad
/// bearer, else 101 with the account's rate-limit headers.
pub(super) async fn upgrade(
    State(shared): State<Shared>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response<Body> {
    let admitted = admit(
        &shared,
        &method,
        &uri,
        &headers,
        &Bytes::new(),
        upgrade.is_ok(),
    );
    let upgrade_required = |message: &str| {
        let body = json!({"error": {"type": "invalid_request_error", "code": "upgrade_required",
                                    "message": message}});
        json_response(426, &[], &body)
    };
    if lock(&shared).websockets.refuse {
        return upgrade_required("WebSocket is not available here; use HTTP.");
    }
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let Ok(upgrade) = upgrade else {
        return upgrade_required("This endpoint needs a WebSocket upgrade or a POST.");
    };
    let (id, max_message) = {
        let mut registry = lock(&shared);
        registry.websockets.accepted += 1;
        let max = registry
            .websockets
            .max_message
            .unwrap_or(Some(DEFAULT_MAX_MESSAGE));
        (registry.websockets.accepted, max)
    };
    let mut headers = admitted.rate_limit_headers(None);
    // What the backend's upgrade answer carries besides usage (protocol §5.4): a turn state
    // for sticky routing, the models etag, and the message limit Codex 0.171 reads.
    headers.push((
        "x-codex-turn-state".to_string(),
        format!("ts-{}-{id}", admitted.account_id),
    ));
    headers.push(("x-models-etag".to_string(), "\"fake-models-1\"".to_string()));
    let mut upgrade = upgrade;
    if let Some(max) = max_message {
        headers.push((
            "x-codex-websocket-max-message-bytes".to_string(),
            max.to_string(),
        ));
        upgrade = upgrade.max_message_size(max).max_frame_size(max);
    }
    let mut response =
        upgrade.on_upgrade(move |socket| session(shared, admitted, id, socket, connection));
    for (name, value) in headers {
        let name = HeaderName::try_from(name).expect("the fake's header names are valid");
        let value = HeaderValue::try_from(value).expect("the fake's header values are valid");
        response.headers_mut().append(name, value);
    }
    response
}

/// Serves one socket until the client closes it or an answer drops the connection.
async fn session(
    shared: Shared,
    socket: Admitted,
    id: usize,
    mut ws: WebSocket,
    connection: Connection,
) {
    lock(&shared).websockets.open.push((id, connection.clone()));
    // One frame per pass; the loop ends with the socket, which the client or a test closes.
    while let Some(Ok(message)) = ws.recv().await {
        let body = match message {
            Message::Text(text) => serde_json::from_str(text.as_str()).unwrap_or(Value::Null),
            Message::Binary(_) => Value::Null,
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let frame = SeenFrame {
            socket: id,
            account_id: socket.account_id.clone(),
            body: body.clone(),
        };
        {
            let mut registry = lock(&shared);
            if registry.recording {
                registry.websockets.frames.push(frame);
            }
        }
        if !respond(&shared, &socket, body, &mut ws, &connection).await {
            break;
        }
    }
    lock(&shared).websockets.open.retain(|(n, _)| *n != id);
}

/// Answers one client frame; `false` once the socket is unusable.
async fn respond(
    shared: &Shared,
    socket: &Admitted,
    body: Value,
    ws: &mut WebSocket,
    connection: &Connection,
) -> bool {
    if body["type"] != "response.create" {
        let error = JsonError {
            status: 400,
            body: json!({"error": {"type": "invalid_request_error", "code": "invalid_request",
                                   "message": "Expected a JSON response.create frame."}}),
            headers: Vec::new(),
        };
        return send(ws, &error_frame(&error)).await;
    }
    // `previous_response_id` is accepted as is: the fake answers the frame's own input.
    let admitted = Admitted::frame(shared, socket, body);
    match answer::plan(shared, &admitted) {
        Answer::Error(error) => send(ws, &error_frame(&error)).await,
        Answer::Stream { delay, steps } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            play(steps, ws, connection).await
        }
        Answer::Reset => {
            connection.kill();
            false
        }
    }
}

/// `{"type":"error","status":N,"error":{…},"headers":{…}}`, how the real backend reports
/// on a socket what HTTP would answer with a status (protocol §5.4).
fn error_frame(error: &JsonError) -> Value {
    let headers: Map<String, Value> = error
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    let inner = error.body.get("error").unwrap_or(&error.body);
    json!({"type": "error", "status": error.status, "error": inner, "headers": headers})
}

async fn send(ws: &mut WebSocket, event: &Value) -> bool {
    ws.send(Message::Text(event.to_string().into()))
        .await
        .is_ok()
}

/// Plays `steps` as text frames, one event each.
async fn play(steps: Vec<Step>, ws: &mut WebSocket, connection: &Connection) -> bool {
    for step in steps {
        let sent = match step {
            Step::Event(event) => send(ws, &event).await,
            Step::Stamped(mut event) => {
                event["t"] = clock_ns().into();
                send(ws, &event).await
            }
            Step::Sleep(d) => {
                tokio::time::sleep(d).await;
                true
            }
            Step::Cut => {
                // Sent frames are flushed already; the pause lets the peer read them before
                // the socket goes.
                tokio::time::sleep(Duration::from_millis(20)).await;
                connection.kill();
                false
            }
        };
        if !sent {
            return false;
        }
    }
    true
}
