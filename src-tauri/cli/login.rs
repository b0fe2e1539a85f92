//! `cma login` and `cma sync-accounts`.

use std::path::PathBuf;
use std::time::Duration;

use crate::app::{self, AppError};
use crate::oauth::{self, BrowserLoginOptions};
use crate::settings::Settings;

use super::blocking;

pub async fn run(
    settings: &Settings,
    device: bool,
    no_browser: bool,
    timeout: Duration,
) -> Result<(), AppError> {
    // Fail on a keychain that cannot hold the account before the user signs in, not after.
    let store = app::open_store(settings).await?;
    let checked = store.clone();
    blocking(move || Ok(checked.check_before_login()?)).await?;
    let http = app::http_client()?;
    let tokens = if device {
        let code = oauth::request_device_code(&http, &settings.oauth_issuer).await?;
        eprintln!(
            "Open {} on any device and enter this code:",
            code.verification_url
        );
        println!("{}", code.user_code);
        oauth::complete_device_login(&http, &settings.oauth_issuer, &code, timeout).await?
    } else {
        let options = BrowserLoginOptions {
            issuer: settings.oauth_issuer.clone(),
            ports: settings.login_ports.clone(),
            timeout,
        };
        let login = oauth::begin_browser_login(http, options).await?;
        eprintln!("Sign in to the ChatGPT account to add:");
        println!("{}", login.url);
        if !no_browser {
            if let Err(e) = app::open_in_browser(settings, &login.url) {
                eprintln!("hint: the browser did not open ({e}); open the URL above yourself");
            }
        }
        login.finish().await?
    };
    let outcome = blocking(move || app::save_login(&store, tokens)).await?;
    println!("{}", outcome.describe());
    Ok(())
}

pub async fn sync(settings: &Settings, from: Option<PathBuf>) -> Result<(), AppError> {
    let store = app::open_store(settings).await?;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let codex_home = settings.paths.codex_home.clone();
    let report =
        blocking(move || app::import_accounts(&store, from.as_deref(), &home, &codex_home)).await?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if report.files.is_empty() {
        println!("no account files found in the usual places; name one with --from");
        return Ok(());
    }
    for file in &report.files {
        println!("read {}", file.display());
    }
    for name in &report.added {
        println!("added {name}");
    }
    for name in &report.renewed {
        println!("renewed {name}");
    }
    for name in &report.unchanged {
        println!("kept {name} (already here)");
    }
    Ok(())
}
