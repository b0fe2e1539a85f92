//! `GET /v1/responses` with a WebSocket upgrade (protocol §5.4), proxied to the upstream
//! WebSocket as one account. The account is chosen when the first `response.create` comes,
//! with failover before any output exactly as on HTTP; later requests reuse that upstream
//! socket while its account can serve, and when the session has to move the client is
//! closed with 1012 so Codex reconnects and is routed afresh. With WebSocket turned off
//! every upgrade gets 426, which makes Codex switch the session to HTTP at once.

mod failover;
mod frames;
mod handshake;
mod link;
mod session;

use std::collections::{HashSet, VecDeque};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::Instrument;

use super::error::ProxyError;
use super::forward::{next_account, note_failure, FORCE_HEADER};
use super::listener::ConnectionSlot;
use super::ProxyState;
use crate::accounts::{now_ms, ALL_MODELS};
use crate::routing::RequestIdentity;
use session::{Ready, Session};

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
    if handshake::upstream_refuses(&state.settings().upstream_url) {
        return upstream_refused();
    }
    let (mut parts, _body) = request.into_parts();
    // The socket keeps its connection's place under the listener's cap while it is open.
    let slot = parts.extensions.remove::<ConnectionSlot>();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(_) => return ProxyError::NotAnUpgrade(path).into_response(),
    };
    let headers = parts.headers;
    let identity = RequestIdentity::read(&headers, None);
    let span = tracing::info_span!("websocket", session = %identity.session_tag());
    // A handshake that names its session has its account already: the upstream socket is
    // opened now, so that the answer carries what the upstream says in its own (turn state,
    // models etag, message limit), as Codex would get it without the router.
    let ready = match identity.session {
        Some(_) => match preopen(&state, &headers, &identity)
            .instrument(span.clone())
            .await
        {
            Preopened::Ready(ready) => Some(*ready),
            Preopened::Later => None,
            Preopened::NoWebSocket => return upstream_refused(),
        },
        None => None,
    };
    let greeting = ready
        .as_ref()
        .map(|r| r.link.greeting.clone())
        .unwrap_or_default();
    // With the upstream's limit, Codex 0.171 does what it would do without the router: a
    // larger request goes over HTTP. Without one, the router advertises what its socket reads
    // (twice CODEX_PROXY_MAX_BODY_BYTES): a request over the limit then comes over the socket
    // and gets a 400 error frame. Advertising the limit itself would make Codex move the
    // session to HTTP for good, where the same body gets 413.
    let upstream_limit = advertised_limit(&greeting);
    let message_limit = upstream_limit.unwrap_or(state.settings().max_body_bytes);
    let cap = session::frame_cap(message_limit);
    let advertised = upstream_limit.unwrap_or(cap);
    let mut response = upgrade
        .max_message_size(cap)
        .max_frame_size(cap)
        .read_buffer_size(handshake::READ_BUFFER)
        .on_upgrade(move |client| {
            let session = Session {
                state,
                client,
                headers,
                link: None,
                ready,
                message_limit,
                served: false,
                marking: None,
                queued: VecDeque::new(),
            };
            async move {
                session.run().await;
                drop(slot);
            }
            .instrument(span)
        });
    let answer = response.headers_mut();
    answer.extend(greeting);
    if let Ok(value) = HeaderValue::from_str(&advertised.to_string()) {
        answer.insert(handshake::MAX_MESSAGE_HEADER, value);
    }
    response
}

/// 426 for an upstream that refuses WebSocket: Codex moves the session to HTTP at once.
fn upstream_refused() -> Response {
    let body = json!({"error": {
        "type": "invalid_request_error",
        "code": "upstream_websockets_refused",
        "message": "the ChatGPT backend refused WebSocket lately; use HTTP",
    }});
    (StatusCode::UPGRADE_REQUIRED, axum::Json(body)).into_response()
}

/// The upstream's message limit from its upgrade answer, when it gave a usable one.
fn advertised_limit(greeting: &HeaderMap) -> Option<usize> {
    let value = greeting.get(handshake::MAX_MESSAGE_HEADER)?.to_str().ok()?;
    value.trim().parse::<usize>().ok().filter(|n| *n > 0)
}

enum Preopened {
    Ready(Box<Ready>),
    /// No socket now (no account can serve, or its handshake failed): the first request
    /// chooses and fails over as it always did.
    Later,
    /// The upstream answered 426: so does the router, and Codex uses HTTP at once.
    NoWebSocket,
}

/// Opens the upstream socket for the account the session's first request would go to.
async fn preopen(state: &ProxyState, headers: &HeaderMap, identity: &RequestIdentity) -> Preopened {
    let routing = state.routing();
    routing.pool.sync_from_disk();
    let forced = headers.get(FORCE_HEADER).and_then(|v| v.to_str().ok());
    let Some(account) = next_account(state, forced, identity, ALL_MODELS, &HashSet::new()) else {
        return Preopened::Later;
    };
    // Chosen exactly as the first request's failover chooses, so that it finds this socket.
    let keep_turn_state = failover::Holders::read(state, identity).keep_turn_state(&account);
    match handshake::connect_as(state, headers, &account, keep_turn_state).await {
        Ok(link) => Preopened::Ready(Box::new(Ready {
            link,
            keep_turn_state,
        })),
        Err(link::Opened::NoWebSocket) => Preopened::NoWebSocket,
        Err(link::Opened::Failed(failure)) => {
            note_failure(state, &account, ALL_MODELS, &failure, now_ms());
            Preopened::Later
        }
        Err(_) => Preopened::Later,
    }
}
