//! The pure choice of an account: eligibility and the three strategies.

use std::collections::HashSet;

use serde::Serialize;

use crate::accounts::Account;
use crate::settings::Strategy;

/// Why an account cannot take a request right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Availability {
    Ok,
    Disabled,
    NeedsLogin,
    /// Usage limit for this model until epoch ms.
    Limited {
        until: i64,
    },
    /// Resting after a transient failure until epoch ms.
    CoolingDown {
        until: i64,
    },
}

pub fn availability(account: &Account, model: &str, now_ms: i64) -> Availability {
    if !account.record.enabled {
        return Availability::Disabled;
    }
    if account.needs_login() {
        return Availability::NeedsLogin;
    }
    let limited = account.limited_until(model);
    if limited > now_ms {
        return Availability::Limited { until: limited };
    }
    if account.cooldown_until > now_ms {
        return Availability::CoolingDown {
            until: account.cooldown_until,
        };
    }
    Availability::Ok
}

/// Chooses an account for a session that has none, among those not in `exclude`.
/// `cursor` is the round-robin position, advanced when used.
pub fn choose_account(
    accounts: &[Account],
    strategy: Strategy,
    preferred: Option<&str>,
    cursor: &mut usize,
    model: &str,
    now_ms: i64,
    exclude: &HashSet<String>,
) -> Option<String> {
    let eligible: Vec<&Account> = accounts
        .iter()
        .filter(|a| !exclude.contains(&a.key))
        .filter(|a| availability(a, model, now_ms) == Availability::Ok)
        .collect();
    let first = eligible.first()?;
    let chosen = match strategy {
        Strategy::Sticky => preferred
            .and_then(|p| eligible.iter().find(|a| a.key == p))
            .unwrap_or(first),
        Strategy::RoundRobin => {
            let picked = eligible[*cursor % eligible.len()];
            *cursor = cursor.wrapping_add(1);
            return Some(picked.key.clone());
        }
        Strategy::Hybrid => {
            let mut best = first;
            let mut best_score = hybrid_score(first, now_ms);
            for candidate in &eligible[1..] {
                let score = hybrid_score(candidate, now_ms);
                // Ties keep file order: the earlier account wins.
                if score > best_score {
                    (best, best_score) = (candidate, score);
                }
            }
            best
        }
    };
    Some(chosen.key.clone())
}

/// Headroom left, counting a window that resets soon as partly free already: an account at
/// 90 % whose 5-hour window resets in ten minutes beats one at 60 % for the rest of the week.
fn hybrid_score(account: &Account, now_ms: i64) -> f64 {
    // Unknown usage is neither best nor worst: scoring it as empty makes the pool jump.
    const UNKNOWN: f64 = 0.75;
    let Some(usage) = &account.usage else {
        return UNKNOWN;
    };
    let now_s = now_ms / 1000;
    [&usage.primary, &usage.secondary]
        .into_iter()
        .flatten()
        .map(|w| {
            let headroom = (1.0 - w.used_percent / 100.0).clamp(0.0, 1.0);
            let soon = match (w.resets_at, w.window_minutes) {
                (Some(at), Some(minutes)) if minutes > 0 => {
                    let left = (at - now_s).max(0) as f64 / (minutes * 60) as f64;
                    1.0 - left.clamp(0.0, 1.0)
                }
                _ => 0.0,
            };
            headroom + (1.0 - headroom) * soon
        })
        .reduce(f64::min)
        .unwrap_or(UNKNOWN)
}
