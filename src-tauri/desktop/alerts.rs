//! Alerts before a limit rather than at it: an account's 5-hour or weekly window crossing one
//! of the user's thresholds (once per threshold, window and account), and the whole pool on
//! pace to run out before its next reset (once, with the time).

use std::collections::HashSet;

use super::notices::{name, Notice};
use super::tray_model::countdown;
use crate::proxy::AccountStatus;

/// Remembers what was told: a window is known by its reset time, so the next window tells
/// again.
#[derive(Default)]
pub struct Alerts {
    told: HashSet<(String, &'static str, u8, i64)>,
    pool_told: bool,
}

impl Alerts {
    /// The alerts `accounts` call for now, at `thresholds` (percents, ascending).
    pub fn update(
        &mut self,
        accounts: &[AccountStatus],
        thresholds: &[u8],
        now_ms: i64,
    ) -> Vec<Notice> {
        let mut out = Vec::new();
        for a in accounts.iter().filter(|a| a.enabled) {
            for (window, label) in [("primary", "5-hour"), ("secondary", "weekly")] {
                let Some(w) = a.usage.as_ref().and_then(|u| u.get(window)) else {
                    continue;
                };
                let used = w.get("usedPercent").and_then(|v| v.as_f64()).unwrap_or(0.0);
                let resets = w.get("resetsAt").and_then(|v| v.as_i64()).unwrap_or(0);
                // Only the highest threshold crossed is told; the lower ones count as told.
                let crossed: Vec<u8> = thresholds
                    .iter()
                    .copied()
                    .filter(|t| used >= f64::from(*t))
                    .collect();
                let fresh: Vec<u8> = crossed
                    .iter()
                    .copied()
                    .filter(|t| self.told.insert((a.key.clone(), window, *t, resets)))
                    .collect();
                // At the limit the limit's own notice says it (`notices`); the thresholds
                // below it count as told.
                if used >= 100.0 {
                    continue;
                }
                if let Some(top) = fresh.last() {
                    let reset = if resets > 0 {
                        format!(" It resets in {}.", countdown(resets * 1000 - now_ms))
                    } else {
                        String::new()
                    };
                    out.push(Notice {
                        title: format!("{} used {top} % of its {label} limit", name(a)),
                        body: format!("Now at {used:.0} %.{reset}"),
                    });
                }
            }
        }
        // Every account in service runs out of its 5-hour window before it resets.
        let live: Vec<&AccountStatus> = accounts
            .iter()
            .filter(|a| a.enabled && matches!(a.state.as_str(), "ok" | "limited"))
            .collect();
        let pool_empty_at = (!live.is_empty())
            .then(|| {
                live.iter()
                    .map(|a| a.empty_at)
                    .collect::<Option<Vec<i64>>>()
            })
            .flatten()
            .and_then(|at| at.into_iter().max());
        match pool_empty_at {
            Some(at) if !self.pool_told => {
                self.pool_told = true;
                out.push(Notice {
                    title: "Every account will run out before its reset at this pace".to_string(),
                    body: format!(
                        "At the pace of the last hours the last one runs out in {}.",
                        countdown(at - now_ms)
                    ),
                });
            }
            Some(_) => {}
            None => self.pool_told = false,
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn account(email: &str, primary: f64, secondary: f64, empty_at: Option<i64>) -> AccountStatus {
        AccountStatus {
            index: 0,
            key: format!("{email}/u"),
            label: None,
            email: Some(email.to_string()),
            plan: None,
            enabled: true,
            state: "ok".to_string(),
            until: None,
            needs_login_reason: None,
            attention: None,
            limits: Default::default(),
            usage: Some(serde_json::json!({
                "primary": {"usedPercent": primary, "resetsAt": NOW / 1000 + 3600},
                "secondary": {"usedPercent": secondary, "resetsAt": NOW / 1000 + 86_400},
            })),
            last_used: None,
            preferred: false,
            empty_at,
        }
    }

    fn titles(notices: &[Notice]) -> Vec<&str> {
        notices.iter().map(|n| n.title.as_str()).collect()
    }

    #[test]
    fn each_threshold_is_told_once_per_window_and_account() {
        let mut alerts = Alerts::default();
        let t = [80, 95];
        assert!(alerts
            .update(&[account("a@x", 50.0, 10.0, None)], &t, NOW)
            .is_empty());
        let told = alerts.update(&[account("a@x", 81.0, 10.0, None)], &t, NOW);
        assert_eq!(titles(&told), ["a@x used 80 % of its 5-hour limit"]);
        assert_eq!(told[0].body, "Now at 81 %. It resets in 1h 00m.");
        assert!(alerts
            .update(&[account("a@x", 85.0, 10.0, None)], &t, NOW)
            .is_empty());
        // A jump past both tells the higher one only.
        let told = alerts.update(&[account("a@x", 96.0, 97.0, None)], &t, NOW);
        assert_eq!(
            titles(&told),
            [
                "a@x used 95 % of its 5-hour limit",
                "a@x used 95 % of its weekly limit"
            ]
        );
        // The next window (another reset time) tells again.
        let mut next = account("a@x", 82.0, 97.0, None);
        next.usage.as_mut().unwrap()["primary"]["resetsAt"] = serde_json::json!(NOW / 1000 + 9000);
        assert_eq!(
            titles(&alerts.update(&[next], &t, NOW)),
            ["a@x used 80 % of its 5-hour limit"]
        );
        assert!(
            alerts
                .update(&[account("a@x", 99.0, 99.0, None)], &[], NOW)
                .is_empty(),
            "off"
        );
        // Straight to the limit: the limit notice tells it, not a threshold alert as well.
        let mut b = account("b@x", 100.0, 10.0, None);
        assert!(alerts.update(&[b.clone()], &t, NOW).is_empty());
        b.usage.as_mut().unwrap()["primary"]["usedPercent"] = serde_json::json!(96.0);
        assert!(
            alerts.update(&[b], &t, NOW).is_empty(),
            "its thresholds count as told"
        );
    }

    #[test]
    fn the_pool_running_out_before_its_reset_is_one_alert_with_the_time() {
        let mut alerts = Alerts::default();
        let one = [
            account("a@x", 10.0, 0.0, Some(NOW + 3_600_000)),
            account("b@x", 10.0, 0.0, None),
        ];
        assert!(alerts.update(&one, &[], NOW).is_empty(), "b lasts");
        let both = [
            account("a@x", 10.0, 0.0, Some(NOW + 3_600_000)),
            account("b@x", 10.0, 0.0, Some(NOW + 7_200_000)),
        ];
        let told = alerts.update(&both, &[], NOW);
        assert_eq!(
            titles(&told),
            ["Every account will run out before its reset at this pace"]
        );
        assert!(told[0].body.contains("2h 00m"), "{}", told[0].body);
        assert!(alerts.update(&both, &[], NOW).is_empty(), "once");
        assert!(alerts.update(&one, &[], NOW).is_empty());
        assert_eq!(
            alerts.update(&both, &[], NOW).len(),
            1,
            "again after it eased"
        );
    }
}
