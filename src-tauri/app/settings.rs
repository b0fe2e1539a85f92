//! The settings use cases the dashboard and `cma settings` share: every key with its value in
//! effect and where it comes from, and changing one in `settings.toml`.

use std::path::PathBuf;

use serde::Serialize;

use super::AppError;
use crate::paths::Paths;
use crate::settings::{self, FileProblem, FileReading, Key, Override, Settings, Source, Sources};

/// One setting as a front end shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingView {
    pub key: &'static str,
    /// The environment variable that wins over the file.
    pub variable: &'static str,
    /// The value in effect.
    pub value: String,
    pub source: Source,
    /// What the file says, even when the environment wins over it.
    pub file_value: Option<String>,
    pub default: &'static str,
    /// What the value may be, in words.
    pub allowed: String,
    /// The values a picker offers; empty for free input.
    pub choices: Vec<&'static str>,
    pub help: &'static str,
    /// The running router or app started with another value: it takes this one at its next
    /// start. Always false when no running settings were given.
    pub restart_needed: bool,
}

/// A problem in the settings file, with its message.
#[derive(Clone, Debug, Serialize)]
pub struct ProblemView {
    #[serde(flatten)]
    pub problem: FileProblem,
    pub message: String,
}

/// Every setting, the file they live in and what is wrong with it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsOverview {
    pub file: PathBuf,
    pub file_exists: bool,
    /// The file does not parse (or cannot be read): nothing in it is used, nothing is written.
    pub file_broken: bool,
    pub problems: Vec<ProblemView>,
    /// Variables that win over a different value in the file.
    pub overrides: Vec<Override>,
    pub settings: Vec<SettingView>,
}

/// What `set_setting` or `unset_setting` did.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetOutcome {
    pub key: &'static str,
    pub variable: &'static str,
    pub file: PathBuf,
    /// The value now in the file; `None` after `unset_setting`.
    pub written: Option<String>,
    /// The value in effect now, and where it comes from.
    pub value: String,
    pub source: Source,
    /// The value in effect changed, so a router or app already running (which reads its
    /// settings once, at start) needs a restart to use it; `cma` commands use it at once.
    pub restart_needed: bool,
    /// Set when an environment variable here still wins over the file.
    pub overridden_by: Option<&'static str>,
    /// One sentence saying all of the above.
    pub message: String,
}

/// Every setting with its value in effect (environment, then the file at
/// `paths.settings_file`, then the default). With `running`, the settings a running router or
/// app started with, each view says whether it waits for a restart.
pub fn settings_view(
    paths: &Paths,
    env: &dyn Fn(&str) -> Option<String>,
    running: Option<&Settings>,
) -> SettingsOverview {
    let sources = Sources::new(env, FileReading::read(&paths.settings_file));
    // What a restart would start with, compared field by field with what is running.
    let next = Settings::from_sources(&sources).ok();
    let settings = settings::KEYS
        .iter()
        .map(|key| {
            let (value, source) = sources.effective(key);
            let restart_needed = match (running, &next) {
                (Some(running), Some(next)) => {
                    running_value(running, key) != running_value(next, key)
                }
                _ => false,
            };
            SettingView {
                key: key.name,
                variable: key.var,
                value,
                source,
                file_value: sources.file.value(key).map(|v| v.value.clone()),
                default: key.default,
                allowed: key.kind.allowed(),
                choices: key.kind.choices(),
                help: key.help,
                restart_needed,
            }
        })
        .collect();
    let problems = sources
        .file
        .problems
        .iter()
        .map(|p| ProblemView {
            problem: p.clone(),
            message: p.to_string(),
        })
        .collect();
    SettingsOverview {
        file: paths.settings_file.clone(),
        file_exists: sources.file.exists,
        file_broken: sources.file.broken().is_some(),
        problems,
        overrides: sources.overrides(),
        settings,
    }
}

/// Checks `value` for `key` and writes it to the settings file, keeping the file's comments.
/// Refuses an unknown key, a secret, a value out of range (the error names the allowed values)
/// and a file that does not parse (the error names its line; the file is left as it is).
pub fn set_setting(
    paths: &Paths,
    env: &dyn Fn(&str) -> Option<String>,
    key: &str,
    value: &str,
) -> Result<SetOutcome, AppError> {
    let before = effective(paths, env, settings::known_key(key)?);
    let (key, written) = settings::write_setting(&paths.settings_file, key, value)?;
    Ok(outcome(paths, env, key, Some(written), before))
}

/// Takes `key` out of the settings file, so the environment or the default applies.
pub fn unset_setting(
    paths: &Paths,
    env: &dyn Fn(&str) -> Option<String>,
    key: &str,
) -> Result<SetOutcome, AppError> {
    let before = effective(paths, env, settings::known_key(key)?);
    let key = settings::remove_setting(&paths.settings_file, key)?;
    Ok(outcome(paths, env, key, None, before))
}

fn effective(
    paths: &Paths,
    env: &dyn Fn(&str) -> Option<String>,
    key: &'static Key,
) -> (String, Source) {
    Sources::new(env, FileReading::read(&paths.settings_file)).effective(key)
}

fn outcome(
    paths: &Paths,
    env: &dyn Fn(&str) -> Option<String>,
    key: &'static Key,
    written: Option<String>,
    before: (String, Source),
) -> SetOutcome {
    let (value, source) = effective(paths, env, key);
    let restart_needed = value != before.0;
    let overridden_by = (source == Source::Env).then_some(key.var);
    let what = written_where(key.name, written.as_deref(), &paths.settings_file);
    let effect = if let Some(variable) = overridden_by {
        format!("{variable}={value} in this environment still wins over the file")
    } else if restart_needed {
        format!("now {value}; a router or tray app already running uses it after a restart")
    } else {
        format!("the value in effect, {value}, is unchanged: no restart needed")
    };
    SetOutcome {
        key: key.name,
        variable: key.var,
        file: paths.settings_file.clone(),
        written,
        value,
        source,
        restart_needed,
        overridden_by,
        message: format!("{what}; {effect}"),
    }
}

impl SetOutcome {
    /// A running app took the value in at once (the strategy, the alert thresholds): no
    /// restart is waited for, and the message says so.
    pub fn applied_now(&mut self) {
        self.restart_needed = false;
        let what = written_where(self.key, self.written.as_deref(), &self.file);
        self.message = format!("{what}; in use now: {}", self.value);
    }
}

/// "key = value saved in FILE", or "key removed from FILE".
fn written_where(key: &str, written: Option<&str>, file: &std::path::Path) -> String {
    let file = file.display();
    match written {
        Some(w) => format!("{key} = {w} saved in {file}"),
        None => format!("{key} removed from {file}"),
    }
}

/// What `settings` holds for `key`, in the key's canonical form.
fn running_value(settings: &Settings, key: &Key) -> Option<String> {
    let text = match key.name {
        "host" => settings.host.clone(),
        "port" => settings.port.to_string(),
        "accounts_file" => settings.paths.accounts_file.display().to_string(),
        "bindings_file" => settings.paths.bindings_file.display().to_string(),
        "codex_home" => settings.paths.codex_home.display().to_string(),
        "token_store" => match settings.token_store {
            settings::TokenStore::File => "file".to_string(),
            settings::TokenStore::Keychain => "keychain".to_string(),
        },
        "keychain_service" => settings.keychain_service.clone(),
        "browser" => settings.browser.clone().unwrap_or_default(),
        "login_port" => settings
            .login_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        "upstream_url" => settings.upstream_url.clone(),
        "upstream_models_url" => settings.models_url.clone(),
        "usage_url" => settings.usage_url.clone(),
        "oauth_issuer" => settings.oauth_issuer.clone(),
        "allow_custom_upstream" => settings.allow_custom_upstream.to_string(),
        "strategy" => settings.strategy.name().to_string(),
        "debug" => settings.debug.to_string(),
        "max_body_bytes" => settings.max_body_bytes.to_string(),
        "first_byte_timeout_ms" => settings.first_byte_timeout.as_millis().to_string(),
        "stream_idle_timeout_ms" => settings.stream_idle_timeout.as_millis().to_string(),
        "binding_ttl_secs" => settings.binding_ttl.as_secs().to_string(),
        "websockets" => settings.websockets.to_string(),
        "history" => settings.history.to_string(),
        "alert_thresholds" => match settings.alert_thresholds.as_slice() {
            [] => "off".to_string(),
            p => p.iter().map(u8::to_string).collect::<Vec<_>>().join(","),
        },
        _ => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn every_key_is_known_to_the_running_settings() {
        let defaults = Settings::from_sources(&Sources::new(&|_| None, FileReading::default()))
            .expect("defaults are valid");
        for key in settings::KEYS {
            assert!(running_value(&defaults, key).is_some(), "{}", key.name);
        }
    }

    #[test]
    fn view_says_where_each_value_comes_from_and_what_waits_for_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let env = env_with(&[("CODEX_PROXY_PORT", "9000")]);
        let running = Settings::from_vars(&env).unwrap();
        std::fs::write(&paths.settings_file, "port = 8788\nstrategy = \"hybrid\"\n").unwrap();
        let view = settings_view(&paths, &env, Some(&running));
        let find = |k: &str| view.settings.iter().find(|s| s.key == k).unwrap().clone();
        let port = find("port");
        assert_eq!((port.value.as_str(), port.source), ("9000", Source::Env));
        assert_eq!(port.file_value.as_deref(), Some("8788"));
        assert!(!port.restart_needed);
        let strategy = find("strategy");
        assert_eq!(
            (strategy.value.as_str(), strategy.source),
            ("hybrid", Source::File)
        );
        assert!(strategy.restart_needed, "the app started on sticky");
        assert_eq!(strategy.choices, ["sticky", "round-robin", "hybrid"]);
        let login = find("login_port");
        assert!(!login.restart_needed, "{login:?}");
        assert_eq!(view.overrides.len(), 1);
    }

    #[test]
    fn set_reports_a_restart_only_when_the_value_in_effect_changes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let env = env_with(&[("CODEX_PROXY_PORT", "9000")]);
        let set = set_setting(&paths, &env, "strategy", "hybrid").unwrap();
        assert!(set.restart_needed && set.overridden_by.is_none(), "{set:?}");
        let again = set_setting(&paths, &env, "strategy", "hybrid").unwrap();
        assert!(!again.restart_needed, "{again:?}");
        let port = set_setting(&paths, &env, "port", "8788").unwrap();
        assert_eq!(port.overridden_by, Some("CODEX_PROXY_PORT"));
        assert!(port.message.contains("still wins"), "{}", port.message);
        let unset = unset_setting(&paths, &env, "strategy").unwrap();
        assert_eq!(
            (unset.value.as_str(), unset.source),
            ("sticky", Source::Default)
        );
        let err = set_setting(&paths, &env, "port", "0").unwrap_err();
        assert!(err.to_string().contains("1 to 65535"), "{err}");
    }
}
