//! What the dashboard can ask of the tray app: each call runs the same `app` use case as
//! `cma`, and errors reach the page as `{code, message}`, never as a raw Rust message alone.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::dashboard::{self, CommandError};
use super::tray::{Desktop, RouterSlot};
use super::{autostart, Shell, UserEvent};
use crate::app::{self, AccountChange, AccountSelector, AppError};
use crate::codex_config::CodexConfig;
use crate::oauth::{self, BrowserLoginOptions};
use crate::settings::Strategy;
use crate::store::AccountRecord;

impl From<AppError> for CommandError {
    fn from(e: AppError) -> Self {
        let code = match &e {
            AppError::Store(_) => "store",
            AppError::Message(_) => "failed",
            AppError::Login(_) => "login",
            AppError::AlreadyRunning { .. } | AppError::PortBusy { .. } => "port",
            // The page has one message for every refused or unsaved setting; the detail says which.
            AppError::Settings(_) => "setting",
            _ => "internal",
        };
        CommandError::new(code, e.to_string())
    }
}

type Reply<T> = Result<T, CommandError>;

/// The calls the page makes (`ui/api.js`), with their arguments.
#[derive(Debug, Deserialize)]
#[serde(tag = "call", content = "args", rename_all = "snake_case")]
pub enum Call {
    DashboardStatus,
    AddAccount,
    /// A new login for one account; someone else signing in is said, not hidden.
    Relogin {
        key: String,
    },
    SetAccountEnabled {
        key: String,
        enabled: bool,
    },
    UseForNewSessions {
        key: String,
    },
    RemoveAccount {
        key: String,
    },
    SetStrategy {
        strategy: String,
    },
    ApplyCodexConfig,
    RevertCodexConfig,
    /// Every setting with its value in effect and where it comes from, and start at login.
    Settings,
    /// Writes one setting to `settings.toml`; a value out of range is refused.
    SetSetting {
        key: String,
        value: String,
    },
    /// Takes a setting out of `settings.toml`: the environment or the default applies.
    UnsetSetting {
        key: String,
    },
    SetStartAtLogin {
        enabled: bool,
    },
    /// The last 7 days of the usage history, for the charts.
    UsageHistory,
}

impl Call {
    /// Every call's name, as the page invokes it (`ui/api.js`).
    pub fn names() -> &'static [&'static str] {
        &[
            "dashboard_status",
            "add_account",
            "relogin",
            "set_account_enabled",
            "use_for_new_sessions",
            "remove_account",
            "set_strategy",
            "apply_codex_config",
            "revert_codex_config",
            "settings",
            "set_setting",
            "unset_setting",
            "set_start_at_login",
            "usage_history",
        ]
    }

    pub fn parse(call: &str, args: Value) -> Reply<Call> {
        // Calls without arguments may come with `{}`, which a unit variant refuses.
        let args = match args {
            Value::Object(map) if map.is_empty() => Value::Null,
            other => other,
        };
        let tagged = serde_json::json!({ "call": call, "args": args });
        serde_json::from_value(tagged)
            .map_err(|e| CommandError::new("internal", format!("bad call {call:?}: {e}")))
    }
}

/// Runs one call from the page.
pub async fn dispatch(app: &Shell, call: &str, args: Value) -> Reply<Value> {
    let done = |()| Value::Null;
    match Call::parse(call, args)? {
        Call::DashboardStatus => {
            let mut status = dashboard_status(&app.desktop);
            if let Some(kept) = recent_from_history(&app.desktop).await {
                status.recent = kept;
            }
            serde_json::to_value(status).map_err(CommandError::internal)
        }
        Call::AddAccount => {
            start_login(app, None);
            Ok(Value::Null)
        }
        Call::Relogin { key } => {
            start_login(app, Some(key));
            Ok(Value::Null)
        }
        Call::SetAccountEnabled { key, enabled } => {
            let to = match enabled {
                true => AccountChange::Enable,
                false => AccountChange::Disable,
            };
            change(app, move |s| {
                app::change_account(&s.store(), &AccountSelector(key), to).map(drop)
            })
            .await
            .map(done)
        }
        Call::UseForNewSessions { key } => change(app, move |s| {
            let to = AccountChange::UseForNewSessions;
            app::change_account(&s.store(), &AccountSelector(key), to).map(drop)
        })
        .await
        .map(done),
        Call::RemoveAccount { key } => change(app, move |s| {
            app::remove_account(&s.store(), &AccountSelector(key)).map(drop)
        })
        .await
        .map(done),
        Call::SetStrategy { strategy } => set_strategy(app, &strategy).map(done),
        Call::ApplyCodexConfig => change(app, |s| app::configure_codex(s, false).map(drop))
            .await
            .map(done),
        Call::RevertCodexConfig => change(app, |s| app::revert_codex(s).map(drop))
            .await
            .map(done),
        Call::Settings => serde_json::to_value(settings(app)).map_err(CommandError::internal),
        Call::SetSetting { key, value } => {
            let outcome = set_setting(app, &key, &value)?;
            serde_json::to_value(outcome).map_err(CommandError::internal)
        }
        Call::UnsetSetting { key } => {
            let paths = &app.desktop.settings.paths;
            let mut outcome = app::unset_setting(paths, &environment, &key)?;
            apply_live(app, &mut outcome);
            changed(app);
            serde_json::to_value(outcome).map_err(CommandError::internal)
        }
        Call::UsageHistory => {
            let history = usage_history(&app.desktop).await?;
            serde_json::to_value(history).map_err(CommandError::internal)
        }
        Call::SetStartAtLogin { enabled } => {
            let result = autostart::set(&app.app, enabled);
            changed(app);
            result
                .map(done)
                .map_err(|e| CommandError::new("autostart", e))
        }
    }
}

/// The last 50 requests from the usage history (so they outlive a restart); `None` when there
/// is no history to read, and the router's memory is shown instead.
async fn recent_from_history(desktop: &Desktop) -> Option<Vec<crate::proxy::RequestRecord>> {
    if !desktop.settings.history {
        return None;
    }
    let path = crate::history::file(&desktop.settings.paths);
    let read = tokio::task::spawn_blocking(move || {
        crate::history::History::open_read_only(&path)
            .ok()??
            .recent_requests(50)
            .ok()
    });
    let kept = read.await.ok()??;
    Some(
        kept.into_iter()
            .map(|r| crate::proxy::RequestRecord {
                at: r.at,
                account: r.account,
                key: r.key,
                model: r.model,
                status: r.status,
                first_byte_ms: r.first_byte_ms,
            })
            .collect(),
    )
}

/// How far back the charts look.
const CHART_DAYS: i64 = 7;

/// What the charts draw: every usage reading and each account's days over the last week, and
/// where each account stands now (its pace to the next reset).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageHistory {
    pub now: i64,
    pub since: i64,
    pub points: Vec<crate::history::Point>,
    pub days: Vec<crate::history::Day>,
    pub accounts: Vec<crate::proxy::AccountStatus>,
}

async fn usage_history(desktop: &Desktop) -> Reply<UsageHistory> {
    let now = crate::accounts::now_ms();
    let since = now - CHART_DAYS * 24 * 60 * 60 * 1000;
    let path = crate::history::file(&desktop.settings.paths);
    let read = tokio::task::spawn_blocking(move || {
        let Some(history) = crate::history::History::open_read_only(&path)? else {
            return Ok((Vec::new(), Vec::new()));
        };
        Ok::<_, crate::history::HistoryError>((history.points(since)?, history.days(since, None)?))
    })
    .await
    .map_err(CommandError::internal)?
    .map_err(|e| CommandError::new("history", e.to_string()))?;
    let (_, accounts, _) = desktop.snapshot();
    Ok(UsageHistory {
        now,
        since,
        points: read.0,
        days: read.1,
        accounts,
    })
}

/// What the dashboard's settings section shows.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsStatus {
    #[serde(flatten)]
    pub overview: app::SettingsOverview,
    pub start_at_login: bool,
}

fn environment(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn settings(app: &Shell) -> SettingsStatus {
    // What runs is what the app started with, but for the settings it applies at once.
    let mut running = app.desktop.settings.clone();
    running.strategy = app.desktop.snapshot().2;
    running.alert_thresholds = super::lock(&app.desktop.alert_thresholds).clone();
    SettingsStatus {
        overview: app::settings_view(&running.paths, &environment, Some(&running)),
        start_at_login: autostart::is_enabled(&app.app),
    }
}

/// Writes a setting; `apply_live` says which apply at once, the rest wait for a restart,
/// which the outcome says.
fn set_setting(app: &Shell, key: &str, value: &str) -> Reply<app::SetOutcome> {
    let mut outcome = app::set_setting(&app.desktop.settings.paths, &environment, key, value)?;
    apply_live(app, &mut outcome);
    changed(app);
    Ok(outcome)
}

/// The settings the app applies at once, as written or given back to the default: the
/// strategy (the router switches it for new sessions) and the alert thresholds (read at
/// every tray redraw). The outcome then says so instead of asking for a restart.
fn apply_live(app: &Shell, outcome: &mut app::SetOutcome) {
    if outcome.overridden_by.is_some() {
        return;
    }
    let applied = match outcome.key {
        "strategy" => Strategy::parse(&outcome.value)
            .map(|strategy| apply_strategy(app, strategy))
            .is_some(),
        "alert_thresholds" => crate::settings::keys::percents(&outcome.value)
            .map(|thresholds| *super::lock(&app.desktop.alert_thresholds) = thresholds)
            .is_some(),
        _ => false,
    };
    if applied && outcome.restart_needed {
        outcome.applied_now();
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DashboardStatus {
    pub router: super::tray_model::RouterState,
    pub strategy: String,
    pub accounts: Vec<crate::proxy::AccountStatus>,
    pub recent: Vec<crate::proxy::RequestRecord>,
    pub codex_config: String,
    pub codex_configured: bool,
    /// A message for the user (a login in progress or failed).
    pub notice: Option<String>,
    pub now: i64,
}

fn dashboard_status(desktop: &Desktop) -> DashboardStatus {
    let (router, accounts, strategy) = desktop.snapshot();
    let recent = match &*desktop.router.lock().unwrap_or_else(|p| p.into_inner()) {
        RouterSlot::Running(r) => r.state.recent_requests(),
        _ => Vec::new(),
    };
    let config = CodexConfig::new(&desktop.settings.paths.codex_home);
    let configured = config
        .is_applied(&app::provider_settings(&desktop.settings))
        .unwrap_or(false);
    DashboardStatus {
        router,
        strategy: strategy.name().to_string(),
        accounts,
        recent,
        codex_config: config.path().display().to_string(),
        codex_configured: configured,
        // The settings file's problems have their own place in the page; the history's not.
        notice: super::lock(&desktop.notice)
            .clone()
            .or_else(|| super::lock(&desktop.history_notice).clone()),
        now: crate::accounts::now_ms(),
    }
}

/// Runs blocking store work, then tells the tray and the page that things changed.
async fn change(
    app: &Shell,
    work: impl FnOnce(&crate::settings::Settings) -> Result<(), AppError> + Send + 'static,
) -> Reply<()> {
    let settings = app.desktop.settings.clone();
    let result = tokio::task::spawn_blocking(move || work(&settings))
        .await
        .map_err(CommandError::internal)?;
    changed(app);
    Ok(result?)
}

/// Redraws the tray and asks the page to refresh.
pub fn changed(app: &Shell) {
    app.send(UserEvent::Refresh);
    dashboard::notify_changed(app);
}

/// Switches the strategy for new sessions now and keeps it in `settings.toml` for the next
/// start (the tray's menu and the dashboard both come here).
pub fn set_strategy(app: &Shell, strategy: &str) -> Reply<()> {
    let parsed = Strategy::parse(strategy)
        .ok_or_else(|| CommandError::new("strategy", format!("unknown strategy {strategy:?}")))?;
    apply_strategy(app, parsed);
    let saved = app::set_setting(
        &app.desktop.settings.paths,
        &environment,
        "strategy",
        parsed.name(),
    );
    changed(app);
    saved.map(drop).map_err(|e| {
        CommandError::new(
            "setting",
            format!("{} is used now but not saved: {e}", parsed.name()),
        )
    })
}

fn apply_strategy(app: &Shell, strategy: Strategy) {
    if let RouterSlot::Running(router) = &*super::lock(&app.desktop.router) {
        router.state.routing().set_strategy(strategy);
    }
}

/// Starts the browser login, for a new account or for `wanted`'s new login; it finishes in
/// the background (the window may close meanwhile) and the account appears by itself.
pub fn start_login(app: &Shell, wanted: Option<String>) {
    let desktop = app.desktop.clone();
    let app = app.clone();
    app.runtime.clone().spawn(async move {
        desktop.set_notice(Some("Signing in: finish in the browser…".to_string()));
        changed(&app);
        let notice = match login(&app, wanted).await {
            Ok(note) => note,
            Err(e) => Some(format!("Login failed: {e}")),
        };
        desktop.set_notice(notice);
        changed(&app);
    });
}

/// The browser login. The issuer, not the app, decides who signs in: when `wanted` was
/// asked for and someone else signed in, the answer says so (that account is still saved).
async fn login(app: &Shell, wanted: Option<String>) -> Result<Option<String>, AppError> {
    let settings = &app.desktop.settings;
    let store = app::open_store(settings).await?;
    // A keychain that cannot hold the account fails before the sign-in, not after.
    let checked = store.clone();
    tokio::task::spawn_blocking(move || checked.check_before_login())
        .await
        .map_err(|e| AppError::Internal(e.to_string()))??;
    let options = BrowserLoginOptions {
        issuer: settings.oauth_issuer.clone(),
        ports: settings.login_ports.clone(),
        timeout: Duration::from_secs(600),
    };
    let login = oauth::begin_browser_login(app::http_client()?, options).await?;
    open_link(app, &login.url)
        .map_err(|e| AppError::Internal(format!("the browser did not open ({e})")))?;
    let tokens = login.finish().await?;
    let signed_in = AccountRecord {
        account_id: tokens.claims.account_id.clone(),
        user_id: tokens.claims.user_id.clone(),
        email: tokens.claims.email.clone(),
        ..Default::default()
    };
    let outcome = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || app::save_login(&store, tokens))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))??
    };
    let Some(wanted) = wanted.filter(|w| *w != signed_in.key()) else {
        return Ok(None);
    };
    let file = store.load_accounts()?;
    let record = file.accounts.iter().find(|r| r.key() == wanted);
    let wanted_name = record
        .and_then(|r| r.label.clone().or(r.email.clone()))
        .unwrap_or(wanted);
    Ok(Some(format!(
        "The browser signed in {} ({}), not {wanted_name}. To renew {wanted_name}, sign out \
         of ChatGPT in the browser, then choose “Log in again…” and sign in as {wanted_name}.",
        signed_in.email.as_deref().unwrap_or("another account"),
        outcome.describe(),
    )))
}

/// Opens `url` in the system browser through tauri-plugin-opener, or in the browser the user
/// named in `CODEX_PROXY_BROWSER` (which the tests use: they never reach a real opener).
fn open_link(app: &Shell, url: &str) -> Result<(), String> {
    use tauri_plugin_opener::OpenerExt as _;
    if app.desktop.settings.browser.is_some() {
        return app::open_in_browser(&app.desktop.settings, url);
    }
    app.app
        .opener()
        .open_url(url, None::<&str>)
        .map_err(|e| e.to_string())
}
