//! Server-sent events seen on the way through: where an event ends, what its JSON says,
//! and whether the first decisive event of a stream is a failure worth another account.

use serde_json::Value;

use crate::accounts::usage;

/// Finds the end of the first complete event in `buf` (after its blank line).
pub fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(pos) = memchr(b'\n', &buf[i..]) {
        let at = i + pos;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at + 2),
            Some(b'\r') if buf.get(at + 2) == Some(&b'\n') => return Some(at + 3),
            _ => i = at + 1,
        }
    }
    None
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// The JSON of an event's `data:` lines; `None` for comments or non-JSON data.
pub fn event_json(event: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(event).ok()?;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        }
    }
    serde_json::from_str(&data).ok()
}

/// What the first events of a stream say.
#[derive(Debug, PartialEq)]
pub enum Opening {
    /// Carries no output yet (`response.created`, `in_progress`, rate limits): keep looking.
    Preamble,
    /// Output has started, or an event that is not a failure: pass the stream on.
    Proceed,
    /// A limit: another account may serve. `reset` in epoch seconds when the event says.
    Limited { code: String, reset: Option<i64> },
    /// An overload: try another account.
    Overloaded { code: String },
}

pub fn classify_opening(event: &Value, now_s: i64) -> Opening {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "response.created"
        | "response.in_progress"
        | "codex.rate_limits"
        | "codex.response.metadata"
        | "response.metadata" => Opening::Preamble,
        "response.failed" | "error" | "response.incomplete" => {
            let error = event
                .get("response")
                .and_then(|r| r.get("error"))
                .or_else(|| event.get("error"))
                .unwrap_or(&Value::Null);
            let code = ["code", "type"]
                .iter()
                .find_map(|f| error.get(f).and_then(Value::as_str))
                .unwrap_or("")
                .to_ascii_lowercase();
            if usage::is_limit_code(&code) {
                Opening::Limited {
                    reset: usage::limit_reset(error, None, now_s),
                    code,
                }
            } else if usage::is_overload_code(&code) {
                Opening::Overloaded { code }
            } else {
                Opening::Proceed
            }
        }
        _ => Opening::Proceed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_event_ends_with_either_line_ending() {
        assert_eq!(event_end(b"data: {}\n\nrest"), Some(10));
        assert_eq!(event_end(b"data: {}\r\n\r\nrest"), Some(12));
        assert_eq!(event_end(b"data: {}\n"), None);
    }

    #[test]
    fn joins_data_lines_and_skips_comments() {
        let v = event_json(b"event: x\ndata: {\"type\":\ndata: \"a\"}\n\n").unwrap();
        assert_eq!(v["type"], "a");
        assert!(event_json(b": keepalive\n\n").is_none());
    }

    #[test]
    fn limit_and_overload_openings_are_recognised() {
        let failed = json!({"type":"response.failed","response":{"error":{"code":"usage_limit_reached","resets_in_seconds":60}}});
        assert_eq!(
            classify_opening(&failed, 100),
            Opening::Limited {
                code: "usage_limit_reached".into(),
                reset: Some(160)
            }
        );
        let error = json!({"type":"error","error":{"type":"server_is_overloaded"}});
        assert_eq!(
            classify_opening(&error, 0),
            Opening::Overloaded {
                code: "server_is_overloaded".into()
            }
        );
        let other = json!({"type":"response.failed","response":{"error":{"code":"context_length_exceeded"}}});
        assert_eq!(classify_opening(&other, 0), Opening::Proceed);
        assert_eq!(
            classify_opening(&json!({"type":"response.created"}), 0),
            Opening::Preamble
        );
        assert_eq!(
            classify_opening(&json!({"type":"response.output_text.delta"}), 0),
            Opening::Proceed
        );
    }
}

#[cfg(test)]
#[path = "sse_properties.rs"]
mod properties;
