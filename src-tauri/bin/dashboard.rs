//! The dashboard window: started by the tray app (`codex-app-account-router`) when the
//! dashboard opens, ended when it closes. Not meant to be run by hand.

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() -> std::process::ExitCode {
    router::desktop::window::main()
}
