//! The desktop front end: a Tauri v2 app whose backend runs the router, with a tray icon and
//! menu, start at login, one instance and notifications through Tauri's plugins, and a
//! dashboard window in a second process of the same app (`window.rs`). This is the only module
//! that knows about windows and trays.

mod alerts;
mod autostart;
mod commands;
mod dashboard;
pub mod icon;
mod launch;
mod menu;
pub mod notices;
mod tray;
pub mod tray_model;
pub mod window;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tauri::{Manager as _, RunEvent};

use crate::app::{self, AppError};
use crate::settings::Settings;
use tray_model::{MenuId, RouterState};

/// Countdowns in the menu move by the minute; nothing else needs a timer.
const TICK: Duration = Duration::from_secs(30);
/// The app's name, as the tray, notifications and the start-at-login entry show it.
pub const APP_NAME: &str = "Codex App Account Router";
/// How long Quit waits for streams in flight before the app goes anyway.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// The same at a logout or shutdown, which the system allows only a few seconds (Windows
/// ends a program about 5 s after `WM_ENDSESSION`).
const EXIT_DEADLINE: Duration = Duration::from_secs(3);

/// A second launch that asked for the dashboard before the app was set up.
#[derive(Default)]
struct EarlyLaunch(std::sync::atomic::AtomicBool);

/// What the main thread (which owns the tray) is asked to do.
#[derive(Debug)]
pub enum UserEvent {
    /// The status changed: redraw icon, tooltip and menu, tell what needs telling.
    Refresh,
    Menu(MenuId),
    OpenDashboard,
    CloseDashboard,
    /// The router has stopped: leave.
    Exit,
}

/// A handle on the running app, for any thread: the shared state, the async runtime the
/// router runs on (Tauri's), and the app itself.
#[derive(Clone)]
pub struct Shell {
    pub desktop: Arc<tray::Desktop>,
    pub runtime: tokio::runtime::Handle,
    pub app: tauri::AppHandle,
}

impl Shell {
    /// Runs `event` on the main thread, where the tray lives.
    pub fn send(&self, event: UserEvent) {
        let shell = self.clone();
        let _ = self.app.run_on_main_thread(move || on_event(&shell, event));
    }
}

/// The Tauri context of both processes (the tray app and its dashboard window).
pub(crate) fn context() -> tauri::Context {
    tauri::generate_context!()
}

/// Starts the tray app: the router runs on Tauri's async runtime, and the app keeps running
/// with no window open.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let program = "codex-app-account-router";
    if let launch::Launch::Answer(text) = launch::read(program, launch::TRAY_USAGE, &args) {
        println!("{text}");
        return ExitCode::SUCCESS;
    }
    if cfg!(target_os = "linux")
        && std::env::var_os("DISPLAY").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
    {
        eprintln!("error: no display found, so the tray app cannot start");
        eprintln!("hint: on a headless machine run the router with `cma start`");
        return ExitCode::FAILURE;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // At login the app starts with --minimized: tray only. Started by hand, it shows the
    // dashboard.
    let show_dashboard = !args.iter().any(|a| a == "--minimized");
    let built = tauri::Builder::default()
        // First, so that a second launch hands over before anything else starts.
        .manage(EarlyLaunch::default())
        .plugin(tauri_plugin_single_instance::init(|app, argv, _cwd| {
            // A second login entry (`--minimized`) must not open the dashboard at each login.
            if argv.iter().any(|a| a == "--minimized") {
                return;
            }
            let event = match argv.iter().any(|a| a == "--close-dashboard") {
                true => UserEvent::CloseDashboard,
                false => UserEvent::OpenDashboard,
            };
            match app.try_state::<Shell>() {
                Some(shell) => shell.send(event),
                // Before `setup` ran: it opens the dashboard when it does.
                None => {
                    let open = matches!(event, UserEvent::OpenDashboard);
                    app.state::<EarlyLaunch>().0.store(open, Ordering::SeqCst);
                }
            }
        }))
        .plugin(autostart::plugin())
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_opener::init())
        .on_menu_event(|app, event| {
            if let (Some(shell), Some(id)) = (
                app.try_state::<Shell>(),
                MenuId::from_id(event.id().as_ref()),
            ) {
                tray::on_menu(&shell, id);
            }
        })
        .setup(move |app| {
            // An accessory: a tray icon, no Dock icon and no app menu.
            #[cfg(target_os = "macos")]
            app.set_activation_policy(tauri::ActivationPolicy::Accessory);
            let shell = Shell {
                desktop: Arc::new(tray::Desktop::new(settings.clone())),
                runtime: tauri::async_runtime::handle().inner().clone(),
                app: app.handle().clone(),
            };
            app.manage(shell.clone());
            // A settings file with problems is used in part or not at all: the menu says so.
            if !settings.file_problems.is_empty() {
                let problems: Vec<String> = settings
                    .file_problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect();
                *lock(&shell.desktop.settings_notice) = Some(problems.join(" "));
            }
            match tray::Tray::create(&shell) {
                Ok(t) => *lock(&shell.desktop.tray) = Some(t),
                Err(e) => eprintln!("error: the tray icon could not be created: {e}"),
            }
            shell
                .runtime
                .spawn(run_router(shell.clone(), settings.clone()));
            let ticker = shell.clone();
            shell.runtime.spawn(async move {
                loop {
                    tokio::time::sleep(TICK).await;
                    ticker.send(UserEvent::Refresh);
                }
            });
            #[cfg(unix)]
            shell.runtime.spawn(stop_on_terminate(shell.clone()));
            #[cfg(windows)]
            autostart::quote_existing_entry(&shell.app);
            let asked = app.state::<EarlyLaunch>().0.load(Ordering::SeqCst);
            if show_dashboard || asked {
                dashboard::open(&shell);
            }
            Ok(())
        })
        .build(context());
    let app = match built {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: the tray app could not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    app.run(|app, event| match event {
        // A logout or a shutdown: the router stops before the process ends (streams finish,
        // the bindings are saved), within a deadline so the system is not held up. Quit in
        // the menu has stopped it already (`stop_and_exit`).
        RunEvent::Exit => {
            if let Some(shell) = app.try_state::<Shell>() {
                dashboard::close(&shell);
                let slot = std::mem::replace(
                    &mut *lock(&shell.desktop.router),
                    tray::RouterSlot::Starting,
                );
                if let tray::RouterSlot::Running(router) = slot {
                    let stopped = tokio::time::timeout(EXIT_DEADLINE, router.stop());
                    if shell.runtime.block_on(stopped).is_err() {
                        tracing::warn!("the router did not stop within {EXIT_DEADLINE:?}");
                    }
                }
            }
        }
        // macOS: a re-open from Finder or the Dock opens the dashboard.
        #[cfg(target_os = "macos")]
        RunEvent::Reopen { .. } => {
            if let Some(shell) = app.try_state::<Shell>() {
                dashboard::open(&shell);
            }
        }
        _ => {}
    });
    ExitCode::SUCCESS
}

/// What the main thread does with an event.
fn on_event(shell: &Shell, event: UserEvent) {
    match event {
        UserEvent::Refresh => {
            if let Some(tray) = &*lock(&shell.desktop.tray) {
                tray.refresh(shell);
            }
        }
        UserEvent::Menu(id) => tray::on_menu(shell, id),
        UserEvent::OpenDashboard => dashboard::open(shell),
        UserEvent::CloseDashboard => dashboard::close(shell),
        UserEvent::Exit => {
            dashboard::close(shell);
            *lock(&shell.desktop.tray) = None;
            shell.app.exit(0);
        }
    }
}

/// Quit: stops the router off the main thread (at most `STOP_DEADLINE`, while the tray stays
/// responsive), then ends the app.
pub(crate) fn stop_and_exit(shell: &Shell) {
    if shell.desktop.stopping.swap(true, Ordering::SeqCst) {
        return;
    }
    let shell = shell.clone();
    shell.runtime.clone().spawn(async move {
        let slot = std::mem::replace(
            &mut *lock(&shell.desktop.router),
            tray::RouterSlot::Starting,
        );
        if let tray::RouterSlot::Running(router) = slot {
            if tokio::time::timeout(STOP_DEADLINE, router.stop())
                .await
                .is_err()
            {
                tracing::warn!("the router did not stop within {STOP_DEADLINE:?}; leaving anyway");
            }
        }
        shell.send(UserEvent::Exit);
    });
}

/// A logout or shutdown on Linux sends SIGTERM: the router stops as on Quit.
#[cfg(unix)]
async fn stop_on_terminate(shell: Shell) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        return;
    };
    if terminate.recv().await.is_some() {
        stop_and_exit(&shell);
    }
}

/// Starts the router (or attaches to one already serving the port), then redraws the tray
/// after every change of its status, at most twice a second.
async fn run_router(shell: Shell, settings: Settings) {
    let slot = start_or_attach(settings).await;
    let changes = match &slot {
        tray::RouterSlot::Running(router) => Some(router.state.subscribe()),
        _ => None,
    };
    // A history moved aside (or not recorded) is said in the menu and the dashboard.
    if let tray::RouterSlot::Running(router) = &slot {
        if let Some(notice) = &router.history_notice {
            *lock(&shell.desktop.history_notice) = Some(notice.clone());
        }
    }
    *lock(&shell.desktop.router) = slot;
    commands::changed(&shell);
    if let Some(mut changes) = changes {
        while changes.changed().await.is_ok() {
            commands::changed(&shell);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Starts the router inside the app, or attaches to one already serving the port.
async fn start_or_attach(settings: Settings) -> tray::RouterSlot {
    let port = settings.port;
    match app::start_router(settings).await {
        Ok(router) => tray::RouterSlot::Running(router),
        Err(AppError::AlreadyRunning { addr }) => {
            tray::RouterSlot::Attached(format!("http://{addr}/v1"))
        }
        Err(AppError::PortBusy { holder, .. }) => {
            tray::RouterSlot::Failed(RouterState::PortTaken { port, holder })
        }
        Err(e) => {
            tracing::error!("the router could not start: {e}");
            tray::RouterSlot::Failed(RouterState::Stopped)
        }
    }
}

/// A poisoned lock still holds usable state: the desktop never leaves it half-written.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
