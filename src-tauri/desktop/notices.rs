//! Which desktop notifications a change of status deserves: an account hit its limit (and
//! who took over), is available again, every account is limited, an account needs a new
//! login or attention (deactivated upstream). Each event is told once, however often the
//! status is looked at.

use std::collections::HashSet;

use super::tray_model::countdown;
use crate::proxy::AccountStatus;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub title: String,
    pub body: String,
}

/// Remembers what was already told.
#[derive(Default)]
pub struct Notifier {
    told: HashSet<(String, &'static str)>,
    all_limited_told: bool,
}

/// How an account is called in a notice: its label, else its email, else its key.
pub(super) fn name(a: &AccountStatus) -> String {
    a.label
        .clone()
        .or_else(|| a.email.clone())
        .unwrap_or_else(|| a.key.clone())
}

impl Notifier {
    /// The notices `accounts` calls for now. Events that ended are forgotten, so they are
    /// told again if they happen again.
    pub fn update(&mut self, accounts: &[AccountStatus], now_ms: i64) -> Vec<Notice> {
        let mut out = Vec::new();
        let live: Vec<&AccountStatus> = accounts.iter().filter(|a| a.enabled).collect();
        let serving = live.iter().find(|a| a.state == "ok").map(|a| name(a));
        let all_limited = !live.is_empty() && live.iter().all(|a| a.state == "limited");
        // When the last account runs out, one notice says so, not one per account as well.
        let telling_all = all_limited && !self.all_limited_told;
        for a in accounts {
            let limited = (a.key.clone(), "limited");
            let login = (a.key.clone(), "login");
            if a.enabled && a.state == "limited" {
                if self.told.insert(limited) && !telling_all {
                    let reset = a
                        .until
                        .map(|u| format!(" It resets in {}.", countdown(u - now_ms)))
                        .unwrap_or_default();
                    let next = serving
                        .as_ref()
                        .map(|s| format!(" {s} takes over."))
                        .unwrap_or_default();
                    out.push(Notice {
                        title: format!("{} reached its usage limit", name(a)),
                        body: format!("{reset}{next}").trim().to_string(),
                    });
                }
            } else if self.told.remove(&limited) && a.enabled && a.state == "ok" {
                out.push(Notice {
                    title: format!("{} is available again", name(a)),
                    body: String::new(),
                });
            }
            if a.state == "needs-login" {
                if self.told.insert(login) {
                    out.push(Notice {
                        title: format!("{} needs a new login", name(a)),
                        body:
                            "Use “Log in again…” in the tray menu; the account is kept until then."
                                .to_string(),
                    });
                }
            } else {
                self.told.remove(&login);
            }
            let attention = (a.key.clone(), "attention");
            if a.state == "needs-attention" {
                if self.told.insert(attention) {
                    let why = a
                        .attention
                        .as_deref()
                        .unwrap_or("ChatGPT refuses this account");
                    let next = serving
                        .as_ref()
                        .map(|s| format!(" {s} takes over."))
                        .unwrap_or_default();
                    out.push(Notice {
                        title: format!("{} needs attention", name(a)),
                        body: format!("{why}.{next} Once that is resolved, use “Log in again…”."),
                    });
                }
            } else {
                self.told.remove(&attention);
            }
        }
        if telling_all {
            let earliest = live.iter().filter_map(|a| a.until).min();
            out.push(Notice {
                title: "Every account is limited".to_string(),
                body: earliest
                    .map(|u| format!("Codex can continue in {}.", countdown(u - now_ms)))
                    .unwrap_or_default(),
            });
        }
        self.all_limited_told = all_limited;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn account(email: &str, state: &str) -> AccountStatus {
        AccountStatus {
            index: 0,
            key: format!("{email}/u"),
            label: None,
            email: Some(email.to_string()),
            plan: None,
            enabled: true,
            state: state.to_string(),
            until: (state == "limited").then_some(NOW + 600_000),
            needs_login_reason: None,
            attention: None,
            limits: Default::default(),
            usage: None,
            last_used: None,
            preferred: false,
            empty_at: None,
        }
    }

    fn titles(notices: &[Notice]) -> Vec<&str> {
        notices.iter().map(|n| n.title.as_str()).collect()
    }

    #[test]
    fn a_limit_is_told_once_with_who_takes_over_then_the_return() {
        let mut n = Notifier::default();
        assert!(n
            .update(&[account("a@x", "ok"), account("b@x", "ok")], NOW)
            .is_empty());
        let limited = [account("a@x", "limited"), account("b@x", "ok")];
        let first = n.update(&limited, NOW);
        assert_eq!(titles(&first), ["a@x reached its usage limit"]);
        assert_eq!(first[0].body, "It resets in 10m 00s. b@x takes over.");
        assert!(n.update(&limited, NOW).is_empty(), "not repeated");
        let back = n.update(&[account("a@x", "ok"), account("b@x", "ok")], NOW);
        assert_eq!(titles(&back), ["a@x is available again"]);
    }

    #[test]
    fn every_account_limited_and_needs_login_are_told_once() {
        let mut n = Notifier::default();
        let all = [account("a@x", "limited"), account("b@x", "limited")];
        let told = n.update(&all, NOW);
        assert_eq!(
            titles(&told),
            ["Every account is limited"],
            "one notice, not three"
        );
        assert!(told[0].body.contains("10m 00s"));
        assert!(n.update(&all, NOW).is_empty());
        let login = [account("a@x", "needs-login")];
        assert_eq!(titles(&n.update(&login, NOW)), ["a@x needs a new login"]);
        assert!(n.update(&login, NOW).is_empty());
    }

    #[test]
    fn a_deactivated_account_is_told_once_per_change_with_why_and_who_takes_over() {
        let mut n = Notifier::default();
        let mut a = account("a@x", "needs-attention");
        a.attention = Some("ChatGPT says its workspace is deactivated".to_string());
        let pool = [a.clone(), account("b@x", "ok")];
        let told = n.update(&pool, NOW);
        assert_eq!(titles(&told), ["a@x needs attention"]);
        assert_eq!(
            told[0].body,
            "ChatGPT says its workspace is deactivated. b@x takes over. Once that is resolved, use “Log in again…”."
        );
        assert!(n.update(&pool, NOW).is_empty(), "not repeated");
        // Signed in again: it serves; deactivated again later: told again.
        assert!(n
            .update(&[account("a@x", "ok"), account("b@x", "ok")], NOW)
            .is_empty());
        assert_eq!(titles(&n.update(&pool, NOW)), ["a@x needs attention"]);
    }
}
