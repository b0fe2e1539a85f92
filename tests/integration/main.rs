//! One integration-test binary for the router: fakes of the ChatGPT backend and the OAuth
//! issuer live in `support/`, each test module exercises one behaviour family.

mod harness;
mod support;

mod app_icons;
mod cli;
mod codex_cli;
mod codex_modes;
mod codex_tui;
// Xvfb, trayer, WebKitWebDriver and /proc: Linux only.
#[cfg(all(feature = "desktop", target_os = "linux"))]
mod dashboard;
mod deactivated;
mod failover;
mod fakes;
mod faults;
mod history;
mod import;
mod keychain;
mod keychain_refresh;
mod keychain_size;
mod listener;
mod login;
mod moves;
mod openai_path;
mod opening_hold;
mod operator;
mod operator_doctor;
mod operator_setup;
mod other_paths;
mod pooled_limits;
// The .deb in a Debian root under Xvfb and trayer: Linux only, beside the tray tests.
#[cfg(all(feature = "desktop", target_os = "linux"))]
mod package;
mod refresh_safety;
mod sessions;
mod settings;
mod surface;
mod tokens;
#[cfg(all(feature = "desktop", target_os = "linux"))]
mod tray;
mod websocket;
