//! One client socket proxied as one account: the loop that waits on both sides, passes
//! responses on as they stream, queues requests that come meanwhile, and closes the client
//! when the upstream goes away.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::Instant;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, Message as TsMessage};

use super::super::{ProxyState, RequestRecord};
use super::frames::{
    close_frame, error_frame, frame_type, FrameProbe, CLOSE_INTERNAL, CLOSE_NOT_UTF8,
    CLOSE_PROTOCOL, CLOSE_RESTART, CLOSE_TOO_BIG,
};
use super::link::{self, Link, Opening};
use crate::accounts::{now_ms, ALL_MODELS};
use crate::routing::RequestIdentity;

/// How many requests may wait for the response in progress; later ones get an error frame.
const MAX_QUEUED: usize = 8;

/// One client socket and, once a request was served, its upstream socket.
pub(super) struct Session {
    pub state: ProxyState,
    pub client: WebSocket,
    /// The client's upgrade headers, forwarded on every upstream handshake.
    pub headers: HeaderMap,
    pub link: Option<Link>,
    /// The upstream socket opened at the client's handshake, before any request: used by the
    /// first request when it goes to the same account.
    pub ready: Option<Ready>,
    /// The largest request frame passed on: the upstream's advertised limit, else the
    /// router's `max_body_bytes`. Larger ones get an error frame Codex does not retry.
    pub message_limit: usize,
    /// A response was served here: the upstream socket holds state (`previous_response_id`)
    /// that a new one would not have, so losing it means the client must reconnect.
    pub served: bool,
    /// The account the session moved from onto this socket's, while the new one has not
    /// answered a generating request yet: everything encrypted in a frame's input that is not
    /// attributed yet was written there (a `generate: false` prewarm moves the session
    /// before the history comes).
    pub marking: Option<String>,
    /// Requests that came while a response was streaming, in order; at most `MAX_QUEUED`.
    pub queued: VecDeque<Utf8Bytes>,
}

/// An upstream socket opened at the handshake, and the turn-state choice it was opened with.
pub(super) struct Ready {
    pub link: Link,
    pub keep_turn_state: bool,
}

pub(super) enum Flow {
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
    pub(super) async fn run(mut self) {
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
        if let Some(mut ready) = self.ready.take() {
            link::close(&mut ready.link.socket).await;
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
            Some(Ok(Message::Text(text))) if text.len() > self.message_limit => {
                // Read whole and refused with a 400 that Codex does not retry, on a socket
                // that stays open: a 1009 close made Codex retry, then move the session to
                // HTTP for good, where the same body gets 413.
                let message = format!(
                    "this request is {} bytes, over the {} bytes a WebSocket message may have here \
                     (the upstream's limit, else CODEX_PROXY_MAX_BODY_BYTES); start a new session \
                     or send less (large images or files)",
                    text.len(),
                    self.message_limit
                );
                self.refuse("websocket_message_too_large", &message).await
            }
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
                            let limit = frame_cap(self.message_limit);
                            (CLOSE_TOO_BIG, format!("message larger than {limit} bytes, twice the limit (CODEX_PROXY_MAX_BODY_BYTES)"))
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
        self.refuse("invalid_frame", message).await
    }

    /// A request beyond the queue's bound, refused: each may hold `max_body_bytes`.
    async fn refuse_queued(&mut self) -> Incoming {
        let message = format!(
            "more than {MAX_QUEUED} requests are waiting for the response in progress; send the next one after it ends"
        );
        self.refuse("too_many_queued_requests", &message).await
    }

    /// A 400 error frame; the socket stays open.
    async fn refuse(&mut self, code: &str, message: &str) -> Incoming {
        let frame = json!({"type": "error", "status": 400, "error": {
            "type": "invalid_request_error",
            "code": code,
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

    /// Sends the opening frames, then the rest of the response as it comes.
    pub(super) async fn deliver(
        &mut self,
        opening: Opening,
        model: &str,
        started: Instant,
    ) -> Flow {
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
                key: Some(link.account.clone()),
                model: model.to_string(),
                status: opening.status,
                first_byte_ms,
            });
        }
        for message in opening.frames {
            let sent = match message {
                TsMessage::Text(text) => {
                    let text = match frame_type(&text).as_deref() {
                        Some("codex.rate_limits") => self.pooled(text),
                        _ => text,
                    };
                    self.pass_on(text).await
                }
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
                    let completed = kind.as_deref() == Some("response.completed");
                    let text = match kind.as_deref() {
                        Some("codex.rate_limits") => {
                            self.note_rate_limits(&text);
                            self.pooled(text)
                        }
                        _ => text,
                    };
                    // Read after it is passed on: the history waits, Codex does not.
                    let tokens = completed.then(|| text.clone());
                    if let Flow::Stop = self.pass_on(text).await {
                        return Flow::Stop;
                    }
                    if let Some(text) = tokens {
                        self.note_tokens(&text);
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
                    Incoming::Request(text) if self.queued.len() < MAX_QUEUED => {
                        self.queued.push_back(text);
                    }
                    Incoming::Request(_) => {
                        if let Incoming::Stop = self.refuse_queued().await {
                            return Flow::Stop;
                        }
                    }
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

    /// A `codex.rate_limits` event with the pool's windows, which Codex shows and acts on
    /// (see `pooled::rewrite_headers`); as it came when it cannot be read.
    fn pooled(&self, text: tungstenite::Utf8Bytes) -> tungstenite::Utf8Bytes {
        let Ok(mut event) = serde_json::from_str::<Value>(&text) else {
            return text;
        };
        if !super::super::pooled::rewrite_event(&self.state, &mut event) {
            return text;
        }
        event.to_string().into()
    }

    /// The tokens of a `response.completed` frame, for the usage history.
    fn note_tokens(&self, text: &str) {
        let (Some(history), Some(link)) = (self.state.history(), &self.link) else {
            return;
        };
        let Ok(json) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let name = self.state.routing().pool.display_name(&link.account);
        if let Some(tokens) = super::super::stream::tokens_of(&json, &link.account, &name) {
            history.record(crate::history::Entry::Tokens(tokens));
        }
    }

    fn note_rate_limits(&self, text: &str) {
        let (Some(link), Ok(json)) = (&self.link, serde_json::from_str::<Value>(text)) else {
            return;
        };
        let pool = &self.state.routing().pool;
        super::super::stream::record_rate_limits(pool, &link.account, &json, now_ms() / 1000);
    }

    /// An HTTP answer of the router (or a replayed upstream one) as an error frame; the
    /// socket stays open for the next request.
    pub(super) async fn answer(
        &mut self,
        response: Response,
        model: &str,
        key: Option<String>,
        started: Instant,
    ) -> Flow {
        let status = response.status().as_u16();
        let account = key
            .as_ref()
            .map(|k| self.state.routing().pool.display_name(k));
        self.state.record_request(RequestRecord {
            at: now_ms(),
            account,
            key,
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

    pub(super) async fn close_client(&mut self, code: u16, reason: &str) {
        let _ = self.client.send(close_frame(code, reason)).await;
    }
}

/// How much of one client message is read before the socket is closed with 1009: twice the
/// message limit, so that a message somewhat over it is read whole and refused with an
/// error frame on a socket that stays open, while memory stays bounded.
pub(super) fn frame_cap(message_limit: usize) -> usize {
    message_limit.saturating_mul(2)
}

fn flow(incoming: Incoming) -> Flow {
    match incoming {
        Incoming::Stop => Flow::Stop,
        _ => Flow::Continue,
    }
}
