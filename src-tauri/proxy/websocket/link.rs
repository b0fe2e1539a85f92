//! The upstream side of a proxied WebSocket once its handshake is done (`handshake.rs`): the
//! opening of each response, held back until it shows output or a failure worth another
//! account, and the first request of a socket.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, Message as TsMessage};

use super::super::sse::{self, Opening as SseOpening};
use super::super::upstream::{self, Answer, Failure, Outgoing};
use super::super::ProxyState;
use super::handshake::{self, describe, websocket_url, UpstreamSocket};
use crate::accounts::now_ms;

/// How long to hold an opening back at most, counted from its first frame, as on HTTP: a
/// limit failure comes at once, so a response that only said "created" is queued upstream.
const MAX_HOLD: Duration = Duration::from_secs(5);
/// Preamble frames held at most before the opening is passed on anyway.
const MAX_HELD: usize = 64;
/// An open upstream socket and the account it speaks as.
pub(super) struct Link {
    pub account: String,
    pub socket: UpstreamSocket,
    /// `x-codex-turn-state` from the upgrade answer.
    pub turn: Option<String>,
    /// The upgrade answer's `GREETING_HEADERS`.
    pub greeting: HeaderMap,
}

/// The start of one response: what goes to the client first.
pub(super) struct Opening {
    pub frames: Vec<TsMessage>,
    /// 200, or the status of an error frame passed on as the answer.
    pub status: u16,
    /// The response already ended (completed, failed or an error).
    pub done: bool,
}

/// How trying one account went.
pub(super) enum Opened {
    Ready(Box<Link>, Opening),
    Failed(Failure),
    /// Refused for a reason no other account changes (a 4xx upgrade answer): passed on.
    Refused(Response),
    /// The upstream does not speak WebSocket (426).
    NoWebSocket,
}

/// One account's go at the first request of a socket: credentials, the handshake (one
/// refresh on a 401), then `frame` sent and its opening held.
pub(super) async fn open(
    state: &ProxyState,
    headers: &HeaderMap,
    account: &str,
    keep_turn_state: bool,
    frame: Bytes,
) -> Opened {
    match handshake::connect_as(state, headers, account, keep_turn_state).await {
        Ok(link) => first_request(state, link, frame).await,
        Err(not) => not,
    }
}

/// The first request on the socket opened at the client's handshake. When the upstream let
/// that socket go meanwhile (a client slow to send), one fresh socket as the same account:
/// an idle socket closed is not the account failing.
pub(super) async fn first_request_on(
    state: &ProxyState,
    headers: &HeaderMap,
    mut link: Link,
    keep_turn_state: bool,
    frame: Bytes,
) -> Opened {
    match request(state, &mut link, frame.clone()).await {
        Ok(opening) => Opened::Ready(Box::new(link), opening),
        Err(Unanswered::Failed(failure)) => {
            close(&mut link.socket).await;
            Opened::Failed(failure)
        }
        Err(Unanswered::Lost(reason)) => {
            close(&mut link.socket).await;
            tracing::debug!(%reason, "the socket opened at the handshake went away; opening another");
            open(state, headers, &link.account, keep_turn_state, frame).await
        }
    }
}

/// The first request on a socket just opened: `frame` sent and its opening held; the socket
/// closed again when the account did not serve it.
pub(super) async fn first_request(state: &ProxyState, mut link: Link, frame: Bytes) -> Opened {
    match request(state, &mut link, frame).await {
        Ok(opening) => Opened::Ready(Box::new(link), opening),
        Err(unanswered) => {
            close(&mut link.socket).await;
            // A socket lost right after its handshake says something about the account.
            Opened::Failed(match unanswered {
                Unanswered::Failed(failure) => failure,
                Unanswered::Lost(reason) => transient(reason),
            })
        }
    }
}

/// Sends one `response.create` and reads until the response shows output, ends, or fails
/// in a way another account may not. Nothing has reached the client when this fails.
pub(super) async fn request(
    state: &ProxyState,
    link: &mut Link,
    frame: Bytes,
) -> Result<Opening, Unanswered> {
    let transient = |reason: &str| Unanswered::Failed(transient(reason.to_string()));
    let text = tungstenite::Utf8Bytes::try_from(frame)
        .map_err(|_| transient("the request frame is not UTF-8"))?;
    if let Err(e) = link.socket.send(TsMessage::Text(text)).await {
        return Err(Unanswered::Lost(format!(
            "the upstream socket refused the request: {}",
            describe(&e)
        )));
    }
    let first_byte = state.settings().first_byte_timeout;
    let mut frames = Vec::new();
    // Set by the first preamble frame: from then on the upstream is working on this request
    // as this account, so waiting past the hold and trying another would spend both.
    let mut hold_ends: Option<tokio::time::Instant> = None;
    loop {
        let next = link.socket.next();
        let read = match hold_ends {
            None => tokio::time::timeout(first_byte, next).await,
            Some(end) => match tokio::time::timeout_at(end, next).await {
                Err(_) => {
                    return Ok(Opening {
                        frames,
                        status: 200,
                        done: false,
                    })
                }
                Ok(read) => Ok(read),
            },
        };
        let message = match read {
            Err(_) => {
                return Err(transient(
                    "the upstream socket stalled before its first output",
                ))
            }
            Ok(None | Some(Err(_)) | Some(Ok(TsMessage::Close(_)))) => {
                return Err(Unanswered::Lost(
                    "the upstream socket closed before its first output".to_string(),
                ))
            }
            Ok(Some(Ok(message))) => message,
        };
        let step = match &message {
            TsMessage::Text(text) => step(state, &link.account, text)
                .await
                .map_err(Unanswered::Failed)?,
            TsMessage::Binary(_) => Step::Output {
                status: 200,
                done: false,
            },
            // Pings are answered by the socket itself.
            _ => continue,
        };
        frames.push(message);
        if hold_ends.is_none() {
            hold_ends = Some(tokio::time::Instant::now() + MAX_HOLD.min(first_byte));
        }
        if let Step::Output { status, done } = step {
            return Ok(Opening {
                frames,
                status,
                done,
            });
        }
        if frames.len() > MAX_HELD {
            return Ok(Opening {
                frames,
                status: 200,
                done: false,
            });
        }
    }
}

fn transient(reason: String) -> Failure {
    let cooldown = Duration::from_secs(5);
    Failure::Transient {
        reason,
        cooldown,
        replay: None,
    }
}

/// Why a request on an upstream socket got no output; nothing reached the client.
pub(super) enum Unanswered {
    /// The account answered with a failure.
    Failed(Failure),
    /// The socket was gone before any answer (the upstream closes idle sockets): no word
    /// about the account.
    Lost(String),
}

enum Step {
    Preamble,
    Output { status: u16, done: bool },
}

/// What one opening frame says: more preamble, output (or an answer to pass on), or a
/// failure for `note_failure`.
async fn step(state: &ProxyState, account: &str, text: &str) -> Result<Step, Failure> {
    let Ok(json) = serde_json::from_str::<Value>(text) else {
        return Ok(Step::Output {
            status: 200,
            done: false,
        });
    };
    let kind = json.get("type").and_then(Value::as_str).unwrap_or("");
    let now_s = now_ms() / 1000;
    if kind == "error" {
        if let Some(answer) = error_answer(&json) {
            let status = answer.status().as_u16();
            return match classify(state, account, answer).await {
                Answer::Fail(f) => Err(f),
                Answer::Serve(_) => Ok(Step::Output { status, done: true }),
            };
        }
    }
    match sse::classify_opening(&json, now_s) {
        SseOpening::Preamble => {
            super::super::stream::record_rate_limits(&state.routing().pool, account, &json, now_s);
            Ok(Step::Preamble)
        }
        SseOpening::Proceed => Ok(Step::Output {
            status: 200,
            done: is_terminal(kind),
        }),
        SseOpening::Limited { code, reset } => Err(Failure::Limited { code, reset }),
        SseOpening::Overloaded { code } => Err(Failure::Transient {
            reason: format!("overloaded ({code})"),
            cooldown: Duration::from_secs(5),
            replay: None,
        }),
    }
}

/// Whether a frame of this type ends a response.
pub(super) fn is_terminal(kind: &str) -> bool {
    matches!(
        kind,
        "response.completed" | "response.failed" | "response.incomplete" | "error"
    )
}

/// An `{"type":"error","status":N,"error":{..},"headers":{..}}` frame as the HTTP answer it
/// stands for, so it is classified exactly as on HTTP.
fn error_answer(frame: &Value) -> Option<reqwest::Response> {
    let status = frame.get("status").and_then(Value::as_u64)?;
    let status = StatusCode::from_u16(u16::try_from(status).ok()?).ok()?;
    if !status.is_client_error() && !status.is_server_error() {
        return None;
    }
    let mut builder = axum::http::Response::builder().status(status);
    if let Some(headers) = frame.get("headers").and_then(Value::as_object) {
        for (name, value) in headers {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                builder = builder.header(name, value);
            }
        }
    }
    let body = json!({"error": frame.get("error").cloned().unwrap_or(Value::Null)});
    let response = builder.body(body.to_string()).ok()?;
    Some(reqwest::Response::from(response))
}

pub(super) async fn classify(
    state: &ProxyState,
    account: &str,
    answer: reqwest::Response,
) -> Answer {
    let settings = state.settings();
    let out = Outgoing {
        method: Method::GET,
        url: websocket_url(&settings.upstream_url),
        headers: HeaderMap::new(),
        body: Bytes::new(),
        streaming: false,
    };
    let timeouts = (settings.first_byte_timeout, settings.stream_idle_timeout);
    let pool = &state.routing().pool;
    let history = state.history();
    upstream::classify(
        answer,
        &out,
        pool,
        account,
        history,
        timeouts,
        now_ms() / 1000,
    )
    .await
}

/// Closes an upstream socket without waiting long for its answer.
pub(super) async fn close(socket: &mut UpstreamSocket) {
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_frames_become_the_http_answer_they_stand_for() {
        let frame = json!({"type": "error", "status": 429, "error": {"type": "usage_limit_reached"}, "headers": {"x-codex-primary-used-percent": "100"}});
        let answer = error_answer(&frame).expect("an answer");
        assert_eq!(answer.status(), 429);
        assert_eq!(answer.headers()["x-codex-primary-used-percent"], "100");
        assert!(error_answer(&json!({"type": "error", "error": {}})).is_none());
    }
}
