//! The handshake of the upstream side of a proxied WebSocket as one account: headers
//! rewritten as on HTTP, one refresh on a 401, what the upstream's upgrade answer says that
//! Codex reads, and the memory of an upstream that refuses WebSocket.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::super::forward::credential_failure;
use super::super::upstream::{Answer, Failure, DROPPED_REQUEST_HEADERS};
use super::super::ProxyState;
use super::link::{classify, Link, Opened};
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

/// A WebSocket error in words, without the URL.
pub(super) fn describe(e: &tungstenite::Error) -> String {
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
}
