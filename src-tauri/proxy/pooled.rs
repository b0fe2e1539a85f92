//! `GET /backend-api/wham/usage` and `GET /api/codex/usage` for the whole pool, in the
//! upstream's shape (protocol §3.4). Codex 0.154 and later read this to show the limits and to
//! stop sending when the signed-in account is exhausted; answered for one account it would
//! block the user while other accounts still have headroom (peers §3.3, item 6).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::Json;
use serde_json::{json, Value};

use super::status::{snapshot, AccountStatus};
use super::ProxyState;
use crate::accounts::now_ms;

/// Codex's rate-limit headers for the default family (protocol §3.1) that the pool's figures
/// replace. `x-codex-active-limit`, the credits and any other family pass unchanged.
const WINDOW_HEADERS: [(&str, &str, &str, &str); 2] = [
    (
        "primary_window",
        "x-codex-primary-used-percent",
        "x-codex-primary-window-minutes",
        "x-codex-primary-reset-at",
    ),
    (
        "secondary_window",
        "x-codex-secondary-used-percent",
        "x-codex-secondary-window-minutes",
        "x-codex-secondary-reset-at",
    ),
];

/// The pool's usage and the headers made of it, computed at most once a second: every answer
/// carries them, so they must not cost a full status per request (the status changes with
/// every request, so a cache keyed on it would never hit under load).
#[derive(Default)]
pub struct Cache(std::sync::Mutex<Option<Arc<Pooled>>>);

struct Pooled {
    second: i64,
    usage: Value,
    /// Each header of `WINDOW_HEADERS` with its value, `None` to remove it.
    headers: Vec<(HeaderName, Option<HeaderValue>)>,
}

fn cached(state: &ProxyState) -> Arc<Pooled> {
    let second = now_ms() / 1000;
    let mut slot = state
        .pooled_cache()
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(pooled) = slot.as_ref() {
        if pooled.second == second {
            return pooled.clone();
        }
    }
    let accounts = snapshot(state).accounts;
    let usage = pool_usage(&accounts, second);
    // Before any account's usage is known the pool's figure would read 0 %: the serving
    // account's own headers then say more.
    let known = accounts.iter().any(|a| {
        let primary = a.usage.as_ref().and_then(|u| u.get("primary"));
        primary.is_some_and(|w| w.is_object())
    });
    let headers = match known {
        true => header_values(&usage),
        false => Vec::new(),
    };
    let pooled = Arc::new(Pooled {
        second,
        usage,
        headers,
    });
    *slot = Some(pooled.clone());
    pooled
}

fn header_values(usage: &Value) -> Vec<(HeaderName, Option<HeaderValue>)> {
    let mut out = Vec::new();
    for (window, used, minutes, reset) in WINDOW_HEADERS {
        let w = &usage["rate_limit"][window];
        let Some(percent) = w["used_percent"].as_f64() else {
            continue;
        };
        let value = |text: String| HeaderValue::from_str(&text).ok();
        out.push((HeaderName::from_static(used), value(format!("{percent}"))));
        if let Some(seconds) = w["limit_window_seconds"].as_i64() {
            out.push((
                HeaderName::from_static(minutes),
                value((seconds / 60).to_string()),
            ));
        }
        let at = w["reset_at"].as_i64().and_then(|at| value(at.to_string()));
        out.push((HeaderName::from_static(reset), at));
    }
    out
}

/// Replaces the serving account's usage headers with the pool's. Codex 0.171 shows these
/// (the footer, the "less than N % left" warnings) and offers a cheaper model from them; from
/// one account they would warn and nudge while other accounts have headroom. Nothing changes
/// when the answer carries no usage headers.
pub fn rewrite_headers(state: &ProxyState, headers: &mut HeaderMap) {
    let has_usage = WINDOW_HEADERS
        .iter()
        .any(|(_, used, _, _)| headers.contains_key(*used));
    if !has_usage {
        return;
    }
    for (name, value) in &cached(state).headers {
        match value {
            Some(value) => {
                headers.insert(name.clone(), value.clone());
            }
            None => {
                headers.remove(name);
            }
        }
    }
}

/// A `codex.rate_limits` event (protocol §3.2; Codex acts on it over WebSocket) with the
/// pool's windows in place of the serving account's; false when it is not one.
pub fn rewrite_event(state: &ProxyState, event: &mut Value) -> bool {
    if event["type"] != "codex.rate_limits" || !event["rate_limits"].is_object() {
        return false;
    }
    let pooled = cached(state);
    for (window, name) in [
        ("primary_window", "primary"),
        ("secondary_window", "secondary"),
    ] {
        let w = &pooled.usage["rate_limit"][window];
        if w["used_percent"].is_null() || event["rate_limits"][name].is_null() {
            continue;
        }
        let minutes = w["limit_window_seconds"].as_i64().map(|s| s / 60);
        event["rate_limits"][name] = json!({
            "used_percent": w["used_percent"],
            "window_minutes": minutes,
            "reset_at": w["reset_at"],
            "reset_after_seconds": w["reset_after_seconds"],
        });
    }
    true
}

pub async fn usage(State(state): State<ProxyState>) -> Json<Value> {
    let status = snapshot(&state);
    let pooled = pool_usage(&status.accounts, now_ms() / 1000);
    tracing::debug!(
        limit_reached = %pooled["rate_limit"]["limit_reached"],
        primary_used_percent = %pooled["rate_limit"]["primary_window"]["used_percent"],
        "answered a usage request for the whole pool"
    );
    Json(pooled)
}

/// The pool as one account: each window's use is the average over the accounts that can
/// serve (a limited account counts as full until its reset), and the limit is reached only
/// when every one of them is limited.
pub fn pool_usage(accounts: &[AccountStatus], now_s: i64) -> Value {
    let serving: Vec<&AccountStatus> = accounts
        .iter()
        .filter(|a| a.enabled && !matches!(a.state.as_str(), "needs-login" | "needs-attention"))
        .collect();
    let limited = |a: &AccountStatus| a.state == "limited";
    let all_limited = !serving.is_empty() && serving.iter().all(|a| limited(a));
    // `/status` keeps usage as JSON: {"primary": {"usedPercent", "windowMinutes", "resetsAt"}}.
    let window = |name: &str, minutes: i64| {
        let pick = |a: &AccountStatus| {
            a.usage
                .as_ref()?
                .get(name)
                .filter(|w| w.is_object())
                .cloned()
        };
        let mut used = Vec::new();
        let mut resets = Vec::new();
        for a in &serving {
            let w = pick(a);
            let until = a.until.filter(|_| limited(a)).map(|ms| ms / 1000);
            let percent = match (
                limited(a),
                w.as_ref().and_then(|w| w["usedPercent"].as_f64()),
            ) {
                (true, _) => 100.0,
                (false, Some(p)) => p.clamp(0.0, 100.0),
                // Unknown usage: not counted, so one fresh account does not look empty.
                (false, None) => continue,
            };
            used.push(percent);
            let reset = until.or(w.as_ref().and_then(|w| w["resetsAt"].as_i64()));
            if let Some(r) = reset.filter(|r| *r > now_s && percent > 0.0) {
                resets.push(r);
            }
        }
        let percent = match used.len() {
            0 => 0.0,
            n => used.iter().sum::<f64>() / n as f64,
        };
        let window_minutes = serving
            .iter()
            .find_map(|a| pick(a)?["windowMinutes"].as_i64())
            .unwrap_or(minutes);
        // When capacity next comes back.
        let reset_at = resets.into_iter().min();
        json!({
            "used_percent": (percent * 10.0).round() / 10.0,
            "limit_window_seconds": window_minutes.saturating_mul(60),
            "reset_after_seconds": reset_at.map(|r| r.saturating_sub(now_s)),
            "reset_at": reset_at,
        })
    };
    let plan = serving
        .iter()
        .find_map(|a| a.plan.clone())
        .unwrap_or_else(|| "plus".to_string());
    json!({
        "plan_type": plan,
        "rate_limit": {
            "allowed": !serving.is_empty() && !all_limited,
            "limit_reached": all_limited,
            "primary_window": window("primary", 300),
            "secondary_window": window("secondary", 10_080),
        },
        "credits": null,
        "additional_rate_limits": [],
        "rate_limit_reached_type": if all_limited { json!({"type": "rate_limit_reached"}) } else { Value::Null },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn account(state: &str, primary: Option<f64>, until_s: Option<i64>) -> AccountStatus {
        let window =
            |p: f64| json!({"usedPercent": p, "windowMinutes": 300, "resetsAt": NOW + 3600});
        AccountStatus {
            index: 0,
            key: "k".into(),
            label: None,
            email: None,
            plan: Some("pro".into()),
            enabled: true,
            state: state.into(),
            until: until_s.map(|s| s * 1000),
            needs_login_reason: None,
            attention: None,
            limits: Default::default(),
            usage: primary.map(|p| json!({"primary": window(p), "secondary": window(p / 2.0)})),
            last_used: None,
            preferred: false,
            empty_at: None,
        }
    }

    #[test]
    fn one_limited_account_does_not_block_the_pool() {
        let pool = [
            account("limited", Some(100.0), Some(NOW + 600)),
            account("ok", Some(20.0), None),
        ];
        let u = pool_usage(&pool, NOW);
        assert_eq!(u["rate_limit"]["allowed"], true);
        assert_eq!(u["rate_limit"]["limit_reached"], false);
        assert_eq!(u["rate_limit"]["primary_window"]["used_percent"], 60.0);
        assert_eq!(u["rate_limit"]["primary_window"]["reset_at"], NOW + 600);
        assert_eq!(u["rate_limit_reached_type"], Value::Null);
        assert_eq!(u["plan_type"], "pro");
    }

    #[test]
    fn the_limit_is_reached_only_when_every_serving_account_is_limited() {
        let mut disabled = account("ok", Some(0.0), None);
        disabled.enabled = false;
        let pool = [
            account("limited", Some(100.0), Some(NOW + 900)),
            account("limited", None, Some(NOW + 300)),
            disabled,
        ];
        let u = pool_usage(&pool, NOW);
        assert_eq!(u["rate_limit"]["allowed"], false);
        assert_eq!(u["rate_limit"]["limit_reached"], true);
        assert_eq!(u["rate_limit"]["primary_window"]["used_percent"], 100.0);
        assert_eq!(u["rate_limit"]["primary_window"]["reset_at"], NOW + 300);
        assert_eq!(u["rate_limit_reached_type"]["type"], "rate_limit_reached");
    }
}
