//! Where each setting's value comes from: the environment variable, then `settings.toml`, then
//! the default. An app started at login sees no shell variables, so the file is what it has.

use serde::Serialize;

use super::file::FileReading;
use super::keys::{Key, Kind, KEYS};

/// Which layer a value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Env,
    File,
    Default,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Env => "env",
            Source::File => "file",
            Source::Default => "default",
        }
    }
}

/// An environment variable that wins over a different value in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Override {
    pub key: &'static str,
    pub variable: &'static str,
    pub env_value: String,
    pub file_value: String,
}

/// The environment and the settings file, consulted in that order.
pub struct Sources<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    pub file: FileReading,
}

impl<'a> Sources<'a> {
    pub fn new(env: &'a dyn Fn(&str) -> Option<String>, file: FileReading) -> Sources<'a> {
        Sources { env, file }
    }

    /// The variable's own value; blank counts as unset, as it always has.
    pub fn env(&self, variable: &str) -> Option<String> {
        (self.env)(variable).filter(|v| !v.trim().is_empty())
    }

    /// What `Settings` parses for `variable`: the environment's text, else the file's value
    /// spelled as the variable would be (`~/` expanded), else nothing (the default applies).
    /// Names that are no setting (`HOME`) come from the environment only.
    pub fn lookup(&self, variable: &str) -> Option<String> {
        if let Some(value) = self.env(variable) {
            return Some(value);
        }
        let key = KEYS.iter().find(|k| k.var == variable)?;
        let value = self.file.value(key)?;
        Some(self.expand_home(key, &key.kind.as_variable(&value.value)))
    }

    /// The value in effect for `key` (in canonical form where it is valid) and its source.
    pub fn effective(&self, key: &'static Key) -> (String, Source) {
        if let Some(value) = self.env(key.var) {
            return (key.kind.normalize(&value).unwrap_or(value), Source::Env);
        }
        match self.file.value(key) {
            Some(v) => (v.value.clone(), Source::File),
            None => (key.default.to_string(), Source::Default),
        }
    }

    /// Variables that override a different value in the file.
    pub fn overrides(&self) -> Vec<Override> {
        KEYS.iter()
            .filter_map(|key| {
                let env_value = self.env(key.var)?;
                let file_value = self.file.value(key)?.value.clone();
                let same = key.kind.normalize(&env_value).is_some_and(|env| {
                    self.expand_home(key, &env) == self.expand_home(key, &file_value)
                });
                (!same).then_some(Override {
                    key: key.name,
                    variable: key.var,
                    env_value,
                    file_value,
                })
            })
            .collect()
    }

    fn expand_home(&self, key: &Key, value: &str) -> String {
        let home = self.env("HOME").or_else(|| self.env("USERPROFILE"));
        match (key.kind, value.strip_prefix("~/"), home) {
            (Kind::Path, Some(rest), Some(home)) => {
                std::path::Path::new(&home).join(rest).display().to_string()
            }
            _ => value.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::keys::find;
    use std::path::Path;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/u".to_string()),
            "CODEX_PROXY_PORT" => Some("9000".to_string()),
            "CODEX_PROXY_STRATEGY" => Some("hybrid".to_string()),
            "CODEX_PROXY_DEBUG" => Some("  ".to_string()),
            _ => None,
        }
    }

    fn sources(text: &str) -> Sources<'static> {
        Sources::new(&env, FileReading::parse(Path::new("s.toml"), text))
    }

    #[test]
    fn environment_wins_over_the_file_which_wins_over_the_default() {
        let s = sources("port = 8788\ndebug = true\nwebsockets = false\n");
        let port = find("port").unwrap();
        assert_eq!(s.effective(port), ("9000".to_string(), Source::Env));
        assert_eq!(s.lookup("CODEX_PROXY_PORT").as_deref(), Some("9000"));
        // A blank variable is unset: the file's value applies.
        let debug = find("debug").unwrap();
        assert_eq!(s.effective(debug), ("true".to_string(), Source::File));
        assert_eq!(s.lookup("CODEX_PROXY_WEBSOCKETS").as_deref(), Some("0"));
        let host = find("host").unwrap();
        assert_eq!(
            s.effective(host),
            ("127.0.0.1".to_string(), Source::Default)
        );
        assert_eq!(s.lookup("HOME").as_deref(), Some("/home/u"));
    }

    #[test]
    fn overrides_list_only_variables_that_differ_from_the_file() {
        let s = sources("port = 8788\nstrategy = \"hybrid\"\n");
        let found = s.overrides();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].variable, "CODEX_PROXY_PORT");
        assert_eq!(
            (found[0].env_value.as_str(), found[0].file_value.as_str()),
            ("9000", "8788")
        );
    }

    #[test]
    fn a_path_in_the_file_may_start_at_home() {
        let s = sources("accounts_file = \"~/pool.json\"\n");
        assert_eq!(
            s.lookup("CODEX_PROXY_ACCOUNTS_FILE").as_deref(),
            Some("/home/u/pool.json")
        );
    }
}
