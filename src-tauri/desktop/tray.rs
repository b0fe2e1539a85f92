//! The tray icon and its menu, redrawn on the main thread whenever the status changes and on
//! a coarse timer (for the countdowns); menu clicks call the same `app` use cases as `cma`.

use std::sync::Mutex;

use tray_icon::menu::{CheckMenuItem, IsMenuItem, Menu, MenuItem, Submenu};
use tray_icon::{Icon, TrayIcon, TrayIconBuilder};

use super::icon as drawing;
use super::notices::Notifier;
use super::tray_model::{self, MenuEntry, MenuId, RouterState, TrayInput};
use super::{autostart, commands, dashboard, Shell, UserEvent};
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
    pub notifier: Mutex<Notifier>,
    /// The dashboard process, while its window is open.
    pub dashboard: Mutex<Option<super::dashboard::Handle>>,
}

pub enum RouterSlot {
    Starting,
    Running(RunningRouter),
    Attached(String),
    Failed(RouterState),
}

impl Desktop {
    pub fn snapshot(&self) -> (RouterState, Vec<AccountStatus>, Strategy) {
        let slot = self.router.lock().unwrap_or_else(|p| p.into_inner());
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
        *self.notice.lock().unwrap_or_else(|p| p.into_inner()) = notice;
    }
}

/// The tray icon; it lives on the main thread (GTK, AppKit and Win32 want it there).
pub struct Tray {
    icon: TrayIcon,
}

impl Tray {
    pub fn create(shell: &Shell) -> Result<Tray, tray_icon::Error> {
        // Icon and menu come with the first refresh, just below.
        let icon = TrayIconBuilder::new()
            .with_id("main")
            .with_menu(Box::new(Menu::new()))
            .with_menu_on_left_click(true)
            .build()?;
        let tray = Tray { icon };
        tray.refresh(shell);
        Ok(tray)
    }

    /// Redraws icon, tooltip and menu from the current status, and tells what needs telling.
    pub fn refresh(&self, shell: &Shell) {
        let desktop = &shell.desktop;
        let (router, accounts, strategy) = desktop.snapshot();
        let notice = desktop
            .notice
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let input = TrayInput {
            router: &router,
            accounts: &accounts,
            strategy,
            start_at_login: autostart::is_enabled(),
            notice: notice.as_deref(),
            now_ms: now_ms(),
        };
        let told = desktop
            .notifier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(&accounts, input.now_ms);
        for notice in told {
            // A notification is a D-Bus call (or its kin elsewhere): off the main thread.
            shell.runtime.spawn_blocking(move || {
                let shown = notify_rust::Notification::new()
                    .appname("Codex App Account Router")
                    .summary(&notice.title)
                    .body(&notice.body)
                    .show();
                if let Err(e) = shown {
                    tracing::warn!("a notification could not be shown: {e}");
                }
            });
        }
        let drawn = drawing::render(
            &tray_model::bars(&accounts),
            &tray_model::icon_state(&input),
            ICON_SIZE,
        );
        if let Ok(icon) = Icon::from_rgba(drawn.rgba, ICON_SIZE, ICON_SIZE) {
            let _ = self.icon.set_icon(Some(icon));
        }
        let _ = self.icon.set_tooltip(Some(tray_model::tooltip(&input)));
        match build_menu(&tray_model::menu(&input)) {
            Ok(menu) => self.icon.set_menu(Some(Box::new(menu))),
            Err(e) => tracing::warn!("the tray menu could not be built: {e}"),
        }
    }
}

fn build_menu(entries: &[MenuEntry]) -> tray_icon::menu::Result<Menu> {
    let menu = Menu::new();
    for entry in entries {
        append(entry, &|item| menu.append(item))?;
    }
    Ok(menu)
}

fn append(
    entry: &MenuEntry,
    add: &dyn Fn(&dyn IsMenuItem) -> tray_icon::menu::Result<()>,
) -> tray_icon::menu::Result<()> {
    let id = entry.id.id();
    if !entry.children.is_empty() {
        let sub = Submenu::with_id(&id, &entry.label, entry.enabled);
        for child in &entry.children {
            append(child, &|item| sub.append(item))?;
        }
        return add(&sub);
    }
    match entry.checked {
        Some(checked) => add(&CheckMenuItem::with_id(
            &id,
            &entry.label,
            entry.enabled,
            checked,
            None,
        )),
        None => add(&MenuItem::with_id(&id, &entry.label, entry.enabled, None)),
    }
}

/// A menu click, on the main thread: quick things here, the rest on the runtime.
pub fn on_menu(shell: &Shell, id: MenuId) {
    let desktop = shell.desktop.clone();
    match id {
        MenuId::Quit => {
            let shell = shell.clone();
            shell.runtime.clone().spawn(async move {
                let slot = std::mem::replace(
                    &mut *desktop.router.lock().unwrap_or_else(|p| p.into_inner()),
                    RouterSlot::Starting,
                );
                // Streams in flight finish and the bindings are saved before the app goes.
                if let RouterSlot::Running(router) = slot {
                    router.stop().await;
                }
                shell.send(UserEvent::Exit);
            });
        }
        MenuId::AddAccount => commands::start_login(shell, None),
        MenuId::Relogin(key) => commands::start_login(shell, Some(key)),
        MenuId::OpenDashboard => dashboard::open(shell),
        MenuId::SetStrategy(strategy) => {
            if let RouterSlot::Running(router) =
                &*desktop.router.lock().unwrap_or_else(|p| p.into_inner())
            {
                router.state.routing().set_strategy(strategy);
            }
            commands::changed(shell);
        }
        MenuId::StartAtLogin => {
            let result = autostart::set(!autostart::is_enabled());
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
