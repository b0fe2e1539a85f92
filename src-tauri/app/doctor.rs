//! `cma doctor`: every check a user would otherwise do by hand, each with its fix.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::port::{identify, PortHolder};
use crate::accounts::now_ms;
use crate::codex_config::CodexConfig;
use crate::settings::{FileReading, Settings, Sources, TokenStore};
use crate::store::TokenMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    /// What to do about it; empty when nothing is needed.
    pub fix: String,
}

fn finding(
    check: &'static str,
    verdict: Verdict,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        check,
        verdict,
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// Runs every check. Nothing is changed and no token is refreshed.
pub async fn diagnose(
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
    home: &Path,
) -> Vec<Finding> {
    let mut out = Vec::new();
    check_settings(settings, env, &mut out);
    let running = check_router(settings, &mut out).await;
    check_codex_config(settings, &mut out);
    // Codex also loads NO_PROXY from $CODEX_HOME/.env (where `cma configure` puts it).
    let codex_env = read_env_file(&settings.paths.codex_home.join(".env"));
    let with_codex_env = |k: &str| {
        env(k).or_else(|| {
            codex_env
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        })
    };
    if let Some(proxy) = super::proxy_without_loopback_exemption(&with_codex_env) {
        out.push(finding("proxy", Verdict::Warn, format!("{proxy} is set and NO_PROXY does not exempt loopback, so Codex would reach the router through that proxy"), "cma configure (adds NO_PROXY to $CODEX_HOME/.env), or export NO_PROXY=127.0.0.1,localhost,::1"));
    } else {
        out.push(finding(
            "proxy",
            Verdict::Ok,
            "no proxy stands between Codex and the router",
            "",
        ));
    }
    check_accounts(settings, &mut out).await;
    let entry = super::startup_entry(home);
    out.push(match (entry.is_installed(), running) {
        (true, true) => finding(
            "startup",
            Verdict::Ok,
            format!(
                "installed ({}) and the router is running",
                entry.path().display()
            ),
            "",
        ),
        (true, false) => finding(
            "startup",
            Verdict::Warn,
            format!(
                "installed ({}) but the router is not running",
                entry.path().display()
            ),
            format!("look at its logs: {}", entry.log_location()),
        ),
        (false, _) => finding(
            "startup",
            Verdict::Warn,
            "the router does not start at login",
            "cma install-startup",
        ),
    });
    out.push(check_codex_cli(env).await);
    out
}

/// The settings file: whether it parses, what in it is refused, and each environment variable
/// that wins over a different value in it (an app started at login sees none of them).
fn check_settings(
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut Vec<Finding>,
) {
    let sources = Sources::new(env, FileReading::read(&settings.paths.settings_file));
    let path = settings.paths.settings_file.display().to_string();
    for problem in &sources.file.problems {
        let (verdict, fix) = if problem.is_broken_file() {
            (Verdict::Fail, format!("fix that line in {path}"))
        } else {
            (
                Verdict::Warn,
                format!("edit {path}, or use cma settings set KEY VALUE"),
            )
        };
        out.push(finding("settings", verdict, problem.to_string(), fix));
    }
    for o in sources.overrides() {
        out.push(finding(
            "settings",
            Verdict::Warn,
            format!("{}={} in the environment wins over {} = {} in {path}; an app started at login sees only the file", o.variable, o.env_value, o.key, o.file_value),
            format!("unset {}, or cma settings set {} {}", o.variable, o.key, o.env_value),
        ));
    }
    if sources.file.problems.is_empty() && sources.overrides().is_empty() {
        let detail = if sources.file.exists {
            let count = sources.file.values.len();
            format!("{path}: {count} settings in use")
        } else {
            format!("no {path}: the defaults and the environment apply")
        };
        out.push(finding("settings", Verdict::Ok, detail, ""));
    }
}

/// `KEY=value` lines of a dotenv file; quotes around the value are dropped.
fn read_env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (k, v) = line.trim().trim_start_matches("export ").split_once('=')?;
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

async fn check_router(settings: &Settings, out: &mut Vec<Finding>) -> bool {
    let host = if settings.host == "localhost" {
        "127.0.0.1"
    } else {
        settings.host.as_str()
    };
    let addr = format!("{host}:{}", settings.port)
        .parse::<SocketAddr>()
        .or_else(|_| format!("[{host}]:{}", settings.port).parse());
    let Ok(addr) = addr else {
        out.push(finding(
            "port",
            Verdict::Fail,
            format!("{host} is not an IP address"),
            "set CODEX_PROXY_HOST to an IP such as 127.0.0.1",
        ));
        return false;
    };
    if let Ok(listener) = std::net::TcpListener::bind(addr) {
        drop(listener);
        out.push(finding(
            "port",
            Verdict::Warn,
            format!("{addr} is free: the router is not running"),
            "cma start (or cma install-startup)",
        ));
        return false;
    }
    match identify(addr).await {
        PortHolder::OurRouter => {
            out.push(finding(
                "port",
                Verdict::Ok,
                format!("{addr} is held by the router"),
                "",
            ));
            out.push(finding(
                "health",
                Verdict::Ok,
                format!("http://{addr}/health answers"),
                "",
            ));
            true
        }
        PortHolder::Program(name) => {
            out.push(finding("port", Verdict::Fail, format!("{addr} is held by {}", name.unwrap_or_else(|| "another program".to_string())), "stop that program, or choose another port with CODEX_PROXY_PORT (then run cma configure)"));
            false
        }
    }
}

fn check_codex_config(settings: &Settings, out: &mut Vec<Finding>) {
    let config = CodexConfig::new(&settings.paths.codex_home);
    let path = config.path().display().to_string();
    out.push(
        match config.is_applied(&super::provider_settings(settings)) {
            Ok(true) => finding(
                "codex config",
                Verdict::Ok,
                format!("{path} points Codex at {}", settings.base_url()),
                "",
            ),
            Ok(false) => finding(
                "codex config",
                Verdict::Fail,
                format!(
                    "{path} does not point Codex at {} with the right settings",
                    settings.base_url()
                ),
                "cma configure (cma configure --dry-run shows the change)",
            ),
            Err(e) => finding(
                "codex config",
                Verdict::Fail,
                e.to_string(),
                format!("fix {path}, then run cma configure"),
            ),
        },
    );
}

async fn check_accounts(settings: &Settings, out: &mut Vec<Finding>) {
    let store = settings.store();
    if store.token_mode() == TokenMode::Keychain {
        let keychain = store.keychain().clone();
        let probe = tokio::task::spawn_blocking(move || keychain.probe()).await;
        out.push(match probe {
            Ok(Ok(())) => finding("token store", Verdict::Ok, "the OS keychain answers", ""),
            Ok(Err(e)) => finding(
                "token store",
                Verdict::Fail,
                e.to_string(),
                "unlock the keychain, or set CODEX_PROXY_TOKEN_STORE=file",
            ),
            Err(e) => finding("token store", Verdict::Fail, e.to_string(), ""),
        });
    } else {
        out.push(finding(
            "token store",
            Verdict::Ok,
            format!("tokens in {} (mode 0600)", store.accounts_path().display()),
            "",
        ));
    }
    let file = match store.load_accounts() {
        Ok(file) => file,
        Err(e) => {
            out.push(finding(
                "accounts",
                Verdict::Fail,
                e.to_string(),
                "fix the file or restore its .bak",
            ));
            return;
        }
    };
    if file.accounts.is_empty() {
        out.push(finding(
            "accounts",
            Verdict::Fail,
            "no account yet",
            "cma login",
        ));
        return;
    }
    let now = now_ms();
    for record in &file.accounts {
        let name = record.display_name();
        let f = if let Some(needs) = &record.needs_login {
            let attention = crate::accounts::Attention::from_code(&needs.code);
            let what = if attention.is_deactivation() {
                format!("{name} needs attention: {}", attention.describe())
            } else {
                format!("{name} needs a new login ({})", needs.code)
            };
            finding(
                "account",
                Verdict::Fail,
                what,
                "cma login (sign in to that account)",
            )
        } else if !record.enabled {
            finding(
                "account",
                Verdict::Warn,
                format!("{name} is disabled"),
                format!("cma enable {name}"),
            )
        } else if record.refresh_token().is_none() && !record.tokens_in_keychain() {
            finding(
                "account",
                Verdict::Fail,
                format!("{name} has no refresh token"),
                "cma login (sign in to that account)",
            )
        } else if record.expires.is_some_and(|e| e <= now) {
            finding(
                "account",
                Verdict::Ok,
                format!("{name}: access token expired; it is refreshed on next use"),
                "",
            )
        } else {
            finding("account", Verdict::Ok, format!("{name}: signed in"), "")
        };
        out.push(f);
    }
    if settings.token_store == TokenStore::Keychain
        && file
            .accounts
            .iter()
            .any(|r| !r.tokens_in_keychain() && r.refresh_token().is_some())
    {
        out.push(finding(
            "token store",
            Verdict::Warn,
            "some tokens are still in the accounts file",
            "cma start (moves them into the keychain)",
        ));
    }
}

async fn check_codex_cli(env: &dyn Fn(&str) -> Option<String>) -> Finding {
    let path = env("PATH").unwrap_or_default();
    let names: &[&str] = if cfg!(windows) {
        &["codex.cmd", "codex.exe"]
    } else {
        &["codex"]
    };
    let found = std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file());
    let Some(codex) = found else {
        return finding(
            "codex cli",
            Verdict::Warn,
            "the Codex CLI is not on PATH",
            "npm install -g @openai/codex (the desktop app works without it)",
        );
    };
    let version = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(&codex)
            .arg("--version")
            .output(),
    )
    .await;
    match version {
        Ok(Ok(out)) if out.status.success() => finding(
            "codex cli",
            Verdict::Ok,
            format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stdout).trim(),
                codex.display()
            ),
            "",
        ),
        _ => finding(
            "codex cli",
            Verdict::Warn,
            format!("{} does not answer --version", codex.display()),
            "reinstall it: npm install -g @openai/codex",
        ),
    }
}
