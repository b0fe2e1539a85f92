//! The tray icon and its menu, redrawn from the router's status after every action and on a
//! coarse timer (for the countdowns); menu clicks call the same `app` use cases as `cma`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tauri::image::Image;
use tauri::menu::{CheckMenuItem, Menu, MenuItem, Submenu};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager, Wry};
use tauri_plugin_autostart::ManagerExt;
use tauri_plugin_notification::NotificationExt;

use super::notices::Notifier;
use super::tray_icon;
use super::tray_model::{self, MenuEntry, MenuId, RouterState, TrayInput};
use crate::accounts::now_ms;
use crate::app::RunningRouter;
use crate::app::{self, AccountChange, AccountSelector};
use crate::proxy::AccountStatus;
use crate::settings::{Settings, Strategy};

const TRAY_ID: &str = "main";
const ICON_SIZE: u32 = 32;
/// Countdowns in the menu move by the minute; nothing else needs a timer.
const TICK: Duration = Duration::from_secs(30);

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

/// Creates the tray and starts its refresh timer.
pub fn create(app: &AppHandle) -> tauri::Result<()> {
    let menu = Menu::new(app)?;
    TrayIconBuilder::with_id(TRAY_ID)
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(|app, event| on_menu(app, event.id().as_ref()))
        .build(app)?;
    refresh(app);
    let handle = app.clone();
    tauri::async_runtime::spawn(async move {
        loop {
            tokio::time::sleep(TICK).await;
            refresh(&handle);
        }
    });
    Ok(())
}

/// Redraws icon, tooltip and menu from the current status.
pub fn refresh(app: &AppHandle) {
    let desktop = app.state::<Arc<Desktop>>();
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
        start_at_login: app.autolaunch().is_enabled().unwrap_or(false),
        notice: notice.as_deref(),
        now_ms: now_ms(),
    };
    let told = desktop
        .notifier
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .update(&accounts, input.now_ms);
    for notice in told {
        let shown = app
            .notification()
            .builder()
            .title(&notice.title)
            .body(&notice.body)
            .show();
        if let Err(e) = shown {
            tracing::warn!("a notification could not be shown: {e}");
        }
    }
    let Some(tray) = app.tray_by_id(TRAY_ID) else {
        return;
    };
    let icon = tray_icon::render(
        &tray_model::bars(&accounts),
        &tray_model::icon_state(&input),
        ICON_SIZE,
    );
    let _ = tray.set_icon(Some(Image::new_owned(icon.rgba, ICON_SIZE, ICON_SIZE)));
    let _ = tray.set_tooltip(Some(tray_model::tooltip(&input)));
    match build_menu(app, &tray_model::menu(&input)) {
        Ok(menu) => {
            let _ = tray.set_menu(Some(menu));
        }
        Err(e) => tracing::warn!("the tray menu could not be built: {e}"),
    }
}

fn build_menu(app: &AppHandle, entries: &[MenuEntry]) -> tauri::Result<Menu<Wry>> {
    let menu = Menu::new(app)?;
    for entry in entries {
        append(app, entry, &|item| menu.append(item))?;
    }
    Ok(menu)
}

fn append(
    app: &AppHandle,
    entry: &MenuEntry,
    add: &dyn Fn(&dyn tauri::menu::IsMenuItem<Wry>) -> tauri::Result<()>,
) -> tauri::Result<()> {
    let id = entry.id.id();
    if !entry.children.is_empty() {
        let sub = Submenu::with_id(app, &id, &entry.label, entry.enabled)?;
        for child in &entry.children {
            append(app, child, &|item| sub.append(item))?;
        }
        return add(&sub);
    }
    match entry.checked {
        Some(checked) => add(&CheckMenuItem::with_id(
            app,
            &id,
            &entry.label,
            entry.enabled,
            checked,
            None::<&str>,
        )?),
        None => add(&MenuItem::with_id(
            app,
            &id,
            &entry.label,
            entry.enabled,
            None::<&str>,
        )?),
    }
}

fn on_menu(app: &AppHandle, id: &str) {
    let Some(id) = MenuId::from_id(id) else {
        return;
    };
    let desktop = app.state::<Arc<Desktop>>().inner().clone();
    let handle = app.clone();
    match id {
        MenuId::Quit => {
            tauri::async_runtime::spawn(async move {
                let slot = std::mem::replace(
                    &mut *desktop.router.lock().unwrap_or_else(|p| p.into_inner()),
                    RouterSlot::Starting,
                );
                // Streams in flight finish and the bindings are saved before the app goes.
                if let RouterSlot::Running(router) = slot {
                    router.stop().await;
                }
                handle.exit(0);
            });
        }
        MenuId::AddAccount => super::commands::start_login(app, None),
        MenuId::Relogin(key) => super::commands::start_login(app, Some(key)),
        MenuId::OpenDashboard => super::dashboard::open(app),
        MenuId::SetStrategy(strategy) => {
            if let RouterSlot::Running(router) =
                &*desktop.router.lock().unwrap_or_else(|p| p.into_inner())
            {
                router.state.routing().set_strategy(strategy);
            }
            refresh(app);
        }
        MenuId::StartAtLogin => {
            let autostart = app.autolaunch();
            let result = if autostart.is_enabled().unwrap_or(false) {
                autostart.disable()
            } else {
                autostart.enable()
            };
            desktop.set_notice(result.err().map(|e| format!("Start at login: {e}")));
            refresh(app);
        }
        other => {
            tauri::async_runtime::spawn(async move {
                let settings = desktop.settings.clone();
                let result = tokio::task::spawn_blocking(move || act(&settings, other)).await;
                let notice = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(e.to_string()),
                };
                desktop.set_notice(notice);
                refresh(&handle);
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
