//! The frames a proxied WebSocket speaks besides the upstream's own: what routing reads
//! from a client frame, the `type` of an event, error frames made from HTTP answers, and
//! close frames.

use std::borrow::Cow;

use axum::extract::ws::{CloseFrame, Message};
use axum::http::header;
use axum::response::Response;
use serde_json::{json, Value};

/// Close codes (RFC 6455 §7.4.1).
pub(super) const CLOSE_PROTOCOL: u16 = 1002;
pub(super) const CLOSE_NOT_UTF8: u16 = 1007;
pub(super) const CLOSE_TOO_BIG: u16 = 1009;
pub(super) const CLOSE_INTERNAL: u16 = 1011;
/// "Service restart": Codex reconnects, and the new socket is routed afresh.
pub(super) const CLOSE_RESTART: u16 = 1012;

/// The parts of a client frame routing needs.
#[derive(serde::Deserialize)]
pub(super) struct FrameProbe<'a> {
    #[serde(borrow, default, rename = "type")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub prompt_cache_key: Option<Cow<'a, str>>,
}

/// Whether a `response.create` asks for output (a prewarm says `"generate": false`).
pub(super) fn generates(frame: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Generate {
        #[serde(default)]
        generate: Option<bool>,
    }
    serde_json::from_slice::<Generate>(frame).map_or(true, |g| g.generate != Some(false))
}

/// A close frame with `reason` cut to fit.
pub(super) fn close_frame(code: u16, reason: &str) -> Message {
    // A close reason has at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    Message::Close(Some(frame))
}

/// The `type` of an event frame, read from its head when it leads (as the backend sends
/// it), else from the whole JSON.
pub(super) fn frame_type(text: &str) -> Option<Cow<'_, str>> {
    let head = &text.as_bytes()[..text.len().min(64)];
    let leads = |at: usize| text[..at].trim_matches([' ', '\t', '\n', '\r']) == "{";
    // Only the first key: an earlier `"type":` is a nested object's (`{"error":{"type":..`).
    if let Some(at) = head
        .windows(7)
        .position(|w| w == b"\"type\":")
        .filter(|&at| leads(at))
    {
        let rest = text[at + 7..].trim_start();
        if let Some(value) = rest.strip_prefix('"') {
            if let Some(end) = value.find(['"', '\\']) {
                if value.as_bytes()[end] == b'"' {
                    return Some(Cow::Borrowed(&value[..end]));
                }
            }
        }
    }
    let json: Value = serde_json::from_str(text).ok()?;
    Some(Cow::Owned(json.get("type")?.as_str()?.to_string()))
}

/// `{"type":"error","status":N,"error":{..},"headers":{..}}` (protocol §5.4) from an HTTP
/// answer: the same error Codex would have read over HTTP.
pub(super) async fn error_frame(response: Response) -> String {
    let status = response.status().as_u16();
    let headers: serde_json::Map<String, Value> = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != header::CONTENT_TYPE && *name != header::CONTENT_LENGTH)
        .filter_map(|(name, value)| {
            Some((
                name.to_string(),
                Value::String(value.to_str().ok()?.to_string()),
            ))
        })
        .collect();
    let body = axum::body::to_bytes(response.into_body(), 1024 * 1024)
        .await
        .unwrap_or_default();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let error = match json.get("error") {
        Some(error) => error.clone(),
        None => json!({"message": String::from_utf8_lossy(&body)}),
    };
    let mut frame = json!({"type": "error", "status": status, "error": error});
    if !headers.is_empty() {
        frame["headers"] = Value::Object(headers);
    }
    frame.to_string()
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::super::super::error::ProxyError;
    use super::*;

    #[test]
    fn frame_types_are_read_from_the_head_or_the_whole_frame() {
        let t = frame_type(r#"{"type":"response.output_text.delta","delta":"x"}"#);
        assert_eq!(t.as_deref(), Some("response.output_text.delta"));
        let t = frame_type(r#"{"type": "error","status":429}"#);
        assert_eq!(t.as_deref(), Some("error"));
        let late = format!(
            r#"{{"pad":"{}","type":"response.completed"}}"#,
            "x".repeat(80)
        );
        assert_eq!(frame_type(&late).as_deref(), Some("response.completed"));
        assert_eq!(frame_type("not json"), None);
    }

    #[tokio::test]
    async fn router_answers_become_error_frames_with_their_status() {
        let response = ProxyError::AllLimited {
            resets_at: 1_700_000_000,
            resets_in_seconds: 60,
        }
        .into_response();
        let frame: Value = serde_json::from_str(&error_frame(response).await).unwrap();
        assert_eq!(frame["type"], "error");
        assert_eq!(frame["status"], 429);
        assert_eq!(frame["error"]["type"], "usage_limit_reached");
        assert_eq!(frame["error"]["resets_in_seconds"], 60);
    }
}

#[cfg(test)]
#[path = "frames_properties.rs"]
mod properties;
