//! Server-sent events seen on the way through: where an event ends, what its JSON says,
//! and whether the first decisive event of a stream is a failure worth another account.

use std::borrow::Cow;

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

/// Cuts a stream fed chunk by chunk into whole events. A chunk of whole events (what the
/// backend sends) is read where it is; only a piece of an event waits for the rest.
#[derive(Default)]
pub struct Splitter {
    pending: Vec<u8>,
}

impl Splitter {
    /// A splitter that already holds `pending`, the start of a stream's next event.
    pub fn with_pending(pending: Vec<u8>) -> Splitter {
        Splitter { pending }
    }

    /// Calls `each` with every event that `chunk` completes, in order.
    pub fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(&[u8])) {
        if self.pending.is_empty() {
            let used = whole_events(chunk, &mut each);
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let used = whole_events(&self.pending, &mut each);
            self.pending.drain(..used);
        }
    }

    /// The bytes of the event not yet complete.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Forgets the incomplete event (one that never ends would grow without bound).
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

/// Calls `each` with the whole events at the start of `bytes`; returns the bytes they took.
fn whole_events(bytes: &[u8], each: &mut impl FnMut(&[u8])) -> usize {
    let mut start = 0;
    while let Some(end) = event_end(&bytes[start..]) {
        each(&bytes[start..start + end]);
        start += end;
    }
    start
}

/// Every byte of a stream passes here: a vectorised search, not a byte loop.
fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

/// The JSON of an event's `data:` lines; `None` for comments or non-JSON data.
pub fn event_json(event: &[u8]) -> Option<Value> {
    serde_json::from_str(&event_data(event)?).ok()
}

/// An event's `data:` lines joined by newlines: borrowed from the event when it has one
/// (every event Codex's backend sends), `None` when it has none or is not UTF-8.
fn event_data(event: &[u8]) -> Option<Cow<'_, str>> {
    let text = std::str::from_utf8(event).ok()?;
    let mut lines = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|rest| rest.strip_prefix(' ').unwrap_or(rest));
    let first = lines.next()?;
    match lines.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut data = format!("{first}\n{second}");
            for line in lines {
                data.push('\n');
                data.push_str(line);
            }
            Some(Cow::Owned(data))
        }
    }
}

/// Only the `type` of an event's JSON; the rest is checked to be JSON and skipped.
#[derive(serde::Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

/// An event of a stream's opening, read only as far as the decision needs.
#[derive(Debug, PartialEq)]
pub enum OpeningEvent {
    Decided(Opening),
    /// A `codex.rate_limits` event: preamble, its figures worth reading (`event_json`) once
    /// the first byte is on its way.
    RateLimits,
}

/// `classify_opening(&event_json(event)?)`, without building the JSON of the events that
/// only their type decides (all but failures): the opening is held back from Codex while it
/// is read, so this is on the way to the first byte. `None` where `event_json` is `None`
/// (for an event whose type leads, only where its type cannot be read).
pub fn read_opening(event: &[u8], now_s: i64) -> Option<OpeningEvent> {
    let data = event_data(event)?;
    let kind = match leading_type(&data) {
        // What the backend sends: the type first, the rest is not read at all.
        Some(kind) => Some(Cow::Borrowed(kind)),
        None => match serde_json::from_str::<TypeOnly>(&data) {
            Ok(head) => head.kind,
            // JSON that is not an object (or whose type is not a string) has no type.
            Err(_) => {
                serde_json::from_str::<serde::de::IgnoredAny>(&data).ok()?;
                None
            }
        },
    };
    let whole = || serde_json::from_str::<Value>(&data).ok();
    Some(match kind.as_deref().unwrap_or("") {
        "codex.rate_limits" => OpeningEvent::RateLimits,
        "response.failed" | "error" | "response.incomplete" => {
            OpeningEvent::Decided(classify_opening(&whole()?, now_s))
        }
        other if is_preamble(other) => OpeningEvent::Decided(Opening::Preamble),
        _ => OpeningEvent::Decided(Opening::Proceed),
    })
}

/// The type of compact JSON that starts with it (`{"type":"response.created",…`), as every
/// event of Codex's backend does; `None` for any other shape (then the JSON is read).
fn leading_type(data: &str) -> Option<&str> {
    let rest = data.strip_prefix(r#"{"type":""#)?;
    let end = rest.find(['"', '\\'])?;
    (rest.as_bytes()[end] == b'"').then(|| &rest[..end])
}

fn is_preamble(kind: &str) -> bool {
    matches!(
        kind,
        "response.created"
            | "response.in_progress"
            | "codex.rate_limits"
            | "codex.response.metadata"
            | "response.metadata"
    )
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
        kind if is_preamble(kind) => Opening::Preamble,
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
