//! Server-sent event bodies in the shape the real Codex CLI 0.169 accepted (codex-capture §5.1),
//! built as a list of steps so gaps, stalls and cuts land at exact points of the stream.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use serde_json::{json, Value};

use super::behaviour::clock_ns;
use super::connection::Connection;
use super::quota::Usage;

/// One step of a scripted stream.
pub(super) enum Step {
    Event(Value),
    /// An event that gets `"t": clock_ns()` when it is sent.
    Stamped(Value),
    Sleep(Duration),
    /// Drop the TCP connection: the client sees the body end with an error.
    Cut,
}

/// Everything one streamed answer needs to know about its request and account.
pub(super) struct StreamContext {
    pub response_id: String,
    pub message_id: String,
    pub model: String,
    pub plan: String,
    pub usage: Usage,
    pub created_at: i64,
    /// A finished reasoning item (with `encrypted_content`) streamed before the message, when
    /// the request's `include` asked for `reasoning.encrypted_content`.
    pub reasoning: Option<Value>,
}

/// Splits `text` into `n` deltas: on word starts when that gives exactly `n` pieces (so the
/// default text streams as "hello", " from", " fake", " upstream"), else in even char runs.
pub(super) fn split_text(text: &str, n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let starts: Vec<usize> = text
        .char_indices()
        .filter(|&(i, c)| {
            i == 0 || (c.is_whitespace() && !text[..i].ends_with(char::is_whitespace))
        })
        .map(|(i, _)| i)
        .collect();
    if starts.len() == n {
        let ends = starts.iter().skip(1).copied().chain([text.len()]);
        return starts
            .iter()
            .zip(ends)
            .map(|(&s, e)| text[s..e].to_owned())
            .collect();
    }
    let chars: Vec<char> = text.chars().collect();
    (0..n)
        .map(|k| {
            chars[k * chars.len() / n..(k + 1) * chars.len() / n]
                .iter()
                .collect()
        })
        .collect()
}

impl StreamContext {
    fn response(&self, status: &str, output: Value) -> Value {
        json!({
            "id": self.response_id, "object": "response", "created_at": self.created_at,
            "status": status, "model": self.model, "output": output,
            "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "store": false,
        })
    }

    pub fn created(&self) -> Value {
        json!({"type": "response.created", "response": self.response("in_progress", json!([]))})
    }

    /// The message comes after the reasoning item, if any.
    fn message_index(&self) -> usize {
        usize::from(self.reasoning.is_some())
    }

    fn text_event(&self, kind: &str, field: &str, value: &str) -> Value {
        json!({"type": kind, "item_id": self.message_id, "output_index": self.message_index(),
               "content_index": 0, field: value})
    }

    fn part_event(&self, kind: &str, text: &str) -> Value {
        json!({"type": kind, "item_id": self.message_id, "output_index": self.message_index(),
               "content_index": 0,
               "part": {"type": "output_text", "text": text, "annotations": []}})
    }

    fn message(&self, status: &str, content: Value) -> Value {
        json!({"id": self.message_id, "type": "message", "status": status, "role": "assistant",
               "content": content})
    }

    fn completed(&self, output: Vec<Value>, output_tokens: usize) -> Value {
        let mut response = self.response("completed", Value::Array(output));
        response["usage"] = json!({
            "input_tokens": 1234, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 1234 + output_tokens,
        });
        json!({"type": "response.completed", "response": response})
    }

    /// created, rate limits, in_progress, the reasoning item if any, the message opened: the
    /// common prefix.
    fn opening(&self) -> Vec<Step> {
        let mut in_progress = self.created();
        in_progress["type"] = json!("response.in_progress");
        let mut steps = vec![
            Step::Event(self.created()),
            Step::Event(self.usage.rate_limits_event(&self.plan, self.created_at)),
            Step::Event(in_progress),
        ];
        if let Some(reasoning) = &self.reasoning {
            // The blob arrives with the finished item, which is what Codex records.
            let mut opened = reasoning.clone();
            if let Some(fields) = opened.as_object_mut() {
                fields.remove("encrypted_content");
            }
            steps.extend([
                Step::Event(
                    json!({"type": "response.output_item.added", "output_index": 0,
                                   "item": opened}),
                ),
                Step::Event(
                    json!({"type": "response.output_item.done", "output_index": 0,
                                   "item": reasoning}),
                ),
            ]);
        }
        steps.extend([
            Step::Event(json!({"type": "response.output_item.added",
                               "output_index": self.message_index(),
                               "item": self.message("in_progress", json!([]))})),
            Step::Event(self.part_event("response.content_part.added", "")),
        ]);
        steps
    }

    fn delta(&self, piece: &str) -> Step {
        Step::Event(self.text_event("response.output_text.delta", "delta", piece))
    }

    /// The full successful stream of codex-capture §5.1, with `gap` between deltas.
    pub fn ok_steps(&self, text: &str, deltas: usize, gap: Duration) -> Vec<Step> {
        let mut steps = self.opening();
        for (i, piece) in split_text(text, deltas).iter().enumerate() {
            if i > 0 && !gap.is_zero() {
                steps.push(Step::Sleep(gap));
            }
            steps.push(self.delta(piece));
        }
        let part = json!([{"type": "output_text", "text": text, "annotations": []}]);
        let item = self.message("completed", part);
        let output = self
            .reasoning
            .iter()
            .cloned()
            .chain([item.clone()])
            .collect();
        steps.extend([
            Step::Event(self.text_event("response.output_text.done", "text", text)),
            Step::Event(self.part_event("response.content_part.done", text)),
            Step::Event(json!({"type": "response.output_item.done",
                               "output_index": self.message_index(), "item": item})),
            Step::Event(self.completed(output, deltas)),
        ]);
        steps
    }

    /// A `generate: false` prewarm on a WebSocket (protocol §5.4): created, then completed
    /// with no output.
    pub fn prewarm_steps(&self) -> Vec<Step> {
        vec![
            Step::Event(self.created()),
            Step::Event(self.completed(Vec::new(), 0)),
        ]
    }

    /// `ok_steps` for `n` one-word deltas, each stamped with its send time.
    pub fn timed_steps(&self, n: usize, gap: Duration) -> Vec<Step> {
        let stamp = |step| match step {
            Step::Event(e) if e["type"] == "response.output_text.delta" => Step::Stamped(e),
            other => other,
        };
        let text = super::behaviour::event_words(n);
        self.ok_steps(&text, n, gap)
            .into_iter()
            .map(stamp)
            .collect()
    }

    /// Remote compaction v2 (codex-capture §8.2): exactly one `compaction` output item.
    pub fn compaction_steps(&self, id: &str, encrypted_content: &str) -> Vec<Step> {
        let item = json!({"id": id, "type": "compaction", "encrypted_content": encrypted_content});
        vec![
            Step::Event(self.created()),
            Step::Event(self.usage.rate_limits_event(&self.plan, self.created_at)),
            Step::Event(
                json!({"type": "response.output_item.added", "output_index": 0,
                               "item": item.clone()}),
            ),
            Step::Event(
                json!({"type": "response.output_item.done", "output_index": 0,
                               "item": item.clone()}),
            ),
            Step::Event(self.completed(vec![item], 1)),
        ]
    }

    /// The opening, `deltas` deltas, then a dropped connection instead of `response.completed`.
    pub fn cut_steps(&self, deltas: usize) -> Vec<Step> {
        let mut steps = self.opening();
        steps.extend((0..deltas).map(|i| self.delta(&format!("part{i} "))));
        steps.push(Step::Cut);
        steps
    }

    pub fn failed(&self, code: &str) -> Value {
        let mut response = self.response("failed", json!([]));
        response["error"] =
            json!({"code": code, "message": format!("fake upstream failed: {code}")});
        json!({"type": "response.failed", "response": response})
    }
}

/// `{"type":"error",...}` as the first event, as exhausted accounts do per CLIProxyAPI.
pub(super) fn error_event(code: &str) -> Value {
    json!({"type": "error", "error": {"type": code, "code": code,
           "message": format!("fake upstream error event: {code}")}})
}

fn frame(event: &Value) -> Bytes {
    let kind = event["type"].as_str().unwrap_or("message");
    Bytes::from(format!("event: {kind}\ndata: {}\n\n", type_first(event)))
}

/// The event's JSON with `type` as its first field, as the backend writes every event
/// (codex-capture §5.1); `json!` would sort the fields.
fn type_first(event: &Value) -> String {
    let Some(fields) = event.as_object().filter(|f| f.contains_key("type")) else {
        return event.to_string();
    };
    let mut out = format!("{{\"type\":{}", fields["type"]);
    for (name, value) in fields.iter().filter(|(name, _)| *name != "type") {
        out.push_str(&format!(",{}:{value}", Value::from(name.as_str())));
    }
    out.push('}');
    out
}

/// Plays `steps` as a streaming body on `connection`.
pub(super) fn body(steps: Vec<Step>, connection: Connection) -> Body {
    let stream = futures_util::stream::unfold(
        (steps.into_iter(), connection),
        |(mut steps, connection)| async move {
            loop {
                match steps.next()? {
                    Step::Event(event) => return Some((Ok(frame(&event)), (steps, connection))),
                    Step::Stamped(mut event) => {
                        event["t"] = clock_ns().into();
                        return Some((Ok(frame(&event)), (steps, connection)));
                    }
                    Step::Sleep(d) => tokio::time::sleep(d).await,
                    Step::Cut => {
                        // Pause first so hyper flushes the events already yielded; then close
                        // the socket so the client sees a truncated chunked body.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        connection.kill();
                        let error = std::io::Error::other("fake upstream cut the stream");
                        return Some((Err(error), (steps, connection)));
                    }
                }
            }
        },
    );
    Body::from_stream(stream)
}

/// The JSON `data:` payloads of an SSE body, in order, for tests reading a whole stream.
/// Blocks without a JSON `data:` line (comments, keep-alives) are skipped.
pub fn sse_events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|block| block.lines().find_map(|line| line.strip_prefix("data:")))
        .filter_map(|data| serde_json::from_str(data.trim_start()).ok())
        .collect()
}
