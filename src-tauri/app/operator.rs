//! Operator use cases: point Codex at the router, start it at login, and say what is wrong.

use std::path::{Path, PathBuf};

use crate::codex_config::{CodexConfig, ConfigError, Plan, ProviderSettings};
use crate::settings::Settings;
use crate::startup::{Platform, StartupEntry, StartupError};

use super::AppError;

impl From<ConfigError> for AppError {
    fn from(e: ConfigError) -> Self {
        AppError::Message(e.to_string())
    }
}

impl From<StartupError> for AppError {
    fn from(e: StartupError) -> Self {
        AppError::Message(e.to_string())
    }
}

/// The provider block these settings call for.
pub fn provider_settings(settings: &Settings) -> ProviderSettings {
    ProviderSettings {
        base_url: settings.base_url(),
        with_token: settings.client_token.is_some(),
    }
}

/// Plans (`dry_run`) or applies the Codex config change.
pub fn configure_codex(settings: &Settings, dry_run: bool) -> Result<Plan, AppError> {
    let config = CodexConfig::new(&settings.paths.codex_home);
    let wanted = provider_settings(settings);
    Ok(if dry_run {
        config.plan(&wanted)?
    } else {
        config.apply(&wanted)?
    })
}

pub fn revert_codex(settings: &Settings) -> Result<PathBuf, AppError> {
    let config = CodexConfig::new(&settings.paths.codex_home);
    config.revert()?;
    Ok(config.path().to_path_buf())
}

/// Hosts Codex must reach directly even behind a proxy.
const LOOPBACK: [&str; 3] = ["127.0.0.1", "localhost", "::1"];

/// The proxy variables set in `env` whose `NO_PROXY` does not exempt loopback.
pub fn proxy_without_loopback_exemption(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let proxy = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .into_iter()
    .find(|k| env(k).is_some_and(|v| !v.is_empty()))?;
    let no_proxy = env("NO_PROXY")
        .or_else(|| env("no_proxy"))
        .unwrap_or_default();
    let exempt = no_proxy
        .split(',')
        .map(str::trim)
        .any(|h| LOOPBACK.contains(&h) || h == "*");
    (!exempt).then(|| proxy.to_string())
}

/// Adds loopback to `NO_PROXY` in `$CODEX_HOME/.env`, keeping every other line. Returns
/// false when it was there already.
pub fn exempt_loopback_in_codex_env(codex_home: &Path) -> Result<bool, AppError> {
    let path = codex_home.join(".env");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let position = lines
        .iter()
        .position(|l| l.trim_start().starts_with("NO_PROXY="));
    match position {
        Some(i) => {
            let current = lines[i]
                .trim_start()
                .trim_start_matches("NO_PROXY=")
                .trim_matches('"')
                .to_string();
            let mut hosts: Vec<String> = current
                .split(',')
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect();
            let missing: Vec<&str> = LOOPBACK
                .iter()
                .copied()
                .filter(|l| !hosts.iter().any(|h| h == l))
                .collect();
            if missing.is_empty() {
                return Ok(false);
            }
            hosts.extend(missing.iter().map(|s| s.to_string()));
            lines[i] = format!("NO_PROXY={}", hosts.join(","));
        }
        None => lines.push(format!("NO_PROXY={}", LOOPBACK.join(","))),
    }
    let mut out = lines.join("\n");
    out.push('\n');
    crate::store::write_atomic(&path, out.as_bytes())
        .map_err(|e| AppError::Message(format!("cannot write {}: {e}", path.display())))?;
    Ok(true)
}

/// The start-at-login entry of this user.
pub fn startup_entry(home: &Path) -> StartupEntry {
    StartupEntry {
        platform: Platform::current(),
        home: home.to_path_buf(),
        local_app_data: std::env::var_os("LOCALAPPDATA").map(PathBuf::from),
    }
}

/// The router settings a startup entry must carry: every `CODEX_PROXY_*` variable and
/// `CODEX_HOME` set now, so the service runs as `cma start` runs here.
pub fn startup_environment(env: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = env
        .filter(|(k, _)| k.starts_with("CODEX_PROXY_") || k == "CODEX_HOME")
        .collect();
    vars.sort();
    vars
}

/// Registers the entry with the OS service manager so it runs now and at every login.
pub fn activate_startup(entry: &StartupEntry) -> Result<(), AppError> {
    let path = entry.path();
    let run = |program: &str, args: &[&str]| -> Result<(), AppError> {
        let status = std::process::Command::new(program)
            .args(args)
            .status()
            .map_err(|e| AppError::Message(format!("cannot run {program}: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(AppError::Message(format!(
                "`{program} {}` failed ({status})",
                args.join(" ")
            )))
        }
    };
    match entry.platform {
        Platform::Linux => {
            run("systemctl", &["--user", "daemon-reload"])?;
            run(
                "systemctl",
                &[
                    "--user",
                    "enable",
                    "--now",
                    &format!("{}.service", crate::startup::SERVICE_NAME),
                ],
            )
        }
        Platform::MacOs => {
            let plist = path.display().to_string();
            let _ = run("launchctl", &["unload", &plist]);
            run("launchctl", &["load", "-w", &plist])
        }
        Platform::Windows => {
            let xml = path.display().to_string();
            run(
                "schtasks",
                &[
                    "/Create",
                    "/TN",
                    "Codex App Account Router",
                    "/XML",
                    &xml,
                    "/F",
                ],
            )?;
            run("schtasks", &["/Run", "/TN", "Codex App Account Router"])
        }
    }
}
