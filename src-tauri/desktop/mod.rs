//! The desktop front end: a Tauri app that runs the router inside it. The tray, the
//! dashboard window and notifications attach here; this is the only module that uses Tauri.

mod commands;
mod dashboard;
pub mod notices;
mod tray;
pub mod tray_icon;
pub mod tray_model;
mod window;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use crate::app::{self, AppError};
use crate::settings::Settings;
use tray_model::RouterState;

/// Starts the app: the router runs on Tauri's own tokio runtime, and the app keeps running
/// with no window open.
pub fn main() -> ExitCode {
    if cfg!(target_os = "linux")
        && std::env::var_os("DISPLAY").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
    {
        eprintln!("error: no display found, so the tray app cannot start");
        eprintln!("hint: on a headless machine run the router with `cma start`");
        return ExitCode::FAILURE;
    }
    if std::env::args().any(|a| a == dashboard::WINDOW_ARG) {
        return window::main();
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let desktop = Arc::new(tray::Desktop {
        settings: settings.clone(),
        router: Mutex::new(tray::RouterSlot::Starting),
        notice: Mutex::new(None),
        notifier: Mutex::new(notices::Notifier::default()),
        dashboard: Mutex::new(None),
    });
    let result = tauri::Builder::default()
        // First, so that a second launch hands over to this one before doing anything else.
        .plugin(tauri_plugin_single_instance::init(|app, args, _cwd| {
            if args.iter().any(|a| a == "--close-dashboard") {
                dashboard::close(app);
            } else {
                dashboard::open(app);
            }
        }))
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec!["--minimized"]),
        ))
        .plugin(tauri_plugin_notification::init())
        .manage(desktop.clone())
        .setup(move |app| {
            tray::create(app.handle())?;
            // At login the app starts with --minimized: tray only. Started by hand, it shows
            // the dashboard.
            if !std::env::args().any(|a| a == "--minimized") {
                dashboard::open(app.handle());
            }
            let handle = app.handle().clone();
            tauri::async_runtime::spawn(async move {
                let slot = start_or_attach(settings).await;
                let changes = match &slot {
                    tray::RouterSlot::Running(router) => Some(router.state.subscribe()),
                    _ => None,
                };
                *desktop.router.lock().unwrap_or_else(|p| p.into_inner()) = slot;
                commands::changed(&handle);
                if let Some(mut changes) = changes {
                    // Traffic changes usage and limits: redraw after it, at most twice a second.
                    while changes.changed().await.is_ok() {
                        commands::changed(&handle);
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
            });
            Ok(())
        })
        .build(tauri::generate_context!());
    match result {
        Ok(tauri_app) => {
            tauri_app.run(|_handle, event| {
                // Closing the last window must not stop the router.
                if let tauri::RunEvent::ExitRequested {
                    api, code: None, ..
                } = event
                {
                    api.prevent_exit();
                }
            });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: the desktop app could not start: {e}");
            ExitCode::FAILURE
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
