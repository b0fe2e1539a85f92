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
    /// The backend says the account or its workspace is deactivated: out until the user acts
    /// and signs in again; no reset to wait for.
    NeedsAttention,
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
    match account.attention() {
        Some(a) if a.is_deactivation() => return Availability::NeedsAttention,
        Some(_) => return Availability::NeedsLogin,
        None => {}
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

/// The account to try when none can serve but some only rest after errors: the session's
/// own (`bound`) when it is one of them, else the one whose rest ends first. Limited, disabled
/// and signed-out accounts are never tried this way: their answer is known.
pub fn first_awake(
    accounts: &[Account],
    bound: Option<&str>,
    model: &str,
    now_ms: i64,
) -> Option<String> {
    let resting: Vec<&Account> = accounts
        .iter()
        .filter(|a| {
            matches!(
                availability(a, model, now_ms),
                Availability::CoolingDown { .. }
            )
        })
        .collect();
    resting
        .iter()
        .find(|a| Some(a.key.as_str()) == bound)
        .or_else(|| resting.iter().min_by_key(|a| a.cooldown_until))
        .map(|a| a.key.clone())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{Usage, Window};
    use crate::store::{AccountRecord, NeedsLogin};

    const NOW: i64 = 1_000_000_000;

    fn account(id: &str) -> Account {
        Account::from_record(AccountRecord {
            account_id: Some(id.to_string()),
            user_id: Some("u".to_string()),
            enabled: true,
            ..Default::default()
        })
    }

    fn choose(accounts: &[Account], strategy: Strategy, preferred: Option<&str>) -> Option<String> {
        choose_account(
            accounts,
            strategy,
            preferred,
            &mut 0,
            "gpt-5.5",
            NOW,
            &HashSet::new(),
        )
    }

    fn with_usage(mut a: Account, used: f64, resets_in_s: i64, window_minutes: i64) -> Account {
        a.usage = Some(Usage {
            primary: Some(Window {
                used_percent: used,
                window_minutes: Some(window_minutes),
                resets_at: Some(NOW / 1000 + resets_in_s),
            }),
            ..Default::default()
        });
        a
    }

    #[test]
    fn ineligible_accounts_are_skipped_for_the_right_reason() {
        let mut disabled = account("d");
        disabled.record.enabled = false;
        let mut login = account("l");
        login.record.needs_login = Some(NeedsLogin {
            code: "refresh_token_reused".into(),
            since: 0,
        });
        let mut deactivated = account("x");
        deactivated.record.needs_login = Some(NeedsLogin {
            code: "deactivated_workspace".into(),
            since: 0,
        });
        let mut limited = account("m");
        limited
            .record
            .rate_limit_resets
            .insert("gpt-5.5".into(), NOW + 1);
        let mut resting = account("r");
        resting.cooldown_until = NOW + 1;
        assert_eq!(
            availability(&disabled, "gpt-5.5", NOW),
            Availability::Disabled
        );
        assert_eq!(
            availability(&login, "gpt-5.5", NOW),
            Availability::NeedsLogin
        );
        assert_eq!(
            availability(&deactivated, "gpt-5.5", NOW),
            Availability::NeedsAttention
        );
        assert_eq!(
            availability(&limited, "gpt-5.5", NOW),
            Availability::Limited { until: NOW + 1 }
        );
        assert_eq!(
            availability(&limited, "gpt-5.4-mini", NOW),
            Availability::Ok
        );
        assert_eq!(
            availability(&resting, "gpt-5.5", NOW),
            Availability::CoolingDown { until: NOW + 1 }
        );
        let ok = account("ok");
        let all = [disabled, login, deactivated, limited, resting, ok];
        assert_eq!(
            choose(&all, Strategy::Sticky, None).as_deref(),
            Some("ok/u")
        );
    }

    #[test]
    fn with_every_account_resting_the_first_to_wake_is_tried() {
        let (mut a, mut b, mut c) = (account("a"), account("b"), account("c"));
        a.cooldown_until = NOW + 30_000;
        b.cooldown_until = NOW + 10_000;
        c.record.rate_limit_resets.insert("gpt-5.5".into(), NOW + 1);
        let all = [a, b, c];
        assert_eq!(
            choose(&all, Strategy::Sticky, None),
            None,
            "none is available"
        );
        let first = |bound| first_awake(&all, bound, "gpt-5.5", NOW);
        assert_eq!(first(None).as_deref(), Some("b/u"), "rests the shortest");
        assert_eq!(
            first(Some("a/u")).as_deref(),
            Some("a/u"),
            "the session's own"
        );
        assert_eq!(
            first(Some("c/u")).as_deref(),
            Some("b/u"),
            "never a limited one"
        );
        let limited = [all[2].clone()];
        assert_eq!(first_awake(&limited, None, "gpt-5.5", NOW), None);
    }

    #[test]
    fn sticky_prefers_the_chosen_account_then_file_order() {
        let all = [account("a"), account("b")];
        assert_eq!(choose(&all, Strategy::Sticky, None).as_deref(), Some("a/u"));
        assert_eq!(
            choose(&all, Strategy::Sticky, Some("b/u")).as_deref(),
            Some("b/u")
        );
        assert_eq!(
            choose(&all, Strategy::Sticky, Some("gone/u")).as_deref(),
            Some("a/u")
        );
    }

    #[test]
    fn round_robin_cycles() {
        let all = [account("a"), account("b"), account("c")];
        let mut cursor = 0;
        let picks: Vec<String> = (0..4)
            .filter_map(|_| {
                choose_account(
                    &all,
                    Strategy::RoundRobin,
                    None,
                    &mut cursor,
                    "m",
                    NOW,
                    &HashSet::new(),
                )
            })
            .collect();
        assert_eq!(picks, ["a/u", "b/u", "c/u", "a/u"]);
    }

    #[test]
    fn hybrid_counts_a_window_that_resets_soon_as_nearly_free() {
        // 90 % used but the 5-hour window resets in 6 minutes, versus 60 % used for days.
        let soon = with_usage(account("soon"), 90.0, 360, 300);
        let steady = with_usage(account("steady"), 60.0, 3 * 86_400, 10_080);
        assert_eq!(
            choose(&[steady, soon], Strategy::Hybrid, None).as_deref(),
            Some("soon/u")
        );
        let fresh = with_usage(account("fresh"), 10.0, 17_000, 300);
        let unknown = account("unknown");
        assert_eq!(
            choose(&[unknown.clone(), fresh], Strategy::Hybrid, None).as_deref(),
            Some("fresh/u")
        );
        let full = with_usage(account("full"), 95.0, 17_000, 300);
        assert_eq!(
            choose(&[full, unknown], Strategy::Hybrid, None).as_deref(),
            Some("unknown/u")
        );
    }

    #[test]
    fn excluded_accounts_are_not_chosen() {
        let all = [account("a"), account("b")];
        let tried: HashSet<String> = ["a/u".to_string()].into();
        let picked = choose_account(&all, Strategy::Sticky, None, &mut 0, "m", NOW, &tried);
        assert_eq!(picked.as_deref(), Some("b/u"));
    }
}
