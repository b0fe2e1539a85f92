//! The local HTTP server Codex talks to: OpenAI-compatible endpoints in front of the
//! ChatGPT backend, sending each request with one of the user's accounts.

mod encoding;
mod error;
mod forward;
mod gate;
mod lanes;
mod listener;
pub mod moves;
mod pooled;
mod sse;
mod status;
mod stream;
mod upstream;
mod websocket;

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;

pub use error::ProxyError;
pub use forward::{FORCE_HEADER, SERVED_BY_HEADER};
pub use lanes::{count_for_machine as lanes_for_machine, LaneError, Lanes};
pub use listener::{serve, ListenerLimits};
pub use status::{snapshot, AccountStatus, RouterStatus, SERVICE_NAME};

use crate::accounts::ALL_MODELS;
use crate::routing::{RequestIdentity, Routing};
use crate::settings::Settings;

/// The last requests, for the dashboard.
const RECENT: usize = 50;

/// One finished request as the dashboard lists it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// Epoch ms.
    pub at: i64,
    pub account: Option<String>,
    /// The pool's key of that account, which the history tells accounts apart by.
    #[serde(default)]
    pub key: Option<String>,
    pub model: String,
    pub status: u16,
    pub first_byte_ms: f64,
}

struct Inner {
    settings: Settings,
    addr: std::net::SocketAddr,
    recent: std::sync::Mutex<std::collections::VecDeque<RequestRecord>>,
    /// Bumped after every request: usage, limits or an account's state may have changed.
    changes: tokio::sync::watch::Sender<u64>,
    routing: Routing,
    http: reqwest::Client,
    started_at: i64,
    moves: moves::Moves,
    pooled: pooled::Cache,
    history: Option<crate::history::Recorder>,
}

/// Everything a request handler needs; a cheap clone of one `Arc`.
#[derive(Clone)]
pub struct ProxyState {
    inner: Arc<Inner>,
}

impl ProxyState {
    pub fn new(
        settings: Settings,
        addr: std::net::SocketAddr,
        routing: Routing,
        http: reqwest::Client,
        history: Option<crate::history::Recorder>,
    ) -> ProxyState {
        ProxyState {
            inner: Arc::new(Inner {
                settings,
                addr,
                recent: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(RECENT)),
                changes: tokio::sync::watch::channel(0).0,
                routing,
                http,
                started_at: crate::accounts::now_ms(),
                moves: moves::Moves::default(),
                pooled: pooled::Cache::default(),
                history,
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The base URL Codex should use, with the port actually bound.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.inner.addr)
    }

    /// Remembers a finished request (the oldest is dropped past 50), and records it in the
    /// usage history.
    pub fn record_request(&self, record: RequestRecord) {
        if let Some(history) = &self.inner.history {
            history.record(crate::history::Entry::Request(
                crate::history::RequestOutcome {
                    at: record.at,
                    account: record.account.clone(),
                    key: record.key.clone(),
                    model: record.model.clone(),
                    status: record.status,
                    first_byte_ms: record.first_byte_ms,
                },
            ));
        }
        let mut recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(record);
        drop(recent);
        self.announce_change();
    }

    /// Tells subscribers that the status changed (a request finished, usage was read).
    pub fn announce_change(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Resolves whenever the status changed: front ends redraw from the status then, instead
    /// of polling.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The last requests, newest first.
    pub fn recent_requests(&self) -> Vec<RequestRecord> {
        let recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().cloned().collect()
    }

    pub fn routing(&self) -> &Routing {
        &self.inner.routing
    }

    pub fn moves(&self) -> &moves::Moves {
        &self.inner.moves
    }

    /// The usage history's writer, when it runs.
    pub(crate) fn history(&self) -> Option<&crate::history::Recorder> {
        self.inner.history.as_ref()
    }

    fn pooled_cache(&self) -> &pooled::Cache {
        &self.inner.pooled
    }

    /// The upstream client: the lane's own on a lane (see `lanes`), else the shared one.
    fn http(&self) -> reqwest::Client {
        lanes::client().unwrap_or_else(|| self.inner.http.clone())
    }
}

/// The router's HTTP surface.
pub fn router(state: ProxyState) -> axum::Router {
    axum::Router::new()
        .route(
            "/v1/responses",
            post(responses).get(websocket::responses_upgrade),
        )
        .route("/v1/responses/compact", post(compact))
        .route("/v1/models", get(models))
        // Codex's own base path, for a provider named "OpenAI" or `openai_base_url` set to
        // `http://127.0.0.1:8787/backend-api/codex`: the same endpoints.
        .route(
            "/backend-api/codex/responses",
            post(responses).get(websocket::responses_upgrade),
        )
        .route("/backend-api/codex/responses/compact", post(compact))
        .route("/backend-api/codex/models", get(models))
        // Codex's own limit display and send blocking, answered for the whole pool (when
        // `chatgpt_base_url` points at the router).
        .route("/backend-api/wham/usage", get(pooled::usage))
        .route("/api/codex/usage", get(pooled::usage))
        .route("/health", get(status::health))
        .route("/status", get(status::status))
        .fallback(other_path)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gate::check,
        ))
        .with_state(state)
}

async fn responses(State(state): State<ProxyState>, request: Request) -> Response {
    let url = format!("{}/responses", state.settings().upstream_url);
    forward_json(state, request, url, true).await
}

async fn compact(State(state): State<ProxyState>, request: Request) -> Response {
    let url = format!("{}/responses/compact", state.settings().upstream_url);
    forward_json(state, request, url, false).await
}

async fn models(State(state): State<ProxyState>, request: Request) -> Response {
    let mut url = state.settings().models_url.clone();
    if let Some(query) = request.uri().query() {
        url = format!("{url}?{query}");
    }
    let out = upstream::Outgoing {
        method: Method::GET,
        url,
        headers: request.headers().clone(),
        body: Bytes::new(),
        streaming: false,
    };
    forward::forward(&state, out, ALL_MODELS, RequestIdentity::default()).await
}

/// Where the upstream's API lives under the router: the OpenAI-style base and Codex's own.
const API_PREFIXES: [&str; 2] = ["/v1/", "/backend-api/codex/"];

/// A path under an API prefix that the router has no route for (Codex sends `/files`,
/// `/files/{id}/uploaded`, `/transcribe`, `/alpha/search`, and each release may add one):
/// passed on to the same upstream base as the session's account, with the same failover
/// before the first byte, and the answer streamed back as it comes. The body is read first,
/// within the same limit as elsewhere (413), so another account can be tried with it.
async fn other_path(State(state): State<ProxyState>, request: Request) -> Response {
    let path = request.uri().path();
    let Some(rest) = API_PREFIXES.iter().find_map(|p| path.strip_prefix(p)) else {
        return not_found(request).await;
    };
    // The path only: a query may carry anything.
    tracing::debug!(path, "a path the router does not know, passed on");
    let mut url = format!(
        "{}/{rest}",
        state.settings().upstream_url.trim_end_matches('/')
    );
    if let Some(query) = request.uri().query() {
        url = format!("{url}?{query}");
    }
    let (parts, body) = request.into_parts();
    let body = match read_body(body, &parts.headers, state.settings().max_body_bytes).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let identity = RequestIdentity::read(&parts.headers, None);
    let out = upstream::Outgoing {
        method: parts.method,
        url,
        headers: parts.headers,
        body: body.clone(),
        streaming: true,
    };
    forward::forward_plain(&state, out, ALL_MODELS, identity, body).await
}

async fn not_found(request: Request) -> Response {
    ProxyError::NotFound(format!("{} {}", request.method(), request.uri().path())).into_response()
}

/// The two fields routing needs. The rest of the body is skipped, but still checked to be
/// JSON, so a truncated body is refused here instead of upstream.
#[derive(serde::Deserialize)]
struct BodyProbe<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    prompt_cache_key: Option<Cow<'a, str>>,
}

async fn forward_json(
    state: ProxyState,
    request: Request,
    url: String,
    streaming: bool,
) -> Response {
    let (parts, body) = request.into_parts();
    let limit = state.settings().max_body_bytes;
    let body = match read_body(body, &parts.headers, limit).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    // A compressed body is read for routing and forwarded as it came.
    let plain = match encoding::decode(&parts.headers, &body, limit) {
        Ok(plain) => plain,
        Err(e) => return e.into_response(),
    };
    let probe: BodyProbe = match serde_json::from_slice(&plain) {
        Ok(probe) => probe,
        Err(e) => return ProxyError::InvalidJson(e.to_string()).into_response(),
    };
    let model = probe.model.as_deref().unwrap_or(ALL_MODELS).to_string();
    let identity = RequestIdentity::read(&parts.headers, probe.prompt_cache_key.as_deref());
    let out = upstream::Outgoing {
        method: Method::POST,
        url,
        headers: parts.headers,
        body: body.clone(),
        streaming,
    };
    forward::forward_plain(&state, out, &model, identity, plain).await
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let expected = declared.map_or(limit, |len| len as usize);
    let mut buffer = bytes::BytesMut::new();
    let mut body = body.into_data_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ProxyError::BodyRead(e.to_string()))?;
        let needed = buffer.len() + chunk.len();
        if needed > limit {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        if needed > buffer.capacity() {
            buffer.reserve(room_for(buffer.len(), needed, expected) - buffer.len());
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// The capacity to grow a body buffer holding `held` bytes to, when `needed` must fit and
/// `expected` are announced. Content-Length is a promise, not bytes: the whole of it is
/// reserved only once an eighth has arrived (so a client that declares 128 MB and sends 10
/// bytes costs 64 KiB, never more than eight times what it sent); before that the buffer grows
/// fourfold, so a real 20 MB body is moved a few megabytes more, not copied again and again.
fn room_for(held: usize, needed: usize, expected: usize) -> usize {
    const FIRST: usize = 64 * 1024;
    let room = if held.saturating_mul(8) >= expected {
        expected
    } else {
        held.saturating_mul(4).max(FIRST).min(expected)
    };
    room.max(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_length_is_not_allocated_before_the_bytes_come() {
        let declared = 128 * 1024 * 1024;
        assert_eq!(room_for(0, 10, declared), 64 * 1024);
        // Fourfold steps until an eighth has come, then the declared size at once; never
        // less than what arrived.
        assert_eq!(room_for(64 * 1024, 64 * 1024 + 1, declared), 256 * 1024);
        assert_eq!(room_for(1 << 20, (1 << 20) + 1, 20 << 20), 4 << 20);
        assert_eq!(room_for(4 << 20, (4 << 20) + 1, 20 << 20), 20 << 20);
        assert_eq!(room_for(0, 100, 50), 100);
    }
}
