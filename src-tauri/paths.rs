//! Where every file lives: an explicit value first, then the environment, then the OS default.

use std::path::{Path, PathBuf};

/// Tauri's bundle identifier: the name of the app's config folder on every OS.
pub const APP_IDENTIFIER: &str = "dev.codex-app-account-router";

/// The variable that moves the settings file (tests, several routers side by side).
pub const SETTINGS_FILE_VAR: &str = "CODEX_PROXY_SETTINGS_FILE";

/// The files the router reads and writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub accounts_file: PathBuf,
    pub bindings_file: PathBuf,
    pub codex_home: PathBuf,
    /// `settings.toml`: the non-secret settings, read by the app, `cma` and the dashboard.
    pub settings_file: PathBuf,
}

impl Paths {
    /// Resolves paths from environment lookups (`CODEX_PROXY_ACCOUNTS_FILE`,
    /// `CODEX_PROXY_BINDINGS_FILE`, `CODEX_HOME`, `CODEX_PROXY_SETTINGS_FILE`), falling back to
    /// `~/.codex/multi-auth/...` and the app's config folder.
    pub fn resolve(var: &dyn Fn(&str) -> Option<String>) -> Paths {
        let home = home(var);
        let codex_home = var("CODEX_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".codex"));
        let multi_auth = home.join(".codex").join("multi-auth");
        let pick = |name: &str, default: PathBuf| {
            var(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or(default)
        };
        Paths {
            accounts_file: pick(
                "CODEX_PROXY_ACCOUNTS_FILE",
                multi_auth.join("openai-accounts.json"),
            ),
            bindings_file: pick(
                "CODEX_PROXY_BINDINGS_FILE",
                multi_auth.join("session-bindings.json"),
            ),
            codex_home,
            settings_file: Paths::settings_file(var),
        }
    }

    /// `CODEX_PROXY_SETTINGS_FILE`, else `settings.toml` in the folder Tauri's
    /// `app_config_dir()` gives the app, so the tray app, its dashboard and `cma` share it.
    pub fn settings_file(var: &dyn Fn(&str) -> Option<String>) -> PathBuf {
        var(SETTINGS_FILE_VAR)
            .filter(|v| !v.trim().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                config_dir(std::env::consts::OS, var)
                    .join(APP_IDENTIFIER)
                    .join("settings.toml")
            })
    }

    /// Every file under one folder: what tests use instead of touching `HOME`.
    pub fn under(dir: &Path) -> Paths {
        Paths {
            accounts_file: dir.join("openai-accounts.json"),
            bindings_file: dir.join("session-bindings.json"),
            codex_home: dir.join("codex-home"),
            settings_file: dir.join("settings.toml"),
        }
    }
}

fn home(var: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    var("HOME")
        .or_else(|| var("USERPROFILE"))
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The user's config folder as the `dirs` crate (and so Tauri) finds it on `os`. Taken from
/// the lookups rather than the OS, so that every system's rule can be tested anywhere.
fn config_dir(os: &str, var: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let home = home(var);
    match os {
        "macos" => home.join("Library").join("Application Support"),
        "windows" => var("APPDATA")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("AppData").join("Roaming")),
        // The XDG rule: a relative XDG_CONFIG_HOME is ignored.
        _ => var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| home.join(".config")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_the_home_default() {
        let vars = |name: &str| match name {
            "HOME" => Some("/home/u".to_string()),
            "CODEX_PROXY_ACCOUNTS_FILE" => Some("/x/accounts.json".to_string()),
            _ => None,
        };
        let paths = Paths::resolve(&vars);
        assert_eq!(paths.accounts_file, PathBuf::from("/x/accounts.json"));
        assert_eq!(
            paths.bindings_file,
            PathBuf::from("/home/u/.codex/multi-auth/session-bindings.json")
        );
        assert_eq!(paths.codex_home, PathBuf::from("/home/u/.codex"));
    }

    #[test]
    fn settings_file_sits_in_the_config_folder_tauri_uses_on_each_system() {
        let vars = |name: &str| match name {
            "HOME" => Some("/home/u".to_string()),
            "APPDATA" => Some("/c/Users/u/AppData/Roaming".to_string()),
            _ => None,
        };
        let at = |os| config_dir(os, &vars).join(APP_IDENTIFIER);
        assert_eq!(
            at("linux"),
            PathBuf::from("/home/u/.config/dev.codex-app-account-router")
        );
        assert_eq!(
            at("macos"),
            PathBuf::from("/home/u/Library/Application Support/dev.codex-app-account-router")
        );
        assert_eq!(
            at("windows"),
            PathBuf::from("/c/Users/u/AppData/Roaming/dev.codex-app-account-router")
        );
        let xdg = |name: &str| match name {
            "XDG_CONFIG_HOME" => Some("/xdg".to_string()),
            "HOME" => Some("/home/u".to_string()),
            _ => None,
        };
        assert_eq!(config_dir("linux", &xdg), PathBuf::from("/xdg"));
        let relative = |name: &str| (name == "XDG_CONFIG_HOME").then(|| "rel".to_string());
        assert_eq!(config_dir("linux", &relative), PathBuf::from("./.config"));
    }

    #[test]
    fn settings_file_variable_wins_and_under_keeps_it_in_the_test_folder() {
        let vars = |name: &str| (name == SETTINGS_FILE_VAR).then(|| "/s/settings.toml".to_string());
        assert_eq!(
            Paths::resolve(&vars).settings_file,
            PathBuf::from("/s/settings.toml")
        );
        let dir = Path::new("/t");
        assert_eq!(Paths::under(dir).settings_file, dir.join("settings.toml"));
    }
}
