//! The front door: Host and Origin checks against DNS rebinding and browsers, and the
//! bearer token when one is configured. `/health` stays open for probes, but not to a request
//! without Host or with an Origin: those checks fail closed everywhere.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ProxyError;
use super::ProxyState;
use crate::settings::is_loopback_host;

pub async fn check(State(state): State<ProxyState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    // HTTP/1.0 may leave Host out; the rebinding check cannot pass without one.
    let host = match headers.get(header::HOST) {
        Some(value) => value.to_str().unwrap_or(""),
        None => return ProxyError::MissingHost.into_response(),
    };
    if !host_allowed(host, &state.settings().host) {
        return ProxyError::ForeignHost(host.to_string()).into_response();
    }
    // Codex and `cma` send no Origin; the dashboard talks to the app, never to the proxy.
    // Any Origin at all is a browser page (or another app's webview) reaching in.
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        return ProxyError::ForeignOrigin(origin).into_response();
    }
    if request.uri().path() != "/health" {
        if let Some(expected) = &state.settings().client_token {
            let presented = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            let matches: bool = presented
                .as_bytes()
                .ct_eq(expected.expose().as_bytes())
                .into();
            if !matches {
                return ProxyError::Unauthorized.into_response();
            }
        }
    }
    next.run(request).await
}

/// A Host header must name a loopback address or the configured listen host. When the
/// router listens on every interface the name is unknowable; the token guards that case.
fn host_allowed(host_header: &str, listen_host: &str) -> bool {
    let name = strip_port(host_header);
    if is_loopback_host(name) {
        return true;
    }
    let listen = listen_host.trim_start_matches('[').trim_end_matches(']');
    matches!(listen, "0.0.0.0" | "::") || name.eq_ignore_ascii_case(listen)
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_pass_and_rebinding_names_do_not() {
        assert!(host_allowed("127.0.0.1:8787", "127.0.0.1"));
        assert!(host_allowed("localhost:8787", "127.0.0.1"));
        assert!(host_allowed("[::1]:8787", "127.0.0.1"));
        assert!(!host_allowed("evil.example:8787", "127.0.0.1"));
        assert!(host_allowed("10.0.0.5:8787", "10.0.0.5"));
        assert!(host_allowed("myhost:8787", "0.0.0.0"));
    }
}
