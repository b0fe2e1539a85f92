//! Usage and limit signals read from upstream answers: `x-codex-*` headers,
//! `codex.rate_limits` events and `usage_limit_reached` bodies.

use reqwest::header::{HeaderMap, HeaderName};
use serde::Serialize;
use serde_json::Value;

/// One rate-limit window (the 5-hour "primary" or the weekly "secondary").
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub used_percent: f64,
    pub window_minutes: Option<i64>,
    /// Epoch seconds.
    pub resets_at: Option<i64>,
}

/// What the upstream last said about an account's headroom.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub primary: Option<Window>,
    pub secondary: Option<Window>,
    pub plan: Option<String>,
    /// Epoch seconds of the answer this came from.
    pub updated_at: i64,
}

impl Usage {
    /// Fraction of headroom left in the tighter window, 0.0..=1.0; `None` when unknown.
    pub fn headroom(&self) -> Option<f64> {
        [&self.primary, &self.secondary]
            .into_iter()
            .flatten()
            .map(|w| (1.0 - w.used_percent / 100.0).clamp(0.0, 1.0))
            .reduce(f64::min)
    }
}

/// A reset countdown a person reads at a glance: "3d 4h", "1h 02m", "45s".
pub fn countdown(ms: i64) -> String {
    let s = (ms / 1000).max(0);
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {:02}s", s % 60)
    } else {
        format!("{s}s")
    }
}

/// Reads `x-codex-{primary,secondary}-*` headers; `None` when there are none.
pub fn from_headers(headers: &HeaderMap, now: i64) -> Option<Usage> {
    let get = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    // Read on every answer: the names are made once, not formatted and parsed each time.
    let window = |[used, minutes, reset_at, reset_after]: &[HeaderName; 4]| {
        let used = get(used)?.trim().parse::<f64>().ok()?;
        let minutes = get(minutes).and_then(|v| v.trim().parse().ok());
        let reset_at = get(reset_at)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .or_else(|| {
                get(reset_after)
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .map(|s| now.saturating_add(s as i64))
            });
        Some(Window {
            used_percent: used,
            window_minutes: minutes,
            resets_at: reset_at,
        })
    };
    let usage = Usage {
        primary: window(&PRIMARY_HEADERS),
        secondary: window(&SECONDARY_HEADERS),
        plan: get(&PLAN_HEADER).map(str::to_string),
        updated_at: now,
    };
    (usage.primary.is_some() || usage.secondary.is_some()).then_some(usage)
}

/// Whether `next` is worth keeping in the history after `previous`: a window's figure or
/// reset changed, or the last reading is ten minutes old (so a quiet stretch still has points).
pub fn changes(previous: Option<&Usage>, next: &Usage) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    let figures = |w: &Option<Window>| w.as_ref().map(|w| (w.used_percent, w.resets_at));
    figures(&previous.primary) != figures(&next.primary)
        || figures(&previous.secondary) != figures(&next.secondary)
        || next.updated_at - previous.updated_at >= 600
}

const PRIMARY_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("x-codex-primary-used-percent"),
    HeaderName::from_static("x-codex-primary-window-minutes"),
    HeaderName::from_static("x-codex-primary-reset-at"),
    HeaderName::from_static("x-codex-primary-reset-after-seconds"),
];
const SECONDARY_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("x-codex-secondary-used-percent"),
    HeaderName::from_static("x-codex-secondary-window-minutes"),
    HeaderName::from_static("x-codex-secondary-reset-at"),
    HeaderName::from_static("x-codex-secondary-reset-after-seconds"),
];
const PLAN_HEADER: HeaderName = HeaderName::from_static("x-codex-plan-type");

/// Reads a `codex.rate_limits` event (protocol §3.2).
pub fn from_rate_limits_event(event: &Value, now: i64) -> Option<Usage> {
    let limits = event.get("rate_limits")?;
    let window = |name: &str| {
        let w = limits.get(name).filter(|w| !w.is_null())?;
        Some(Window {
            used_percent: w.get("used_percent")?.as_f64()?,
            window_minutes: w.get("window_minutes").and_then(Value::as_i64),
            resets_at: w.get("reset_at").and_then(Value::as_i64).or_else(|| {
                w.get("reset_after_seconds")
                    .and_then(Value::as_f64)
                    .map(|s| now.saturating_add(s as i64))
            }),
        })
    };
    Some(Usage {
        primary: window("primary"),
        secondary: window("secondary"),
        plan: event
            .get("plan_type")
            .and_then(Value::as_str)
            .map(str::to_string),
        updated_at: now,
    })
}

/// Error codes that mean "this account cannot serve now, another one may".
pub fn is_limit_code(code: &str) -> bool {
    matches!(
        code,
        "usage_limit_reached" | "rate_limit_exceeded" | "insufficient_quota" | "usage_not_included"
    )
}

pub fn is_overload_code(code: &str) -> bool {
    matches!(code, "server_is_overloaded" | "slow_down")
}

/// When a limited account frees up, epoch seconds: the body's `resets_at`, else its
/// `resets_in_seconds`, else the reset of the window the headers show as full.
pub fn limit_reset(body: &Value, headers: Option<&HeaderMap>, now: i64) -> Option<i64> {
    let error = body.get("error").unwrap_or(body);
    if let Some(at) = error.get("resets_at").and_then(Value::as_i64) {
        return Some(at);
    }
    if let Some(secs) = error.get("resets_in_seconds").and_then(Value::as_f64) {
        return Some(now.saturating_add(secs as i64));
    }
    let usage = from_headers(headers?, now)?;
    [usage.primary, usage.secondary]
        .into_iter()
        .flatten()
        .filter(|w| w.used_percent >= 100.0)
        .filter_map(|w| w.resets_at)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn headers_give_both_windows_and_reset_after_becomes_an_instant() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-codex-primary-used-percent",
            HeaderValue::from_static("42"),
        );
        h.insert(
            "x-codex-primary-window-minutes",
            HeaderValue::from_static("300"),
        );
        h.insert("x-codex-primary-reset-at", HeaderValue::from_static("2000"));
        h.insert(
            "x-codex-secondary-used-percent",
            HeaderValue::from_static("17.5"),
        );
        h.insert(
            "x-codex-secondary-reset-after-seconds",
            HeaderValue::from_static("60"),
        );
        let u = from_headers(&h, 1000).unwrap();
        assert_eq!(u.primary.as_ref().unwrap().resets_at, Some(2000));
        assert_eq!(u.secondary.as_ref().unwrap().resets_at, Some(1060));
        assert!((u.headroom().unwrap() - 0.58).abs() < 1e-9);
        assert!(from_headers(&HeaderMap::new(), 0).is_none());
    }

    #[test]
    fn limit_reset_prefers_the_body_then_full_windows() {
        let body =
            serde_json::json!({"error":{"type":"usage_limit_reached","resets_in_seconds":30}});
        assert_eq!(limit_reset(&body, None, 100), Some(130));
        let mut h = HeaderMap::new();
        h.insert(
            "x-codex-primary-used-percent",
            HeaderValue::from_static("100"),
        );
        h.insert("x-codex-primary-reset-at", HeaderValue::from_static("999"));
        assert_eq!(
            limit_reset(&serde_json::json!({}), Some(&h), 100),
            Some(999)
        );
    }

    #[test]
    fn rate_limits_event_is_read() {
        let e = serde_json::json!({"type":"codex.rate_limits","plan_type":"plus","rate_limits":{
            "primary":{"used_percent":42,"window_minutes":60,"reset_at":1700000000},"secondary":null}});
        let u = from_rate_limits_event(&e, 0).unwrap();
        assert_eq!(u.primary.unwrap().used_percent, 42.0);
        assert!(u.secondary.is_none());
        assert_eq!(u.plan.as_deref(), Some("plus"));
    }

    /// Found by the SSE properties: an upstream's `1e300` seconds overflowed the clock and
    /// panicked (debug) or wrapped to a reset in the past (release).
    #[test]
    fn a_reset_too_far_for_the_clock_saturates_instead_of_overflowing() {
        let event = serde_json::json!({"type":"codex.rate_limits","rate_limits":{
            "primary":{"used_percent":0,"reset_after_seconds":1e300}}});
        let u = from_rate_limits_event(&event, 1).unwrap();
        assert_eq!(u.primary.unwrap().resets_at, Some(i64::MAX));
        let error = serde_json::json!({"error":{"resets_in_seconds":1e300}});
        assert_eq!(limit_reset(&error, None, 1), Some(i64::MAX));
        let mut h = HeaderMap::new();
        h.insert(
            "x-codex-primary-used-percent",
            HeaderValue::from_static("100"),
        );
        h.insert(
            "x-codex-primary-reset-after-seconds",
            HeaderValue::from_static("1e300"),
        );
        let u = from_headers(&h, 1).unwrap();
        assert_eq!(u.primary.unwrap().resets_at, Some(i64::MAX));
    }
}
