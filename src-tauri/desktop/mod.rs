//! The desktop front end: a Tauri app that runs the router inside it. The tray, the
//! dashboard window and notifications attach here; this is the only module that uses Tauri.

pub mod tray_icon;
pub mod tray_model;

use std::process::ExitCode;

use crate::app;
use crate::settings::Settings;

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
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = tauri::Builder::default()
        .setup(move |_app| {
            tauri::async_runtime::spawn(async move {
                match app::start_router(settings).await {
                    Ok(mut router) => router.wait().await,
                    Err(e) => eprintln!("error: {e}"),
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
