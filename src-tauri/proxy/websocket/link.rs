//! The upstream side of a proxied WebSocket: the handshake as one account (headers rewritten
//! as on HTTP, one refresh on a 401), and the opening of each response, held back until it
//! shows output or a failure worth another account.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as TsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::super::forward::credential_failure;
use super::super::sse::{self, Opening as SseOpening};
use super::super::upstream::{self, Answer, Failure, Outgoing, DROPPED_REQUEST_HEADERS};
use super::super::ProxyState;
use crate::accounts::{now_ms, usage, Credentials};

pub(super) type UpstreamSocket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Handshake headers that belong to the client's own upgrade, never forwarded.
const DROPPED_HANDSHAKE_HEADERS: [&str; 5] = [
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "origin",
];
/// How long to hold an opening back at most, counted from its first frame, as on HTTP: a
/// limit failure comes at once, so a response that only said "created" is queued upstream.
const MAX_HOLD: Duration = Duration::from_secs(5);
/// Preamble frames held at most before the opening is passed on anyway.
const MAX_HELD: usize = 64;
/// After an upstream answered an upgrade with 426, upgrades get 426 here for this long.
const REFUSAL_MEMORY: Duration = Duration::from_secs(600);

/// Headers of the upstream's upgrade answer that Codex reads (protocol §5.4, and
/// `x-codex-websocket-max-message-bytes` since Codex 0.171): passed on in the client's own
/// upgrade answer when the upstream socket is opened before it.
pub(super) const GREETING_HEADERS: [&str; 5] = [
    "x-codex-turn-state",
    "x-models-etag",
    "openai-model",
    "x-reasoning-included",
    MAX_MESSAGE_HEADER,
];
/// How much a socket reads at a time. tungstenite zeroes this much before every read, even
/// one that finds nothing: its 128 KiB default cost about 77 K instructions per read
/// (callgrind, proxy bench), for events that are a few hundred bytes. Larger messages take
/// more reads.
pub(super) const READ_BUFFER: usize = 16 * 1024;
/// The largest message the upstream takes on this socket, which Codex 0.171 respects.
pub(super) const MAX_MESSAGE_HEADER: &str = "x-codex-websocket-max-message-bytes";

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

enum Handshake {
    Broken(String),
    Refused(Box<tungstenite::http::Response<Option<Vec<u8>>>>),
}

/// `settings.upstream_url` + `/responses`, with `http` → `ws` and `https` → `wss`.
pub(super) fn websocket_url(upstream_url: &str) -> String {
    let url = match upstream_url.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}"),
        Some(("http", rest)) => format!("ws://{rest}"),
        _ => upstream_url.to_string(),
    };
    format!("{}/responses", url.trim_end_matches('/'))
}

fn refusals() -> &'static Mutex<HashMap<String, Instant>> {
    static REFUSALS: std::sync::OnceLock<Mutex<HashMap<String, Instant>>> =
        std::sync::OnceLock::new();
    REFUSALS.get_or_init(Default::default)
}

/// Whether this upstream answered an upgrade with 426 lately.
pub(super) fn upstream_refuses(upstream_url: &str) -> bool {
    let refusals = refusals().lock().unwrap_or_else(|p| p.into_inner());
    refusals
        .get(upstream_url)
        .is_some_and(|at| at.elapsed() < REFUSAL_MEMORY)
}

fn remember_refusal(upstream_url: &str) {
    let mut refusals = refusals().lock().unwrap_or_else(|p| p.into_inner());
    refusals.retain(|_, at| at.elapsed() < REFUSAL_MEMORY);
    refusals.insert(upstream_url.to_string(), Instant::now());
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
    match connect_as(state, headers, account, keep_turn_state).await {
        Ok(link) => first_request(state, link, frame).await,
        Err(not) => not,
    }
}

/// The handshake as one account (one refresh on a 401); the reason as `Opened` when it
/// did not open.
pub(super) async fn connect_as(
    state: &ProxyState,
    headers: &HeaderMap,
    account: &str,
    keep_turn_state: bool,
) -> Result<Link, Opened> {
    let pool = &state.routing().pool;
    let credentials = match pool.credentials(account, now_ms()).await {
        Ok(c) => c,
        Err(e) => return Err(Opened::Failed(credential_failure(e))),
    };
    let mut connected = connect(state, headers, &credentials, keep_turn_state).await;
    if let Err(Handshake::Refused(r)) = &connected {
        if r.status() == StatusCode::UNAUTHORIZED {
            // No refresh can help a deactivated account: none is spent on it.
            let body = r.body().as_deref().unwrap_or_default();
            if let Some(code) = crate::accounts::deactivation_code(401, r.headers(), body) {
                return Err(Opened::Failed(Failure::Deactivated { code }));
            }
            let renewed = match pool
                .credentials_after_401(account, &credentials, now_ms())
                .await
            {
                Ok(c) => c,
                Err(e) => return Err(Opened::Failed(credential_failure(e))),
            };
            connected = connect(state, headers, &renewed, keep_turn_state).await;
            if let Err(Handshake::Refused(r)) = &connected {
                if r.status() == StatusCode::UNAUTHORIZED {
                    return Err(Opened::Failed(Failure::Unauthorized));
                }
            }
        }
    }
    let (socket, answer) = match connected {
        Ok(pair) => pair,
        Err(Handshake::Broken(reason)) => {
            return Err(Opened::Failed(Failure::Transient {
                reason,
                cooldown: Duration::from_secs(5),
                replay: None,
            }))
        }
        Err(Handshake::Refused(r)) if r.status() == StatusCode::UPGRADE_REQUIRED => {
            tracing::warn!("the upstream refuses WebSocket (426); upgrades get 426 here for a while, so Codex uses HTTP");
            remember_refusal(&state.settings().upstream_url);
            return Err(Opened::NoWebSocket);
        }
        Err(Handshake::Refused(r)) => {
            let (parts, body) = r.into_parts();
            let http = axum::http::Response::from_parts(parts, body.unwrap_or_default());
            return Err(
                match classify(state, account, reqwest::Response::from(http)).await {
                    Answer::Fail(f) => Opened::Failed(f),
                    Answer::Serve(response) => Opened::Refused(response),
                },
            );
        }
    };
    let now_s = now_ms() / 1000;
    if let Some(u) = usage::from_headers(answer.headers(), now_s) {
        pool.record_usage(account, u);
    }
    let turn = answer
        .headers()
        .get("x-codex-turn-state")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut greeting = HeaderMap::new();
    for name in GREETING_HEADERS {
        for value in answer.headers().get_all(name) {
            greeting.append(HeaderName::from_static(name), value.clone());
        }
    }
    Ok(Link {
        account: account.to_string(),
        socket,
        turn,
        greeting,
    })
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

async fn connect(
    state: &ProxyState,
    headers: &HeaderMap,
    credentials: &Credentials,
    keep_turn_state: bool,
) -> Result<(UpstreamSocket, tungstenite::handshake::client::Response), Handshake> {
    let settings = state.settings();
    let url = websocket_url(&settings.upstream_url);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Handshake::Broken(format!("the upstream URL is not usable: {e}")))?;
    let out = request.headers_mut();
    for (name, value) in headers {
        let dropped = DROPPED_REQUEST_HEADERS.contains(&name.as_str())
            || DROPPED_HANDSHAKE_HEADERS.contains(&name.as_str())
            || (!keep_turn_state && name == "x-codex-turn-state");
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    let bearer = format!("Bearer {}", credentials.access_token.expose());
    if let Ok(mut value) = HeaderValue::from_str(&bearer) {
        value.set_sensitive(true);
        out.insert(axum::http::header::AUTHORIZATION, value);
    }
    if let Some(id) = credentials
        .account_id
        .as_deref()
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        out.insert(HeaderName::from_static("chatgpt-account-id"), id);
    }
    let limit = settings.max_body_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        .read_buffer_size(READ_BUFFER);
    let timeout = settings.first_byte_timeout;
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, None);
    match tokio::time::timeout(timeout, connecting).await {
        Err(_) => Err(Handshake::Broken(format!(
            "no upgrade answer within {} ms",
            timeout.as_millis()
        ))),
        Ok(Err(tungstenite::Error::Http(response))) => Err(Handshake::Refused(response)),
        Ok(Err(e)) => Err(Handshake::Broken(describe(&e))),
        Ok(Ok(pair)) => Ok(pair),
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
            upstream::record_rate_limits(&state.routing().pool, account, &json, now_s);
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

async fn classify(state: &ProxyState, account: &str, answer: reqwest::Response) -> Answer {
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
    upstream::classify(answer, &out, pool, account, timeouts, now_ms() / 1000).await
}

/// Closes an upstream socket without waiting long for its answer.
pub(super) async fn close(socket: &mut UpstreamSocket) {
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
}

/// A WebSocket error in words, without the URL.
fn describe(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "could not connect".to_string()
        }
        tungstenite::Error::Io(_) => "the connection broke".to_string(),
        tungstenite::Error::Tls(_) => "TLS failed".to_string(),
        tungstenite::Error::Capacity(_) => "a message was too large".to_string(),
        tungstenite::Error::Url(_) => "the upstream URL is not usable".to_string(),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            "the connection was closed".to_string()
        }
        _ => "the WebSocket handshake failed".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_url_follows_the_upstream_scheme() {
        assert_eq!(
            websocket_url("https://chatgpt.com/backend-api/codex"),
            "wss://chatgpt.com/backend-api/codex/responses"
        );
        assert_eq!(
            websocket_url("http://127.0.0.1:9/backend-api/codex/"),
            "ws://127.0.0.1:9/backend-api/codex/responses"
        );
    }

    #[test]
    fn error_frames_become_the_http_answer_they_stand_for() {
        let frame = json!({"type": "error", "status": 429, "error": {"type": "usage_limit_reached"}, "headers": {"x-codex-primary-used-percent": "100"}});
        let answer = error_answer(&frame).expect("an answer");
        assert_eq!(answer.status(), 429);
        assert_eq!(answer.headers()["x-codex-primary-used-percent"], "100");
        assert!(error_answer(&json!({"type": "error", "error": {}})).is_none());
    }
}
