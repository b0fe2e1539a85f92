//! `GET /v1/responses` with a WebSocket upgrade (protocol §5.4). Until the upstream
//! WebSocket is proxied, every upgrade is answered 426, which makes Codex switch the session
//! to HTTP at once instead of retrying the handshake for seconds.

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::ProxyError;
use super::ProxyState;

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
    if !upgrade {
        return ProxyError::NotAnUpgrade(request.uri().path().to_string()).into_response();
    }
    let _ = state.settings().websockets;
    ProxyError::WebSocketsOff.into_response()
}
