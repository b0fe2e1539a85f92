//! A request as one of the fake servers received it, for tests to inspect afterwards.

use axum::http::{HeaderMap, Method, Uri};
use bytes::Bytes;
use serde_json::Value;

/// One request as a fake server received it, accepted or not.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub path: String,
    /// The raw query string, if any (`client_version=…` on `/models`).
    pub query: Option<String>,
    pub method: String,
    /// The account the bearer was issued to (even if expired), `None` if unknown or absent.
    pub account_id: Option<String>,
    /// Lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body, after undoing any `Content-Encoding`; `Null` when empty, not JSON or
    /// not decodable.
    pub body: Value,
    /// The body exactly as it arrived (still compressed if it was), to check a proxy forwarded
    /// the bytes intact.
    pub raw_body: Bytes,
    /// The `Content-Encoding` header, lower-case (`Some("zstd")` for a compressed body).
    pub content_encoding: Option<String>,
    /// A WebSocket handshake (`GET` with `Upgrade: websocket`); its frames are in
    /// `FakeOpenAi::ws_frames`.
    pub websocket: bool,
}

/// One data frame a client sent on a WebSocket of the fake backend.
#[derive(Clone, Debug)]
pub struct SeenFrame {
    /// Which socket: 1 for the first upgrade this fake accepted, 2 for the next, …
    pub socket: usize,
    /// The account the socket's bearer belongs to.
    pub account_id: String,
    /// The frame's JSON; `Null` for a binary frame or text that is not JSON.
    pub body: Value,
}

impl SeenRequest {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn capture(method: &Method, uri: &Uri, headers: &HeaderMap, body: Value) -> Self {
        let content_encoding = headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase());
        Self {
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            method: method.to_string(),
            account_id: None,
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
            raw_body: Bytes::new(),
            content_encoding,
            websocket: false,
        }
    }
}
