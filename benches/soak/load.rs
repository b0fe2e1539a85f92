//! The client side of the soak: a slot holds one Codex session and sends its next request as
//! soon as the last one ends; each request's outcome is sorted into served, failed because of
//! a fault the fake planned, or failed for any other reason.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;

use crate::measure::Target;

/// A request that takes longer than this is an error: the longest planned stream is 30 s.
const REQUEST_DEADLINE: Duration = Duration::from_secs(90);
/// Error bodies are small JSON; more than this is itself suspect.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
const COMPLETED: &[u8] = b"response.completed";

/// How one request ended, as the client saw it.
pub enum Outcome {
    Served {
        ttfb: Duration,
    },
    /// An answer the router gives only when every account is resting after planned faults:
    /// all limited (429 `usage_limit_reached`), the fake's 503 `server_is_overloaded`
    /// replayed, or 502 `upstream_unavailable` after cuts.
    FakeFault(String),
    /// Anything else: a reset, a cut stream, a stream without `response.completed`, another
    /// status, a request over the deadline.
    Other(String),
}

/// Counts shared by the slots and the sampler.
#[derive(Default)]
pub struct Tally {
    pub open: usize,
    pub served: u64,
    pub fake_faults: u64,
    pub other: u64,
    /// Client-visible errors by kind, with a count each.
    pub kinds: BTreeMap<String, u64>,
    /// Time to first byte of served requests, ms, since the last sample.
    pub ttfb_ms: Vec<f64>,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Served { ttfb } => {
                self.served += 1;
                self.ttfb_ms.push(ttfb.as_secs_f64() * 1000.0);
            }
            Outcome::FakeFault(kind) => {
                self.fake_faults += 1;
                *self.kinds.entry(format!("fake: {kind}")).or_default() += 1;
            }
            Outcome::Other(kind) => {
                self.other += 1;
                *self
                    .kinds
                    .entry(format!("not the fake: {kind}"))
                    .or_default() += 1;
            }
        }
    }
}

pub type SharedTally = Arc<Mutex<Tally>>;

pub fn lock(tally: &SharedTally) -> std::sync::MutexGuard<'_, Tally> {
    tally
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends requests of session `session` one after another until `until`, then returns.
pub async fn run_slot(target: &Target, session: String, until: Instant, tally: SharedTally) {
    let body = Bytes::from(crate::harness::codex_body(&session, "gpt-5.5").to_string());
    // Bounded: every request ends within REQUEST_DEADLINE, and none starts after `until`.
    while Instant::now() < until {
        lock(&tally).open += 1;
        let outcome =
            tokio::time::timeout(REQUEST_DEADLINE, stream(target, body.clone(), &session))
                .await
                .unwrap_or_else(|_| Outcome::Other("request over the deadline".to_string()));
        let mut tally = lock(&tally);
        tally.open -= 1;
        tally.add(outcome);
    }
}

/// One request, its SSE answer read to the end.
pub async fn stream(target: &Target, body: Bytes, session: &str) -> Outcome {
    let started = Instant::now();
    let sent = target
        .client
        .post(&target.url)
        .headers(target.headers.clone())
        .header("session-id", session)
        .body(body)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => return Outcome::Other(format!("send: {}", error_chain(&e))),
    };
    let status = response.status();
    if !status.is_success() {
        return refused(status.as_u16(), response).await;
    }
    let mut chunks = response.bytes_stream();
    let mut ttfb = None;
    let mut tail: Vec<u8> = Vec::new();
    let mut completed = false;
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return Outcome::Other(format!("body: {}", error_chain(&e))),
        };
        ttfb.get_or_insert_with(|| started.elapsed());
        // The marker may straddle two chunks: look in the end of the last one too.
        tail.extend_from_slice(&chunk);
        completed |= tail.windows(COMPLETED.len()).any(|w| w == COMPLETED);
        let keep = tail.len().saturating_sub(COMPLETED.len());
        tail.drain(..keep);
    }
    match (completed, ttfb) {
        (true, Some(ttfb)) => Outcome::Served { ttfb },
        _ => Outcome::Other("200 without response.completed".to_string()),
    }
}

async fn refused(status: u16, response: reqwest::Response) -> Outcome {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        body.extend_from_slice(&chunk);
        if body.len() > ERROR_BODY_LIMIT {
            break;
        }
    }
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let code = json["error"]["code"].as_str().unwrap_or("").to_string();
    let kind = format!("{status} {code}");
    match (status, code.as_str()) {
        (429, "usage_limit_reached")
        | (503, "server_is_overloaded")
        | (502, "upstream_unavailable") => Outcome::FakeFault(kind),
        _ => Outcome::Other(kind),
    }
}

/// The error and its sources, which say what reqwest's own message leaves out.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
