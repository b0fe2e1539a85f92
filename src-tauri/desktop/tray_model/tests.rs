//! Every tray state, from snapshot to icon, bars, tooltip and menu.

use serde_json::json;

use super::*;

const NOW: i64 = 1_800_000_000_000;

fn account(email: &str, state: &str, used: Option<(f64, f64)>) -> AccountStatus {
    AccountStatus {
        index: 0,
        key: format!("acct-{email}/u"),
        label: None,
        email: Some(email.to_string()),
        plan: Some("plus".to_string()),
        enabled: state != "disabled",
        state: state.to_string(),
        until: (state == "limited").then_some(NOW + 3_720_000),
        needs_login_reason: match state {
            "needs-login" => Some("refresh_token_reused".to_string()),
            "needs-attention" => Some("account_deactivated".to_string()),
            _ => None,
        },
        attention: (state == "needs-attention")
            .then(|| "ChatGPT says this account is deactivated".to_string()),
        limits: Default::default(),
        usage: used.map(|(p, s)| {
            json!({"primary": {"usedPercent": p, "resetsAt": NOW / 1000 + 3600}, "secondary": {"usedPercent": s}})
        }),
        last_used: None,
        preferred: false,
        empty_at: None,
    }
}

fn input<'a>(router: &'a RouterState, accounts: &'a [AccountStatus]) -> TrayInput<'a> {
    TrayInput {
        router,
        accounts,
        strategy: Strategy::Sticky,
        start_at_login: true,
        notice: None,
        now_ms: NOW,
    }
}

fn running() -> RouterState {
    RouterState::Running {
        base_url: "http://127.0.0.1:8787/v1".into(),
    }
}

#[test]
fn icon_state_follows_the_pool() {
    let r = running();
    let healthy = [
        account("a@x", "ok", Some((10.0, 5.0))),
        account("b@x", "ok", None),
    ];
    assert_eq!(icon_state(&input(&r, &healthy)), IconState::AllHealthy);
    let some = [account("a@x", "limited", None), account("b@x", "ok", None)];
    assert_eq!(icon_state(&input(&r, &some)), IconState::SomeLimited);
    let all = [
        account("a@x", "limited", None),
        account("b@x", "disabled", None),
    ];
    assert_eq!(
        icon_state(&input(&r, &all)),
        IconState::AllLimited {
            earliest_reset: NOW + 3_720_000
        }
    );
    let login = [
        account("a@x", "needs-login", None),
        account("b@x", "ok", None),
    ];
    assert_eq!(icon_state(&input(&r, &login)), IconState::NeedsLogin);
    assert_eq!(icon_state(&input(&r, &[])), IconState::NoAccounts);
    assert_eq!(
        icon_state(&input(&RouterState::Stopped, &healthy)),
        IconState::Stopped
    );
    let taken = RouterState::PortTaken {
        port: 8787,
        holder: Some("headroom (pid 7)".into()),
    };
    assert_eq!(icon_state(&input(&taken, &healthy)), IconState::PortTaken);
}

#[test]
fn one_bar_per_account_sized_by_headroom_and_coloured_by_state() {
    let accounts = [
        account("a@x", "ok", Some((40.0, 10.0))),
        account("b@x", "ok", Some((95.0, 10.0))),
        account("c@x", "limited", Some((100.0, 50.0))),
        account("d@x", "needs-login", None),
        account("e@x", "disabled", Some((0.0, 0.0))),
    ];
    let b = bars(&accounts);
    assert_eq!(b.len(), 5);
    assert!((b[0].headroom - 0.6).abs() < 1e-9 && b[0].colour == BarColour::Healthy);
    assert_eq!(b[1].colour, BarColour::Low);
    assert_eq!((b[2].headroom, b[2].colour), (0.0, BarColour::Limited));
    assert_eq!(b[3].colour, BarColour::NeedsLogin);
    assert_eq!(b[4].colour, BarColour::Disabled);
}

#[test]
fn tooltip_summarises_accounts_and_the_next_reset() {
    let r = running();
    let accounts = [
        account("a@x", "ok", None),
        account("b@x", "limited", None),
        account("c@x", "needs-login", None),
    ];
    let text = tooltip(&input(&r, &accounts));
    assert_eq!(
        text,
        "Codex App Account Router: 3 accounts, 1 ok, 1 limited, 1 need login; next reset in 1h 02m"
    );
    let taken = RouterState::PortTaken {
        port: 8787,
        holder: Some("headroom (pid 7)".into()),
    };
    assert!(tooltip(&input(&taken, &accounts)).contains("port 8787 is taken by headroom (pid 7)"));
}

#[test]
fn a_deactivated_account_shows_why_with_no_reset_and_badges_the_icon() {
    let r = running();
    let accounts = [
        account("a@x", "needs-attention", Some((10.0, 5.0))),
        account("b@x", "ok", None),
    ];
    assert_eq!(icon_state(&input(&r, &accounts)), IconState::NeedsLogin);
    assert_eq!(bars(&accounts)[0].colour, BarColour::NeedsLogin);
    let line = account_line(&accounts[0], NOW);
    assert_eq!(
        line,
        "a@x (plus) — needs attention: ChatGPT says this account is deactivated"
    );
    assert!(!line.contains("resets"), "not a limit: {line}");
    let entries = menu(&input(&r, &accounts));
    let lines: Vec<&str> = entries
        .iter()
        .filter(|e| e.label.starts_with("a@x"))
        .map(|e| e.label.as_str())
        .collect();
    assert_eq!(lines.len(), 1, "one menu line for the account: {lines:?}");
    assert_eq!(
        tooltip(&input(&r, &accounts)),
        "Codex App Account Router: 2 accounts, 1 ok, 1 need attention"
    );
}

#[test]
fn a_long_tooltip_is_cut_to_what_windows_shows() {
    let long = "🙂".repeat(200);
    let taken = RouterState::PortTaken {
        port: 8787,
        holder: Some(format!("a program named {long}")),
    };
    let text = tooltip(&input(&taken, &[]));
    assert!(text.encode_utf16().count() <= TOOLTIP_MAX_UTF16, "{text}");
    assert!(text.starts_with("Codex App Account Router: port 8787 is taken"));
    assert!(text.ends_with('…'), "says it was cut: {text}");
}

#[test]
fn menu_lists_accounts_with_usage_and_every_action() {
    let r = running();
    let mut a = account("a@x", "ok", Some((42.0, 17.0)));
    a.preferred = true;
    let accounts = [a, account("b@x", "limited", None)];
    let entries = menu(&input(&r, &accounts));
    let labels: Vec<&str> = entries.iter().map(|e| e.label.as_str()).collect();
    assert_eq!(labels[0], "Router: http://127.0.0.1:8787/v1 (sticky)");
    assert_eq!(labels[1], "a@x (plus) — 5h 42% ↻1h 00m · week 17%");
    assert_eq!(labels[2], "b@x (plus) — limited, resets in 1h 02m");
    assert_eq!(
        &labels[3..],
        [
            "Add account…",
            "Open dashboard",
            "Strategy",
            "Start at login",
            "Configure Codex",
            "Quit"
        ]
    );
    let actions: Vec<MenuId> = entries[1].children.iter().map(|c| c.id.clone()).collect();
    assert_eq!(
        actions,
        [
            MenuId::UseForNewSessions("acct-a@x/u".into()),
            MenuId::ToggleEnabled("acct-a@x/u".into()),
            MenuId::Relogin("acct-a@x/u".into()),
            MenuId::Info("remove-acct-a@x/u".into())
        ]
    );
    let confirm = &entries[1].children[3].children[0];
    assert_eq!(confirm.id, MenuId::Remove("acct-a@x/u".into()));
    assert_eq!(confirm.label, "Remove a@x from this machine");
    assert_eq!(entries[1].children[0].checked, Some(true));
    let strategies = &entries[5].children;
    assert_eq!(
        strategies
            .iter()
            .filter(|s| s.checked == Some(true))
            .count(),
        1
    );
}

#[test]
fn menu_ids_round_trip() {
    for id in [
        MenuId::UseForNewSessions("acct/u".into()),
        MenuId::Remove("acct:with:colons/u".into()),
        MenuId::SetStrategy(Strategy::RoundRobin),
        MenuId::AddAccount,
        MenuId::Quit,
    ] {
        assert_eq!(MenuId::from_id(&id.id()), Some(id.clone()), "{}", id.id());
    }
    assert_eq!(MenuId::from_id("nonsense"), None);
}

#[test]
fn a_notice_is_shown_under_the_router_line() {
    let r = running();
    let mut i = input(&r, &[]);
    i.notice = Some("Login failed: the sign-in was refused");
    let entries = menu(&i);
    assert_eq!(entries[1].label, "Login failed: the sign-in was refused");
    assert!(!entries[1].enabled);
}

#[test]
fn a_taken_port_says_how_to_fix_it_in_the_menu() {
    let taken = RouterState::PortTaken {
        port: 8787,
        holder: None,
    };
    let entries = menu(&input(&taken, &[]));
    assert!(
        entries[0].label.contains("CODEX_PROXY_PORT"),
        "{}",
        entries[0].label
    );
    assert_eq!(entries[1].label, "No account yet");
}
