//! The tray icon and its menu, redrawn on the main thread whenever the status changes and on
//! a coarse timer (for the countdowns); menu clicks call the same `app` use cases as `cma`.

use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use tauri::image::Image;
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri_plugin_notification::NotificationExt as _;

use super::alerts::Alerts;
use super::icon as drawing;
use super::menu::TrayMenu;
use super::notices::Notifier;
use super::tray_model::{self, MenuId, RouterState, TrayInput};
use super::{autostart, commands, dashboard, lock, Shell};
use crate::accounts::now_ms;
use crate::app::RunningRouter;
use crate::app::{self, AccountChange, AccountSelector};
use crate::proxy::AccountStatus;
use crate::settings::{Settings, Strategy};

const ICON_SIZE: u32 = 32;

/// What the desktop front end keeps between events.
pub struct Desktop {
    pub settings: Settings,
    pub router: Mutex<RouterSlot>,
    pub notice: Mutex<Option<String>>,
    /// What is wrong with `settings.toml`, shown while no other notice is.
    pub settings_notice: Mutex<Option<String>>,
    /// A usage history moved aside or not recorded, shown while no passing notice is (a
    /// login's outcome does not end it).
    pub history_notice: Mutex<Option<String>>,
    pub notifier: Mutex<Notifier>,
    pub alerts: Mutex<Alerts>,
    /// The alert thresholds in use: set in the dashboard, they apply at once.
    pub alert_thresholds: Mutex<Vec<u8>>,
    /// The dashboard process, while its window is open.
    pub dashboard: Mutex<Option<super::dashboard::Handle>>,
    /// The tray icon; touched on the main thread only.
    pub tray: Mutex<Option<Tray>>,
    /// Quit was chosen: the router is being stopped for the app to exit.
    pub stopping: AtomicBool,
}

pub enum RouterSlot {
    Starting,
    Running(RunningRouter),
    Attached(String),
    Failed(RouterState),
}

impl Desktop {
    pub fn new(settings: Settings) -> Desktop {
        Desktop {
            alert_thresholds: Mutex::new(settings.alert_thresholds.clone()),
            settings,
            router: Mutex::new(RouterSlot::Starting),
            notice: Mutex::new(None),
            settings_notice: Mutex::new(None),
            history_notice: Mutex::new(None),
            notifier: Mutex::new(Notifier::default()),
            alerts: Mutex::new(Alerts::default()),
            dashboard: Mutex::new(None),
            tray: Mutex::new(None),
            stopping: AtomicBool::new(false),
        }
    }

    pub fn snapshot(&self) -> (RouterState, Vec<AccountStatus>, Strategy) {
        let slot = lock(&self.router);
        let configured = self.settings.strategy;
        match &*slot {
            RouterSlot::Running(router) => {
                let status = router.status();
                let strategy = router.state.routing().strategy();
                (
                    RouterState::Running {
                        base_url: status.base_url,
                    },
                    status.accounts,
                    strategy,
                )
            }
            RouterSlot::Attached(base_url) => (
                RouterState::Attached {
                    base_url: base_url.clone(),
                },
                self.offline_accounts(),
                configured,
            ),
            RouterSlot::Starting => (RouterState::Stopped, self.offline_accounts(), configured),
            RouterSlot::Failed(state) => (state.clone(), self.offline_accounts(), configured),
        }
    }

    fn offline_accounts(&self) -> Vec<AccountStatus> {
        let now = now_ms();
        let file = self.settings.store().load_accounts().unwrap_or_default();
        file.accounts
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let account = crate::accounts::Account::from_record(r);
                AccountStatus::from_account(i, &account, file.preferred_account.as_deref(), now)
            })
            .collect()
    }

    pub fn set_notice(&self, notice: Option<String>) {
        *lock(&self.notice) = notice;
    }
}

/// The tray icon and its menu; they live on the main thread (GTK, AppKit and Win32 want them
/// there).
pub struct Tray {
    icon: TrayIcon,
    menu: Mutex<Option<TrayMenu>>,
}

impl Tray {
    pub fn create(shell: &Shell) -> tauri::Result<Tray> {
        // Icon and menu come with the first refresh, just below.
        let icon = TrayIconBuilder::with_id("main")
            .show_menu_on_left_click(true)
            .build(&shell.app)?;
        let tray = Tray {
            icon,
            menu: Mutex::new(None),
        };
        tray.refresh(shell);
        Ok(tray)
    }

    /// Redraws icon, tooltip and menu from the current status, and tells what needs telling.
    pub fn refresh(&self, shell: &Shell) {
        let desktop = &shell.desktop;
        let (router, accounts, strategy) = desktop.snapshot();
        let notice = lock(&desktop.notice).clone();
        let notice = notice
            .or_else(|| lock(&desktop.settings_notice).clone())
            .or_else(|| lock(&desktop.history_notice).clone());
        let input = TrayInput {
            router: &router,
            accounts: &accounts,
            strategy,
            start_at_login: autostart::is_enabled(&shell.app),
            notice: notice.as_deref(),
            now_ms: now_ms(),
        };
        let mut told = lock(&desktop.notifier).update(&accounts, input.now_ms);
        let thresholds = lock(&desktop.alert_thresholds).clone();
        told.extend(lock(&desktop.alerts).update(&accounts, &thresholds, input.now_ms));
        for notice in told {
            let shown = shell
                .app
                .notification()
                .builder()
                .title(&notice.title)
                .body(&notice.body)
                .show();
            if let Err(e) = shown {
                tracing::warn!("a notification could not be shown: {e}");
            }
        }
        let drawn = drawing::render(
            &tray_model::bars(&accounts),
            &tray_model::icon_state(&input),
            ICON_SIZE,
        );
        let _ = self
            .icon
            .set_icon(Some(Image::new_owned(drawn.rgba, ICON_SIZE, ICON_SIZE)));
        let _ = self.icon.set_tooltip(Some(tray_model::tooltip(&input)));
        // An open menu is updated in place; it is replaced only when its items change.
        let entries = tray_model::menu(&input);
        let mut menu = lock(&self.menu);
        if let Some(menu) = menu.as_mut() {
            if menu.update(&shell.app, &entries) {
                return;
            }
        }
        match TrayMenu::build(&shell.app, &entries) {
            Ok(built) => {
                if let Err(e) = self.icon.set_menu(Some(built.menu())) {
                    tracing::warn!("the tray menu could not be set: {e}");
                }
                *menu = Some(built);
            }
            Err(e) => tracing::warn!("the tray menu could not be built: {e}"),
        }
    }
}

/// A menu click, on the main thread: quick things here, the rest on the runtime.
pub fn on_menu(shell: &Shell, id: MenuId) {
    let desktop = shell.desktop.clone();
    match id {
        MenuId::Quit => super::stop_and_exit(shell),
        MenuId::AddAccount => commands::start_login(shell, None),
        MenuId::Relogin(key) => commands::start_login(shell, Some(key)),
        MenuId::OpenDashboard => dashboard::open(shell),
        MenuId::SetStrategy(strategy) => {
            let result = commands::set_strategy(shell, strategy.name());
            desktop.set_notice(result.err().map(|e| e.message));
            commands::changed(shell);
        }
        MenuId::StartAtLogin => {
            let result = autostart::set(&shell.app, !autostart::is_enabled(&shell.app));
            desktop.set_notice(result.err().map(|e| format!("Start at login: {e}")));
            commands::changed(shell);
        }
        other => {
            let shell = shell.clone();
            shell.runtime.clone().spawn(async move {
                let settings = desktop.settings.clone();
                let result = tokio::task::spawn_blocking(move || act(&settings, other)).await;
                let notice = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(e.to_string()),
                };
                desktop.set_notice(notice);
                commands::changed(&shell);
            });
        }
    }
}

/// The menu actions that are plain store or config changes.
fn act(settings: &Settings, id: MenuId) -> Result<(), app::AppError> {
    let store = settings.store();
    let select = |key: &str| AccountSelector(key.to_string());
    match id {
        MenuId::UseForNewSessions(key) => {
            app::change_account(&store, &select(&key), AccountChange::UseForNewSessions).map(drop)
        }
        MenuId::ToggleEnabled(key) => {
            let enabled = store
                .load_accounts()?
                .accounts
                .iter()
                .any(|r| r.key() == key && r.enabled);
            let change = if enabled {
                AccountChange::Disable
            } else {
                AccountChange::Enable
            };
            app::change_account(&store, &select(&key), change).map(drop)
        }
        MenuId::Remove(key) => app::remove_account(&store, &select(&key)).map(drop),
        MenuId::ConfigureCodex => app::configure_codex(settings, false).map(drop),
        _ => Ok(()),
    }
}
