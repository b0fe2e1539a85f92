//! "Start at login" through tauri-plugin-autostart: an XDG autostart entry, a LaunchAgent or
//! a Run key that starts the app with `--minimized`, so that only the tray appears.

use tauri::plugin::TauriPlugin;
use tauri::{AppHandle, Wry};
use tauri_plugin_autostart::ManagerExt as _;

use super::APP_NAME;

/// The argument the entry starts the app with: tray only, no dashboard.
const ARGS: [&str; 1] = ["--minimized"];

/// The plugin, naming the entry after the product as every earlier version did (the
/// `auto-launch` entry of 0.1 had this name too), so an upgrade finds the entry it made.
pub fn plugin() -> TauriPlugin<Wry> {
    tauri_plugin_autostart::Builder::new()
        .app_name(APP_NAME)
        .args(ARGS)
        .build()
}

pub fn is_enabled(app: &AppHandle) -> bool {
    app.autolaunch().is_enabled().unwrap_or(false)
}

/// Turns starting at login on or off; the error says what failed, for the menu.
pub fn set(app: &AppHandle, on: bool) -> Result<(), String> {
    let manager = app.autolaunch();
    let done = if on {
        manager.enable()
    } else {
        manager.disable()
    };
    done.map_err(|e| e.to_string())?;
    #[cfg(windows)]
    if on {
        quote_run_entry()?;
    }
    Ok(())
}

/// The command line a Windows Run entry needs: the path quoted, since an unquoted path with a
/// space ("C:\Program Files\…", "C:\Users\Jane Doe\…") makes Windows run a wrong prefix of it
/// or nothing at all. The plugin (through `auto-launch` 0.6) writes it unquoted.
#[cfg_attr(
    not(any(windows, test)),
    expect(dead_code, reason = "used on Windows; tested everywhere")
)]
fn run_command(exe: &str, args: &[&str]) -> String {
    let mut command = format!("\"{}\"", exe.trim_matches('"'));
    for arg in args {
        command.push(' ');
        command.push_str(arg);
    }
    command
}

/// An entry written by an earlier version (unquoted) is rewritten quoted at start.
#[cfg(windows)]
pub fn quote_existing_entry(app: &AppHandle) {
    if is_enabled(app) {
        if let Err(e) = quote_run_entry() {
            tracing::warn!("{e}");
        }
    }
}

/// Rewrites the Run value the plugin just wrote with the path quoted. The plugin writes the
/// per-user key (HKCU) unless the app runs elevated; this writes HKCU only.
#[cfg(windows)]
fn quote_run_entry() -> Result<(), String> {
    const RUN: &str = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Run";
    let exe =
        std::env::current_exe().map_err(|e| format!("the app's own path is unknown ({e})"))?;
    let command = run_command(&exe.display().to_string(), &ARGS);
    windows_registry::CURRENT_USER
        .create(RUN)
        .and_then(|key| key.set_string(APP_NAME, command.as_str()))
        .map_err(|e| format!("the start-at-login entry could not be written ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_windows_run_entry_quotes_a_path_with_spaces() {
        let exe = r"C:\Program Files\Codex App Account Router\codex-app-account-router.exe";
        assert_eq!(
            run_command(exe, &ARGS),
            "\"C:\\Program Files\\Codex App Account Router\\codex-app-account-router.exe\" \
             --minimized"
        );
        // A path that came quoted is not quoted twice.
        assert_eq!(run_command("\"C:\\a b\\x.exe\"", &[]), "\"C:\\a b\\x.exe\"");
    }
}
