//! The router's own error answers, shaped as the OpenAI errors Codex reads.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    #[error("the request body is larger than {limit} bytes; raise CODEX_PROXY_MAX_BODY_BYTES if this is intended")]
    BodyTooLarge { limit: usize },
    #[error("missing or wrong bearer token; send `Authorization: Bearer $CODEX_PROXY_TOKEN`")]
    Unauthorized,
    #[error("requests for host {0:?} are refused; use the router's own address")]
    ForeignHost(String),
    #[error("requests without a Host header are refused; use HTTP/1.1")]
    MissingHost,
    #[error("browser requests from origin {0:?} are refused")]
    ForeignOrigin(String),
    #[error("no ChatGPT account is configured; run `cma login` to add one")]
    NoAccounts,
    #[error("every account needs a new login or attention ({0}); run `cma login` for each")]
    AllNeedLogin(String),
    #[error("this account needs attention ({0}); sign in to it again with `cma login` once that is resolved")]
    AccountNeedsAttention(String),
    #[error("every account is disabled; enable one with `cma accounts`")]
    AllDisabled,
    #[error(
        "every account has reached its usage limit; the first one resets in {resets_in_seconds} s"
    )]
    AllLimited {
        resets_at: i64,
        resets_in_seconds: i64,
    },
    #[error("this account has reached its usage limit; it resets in {resets_in_seconds} s")]
    AccountLimited {
        resets_at: i64,
        resets_in_seconds: i64,
    },
    #[error("no account could reach the ChatGPT backend: {0}")]
    UpstreamUnavailable(String),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("WebSocket is turned off here (CODEX_PROXY_WEBSOCKETS=0); use HTTP")]
    WebSocketsOff,
    #[error("GET {0} needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Key, Sec-WebSocket-Version: 13)")]
    NotAnUpgrade(String),
    #[error(
        "the request body says Content-Encoding {encoding:?} but could not be decoded: {reason}"
    )]
    BadEncoding { encoding: String, reason: String },
    #[error("the request body uses Content-Encoding {0:?}; only zstd or none is understood")]
    UnknownEncoding(String),
}

impl ProxyError {
    fn status(&self) -> StatusCode {
        match self {
            ProxyError::InvalidJson(_) | ProxyError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::ForeignHost(_) | ProxyError::MissingHost | ProxyError::ForeignOrigin(_) => {
                StatusCode::FORBIDDEN
            }
            // Codex shows a 4xx at once instead of retrying it for half a minute: these
            // need the user, not patience.
            ProxyError::NoAccounts
            | ProxyError::AllNeedLogin(_)
            | ProxyError::AccountNeedsAttention(_)
            | ProxyError::AllDisabled => StatusCode::BAD_REQUEST,
            ProxyError::AllLimited { .. } | ProxyError::AccountLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ProxyError::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::NotFound(_) => StatusCode::NOT_FOUND,
            // 426 makes Codex switch the session to HTTP at once (protocol §5.4).
            ProxyError::WebSocketsOff => StatusCode::UPGRADE_REQUIRED,
            ProxyError::NotAnUpgrade(_) | ProxyError::BadEncoding { .. } => StatusCode::BAD_REQUEST,
            ProxyError::UnknownEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// A stable code the UI and scripts can switch on.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::InvalidJson(_) => "invalid_json",
            ProxyError::BodyRead(_) => "body_read_failed",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::Unauthorized => "invalid_proxy_token",
            ProxyError::ForeignHost(_) | ProxyError::MissingHost => "forbidden_host",
            ProxyError::ForeignOrigin(_) => "forbidden_origin",
            ProxyError::NoAccounts => "no_accounts",
            ProxyError::AllNeedLogin(_) => "accounts_need_login",
            ProxyError::AccountNeedsAttention(_) => "account_needs_attention",
            ProxyError::AllDisabled => "accounts_disabled",
            ProxyError::AllLimited { .. } | ProxyError::AccountLimited { .. } => {
                "usage_limit_reached"
            }
            ProxyError::UpstreamUnavailable(_) => "upstream_unavailable",
            ProxyError::NotFound(_) => "not_found",
            ProxyError::WebSocketsOff => "websockets_off",
            ProxyError::NotAnUpgrade(_) => "not_a_websocket_upgrade",
            ProxyError::BadEncoding { .. } => "bad_content_encoding",
            ProxyError::UnknownEncoding(_) => "unsupported_content_encoding",
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let body = match &self {
            // The shape Codex turns into "try again at HH:MM" instead of retrying.
            ProxyError::AllLimited {
                resets_at,
                resets_in_seconds,
            }
            | ProxyError::AccountLimited {
                resets_at,
                resets_in_seconds,
            } => json!({"error": {
                "type": "usage_limit_reached",
                "code": "usage_limit_reached",
                "message": message,
                "resets_at": resets_at,
                "resets_in_seconds": resets_in_seconds,
            }}),
            _ => json!({"error": {
                "type": if status.is_server_error() { "server_error" } else { "invalid_request_error" },
                "code": self.code(),
                "message": message,
            }}),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        response
    }
}
