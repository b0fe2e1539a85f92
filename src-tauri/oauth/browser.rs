//! The browser login: PKCE, a checked `state`, and a callback server on
//! `localhost:1455/auth/callback` (1457 when 1455 is taken), bound to loopback only, that
//! answers only requests naming it in `Host`, lets no web page cancel the login, and stops
//! listening when the login ends, whichever way it ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::{oneshot, watch, Notify};

use super::exchange::{exchange_code, LoginTokens};
use super::pkce::{random_token, Pkce};
use super::{LoginError, CLIENT_ID};

/// The ports OpenAI's OAuth client accepts as redirect targets, in order of preference.
pub const CALLBACK_PORTS: [u16; 2] = [1455, 1457];
const SCOPES: &str = "openid profile email offline_access";

pub struct BrowserLoginOptions {
    pub issuer: String,
    pub ports: Vec<u16>,
    pub timeout: Duration,
}

/// A login waiting for the browser. Dropping it stops the callback server.
pub struct BrowserLogin {
    /// Open this in a browser.
    pub url: String,
    pub redirect_uri: String,
    outcome: oneshot::Receiver<Result<LoginTokens, LoginError>>,
    success_shown: Arc<Notify>,
    stop: watch::Sender<bool>,
    timeout: Duration,
}

struct Callback {
    http: reqwest::Client,
    issuer: String,
    state: String,
    verifier: String,
    redirect_uri: String,
    port: u16,
    outcome: Mutex<Option<oneshot::Sender<Result<LoginTokens, LoginError>>>>,
    success_shown: Arc<Notify>,
}

impl Callback {
    fn finish(&self, result: Result<LoginTokens, LoginError>) {
        let sender = self
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(result);
        }
    }
}

/// Binds the callback server and builds the authorize URL.
pub async fn begin_browser_login(
    http: reqwest::Client,
    options: BrowserLoginOptions,
) -> Result<BrowserLogin, LoginError> {
    let mut bound = None;
    for port in &options.ports {
        let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", *port)).await else {
            continue;
        };
        if let Ok(v6_hold) = hold_ipv6_loopback(*port) {
            bound = Some((listener, v6_hold));
            break;
        }
    }
    let (listener, v6_hold) = bound.ok_or_else(|| LoginError::PortsBusy(options.ports.clone()))?;
    let port = listener
        .local_addr()
        .map_err(|e| LoginError::Io(e.to_string()))?
        .port();
    let redirect_uri = format!("http://localhost:{port}/auth/callback");
    let pkce = Pkce::generate().map_err(|e| LoginError::Io(e.to_string()))?;
    let state = random_token(32).map_err(|e| LoginError::Io(e.to_string()))?;
    let mut url = reqwest::Url::parse(&format!("{}/oauth/authorize", options.issuer))
        .map_err(|_| LoginError::Io(format!("{} is not a URL", options.issuer)))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", SCOPES)
        .append_pair("code_challenge", &pkce.challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("id_token_add_organizations", "true")
        .append_pair("codex_cli_simplified_flow", "true")
        .append_pair("state", &state)
        .append_pair("originator", "codex_cli_rs");
    let (sender, outcome) = oneshot::channel();
    let success_shown = Arc::new(Notify::new());
    let callback = Arc::new(Callback {
        http,
        issuer: options.issuer,
        state,
        verifier: pkce.verifier,
        redirect_uri: redirect_uri.clone(),
        port,
        outcome: Mutex::new(Some(sender)),
        success_shown: success_shown.clone(),
    });
    let app = axum::Router::new()
        .route("/auth/callback", get(on_callback))
        .route("/success", get(on_success))
        .route("/cancel", get(on_cancel))
        .fallback(|| async { (StatusCode::NOT_FOUND, "Not Found") })
        .with_state(callback)
        .layer(axum::middleware::from_fn_with_state(
            port,
            refuse_foreign_host,
        ));
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        });
        let _ = serve.await;
        drop(v6_hold);
    });
    Ok(BrowserLogin {
        url: url.to_string(),
        redirect_uri,
        outcome,
        success_shown,
        stop,
        timeout: options.timeout,
    })
}

impl BrowserLogin {
    /// Waits for the browser to come back (or the timeout), then stops listening.
    pub async fn finish(mut self) -> Result<LoginTokens, LoginError> {
        let result = match tokio::time::timeout(self.timeout, &mut self.outcome).await {
            Err(_) => Err(LoginError::TimedOut(self.timeout)),
            Ok(Err(_)) => Err(LoginError::Cancelled),
            Ok(Ok(result)) => result,
        };
        if result.is_ok() {
            // Let the browser load the success page before the server goes away.
            let _ =
                tokio::time::timeout(Duration::from_secs(3), self.success_shown.notified()).await;
        }
        result
    }
}

impl Drop for BrowserLogin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn on_callback(State(cb): State<Arc<Callback>>, Query(q): Query<CallbackQuery>) -> Response {
    if q.state.as_deref() != Some(cb.state.as_str()) {
        // Not our login (or a forged one): refuse it and keep waiting for the real one.
        return (StatusCode::BAD_REQUEST, "State mismatch").into_response();
    }
    if let Some(error) = q.error {
        let message = q.error_description.unwrap_or(error);
        let page = failure_page(&message);
        cb.finish(Err(LoginError::Denied(message)));
        return (StatusCode::BAD_REQUEST, page).into_response();
    }
    let Some(code) = q.code.filter(|c| !c.is_empty()) else {
        cb.finish(Err(LoginError::MissingCode));
        return (
            StatusCode::BAD_REQUEST,
            failure_page("the sign-in server sent no authorization code"),
        )
            .into_response();
    };
    match exchange_code(&cb.http, &cb.issuer, &code, &cb.redirect_uri, &cb.verifier).await {
        Ok(tokens) => {
            cb.finish(Ok(tokens));
            Redirect::to("/success").into_response()
        }
        Err(message) => {
            let page = failure_page(&message);
            cb.finish(Err(LoginError::Exchange(message)));
            (StatusCode::BAD_GATEWAY, page).into_response()
        }
    }
}

async fn on_success(State(cb): State<Arc<Callback>>) -> Response {
    cb.success_shown.notify_one();
    let page = Html(page(
        "Signed in",
        "Your ChatGPT account was added to Codex App Account Router. You can close this tab.",
    ));
    ([("connection", "close")], page).into_response()
}

/// `codex login` sends this to a busy port to take it over, from a program: no `Origin`, no
/// `Sec-Fetch-Site` (or `none`: the user typed the address). A web page's `<img>` or form
/// carries one of these (or a foreign `Referer` in a browser older than `Sec-Fetch-*`) and is
/// refused, or any site could end a login in progress.
async fn on_cancel(State(cb): State<Arc<Callback>>, headers: HeaderMap) -> Response {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let from_page = text("origin").is_some()
        || text("sec-fetch-site").is_some_and(|site| site != "none")
        || text("referer").is_some_and(|referer| !is_own_origin(referer, cb.port));
    if from_page {
        return (
            StatusCode::FORBIDDEN,
            "Only Codex or cma can cancel this login",
        )
            .into_response();
    }
    cb.finish(Err(LoginError::Cancelled));
    "Login cancelled".into_response()
}

/// 403 unless `Host` names this listener as the redirect does (`localhost:<port>`) or as
/// `codex login` does (`127.0.0.1:<port>`): a page whose own name was rebound to 127.0.0.1
/// sends its name, and a request without `Host` is refused rather than trusted.
async fn refuse_foreign_host(State(port): State<u16>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if host.is_some_and(|host| is_own_authority(host, port)) {
        next.run(request).await
    } else {
        (StatusCode::FORBIDDEN, "Forbidden host").into_response()
    }
}

fn is_own_authority(host: &str, port: u16) -> bool {
    let host = host.to_ascii_lowercase();
    host == format!("localhost:{port}") || host == format!("127.0.0.1:{port}")
}

/// Whether a `Referer` is one of this listener's own pages.
fn is_own_origin(referer: &str, port: u16) -> bool {
    reqwest::Url::parse(referer).is_ok_and(|url| {
        url.scheme() == "http"
            && url.port() == Some(port)
            && matches!(url.host_str(), Some("localhost" | "127.0.0.1"))
    })
}

/// Holds `[::1]:<port>` bound but not listening while the login waits. The redirect names
/// `localhost`, which a browser may try on ::1 first: held this way, a connection there is
/// refused at once (the browser goes on to 127.0.0.1, where we answer) and no other program
/// can listen there to receive the code and state. `Err` when another program already holds
/// it (the port then counts as taken); `Ok(None)` when this machine has no IPv6 loopback, so
/// no browser can reach ::1 either.
fn hold_ipv6_loopback(port: u16) -> Result<Option<tokio::net::TcpSocket>, std::io::Error> {
    let Ok(socket) = tokio::net::TcpSocket::new_v6() else {
        return Ok(None);
    };
    let address = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    match socket.bind(address) {
        Ok(()) => Ok(Some(socket)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(e),
        Err(_) => Ok(None),
    }
}

fn failure_page(message: &str) -> Html<String> {
    Html(page(
        "Sign-in failed",
        &format!("The login did not complete: {}", escape(message)),
    ))
}

fn page(title: &str, text: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}\
         @media (prefers-color-scheme: dark){{body{{background:#111;color:#eee}}}}</style></head>\
         <body><h1>{title}</h1><p>{text}</p></body></html>"
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
