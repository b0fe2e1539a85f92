//! The desktop app: the router inside a tray application (the tray itself is built in
//! `desktop`).

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() -> std::process::ExitCode {
    router::desktop::main()
}
