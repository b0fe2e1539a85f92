//! An answer's stream as it passes to Codex: nothing held back, and on the way the router
//! reads what it needs from it (`codex.rate_limits` for the account's usage, the tokens of
//! `response.completed` for the history). Also the readers the WebSocket path shares.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;

use super::sse;
use super::upstream::{describe, MAX_HELD_BYTES};
use crate::accounts::{usage, Pool};
use crate::history::{Entry, Recorder, Tokens};

/// Records the figures of one `codex.rate_limits` event's bytes.
pub(super) fn record_event_limits(pool: &Pool, account: &str, event: &[u8], now_s: i64) {
    if let Some(json) = sse::event_json(event) {
        record_rate_limits(pool, account, &json, now_s);
    }
}

pub(super) fn record_rate_limits(pool: &Pool, account: &str, json: &Value, now_s: i64) {
    if json.get("type").and_then(Value::as_str) == Some("codex.rate_limits") {
        if let Some(u) = usage::from_rate_limits_event(json, now_s) {
            pool.record_usage(account, u);
        }
    }
}

/// Watches passing events for `codex.rate_limits` without holding any byte back.
pub(super) struct Scanner {
    pub pool: Pool,
    pub account: String,
    pub events: sse::Splitter,
    /// The opening's rate-limit events, read on the first chunk after it (or at the end).
    pub preamble_limits: Vec<Bytes>,
    /// Where the tokens of `response.completed` go.
    pub history: Option<Recorder>,
}

impl Drop for Scanner {
    fn drop(&mut self) {
        self.record_preamble_limits();
    }
}

impl Scanner {
    fn record_preamble_limits(&mut self) {
        let now = crate::accounts::now_ms() / 1000;
        for event in std::mem::take(&mut self.preamble_limits) {
            record_event_limits(&self.pool, &self.account, &event, now);
        }
    }

    fn observe(&mut self, chunk: &[u8]) {
        self.record_preamble_limits();
        let (pool, account, history) = (&self.pool, &self.account, &self.history);
        self.events.feed(chunk, |event| {
            if names(event, b"codex.rate_limits") {
                let now = crate::accounts::now_ms() / 1000;
                record_event_limits(pool, account, event, now);
            } else if let Some(history) = history.as_ref().filter(|_| names(event, COMPLETED)) {
                if let Some(tokens) = completed_tokens(event, account, &pool.display_name(account))
                {
                    history.record(Entry::Tokens(tokens));
                }
            }
        });
        if self.events.pending().len() > 8 * MAX_HELD_BYTES {
            self.events.clear();
        }
    }
}

pub(super) const COMPLETED: &[u8] = b"response.completed";

/// Whether the event type `name` is in the head of `event`: the type leads every event
/// Codex's backend sends, so only the head is looked at.
pub(super) fn names(event: &[u8], name: &[u8]) -> bool {
    memchr::memmem::find(&event[..event.len().min(160)], name).is_some()
}

/// The token counts of a `response.completed` event (`response.usage`), for the history.
pub(super) fn completed_tokens(event: &[u8], key: &str, account: &str) -> Option<Tokens> {
    tokens_of(&sse::event_json(event)?, key, account)
}

/// The token counts of a `response.completed` event's JSON (over HTTP or WebSocket).
pub(super) fn tokens_of(json: &Value, key: &str, account: &str) -> Option<Tokens> {
    if json.get("type").and_then(Value::as_str) != Some("response.completed") {
        return None;
    }
    let usage = json.get("response")?.get("usage")?;
    let count = |v: Option<&Value>| v.and_then(Value::as_i64).unwrap_or(0);
    Some(Tokens {
        at: crate::accounts::now_ms(),
        account: account.to_string(),
        key: key.to_string(),
        input: count(usage.get("input_tokens")),
        output: count(usage.get("output_tokens")),
        cached: count(
            usage
                .get("input_tokens_details")
                .and_then(|d| d.get("cached_tokens")),
        ),
    })
}

pub(super) fn stream_body(
    held: Bytes,
    upstream: impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Send + Unpin + 'static,
    scanner: Scanner,
    idle: Duration,
) -> Body {
    let first = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(held) });
    let rest = futures_util::stream::unfold(
        (upstream, scanner, false),
        move |(mut upstream, mut scanner, done)| async move {
            if done {
                return None;
            }
            match tokio::time::timeout(idle, upstream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    scanner.observe(&chunk);
                    Some((Ok(chunk), (upstream, scanner, false)))
                }
                Ok(None) => None,
                // Ending the body with an error cuts the client's stream, which Codex retries.
                Ok(Some(Err(e))) => Some((
                    Err(std::io::Error::other(format!(
                        "upstream stream broke: {}",
                        describe(&e)
                    ))),
                    (upstream, scanner, true),
                )),
                Err(_) => Some((
                    Err(std::io::Error::other("upstream stream stalled")),
                    (upstream, scanner, true),
                )),
            }
        },
    );
    Body::from_stream(first.chain(rest))
}
