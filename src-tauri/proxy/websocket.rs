//! `GET /v1/responses` with a WebSocket upgrade (protocol §5.4), proxied to the upstream
//! WebSocket as one account. The account is chosen when the first `response.create` comes,
//! with failover before any output exactly as on HTTP; later requests reuse that upstream
//! socket while its account can serve, and when the session has to move the client is
//! closed with 1012 so Codex reconnects and is routed afresh. With WebSocket turned off
//! every upgrade gets 426, which makes Codex switch the session to HTTP at once.

mod link;

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, Message as TsMessage};
use tracing::Instrument;

use super::error::ProxyError;
use super::forward::{exhausted, note_failure, FORCE_HEADER};
use super::moves::MoveRecord;
use super::upstream::Failure;
use super::{ProxyState, RequestRecord};
use crate::accounts::{now_ms, ALL_MODELS};
use crate::routing::{availability, Availability, RequestIdentity};
use link::{Link, Opened, Opening};

/// Close codes (RFC 6455 §7.4.1).
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_NOT_UTF8: u16 = 1007;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_INTERNAL: u16 = 1011;
/// "Service restart": Codex reconnects, and the new socket is routed afresh.
const CLOSE_RESTART: u16 = 1012;

pub async fn responses_upgrade(State(state): State<ProxyState>, request: Request) -> Response {
    let headers = request.headers();
    let has = |name: header::HeaderName, want: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
        })
    };
    let upgrade = has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket")
        && headers.contains_key(header::SEC_WEBSOCKET_KEY)
        && has(header::SEC_WEBSOCKET_VERSION, "13");
    let path = request.uri().path().to_string();
    if !upgrade {
        return ProxyError::NotAnUpgrade(path).into_response();
    }
    if !state.settings().websockets {
        return ProxyError::WebSocketsOff.into_response();
    }
    if link::upstream_refuses(&state.settings().upstream_url) {
        let body = json!({"error": {
            "type": "invalid_request_error",
            "code": "upstream_websockets_refused",
            "message": "the ChatGPT backend refused WebSocket lately; use HTTP",
        }});
        return (StatusCode::UPGRADE_REQUIRED, axum::Json(body)).into_response();
    }
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(_) => return ProxyError::NotAnUpgrade(path).into_response(),
    };
    let limit = state.settings().max_body_bytes;
    let headers = parts.headers;
    let span = tracing::info_span!("websocket", session = %RequestIdentity::read(&headers, None).session_tag());
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |client| {
            let session = Session {
                state,
                client,
                headers,
                link: None,
                served: false,
                marking: false,
                queued: VecDeque::new(),
            };
            session.run().instrument(span)
        })
}

/// The parts of a client frame routing needs.
#[derive(serde::Deserialize)]
struct FrameProbe<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    prompt_cache_key: Option<Cow<'a, str>>,
}

/// One client socket and, once a request was served, its upstream socket.
struct Session {
    state: ProxyState,
    client: WebSocket,
    /// The client's upgrade headers, forwarded on every upstream handshake.
    headers: HeaderMap,
    link: Option<Link>,
    /// A response was served here: the upstream socket holds state (`previous_response_id`)
    /// that a new one would not have, so losing it means the client must reconnect.
    served: bool,
    /// The session moved onto this socket's account, which has not answered a generating
    /// request yet: everything encrypted in a frame's input was written by another account
    /// (a `generate: false` prewarm moves the session before the history comes).
    marking: bool,
    /// Requests that came while a response was streaming, in order.
    queued: VecDeque<Utf8Bytes>,
}

enum Flow {
    Continue,
    Stop,
}

/// What woke a session up.
enum Wake {
    Client(Option<Result<Message, axum::Error>>),
    Upstream(Option<Result<TsMessage, tungstenite::Error>>),
    Stalled,
}

enum Incoming {
    Request(Utf8Bytes),
    Nothing,
    Stop,
}

impl Session {
    async fn run(mut self) {
        loop {
            let text = match self.queued.pop_front() {
                Some(text) => text,
                None => match self.idle().await {
                    Some(text) => text,
                    None => break,
                },
            };
            if let Flow::Stop = self.request(text).await {
                break;
            }
        }
        if let Some(mut link) = self.link.take() {
            link::close(&mut link.socket).await;
        }
    }

    /// The next event from either side; `deadline` bounds the wait for the upstream.
    async fn wake(&mut self, deadline: Option<tokio::time::Instant>) -> Wake {
        let Session { client, link, .. } = self;
        let upstream = async {
            match link.as_mut() {
                Some(link) => link.socket.next().await,
                None => std::future::pending().await,
            }
        };
        let stall = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = client.recv() => Wake::Client(message),
            message = upstream => Wake::Upstream(message),
            () = stall => Wake::Stalled,
        }
    }

    /// Waits for the client's next request, passing on whatever the upstream says meanwhile.
    async fn idle(&mut self) -> Option<Utf8Bytes> {
        loop {
            match self.wake(None).await {
                Wake::Client(message) => match self.on_client(message).await {
                    Incoming::Request(text) => return Some(text),
                    Incoming::Nothing => {}
                    Incoming::Stop => return None,
                },
                Wake::Upstream(message) => {
                    if let Flow::Stop = self.on_upstream(message).await {
                        return None;
                    }
                }
                Wake::Stalled => {}
            }
        }
    }

    async fn on_client(&mut self, message: Option<Result<Message, axum::Error>>) -> Incoming {
        match message {
            None | Some(Ok(Message::Close(_))) => Incoming::Stop,
            Some(Ok(Message::Text(text))) => Incoming::Request(text),
            Some(Ok(Message::Binary(_))) => {
                let message = "binary frames are not understood; send response.create as JSON text";
                self.invalid_frame(message).await
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Nothing,
            Some(Err(e)) => {
                let (code, reason) = match e.into_inner().downcast::<tungstenite::Error>() {
                    Ok(e) => match *e {
                        // Codex exits without a closing handshake: nothing to answer.
                        tungstenite::Error::Protocol(
                            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                        ) => return Incoming::Stop,
                        tungstenite::Error::Capacity(_) => {
                            let limit = self.state.settings().max_body_bytes;
                            (CLOSE_TOO_BIG, format!("message larger than {limit} bytes (CODEX_PROXY_MAX_BODY_BYTES)"))
                        }
                        tungstenite::Error::Utf8(_) => {
                            (CLOSE_NOT_UTF8, "text frame is not UTF-8".to_string())
                        }
                        tungstenite::Error::Protocol(p) => (CLOSE_PROTOCOL, p.to_string()),
                        other => (CLOSE_INTERNAL, other.to_string()),
                    },
                    Err(other) => (CLOSE_INTERNAL, other.to_string()),
                };
                tracing::info!(code, %reason, "closing the client socket");
                self.close_client(code, &reason).await;
                Incoming::Stop
            }
        }
    }

    async fn invalid_frame(&mut self, message: &str) -> Incoming {
        let frame = json!({"type": "error", "status": 400, "error": {
            "type": "invalid_request_error",
            "code": "invalid_frame",
            "message": message,
        }});
        match self.send_text(frame.to_string().into()).await {
            Flow::Continue => Incoming::Nothing,
            Flow::Stop => Incoming::Stop,
        }
    }

    /// An upstream frame outside of a response, or the upstream going away.
    async fn on_upstream(
        &mut self,
        message: Option<Result<TsMessage, tungstenite::Error>>,
    ) -> Flow {
        match message {
            Some(Ok(TsMessage::Text(text))) => self.pass_on(text).await,
            Some(Ok(TsMessage::Binary(data))) => self.send(Message::Binary(data)).await,
            Some(Ok(TsMessage::Ping(_) | TsMessage::Pong(_) | TsMessage::Frame(_))) => {
                Flow::Continue
            }
            Some(Ok(TsMessage::Close(frame))) => {
                self.link = None;
                let (code, reason) = frame.map_or((CLOSE_RESTART, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                tracing::info!(code, "the upstream closed its socket; closing the client's");
                let reason = if reason.is_empty() {
                    "the upstream closed; reconnect".to_string()
                } else {
                    reason
                };
                self.close_client(code, &reason).await;
                Flow::Stop
            }
            None | Some(Err(_)) => {
                self.link = None;
                tracing::info!("the upstream socket broke; closing the client's");
                self.close_client(CLOSE_RESTART, "the upstream connection broke; reconnect")
                    .await;
                Flow::Stop
            }
        }
    }

    /// One client frame: a `response.create` served, or an error frame saying why not.
    async fn request(&mut self, text: Utf8Bytes) -> Flow {
        let started = Instant::now();
        let (model, cache_key) = match serde_json::from_str::<FrameProbe>(&text) {
            Ok(probe) if probe.kind.as_deref() == Some("response.create") => (
                probe.model.as_deref().unwrap_or(ALL_MODELS).to_string(),
                probe.prompt_cache_key.map(Cow::into_owned),
            ),
            Ok(probe) => {
                let kind = probe.kind.as_deref().unwrap_or("(none)");
                let message =
                    format!("frames of type {kind:?} are not understood; send response.create");
                return flow(self.invalid_frame(&message).await);
            }
            Err(e) => {
                let message = format!("the frame is not valid JSON: {e}");
                return flow(self.invalid_frame(&message).await);
            }
        };
        let identity = RequestIdentity::read(&self.headers, cache_key.as_deref());
        let frame = Bytes::from(text);
        match self.link.take() {
            Some(link) => self.reuse(link, frame, &model, &identity, started).await,
            None if self.served => {
                self.close_client(CLOSE_RESTART, "the upstream connection was lost; reconnect")
                    .await;
                Flow::Stop
            }
            None => self.open(frame, &model, &identity, started).await,
        }
    }

    /// The first request of the socket: try accounts until one serves, as on HTTP.
    async fn open(
        &mut self,
        frame: Bytes,
        model: &str,
        identity: &RequestIdentity,
        started: Instant,
    ) -> Flow {
        let state = self.state.clone();
        let routing = state.routing();
        routing.pool.sync_from_disk();
        let turn_account = identity
            .turn_state
            .as_deref()
            .and_then(|t| routing.bindings.turn_account(t));
        let forced = self
            .headers
            .get(FORCE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let session = identity.session.as_deref();
        let bound = session.and_then(|s| routing.bindings.session_account(s));
        let mut parsed: Option<Value> = None;
        let (mut marked, mut healed) = (false, false);
        let mut tried = HashSet::new();
        let mut last: Option<Failure> = None;
        while let Some(account) = next_account(&state, forced.as_deref(), identity, model, &tried) {
            tried.insert(account.clone());
            // A session leaving its account drops what only that account can read, and the
            // turn state that account issued.
            let moving = bound.as_deref().filter(|b| *b != account);
            let keep_turn_state =
                moving.is_none() && turn_account.as_deref().is_none_or(|t| t == account);
            let mut sent = frame.clone();
            let mut dropped = 0;
            if let Some(session) = session {
                let json = parsed
                    .get_or_insert_with(|| serde_json::from_slice(&frame).unwrap_or(Value::Null));
                if moving.is_some() && !marked {
                    state.moves().mark_foreign(session, &json["input"]);
                    marked = true;
                }
                if let Some((body, n)) = state.moves().clean(session, json) {
                    (sent, dropped) = (body, n);
                }
            }
            let opened = link::open(&state, &self.headers, &account, keep_turn_state, sent).await;
            let now = now_ms();
            match opened {
                Opened::Ready(link, opening) => {
                    if let Some(from) = moving {
                        state.moves().record(MoveRecord {
                            at: now,
                            session: identity.session_tag(),
                            from: routing.pool.display_name(from),
                            to: routing.pool.display_name(&account),
                            reason: describe_failure(last.as_ref()),
                            dropped,
                        });
                    }
                    let turn = link
                        .turn
                        .clone()
                        .or(identity.turn_state.clone().filter(|_| keep_turn_state));
                    routing
                        .bindings
                        .confirm(session, turn.as_deref(), &account, now);
                    self.link = Some(*link);
                    self.marking = moving.is_some() && !generates(&frame);
                    return self.deliver(opening, model, started).await;
                }
                Opened::Failed(Failure::ForeignContent { replay })
                    if !healed && session.is_some() =>
                {
                    // The move was not known (a restart forgot it): everything encrypted in
                    // the input is foreign to this account; once more, without it.
                    tracing::info!(account = %routing.pool.display_name(&account), "encrypted content from another account; retrying without it");
                    if let (Some(s), Some(json)) = (session, parsed.as_ref()) {
                        state.moves().mark_foreign(s, &json["input"]);
                    }
                    healed = true;
                    tried.remove(&account);
                    last = Some(Failure::ForeignContent { replay });
                }
                Opened::Failed(failure) => {
                    note_failure(&state, &account, model, &failure, now);
                    last = Some(failure);
                }
                Opened::Refused(response) => {
                    let name = routing.pool.display_name(&account);
                    return self.answer(response, model, Some(name), started).await;
                }
                Opened::NoWebSocket => {
                    self.close_client(CLOSE_RESTART, "the upstream refuses WebSocket; use HTTP")
                        .await;
                    return Flow::Stop;
                }
            }
        }
        let response = exhausted(&state, model, last);
        self.answer(response, model, None, started).await
    }

    /// A later request on the socket: the same upstream socket while its account serves.
    async fn reuse(
        &mut self,
        mut link: Link,
        frame: Bytes,
        model: &str,
        identity: &RequestIdentity,
        started: Instant,
    ) -> Flow {
        let state = self.state.clone();
        let account = link.account.clone();
        if !usable(&state, &account, model) {
            return self
                .leave(Some(link), &frame, model, identity, None, started)
                .await;
        }
        let mut sent = frame.clone();
        if let Some(session) = identity.session.as_deref() {
            let json: Value = serde_json::from_slice(&frame).unwrap_or(Value::Null);
            if self.marking {
                state.moves().mark_foreign(session, &json["input"]);
            }
            if let Some((body, _)) = state.moves().clean(session, &json) {
                sent = body;
            }
        }
        match link::request(&state, &mut link, sent).await {
            Ok(opening) => {
                self.marking &= !generates(&frame);
                let now = now_ms();
                let routing = state.routing();
                let turn = link.turn.clone().or(identity.turn_state.clone());
                routing.bindings.confirm(
                    identity.session.as_deref(),
                    turn.as_deref(),
                    &account,
                    now,
                );
                self.link = Some(link);
                self.deliver(opening, model, started).await
            }
            Err(Failure::ForeignContent { replay }) => {
                self.link = Some(link);
                let response = super::upstream::replayed(replay);
                let name = state.routing().pool.display_name(&account);
                self.answer(response, model, Some(name), started).await
            }
            Err(failure) => {
                note_failure(&state, &account, model, &failure, now_ms());
                // After an error frame the socket still works; after anything else it may not.
                let alive = matches!(
                    failure,
                    Failure::Limited { .. }
                        | Failure::Transient {
                            replay: Some(_),
                            ..
                        }
                );
                if !alive {
                    link::close(&mut link.socket).await;
                }
                let kept = alive.then_some(link);
                self.leave(kept, &frame, model, identity, Some(failure), started)
                    .await
            }
        }
    }

    /// The socket's account cannot serve this request. When another can, the session moves:
    /// the client is closed with 1012 and reconnects; otherwise it gets the error frame
    /// of "no account can serve" and keeps its socket.
    async fn leave(
        &mut self,
        link: Option<Link>,
        frame: &Bytes,
        model: &str,
        identity: &RequestIdentity,
        failure: Option<Failure>,
        started: Instant,
    ) -> Flow {
        let state = self.state.clone();
        let from = link.as_ref().map(|l| l.account.clone());
        let forced = self.headers.contains_key(FORCE_HEADER);
        let elsewhere = !forced && another_account(&state, from.as_deref(), model);
        if elsewhere {
            if let Some(session) = identity.session.as_deref() {
                let json: Value = serde_json::from_slice(frame).unwrap_or(Value::Null);
                state.moves().mark_foreign(session, &json["input"]);
            }
            tracing::info!(reason = %describe_failure(failure.as_ref()), "the session moves to another account; closing the client socket so Codex reconnects");
            if let Some(mut link) = link {
                link::close(&mut link.socket).await;
            }
            self.close_client(
                CLOSE_RESTART,
                "the session moves to another account; reconnect",
            )
            .await;
            return Flow::Stop;
        }
        self.link = link;
        let response = exhausted(&state, model, failure);
        self.answer(response, model, None, started).await
    }

    /// Sends the opening frames, then the rest of the response as it comes.
    async fn deliver(&mut self, opening: Opening, model: &str, started: Instant) -> Flow {
        self.served = true;
        let first_byte_ms = started.elapsed().as_secs_f64() * 1000.0;
        let now = now_ms();
        if let Some(link) = &self.link {
            let routing = self.state.routing();
            routing.pool.mark_used(&link.account, now);
            let name = routing.pool.display_name(&link.account);
            tracing::debug!(account = %name, model, status = opening.status, first_byte_ms, "served over WebSocket");
            self.state.record_request(RequestRecord {
                at: now,
                account: Some(name),
                model: model.to_string(),
                status: opening.status,
                first_byte_ms,
            });
        }
        for message in opening.frames {
            let sent = match message {
                TsMessage::Text(text) => self.pass_on(text).await,
                TsMessage::Binary(data) => self.send(Message::Binary(data)).await,
                _ => Flow::Continue,
            };
            if let Flow::Stop = sent {
                return Flow::Stop;
            }
        }
        if opening.done {
            return Flow::Continue;
        }
        self.stream().await
    }

    /// Passes upstream frames on until the response ends; client requests wait their turn.
    async fn stream(&mut self) -> Flow {
        let idle = self.state.settings().stream_idle_timeout;
        let mut deadline = tokio::time::Instant::now() + idle;
        loop {
            match self.wake(Some(deadline)).await {
                Wake::Upstream(Some(Ok(TsMessage::Text(text)))) => {
                    deadline = tokio::time::Instant::now() + idle;
                    let kind = frame_type(&text);
                    let end = kind.as_deref().is_some_and(link::is_terminal);
                    if kind.as_deref() == Some("codex.rate_limits") {
                        self.note_rate_limits(&text);
                    }
                    if let Flow::Stop = self.pass_on(text).await {
                        return Flow::Stop;
                    }
                    if end {
                        return Flow::Continue;
                    }
                }
                Wake::Upstream(message) => {
                    deadline = tokio::time::Instant::now() + idle;
                    if let Flow::Stop = self.on_upstream(message).await {
                        return Flow::Stop;
                    }
                }
                Wake::Client(message) => match self.on_client(message).await {
                    Incoming::Request(text) => self.queued.push_back(text),
                    Incoming::Nothing => {}
                    Incoming::Stop => return Flow::Stop,
                },
                Wake::Stalled => {
                    tracing::info!("the upstream stalled mid-response; closing the client socket");
                    self.close_client(CLOSE_INTERNAL, "the upstream stalled mid-response")
                        .await;
                    return Flow::Stop;
                }
            }
        }
    }

    fn note_rate_limits(&self, text: &str) {
        let (Some(link), Ok(json)) = (&self.link, serde_json::from_str::<Value>(text)) else {
            return;
        };
        let pool = &self.state.routing().pool;
        super::upstream::record_rate_limits(pool, &link.account, &json, now_ms() / 1000);
    }

    /// An HTTP answer of the router (or a replayed upstream one) as an error frame; the
    /// socket stays open for the next request.
    async fn answer(
        &mut self,
        response: Response,
        model: &str,
        account: Option<String>,
        started: Instant,
    ) -> Flow {
        let status = response.status().as_u16();
        self.state.record_request(RequestRecord {
            at: now_ms(),
            account,
            model: model.to_string(),
            status,
            first_byte_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
        let frame = error_frame(response).await;
        self.send_text(frame.into()).await
    }

    async fn pass_on(&mut self, text: tungstenite::Utf8Bytes) -> Flow {
        match Utf8Bytes::try_from(Bytes::from(text)) {
            Ok(text) => self.send(Message::Text(text)).await,
            Err(_) => Flow::Continue,
        }
    }

    async fn send_text(&mut self, text: Utf8Bytes) -> Flow {
        self.send(Message::Text(text)).await
    }

    async fn send(&mut self, message: Message) -> Flow {
        match self.client.send(message).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }

    async fn close_client(&mut self, code: u16, reason: &str) {
        // A close reason has at most 123 bytes.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let frame = CloseFrame {
            code,
            reason: reason[..end].into(),
        };
        let _ = self.client.send(Message::Close(Some(frame))).await;
    }
}

/// Whether a `response.create` asks for output (a prewarm says `"generate": false`).
fn generates(frame: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Generate {
        #[serde(default)]
        generate: Option<bool>,
    }
    serde_json::from_slice::<Generate>(frame).map_or(true, |g| g.generate != Some(false))
}

fn flow(incoming: Incoming) -> Flow {
    match incoming {
        Incoming::Stop => Flow::Stop,
        _ => Flow::Continue,
    }
}

/// The account for the next attempt, as `forward` picks it: a pinned one, or routing's.
fn next_account(
    state: &ProxyState,
    forced: Option<&str>,
    identity: &RequestIdentity,
    model: &str,
    tried: &HashSet<String>,
) -> Option<String> {
    match forced {
        Some(key) => (usable(state, key, model) && !tried.contains(key)).then(|| key.to_string()),
        None => state
            .routing()
            .account_for(identity, model, now_ms(), tried),
    }
}

fn usable(state: &ProxyState, key: &str, model: &str) -> bool {
    let now = now_ms();
    state
        .routing()
        .pool
        .accounts()
        .iter()
        .any(|a| a.key == key && availability(a, model, now) == Availability::Ok)
}

/// Whether an account other than `from` could serve `model` now (nothing is bound).
fn another_account(state: &ProxyState, from: Option<&str>, model: &str) -> bool {
    let now = now_ms();
    state
        .routing()
        .pool
        .accounts()
        .iter()
        .any(|a| Some(a.key.as_str()) != from && availability(a, model, now) == Availability::Ok)
}

fn describe_failure(failure: Option<&Failure>) -> String {
    match failure {
        Some(Failure::Limited { code, .. }) => format!("{code} on the old account"),
        Some(Failure::Unauthorized) => "the old account's token was refused".to_string(),
        Some(Failure::Transient { reason, .. }) => reason.clone(),
        Some(Failure::ForeignContent { .. }) => "unreadable encrypted content".to_string(),
        None => "the old account cannot serve now".to_string(),
    }
}

/// The `type` of an event frame, read from its head when it leads (as the backend sends
/// it), else from the whole JSON.
fn frame_type(text: &str) -> Option<Cow<'_, str>> {
    let head = &text.as_bytes()[..text.len().min(64)];
    if let Some(at) = head.windows(7).position(|w| w == b"\"type\":") {
        let rest = text[at + 7..].trim_start();
        if let Some(value) = rest.strip_prefix('"') {
            if let Some(end) = value.find(['"', '\\']) {
                if value.as_bytes()[end] == b'"' {
                    return Some(Cow::Borrowed(&value[..end]));
                }
            }
        }
    }
    let json: Value = serde_json::from_str(text).ok()?;
    Some(Cow::Owned(json.get("type")?.as_str()?.to_string()))
}

/// `{"type":"error","status":N,"error":{..},"headers":{..}}` (protocol §5.4) from an HTTP
/// answer: the same error Codex would have read over HTTP.
async fn error_frame(response: Response) -> String {
    let status = response.status().as_u16();
    let headers: serde_json::Map<String, Value> = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != header::CONTENT_TYPE && *name != header::CONTENT_LENGTH)
        .filter_map(|(name, value)| {
            Some((
                name.to_string(),
                Value::String(value.to_str().ok()?.to_string()),
            ))
        })
        .collect();
    let body = axum::body::to_bytes(response.into_body(), 1024 * 1024)
        .await
        .unwrap_or_default();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let error = match json.get("error") {
        Some(error) => error.clone(),
        None => json!({"message": String::from_utf8_lossy(&body)}),
    };
    let mut frame = json!({"type": "error", "status": status, "error": error});
    if !headers.is_empty() {
        frame["headers"] = Value::Object(headers);
    }
    frame.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_types_are_read_from_the_head_or_the_whole_frame() {
        let t = frame_type(r#"{"type":"response.output_text.delta","delta":"x"}"#);
        assert_eq!(t.as_deref(), Some("response.output_text.delta"));
        let t = frame_type(r#"{"type": "error","status":429}"#);
        assert_eq!(t.as_deref(), Some("error"));
        let late = format!(
            r#"{{"pad":"{}","type":"response.completed"}}"#,
            "x".repeat(80)
        );
        assert_eq!(frame_type(&late).as_deref(), Some("response.completed"));
        assert_eq!(frame_type("not json"), None);
    }

    #[tokio::test]
    async fn router_answers_become_error_frames_with_their_status() {
        let response = ProxyError::AllLimited {
            resets_at: 1_700_000_000,
            resets_in_seconds: 60,
        }
        .into_response();
        let frame: Value = serde_json::from_str(&error_frame(response).await).unwrap();
        assert_eq!(frame["type"], "error");
        assert_eq!(frame["status"], 429);
        assert_eq!(frame["error"]["type"], "usage_limit_reached");
        assert_eq!(frame["error"]["resets_in_seconds"], 60);
    }
}
