//! `cma configure`, `install-startup` and `uninstall-startup`.

use std::path::PathBuf;

use crate::app::{self, AppError};
use crate::settings::Settings;

pub fn home() -> PathBuf {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_default()
}

pub fn configure(
    settings: &Settings,
    dry_run: bool,
    revert: bool,
    env_file: bool,
) -> Result<(), AppError> {
    if revert {
        let path = app::revert_codex(settings)?;
        println!("restored {}", path.display());
        return Ok(());
    }
    let plan = app::configure_codex(settings, dry_run)?;
    if !plan.changes() {
        println!(
            "{} already points Codex at {}",
            plan.path.display(),
            settings.base_url()
        );
    } else if dry_run {
        print!("{}", plan.diff());
    } else {
        println!(
            "configured {} to use {}",
            plan.path.display(),
            settings.base_url()
        );
        println!(
            "backup of the original: {}.cma-backup (undo with `cma configure --revert`)",
            plan.path.display()
        );
    }
    let env = |k: &str| std::env::var(k).ok();
    if let Some(proxy) = app::proxy_without_loopback_exemption(&env) {
        let codex_env = settings.paths.codex_home.join(".env");
        if env_file && !dry_run {
            if app::exempt_loopback_in_codex_env(&settings.paths.codex_home)? {
                println!("added NO_PROXY for loopback to {} ({proxy} is set, and Codex would send even loopback requests through it)", codex_env.display());
            }
        } else {
            eprintln!("hint: {proxy} is set and NO_PROXY does not exempt loopback; Codex would send its requests to the router through that proxy. Add NO_PROXY=127.0.0.1,localhost,::1 to {}", codex_env.display());
        }
    }
    Ok(())
}

pub fn install_startup(activate: bool) -> Result<(), AppError> {
    let binary = std::env::current_exe().map_err(|e| AppError::Internal(e.to_string()))?;
    let binary = binary.canonicalize().unwrap_or(binary);
    let entry = app::startup_entry(&home());
    let env = app::startup_environment(std::env::vars());
    let path = entry.install(&binary, &env)?;
    println!("installed {}", path.display());
    if activate {
        app::activate_startup(&entry)?;
        println!(
            "started; it will start at every login (logs: {})",
            entry.log_location()
        );
    } else {
        println!(
            "it will start at the next login (logs: {})",
            entry.log_location()
        );
    }
    Ok(())
}

pub fn uninstall_startup(deactivate: bool) -> Result<(), AppError> {
    let entry = app::startup_entry(&home());
    if deactivate && entry.is_installed() && entry.platform == crate::startup::Platform::Linux {
        let unit = format!("{}.service", crate::startup::SERVICE_NAME);
        let _ = std::process::Command::new("systemctl")
            .args(["--user", "disable", "--now", &unit])
            .status();
    }
    if entry.uninstall()? {
        println!("removed {}", entry.path().display());
    } else {
        println!("not installed");
    }
    Ok(())
}
