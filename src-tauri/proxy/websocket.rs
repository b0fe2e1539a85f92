//! `GET /v1/responses` with a WebSocket upgrade (protocol §5.4), proxied to the upstream
//! WebSocket as one account. The account is chosen when the first `response.create` comes,
//! with failover before any output exactly as on HTTP; later requests reuse that upstream
//! socket while its account can serve, and when the session has to move the client is
//! closed with 1012 so Codex reconnects and is routed afresh. With WebSocket turned off
//! every upgrade gets 426, which makes Codex switch the session to HTTP at once.

mod failover;
mod frames;
mod link;
mod session;

use std::collections::VecDeque;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::Instrument;

use super::error::ProxyError;
use super::listener::ConnectionSlot;
use super::ProxyState;
use crate::routing::RequestIdentity;
use session::Session;

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
    // The socket keeps its connection's place under the listener's cap while it is open.
    let slot = parts.extensions.remove::<ConnectionSlot>();
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
                marking: None,
                queued: VecDeque::new(),
            };
            async move {
                session.run().await;
                drop(slot);
            }
            .instrument(span)
        })
}
