//! The tray as data: from a status snapshot to the icon state, the icon's bars, the tooltip
//! and the menu. Pure, so every state is tested without a display.

pub use crate::accounts::usage::countdown;
use crate::proxy::AccountStatus;
use crate::settings::Strategy;

/// What the router is doing, as the tray shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RouterState {
    Running {
        base_url: String,
    },
    /// Another router already serves this port; the app attached to it.
    Attached {
        base_url: String,
    },
    Stopped,
    PortTaken {
        port: u16,
        holder: Option<String>,
    },
}

/// The one-glance summary the icon's badge shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IconState {
    AllHealthy,
    SomeLimited,
    /// Every usable account is limited; epoch ms of the earliest reset.
    AllLimited {
        earliest_reset: i64,
    },
    NeedsLogin,
    NoAccounts,
    Stopped,
    PortTaken,
}

/// One bar of the icon: an account's headroom (0..=1) and its colour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bar {
    pub headroom: f64,
    pub colour: BarColour,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarColour {
    Healthy,
    Low,
    Limited,
    NeedsLogin,
    Disabled,
}

/// Every identifier a tray menu item can carry, so handlers never match on loose strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MenuId {
    UseForNewSessions(String),
    ToggleEnabled(String),
    Relogin(String),
    Remove(String),
    AddAccount,
    OpenDashboard,
    SetStrategy(Strategy),
    StartAtLogin,
    ConfigureCodex,
    Quit,
    /// A line that only shows information.
    Info(String),
}

impl MenuId {
    pub fn id(&self) -> String {
        match self {
            MenuId::UseForNewSessions(k) => format!("use:{k}"),
            MenuId::ToggleEnabled(k) => format!("toggle:{k}"),
            MenuId::Relogin(k) => format!("relogin:{k}"),
            MenuId::Remove(k) => format!("remove:{k}"),
            MenuId::AddAccount => "add-account".to_string(),
            MenuId::OpenDashboard => "open-dashboard".to_string(),
            MenuId::SetStrategy(s) => format!("strategy:{}", s.name()),
            MenuId::StartAtLogin => "start-at-login".to_string(),
            MenuId::ConfigureCodex => "configure-codex".to_string(),
            MenuId::Quit => "quit".to_string(),
            MenuId::Info(what) => format!("info:{what}"),
        }
    }

    pub fn from_id(id: &str) -> Option<MenuId> {
        let (kind, rest) = id.split_once(':').unwrap_or((id, ""));
        let key = || rest.to_string();
        Some(match kind {
            "use" => MenuId::UseForNewSessions(key()),
            "toggle" => MenuId::ToggleEnabled(key()),
            "relogin" => MenuId::Relogin(key()),
            "remove" => MenuId::Remove(key()),
            "add-account" => MenuId::AddAccount,
            "open-dashboard" => MenuId::OpenDashboard,
            "strategy" => MenuId::SetStrategy(Strategy::parse(rest)?),
            "start-at-login" => MenuId::StartAtLogin,
            "configure-codex" => MenuId::ConfigureCodex,
            "quit" => MenuId::Quit,
            "info" => MenuId::Info(key()),
            _ => return None,
        })
    }
}

/// A menu entry: a label, and either an action or a submenu.
#[derive(Clone, Debug, PartialEq)]
pub struct MenuEntry {
    pub id: MenuId,
    pub label: String,
    pub enabled: bool,
    pub checked: Option<bool>,
    pub children: Vec<MenuEntry>,
}

fn item(id: MenuId, label: impl Into<String>) -> MenuEntry {
    MenuEntry {
        id,
        label: label.into(),
        enabled: true,
        checked: None,
        children: Vec::new(),
    }
}

fn info(what: &str, label: impl Into<String>) -> MenuEntry {
    MenuEntry {
        enabled: false,
        ..item(MenuId::Info(what.to_string()), label)
    }
}

/// Everything the tray needs to draw itself.
pub struct TrayInput<'a> {
    pub router: &'a RouterState,
    pub accounts: &'a [AccountStatus],
    pub strategy: Strategy,
    pub start_at_login: bool,
    /// A message for the user (a login that failed, an action that could not be done).
    pub notice: Option<&'a str>,
    pub now_ms: i64,
}

pub fn icon_state(input: &TrayInput) -> IconState {
    match input.router {
        RouterState::Stopped => return IconState::Stopped,
        RouterState::PortTaken { .. } => return IconState::PortTaken,
        _ => {}
    }
    let live: Vec<&AccountStatus> = input.accounts.iter().filter(|a| a.enabled).collect();
    if input.accounts.is_empty() {
        return IconState::NoAccounts;
    }
    // The badge means "an account needs you": a dead sign-in or a deactivated account.
    if live
        .iter()
        .any(|a| matches!(a.state.as_str(), "needs-login" | "needs-attention"))
    {
        return IconState::NeedsLogin;
    }
    let limited: Vec<i64> = live
        .iter()
        .filter(|a| a.state == "limited")
        .filter_map(|a| a.until)
        .collect();
    if !live.is_empty() && limited.len() == live.len() {
        return IconState::AllLimited {
            earliest_reset: limited.into_iter().min().unwrap_or(0),
        };
    }
    if limited.is_empty() {
        IconState::AllHealthy
    } else {
        IconState::SomeLimited
    }
}

/// The tighter of the two windows' headroom, or `None` when unknown.
fn headroom(a: &AccountStatus) -> Option<f64> {
    let used = |w: &str| a.usage.as_ref()?.get(w)?.get("usedPercent")?.as_f64();
    [used("primary"), used("secondary")]
        .into_iter()
        .flatten()
        .map(|u| (1.0 - u / 100.0).clamp(0.0, 1.0))
        .reduce(f64::min)
}

/// One bar per account, in file order.
pub fn bars(accounts: &[AccountStatus]) -> Vec<Bar> {
    accounts
        .iter()
        .map(|a| {
            let room = headroom(a);
            let (headroom, colour) = match a.state.as_str() {
                _ if !a.enabled => (room.unwrap_or(0.0), BarColour::Disabled),
                "needs-login" | "needs-attention" => (1.0, BarColour::NeedsLogin),
                "limited" => (0.0, BarColour::Limited),
                _ => match room {
                    Some(r) if r < 0.2 => (r, BarColour::Low),
                    Some(r) => (r, BarColour::Healthy),
                    None => (1.0, BarColour::Healthy),
                },
            };
            Bar { headroom, colour }
        })
        .collect()
}

fn name(a: &AccountStatus) -> String {
    a.label
        .clone()
        .or_else(|| a.email.clone())
        .unwrap_or_else(|| a.key.clone())
}

fn window_text(a: &AccountStatus, window: &str, label: &str, now: i64) -> String {
    let Some(w) = a
        .usage
        .as_ref()
        .and_then(|u| u.get(window))
        .filter(|w| !w.is_null())
    else {
        return format!("{label} -");
    };
    let used = w
        .get("usedPercent")
        .and_then(|v| v.as_f64())
        .map(|p| format!("{p:.0}%"))
        .unwrap_or("-".into());
    let reset = w
        .get("resetsAt")
        .and_then(|v| v.as_i64())
        .map(|at| format!(" ↻{}", countdown(at * 1000 - now)))
        .unwrap_or_default();
    format!("{label} {used}{reset}")
}

/// The line of one account: who, plan, state or usage with resets.
pub fn account_line(a: &AccountStatus, now: i64) -> String {
    let plan = a
        .plan
        .as_deref()
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    let state = match (a.state.as_str(), a.until) {
        _ if !a.enabled => "disabled".to_string(),
        ("needs-login", _) => "needs login".to_string(),
        ("needs-attention", _) => format!(
            "needs attention: {}",
            a.attention
                .as_deref()
                .unwrap_or("ChatGPT refuses this account")
        ),
        ("limited", Some(until)) => format!("limited, resets in {}", countdown(until - now)),
        _ => format!(
            "{} · {}",
            window_text(a, "primary", "5h", now),
            window_text(a, "secondary", "week", now)
        ),
    };
    format!("{}{plan} — {state}", name(a))
}

/// The longest tooltip every system shows whole: Windows keeps 127 UTF-16 units (128 with the
/// terminating zero) and cuts the rest.
pub const TOOLTIP_MAX_UTF16: usize = 127;

/// The tooltip, cut with an ellipsis to fit `TOOLTIP_MAX_UTF16`.
pub fn tooltip(input: &TrayInput) -> String {
    let text = tooltip_text(input);
    if text.encode_utf16().count() <= TOOLTIP_MAX_UTF16 {
        return text;
    }
    let mut cut = String::new();
    let mut units = 0;
    for c in text.chars() {
        // One unit is kept for the ellipsis.
        if units + c.len_utf16() > TOOLTIP_MAX_UTF16 - 1 {
            break;
        }
        units += c.len_utf16();
        cut.push(c);
    }
    cut.push('…');
    cut
}

fn tooltip_text(input: &TrayInput) -> String {
    let head = "Codex App Account Router";
    match input.router {
        RouterState::Stopped => return format!("{head}: router stopped"),
        RouterState::PortTaken { port, holder } => {
            return format!(
                "{head}: port {port} is taken{}",
                holder
                    .as_ref()
                    .map(|h| format!(" by {h}"))
                    .unwrap_or_default()
            )
        }
        _ => {}
    }
    let total = input.accounts.len();
    let ok = input
        .accounts
        .iter()
        .filter(|a| a.enabled && a.state == "ok")
        .count();
    let limited = input
        .accounts
        .iter()
        .filter(|a| a.enabled && a.state == "limited")
        .count();
    let login = input
        .accounts
        .iter()
        .filter(|a| a.state == "needs-login")
        .count();
    let attention = input
        .accounts
        .iter()
        .filter(|a| a.state == "needs-attention")
        .count();
    let mut text = format!("{head}: {total} accounts, {ok} ok");
    if limited > 0 {
        text.push_str(&format!(", {limited} limited"));
    }
    if login > 0 {
        text.push_str(&format!(", {login} need login"));
    }
    if attention > 0 {
        text.push_str(&format!(", {attention} need attention"));
    }
    let next = input
        .accounts
        .iter()
        .filter(|a| a.state == "limited")
        .filter_map(|a| a.until)
        .min();
    if let Some(at) = next {
        text.push_str(&format!("; next reset in {}", countdown(at - input.now_ms)));
    }
    text
}

/// The whole menu, as data; `menu.rs` changes the shown one in place to match it.
pub fn menu(input: &TrayInput) -> Vec<MenuEntry> {
    let mut entries = vec![info(
        "router",
        match input.router {
            RouterState::Running { base_url } => {
                format!("Router: {base_url} ({})", input.strategy.name())
            }
            RouterState::Attached { base_url } => {
                format!("Router: {base_url} (already running; attached)")
            }
            RouterState::Stopped => "Router: stopped".to_string(),
            RouterState::PortTaken { port, holder } => format!(
                "Port {port} is taken{}; set CODEX_PROXY_PORT to another port",
                holder
                    .as_ref()
                    .map(|h| format!(" by {h}"))
                    .unwrap_or_default()
            ),
        },
    )];
    if input.accounts.is_empty() {
        entries.push(info("no-accounts", "No account yet"));
    }
    for a in input.accounts {
        let mut account = item(MenuId::Info(a.key.clone()), account_line(a, input.now_ms));
        account.children = vec![
            MenuEntry {
                checked: Some(a.preferred),
                ..item(
                    MenuId::UseForNewSessions(a.key.clone()),
                    "Use for new sessions",
                )
            },
            item(
                MenuId::ToggleEnabled(a.key.clone()),
                if a.enabled { "Disable" } else { "Enable" },
            ),
            item(MenuId::Relogin(a.key.clone()), "Log in again…"),
            // The confirmation is a second click, inside the menu itself.
            MenuEntry {
                children: vec![item(
                    MenuId::Remove(a.key.clone()),
                    format!("Remove {} from this machine", name(a)),
                )],
                ..item(MenuId::Info(format!("remove-{}", a.key)), "Remove…")
            },
        ];
        entries.push(account);
    }
    if let Some(notice) = input.notice {
        entries.insert(1, info("notice", notice));
    }
    entries.push(item(MenuId::AddAccount, "Add account…"));
    entries.push(item(MenuId::OpenDashboard, "Open dashboard"));
    let mut strategy = item(MenuId::Info("strategy".into()), "Strategy");
    strategy.children = [Strategy::Sticky, Strategy::RoundRobin, Strategy::Hybrid]
        .into_iter()
        .map(|s| MenuEntry {
            checked: Some(s == input.strategy),
            ..item(MenuId::SetStrategy(s), s.name())
        })
        .collect();
    entries.push(strategy);
    entries.push(MenuEntry {
        checked: Some(input.start_at_login),
        ..item(MenuId::StartAtLogin, "Start at login")
    });
    entries.push(item(MenuId::ConfigureCodex, "Configure Codex"));
    entries.push(item(MenuId::Quit, "Quit"));
    entries
}

#[cfg(test)]
mod tests;
