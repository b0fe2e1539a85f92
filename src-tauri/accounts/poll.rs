//! Sparing polls of the usage endpoint, so usage is known before the first request. A poll
//! never refreshes a token: an account whose access token has expired waits for real traffic.

use std::time::Duration;

use serde_json::Value;

use super::usage::{Usage, Window};
use super::{now_ms, Pool};

/// Usage younger than this is not asked for again.
const FRESH_ENOUGH_MS: i64 = 5 * 60 * 1000;

impl Pool {
    /// Polls every usable account now, then every `every`, until the task is dropped;
    /// `on_update` runs after a round that learned something (the tray redraws then).
    pub async fn poll_usage_forever(
        self,
        usage_url: String,
        every: Duration,
        on_update: impl Fn() + Send + 'static,
    ) {
        loop {
            if self.poll_usage_once(&usage_url).await > 0 {
                on_update();
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Polls the accounts whose usage is unknown or old; returns how many it updated.
    pub async fn poll_usage_once(&self, usage_url: &str) -> usize {
        self.sync_from_disk();
        let now = now_ms();
        let due: Vec<(String, crate::sensitive::AccessToken, Option<String>)> = self
            .state()
            .accounts
            .iter()
            .filter(|a| a.record.enabled && !a.needs_login())
            .filter(|a| {
                a.usage
                    .as_ref()
                    .is_none_or(|u| now - u.updated_at * 1000 > FRESH_ENOUGH_MS)
            })
            .filter(|a| a.expires_ms().is_some_and(|exp| exp > now + 30_000))
            .filter_map(|a| {
                Some((
                    a.key.clone(),
                    a.access.clone()?,
                    a.record.account_id.clone(),
                ))
            })
            .collect();
        let mut updated = 0;
        for (key, token, account_id) in due {
            let mut request = self
                .inner
                .http
                .get(usage_url)
                .bearer_auth(token.expose())
                .timeout(Duration::from_secs(10));
            if let Some(id) = account_id {
                request = request.header("chatgpt-account-id", id);
            }
            let Ok(response) = request.send().await else {
                continue;
            };
            if !response.status().is_success() {
                continue;
            }
            if let Ok(body) = response.json::<Value>().await {
                if let Some(usage) = from_usage_payload(&body, now / 1000) {
                    self.record_usage(&key, usage);
                    updated += 1;
                }
            }
        }
        updated
    }
}

/// Reads the `/wham/usage` payload (protocol §3.4).
pub fn from_usage_payload(body: &Value, now_s: i64) -> Option<Usage> {
    let limits = body.get("rate_limit")?;
    let window = |name: &str| {
        let w = limits.get(name).filter(|w| !w.is_null())?;
        Some(Window {
            used_percent: w.get("used_percent")?.as_f64()?,
            window_minutes: w
                .get("limit_window_seconds")
                .and_then(Value::as_i64)
                .map(|s| s / 60),
            resets_at: w.get("reset_at").and_then(Value::as_i64).or_else(|| {
                w.get("reset_after_seconds")
                    .and_then(Value::as_i64)
                    .map(|s| now_s + s)
            }),
        })
    };
    Some(Usage {
        primary: window("primary_window"),
        secondary: window("secondary_window"),
        plan: body
            .get("plan_type")
            .and_then(Value::as_str)
            .map(str::to_string),
        updated_at: now_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usage_endpoint_shape() {
        let body = serde_json::json!({"plan_type":"pro","rate_limit":{"allowed":true,"limit_reached":false,
            "primary_window":{"used_percent":12,"limit_window_seconds":18000,"reset_after_seconds":60,"reset_at":1000},
            "secondary_window":{"used_percent":3.5,"limit_window_seconds":604800,"reset_after_seconds":600}}});
        let u = from_usage_payload(&body, 100).unwrap();
        let p = u.primary.unwrap();
        assert_eq!(
            (p.used_percent, p.window_minutes, p.resets_at),
            (12.0, Some(300), Some(1000))
        );
        assert_eq!(u.secondary.unwrap().resets_at, Some(700));
        assert_eq!(u.plan.as_deref(), Some("pro"));
    }
}
