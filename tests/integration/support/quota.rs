//! What the fake says about an account's usage, in every form Codex or the router reads it:
//! `x-codex-*` headers, the `codex.rate_limits` event, `/wham/usage` and the 429 body.

use serde_json::{json, Value};

pub(super) const PRIMARY_WINDOW_MINUTES: i64 = 300;
pub(super) const SECONDARY_WINDOW_MINUTES: i64 = 10080;

/// Usage numbers of one account, set by `FakeOpenAi::set_usage`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Usage {
    pub primary_percent: f64,
    pub secondary_percent: f64,
    pub primary_reset_at: i64,
    pub secondary_reset_at: i64,
}

impl Usage {
    fn limit_reached(&self) -> bool {
        self.primary_percent >= 100.0 || self.secondary_percent >= 100.0
    }

    /// Rate-limit headers (protocol §3.1); `primary` overrides the primary percent and reset.
    pub fn headers(&self, plan: &str, primary: Option<(f64, i64)>) -> Vec<(String, String)> {
        let (percent, reset_at) = primary.unwrap_or((self.primary_percent, self.primary_reset_at));
        [
            ("x-codex-primary-used-percent", percent.to_string()),
            (
                "x-codex-primary-window-minutes",
                PRIMARY_WINDOW_MINUTES.to_string(),
            ),
            ("x-codex-primary-reset-at", reset_at.to_string()),
            (
                "x-codex-secondary-used-percent",
                self.secondary_percent.to_string(),
            ),
            (
                "x-codex-secondary-window-minutes",
                SECONDARY_WINDOW_MINUTES.to_string(),
            ),
            (
                "x-codex-secondary-reset-at",
                self.secondary_reset_at.to_string(),
            ),
            ("x-codex-plan-type", plan.to_owned()),
        ]
        .map(|(name, value)| (name.to_owned(), value))
        .to_vec()
    }

    /// The `codex.rate_limits` event (protocol §3.2), windows with `reset_after_seconds` as the
    /// real backend sends them.
    pub fn rate_limits_event(&self, plan: &str, now: i64) -> Value {
        let window = |percent: f64, minutes: i64, reset_at: i64| {
            json!({"used_percent": percent, "window_minutes": minutes, "reset_at": reset_at,
                   "reset_after_seconds": (reset_at - now).max(0)})
        };
        json!({
            "type": "codex.rate_limits",
            "plan_type": plan,
            "rate_limits": {
                "allowed": !self.limit_reached(),
                "limit_reached": self.limit_reached(),
                "primary": window(self.primary_percent, PRIMARY_WINDOW_MINUTES, self.primary_reset_at),
                "secondary": window(self.secondary_percent, SECONDARY_WINDOW_MINUTES, self.secondary_reset_at),
            },
            "credits": {"has_credits": false, "unlimited": false, "balance": "0"},
            "code_review_rate_limits": null,
            "promo": null,
        })
    }

    /// The `/wham/usage` body (protocol §3.4).
    pub fn status_body(&self, plan: &str, now: i64) -> Value {
        let window = |percent: f64, minutes: i64, reset_at: i64| {
            json!({"used_percent": percent, "limit_window_seconds": minutes * 60,
                   "reset_after_seconds": (reset_at - now).max(0), "reset_at": reset_at})
        };
        let reached_type = if self.limit_reached() {
            json!({"type": "rate_limit_reached"})
        } else {
            Value::Null
        };
        json!({
            "plan_type": plan,
            "rate_limit": {
                "allowed": !self.limit_reached(),
                "limit_reached": self.limit_reached(),
                "primary_window": window(self.primary_percent, PRIMARY_WINDOW_MINUTES, self.primary_reset_at),
                "secondary_window": window(self.secondary_percent, SECONDARY_WINDOW_MINUTES, self.secondary_reset_at),
            },
            "credits": {"has_credits": false, "unlimited": false, "balance": "0"},
            "additional_rate_limits": [],
            "rate_limit_reached_type": reached_type,
        })
    }
}

/// The 429 body of an exhausted account (protocol §3.3).
pub(super) fn usage_limit_body(plan: &str, resets_at: i64, resets_in_seconds: u64) -> Value {
    json!({"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
           "plan_type": plan, "resets_at": resets_at, "resets_in_seconds": resets_in_seconds}})
}
