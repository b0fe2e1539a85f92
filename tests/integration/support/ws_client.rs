//! A small Responses WebSocket client for tests: connect with headers, send `response.create`
//! frames, read the JSON events of one answer.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long `read_response` waits for the next frame before giving up.
pub const WS_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// An upgrade the server did not accept.
#[derive(Debug)]
pub struct WsRefusal {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    /// The JSON body if it arrived with the head, else `Null`.
    pub body: Value,
}

/// An open Responses WebSocket.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Headers of the 101 answer, lower-case names.
    pub headers: Vec<(String, String)>,
    /// Set once the server closed the socket or the connection broke.
    pub closed: bool,
}

fn header_pairs(
    headers: &tokio_tungstenite::tungstenite::http::HeaderMap,
) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_owned(), value)
        })
        .collect()
}

/// `{"type":"response.create", …body}`: a Responses request body as a WebSocket frame.
pub fn response_create(body: &Value) -> Value {
    let mut frame = json!({"type": "response.create"});
    if let (Some(frame), Some(fields)) = (frame.as_object_mut(), body.as_object()) {
        frame.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    frame
}

/// Whether `event` ends one answer: completed, failed, or an error frame.
pub fn is_terminal(event: &Value) -> bool {
    [
        "response.completed",
        "response.failed",
        "response.incomplete",
        "error",
    ]
    .iter()
    .any(|t| event["type"] == *t)
}

impl WsClient {
    /// Opens `url` (`ws://…`) with these extra request headers.
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, WsRefusal> {
        let mut request = url.into_client_request().expect("a valid ws:// URL");
        for (name, value) in headers {
            let name = HeaderName::try_from(*name).expect("a valid header name");
            let value = HeaderValue::try_from(*value).expect("a valid header value");
            request.headers_mut().append(name, value);
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((stream, response)) => Ok(WsClient {
                stream,
                headers: header_pairs(response.headers()),
                closed: false,
            }),
            Err(Error::Http(response)) => Err(WsRefusal {
                status: response.status().as_u16(),
                headers: header_pairs(response.headers()),
                body: response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null),
            }),
            Err(e) => panic!("WebSocket connect to {url} failed: {e}"),
        }
    }

    /// First value of a 101 answer header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sends `frame` as one text frame.
    pub async fn send_json(&mut self, frame: &Value) {
        self.stream
            .send(Message::text(frame.to_string()))
            .await
            .expect("send a WebSocket frame");
    }

    /// The next text frame as JSON; `None` after `wait` or once the socket is gone (then
    /// `closed` is set). Control frames are skipped; a binary frame is returned as `Null`.
    pub async fn next_event(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next()).await;
            match next.ok()? {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(text.as_str()).unwrap_or(Value::Null))
                }
                Some(Ok(Message::Binary(_))) => return Some(Value::Null),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    self.closed = true;
                    return None;
                }
            }
        }
    }

    /// Events until one ends the answer (see `is_terminal`), the socket closes, or no frame
    /// comes for `WS_FRAME_TIMEOUT`.
    pub async fn read_response(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        while let Some(event) = self.next_event(WS_FRAME_TIMEOUT).await {
            let done = is_terminal(&event);
            events.push(event);
            if done {
                break;
            }
        }
        events
    }

    /// Sends `body` as a `response.create` frame and reads the answer.
    pub async fn create(&mut self, body: &Value) -> Vec<Value> {
        self.send_json(&response_create(body)).await;
        self.read_response().await
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
