//! What the fake backend does with one call, queued per account by the tests.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The answer of `Behaviour::ok()`, also what the stall behaviours send once they resume.
pub const OK_TEXT: &str = "hello from fake upstream";
pub(super) const OK_DELTAS: usize = 4;

/// What the backend does with one `/responses` (or `/responses/compact`) call of an account.
/// On the WebSocket the same events go out as text frames, and the JSON errors as
/// `{"type":"error","status":N,"error":{…},"headers":{…}}` frames.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200 SSE exactly like codex-capture §5.1 (plus `codex.rate_limits` after
    /// `response.created`), `text` split into `deltas` deltas with `gap` between them. A
    /// reasoning item bound to the account comes first when `include` asks for
    /// `reasoning.encrypted_content`; an input ending in `compaction_trigger` gets one
    /// compaction item instead, and `generate: false` no output at all.
    Ok {
        text: String,
        deltas: usize,
        gap: Duration,
    },
    /// 429 `usage_limit_reached` with `resets_at = now + resets_in_seconds`, primary at 100 %.
    UsageLimit { resets_in_seconds: u64 },
    /// 429 `rate_limit_exceeded` ("try again in 1.5s"), no `Retry-After`.
    RateLimited,
    /// 503 `server_is_overloaded`.
    Overloaded,
    /// Any status with a JSON body.
    Status { status: u16, body: Value },
    /// 200 SSE whose first event is `response.failed` with this code, then EOF.
    FailedFirst { code: String },
    /// 200 SSE whose first event is `{"type":"error",...}` with this code, then EOF.
    ErrorEventFirst { code: String },
    /// 200 SSE: the opening events and this many deltas, then the TCP connection is dropped.
    CutAfter { deltas_before_cut: usize },
    /// No byte at all for `d`, then the default `Behaviour::ok()` answer.
    StallBeforeHeaders { d: Duration },
    /// Headers and `response.created`, nothing for `d`, then the rest of `Behaviour::ok()`.
    StallAfterFirstEvent { d: Duration },
    /// Close the connection without sending any response.
    Reset,
    /// Like `Behaviour::events(deltas, gap)`, but every delta carries `"t"`: `clock_ns()` at
    /// the moment the fake hands it to the server, for forwarding-delay benchmarks.
    Timed { deltas: usize, gap: Duration },
    /// The backend refusing a deactivated account or workspace, in one of its shapes.
    Deactivated(Deactivation),
    /// The default answer with an event of a type no Codex knows yet after the first one, as a
    /// newer backend may send.
    Unfamiliar,
}

/// The shapes in which the ChatGPT backend says an account cannot be used at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deactivation {
    /// 401, the OpenAI error body with `error.code = account_deactivated`.
    Account401,
    /// 402 `{"detail":{"code":"deactivated_workspace"}}`, what Codex users see on a
    /// workspace that is gone.
    Workspace402,
    /// 403 with `error.code = workspace_deactivated`.
    Workspace403,
    /// 403 with `error.code = governmentWorkspaceRequired`.
    GovernmentWorkspace403,
    /// 403 whose body says nothing; the code is only in the `x-error-json` header (base64
    /// JSON), which Codex reads as the identity error code.
    AccountInHeader403,
}

impl Deactivation {
    pub const ALL: [Deactivation; 5] = [
        Deactivation::Account401,
        Deactivation::Workspace402,
        Deactivation::Workspace403,
        Deactivation::GovernmentWorkspace403,
        Deactivation::AccountInHeader403,
    ];
}

/// Nanoseconds since a process-wide epoch (the first call): the clock of `Behaviour::Timed`
/// stamps, readable by a client in the same process.
pub fn clock_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let nanos = EPOCH.get_or_init(Instant::now).elapsed().as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

impl Behaviour {
    /// "hello from fake upstream" in four deltas, no gap.
    pub fn ok() -> Self {
        Self::ok_text(OK_TEXT)
    }

    /// `text` in four deltas, no gap.
    pub fn ok_text(text: &str) -> Self {
        Self::Ok {
            text: text.to_owned(),
            deltas: OK_DELTAS,
            gap: Duration::ZERO,
        }
    }

    /// `n` one-word deltas `gap` apart, for throughput and latency benchmarks.
    pub fn events(n: usize, gap: Duration) -> Self {
        Self::Ok {
            text: event_words(n),
            deltas: n,
            gap,
        }
    }
}

/// The text of `Behaviour::events(n, _)`: `n` words, one per delta.
pub(super) fn event_words(n: usize) -> String {
    let words: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
    words.join(" ")
}

/// Faults planned for a fixed share of calls, whatever the account: every `every`-th call
/// that finds its account's queue empty gets the next of `faults` (in turn) instead of the
/// default behaviour. For soak runs, where the router picks the account.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    every: u64,
    faults: Vec<Behaviour>,
    calls: u64,
    served: u64,
}

impl FaultPlan {
    pub fn new(every: u64, faults: Vec<Behaviour>) -> Self {
        Self {
            every,
            faults,
            ..Self::default()
        }
    }

    /// The planned fault for this call, if it is one.
    pub(super) fn next(&mut self) -> Option<Behaviour> {
        if self.every == 0 || self.faults.is_empty() {
            return None;
        }
        self.calls += 1;
        if !self.calls.is_multiple_of(self.every) {
            return None;
        }
        let fault = self.faults[self.served as usize % self.faults.len()].clone();
        self.served += 1;
        Some(fault)
    }

    /// Calls counted and faults served so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.calls, self.served)
    }
}
