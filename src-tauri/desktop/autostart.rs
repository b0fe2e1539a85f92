//! "Start at login": an XDG autostart entry, a LaunchAgent or a Run key (the `auto-launch`
//! crate, as tauri-plugin-autostart uses it), starting the app with `--minimized` so that only
//! the tray appears.

/// The entry's name: the app's product name, as tauri-plugin-autostart named it, so that an
/// entry made by an earlier version is still recognised.
const NAME: &str = "Codex App Account Router";

fn entry() -> Result<auto_launch::AutoLaunch, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("the app's own path is unknown ({e})"))?;
    auto_launch::AutoLaunchBuilder::new()
        .set_app_name(NAME)
        .set_app_path(&exe.to_string_lossy())
        .set_macos_launch_mode(auto_launch::MacOSLaunchMode::LaunchAgent)
        .set_args(&["--minimized"])
        .build()
        .map_err(|e| e.to_string())
}

pub fn is_enabled() -> bool {
    entry()
        .and_then(|e| e.is_enabled().map_err(|e| e.to_string()))
        .unwrap_or(false)
}

/// Turns starting at login on or off; the error says what failed, for the menu.
pub fn set(on: bool) -> Result<(), String> {
    let entry = entry()?;
    let done = if on { entry.enable() } else { entry.disable() };
    done.map_err(|e| e.to_string())
}
