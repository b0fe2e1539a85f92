//! Non-secret preferences, validated once at start: each from its environment variable, else
//! from `settings.toml` in the app's config folder, else its default. `keys` names them,
//! `file` reads and edits the file, `sources` layers the two.

mod file;
pub mod keys;
mod sources;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use file::{remove_setting, write_setting, FileProblem, FileReading, FileValue};
pub use keys::{known_key, Key, Kind, KEYS};
pub use sources::{Override, Source, Sources};

use crate::paths::Paths;
use crate::sensitive::ClientToken;

pub const DEFAULT_UPSTREAM_URL: &str = "https://chatgpt.com/backend-api/codex";
pub const DEFAULT_MODELS_URL: &str = "https://chatgpt.com/backend-api/codex/models";
pub const DEFAULT_USAGE_URL: &str = "https://chatgpt.com/backend-api/wham/usage";
pub const DEFAULT_OAUTH_ISSUER: &str = "https://auth.openai.com";
pub const DEFAULT_PORT: u16 = 8787;
pub const DEFAULT_MAX_BODY_BYTES: usize = 128 * 1024 * 1024;

/// How the router picks an account for a new session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Sticky,
    RoundRobin,
    Hybrid,
}

impl Strategy {
    pub fn parse(value: &str) -> Option<Strategy> {
        match value.trim().to_ascii_lowercase().as_str() {
            "sticky" => Some(Strategy::Sticky),
            "round-robin" | "round_robin" | "roundrobin" => Some(Strategy::RoundRobin),
            "hybrid" => Some(Strategy::Hybrid),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Sticky => "sticky",
            Strategy::RoundRobin => "round-robin",
            Strategy::Hybrid => "hybrid",
        }
    }
}

/// Where tokens are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStore {
    File,
    Keychain,
}

/// Everything the router needs to start, resolved and checked.
#[derive(Clone, Debug)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub paths: Paths,
    pub token_store: TokenStore,
    /// The keychain service name the entries are stored under.
    pub keychain_service: String,
    pub upstream_url: String,
    pub models_url: String,
    pub usage_url: String,
    pub oauth_issuer: String,
    pub allow_custom_upstream: bool,
    pub strategy: Strategy,
    pub client_token: Option<ClientToken>,
    pub debug: bool,
    pub max_body_bytes: usize,
    /// Time allowed for an upstream answer before the router tries another account.
    pub first_byte_timeout: Duration,
    /// Silence allowed in the middle of a stream before it is cut.
    pub stream_idle_timeout: Duration,
    /// Command that opens sign-in pages instead of the system browser (`<cmd> <url>`).
    pub browser: Option<String>,
    /// Callback ports for the browser login, tried in order.
    pub login_ports: Vec<u16>,
    /// Bindings idle this long are forgotten.
    pub binding_ttl: Duration,
    /// Whether `GET /v1/responses` WebSocket upgrades are proxied; when off they get 426, so
    /// Codex falls back to HTTP at once (`CODEX_PROXY_WEBSOCKETS=0`).
    pub websockets: bool,
    /// Whether usage and requests are kept in the usage history (`CODEX_PROXY_HISTORY=0`
    /// keeps none).
    pub history: bool,
    /// Usage percents the app notifies at, once per window and account (`80,95`).
    pub alert_thresholds: Vec<u8>,
    /// What was wrong in the settings file (its values were not used); front ends show these
    /// as warnings.
    pub file_problems: Vec<FileProblem>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{name}={value:?} is not valid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("CODEX_PROXY_HOST={host} is not a loopback address, and CODEX_PROXY_TOKEN is not set; set CODEX_PROXY_TOKEN to a long random value so that only your clients can use your accounts")]
    ExposedWithoutToken { host: String },
    #[error("{name} points to {value}, which is not the ChatGPT default; set CODEX_PROXY_ALLOW_CUSTOM_UPSTREAM=1 if you really want to send your account tokens there")]
    CustomUpstream { name: &'static str, value: String },
    #[error("unknown setting `{key}`; the settings are: {known}")]
    UnknownKey { key: String, known: String },
    #[error("`{key}` is a secret and is never kept in the settings file; set {variable} in the environment instead")]
    Secret { key: String, variable: &'static str },
    #[error("{key} = {value:?} is refused: allowed is {allowed}")]
    OutOfRange {
        key: &'static str,
        value: String,
        allowed: String,
    },
    #[error("{} does not parse at line {line}, column {column} ({message}); fix that line first, nothing was written", path.display())]
    BrokenFile {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot write {}: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
}

impl SettingsError {
    /// A stable code the dashboard can switch on.
    pub fn code(&self) -> &'static str {
        match self {
            SettingsError::Invalid { .. } => "invalid_variable",
            SettingsError::ExposedWithoutToken { .. } => "exposed_without_token",
            SettingsError::CustomUpstream { .. } => "custom_upstream",
            SettingsError::UnknownKey { .. } => "unknown_setting",
            SettingsError::Secret { .. } => "secret_setting",
            SettingsError::OutOfRange { .. } => "setting_out_of_range",
            SettingsError::BrokenFile { .. } => "settings_file_broken",
            SettingsError::Write { .. } => "settings_file_write",
        }
    }
}

impl Settings {
    /// Reads the process environment and the settings file it points to.
    pub fn from_env() -> Result<Settings, SettingsError> {
        Settings::from_vars(&|name| std::env::var(name).ok())
    }

    /// Reads settings through a lookup function (so tests never touch the process
    /// environment) and the settings file: `CODEX_PROXY_SETTINGS_FILE`, else the app's.
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let file = FileReading::read(&Paths::settings_file(var));
        Settings::from_sources(&Sources::new(var, file))
    }

    /// Builds settings from the environment and an already read settings file. An invalid
    /// variable is an error; the file's invalid values were already left out, as warnings.
    pub fn from_sources(sources: &Sources<'_>) -> Result<Settings, SettingsError> {
        let get = |name: &str| sources.lookup(name);
        let host = get("CODEX_PROXY_HOST").unwrap_or_else(|| "127.0.0.1".to_string());
        let port = parse_number(get("CODEX_PROXY_PORT"), "CODEX_PROXY_PORT", DEFAULT_PORT)?;
        let strategy = match get("CODEX_PROXY_STRATEGY") {
            None => Strategy::Sticky,
            Some(v) => Strategy::parse(&v).ok_or(SettingsError::Invalid {
                name: "CODEX_PROXY_STRATEGY",
                value: v,
                reason: "use sticky, round-robin or hybrid",
            })?,
        };
        let token_store = match get("CODEX_PROXY_TOKEN_STORE").as_deref() {
            Some("file") => TokenStore::File,
            None | Some("keychain") => TokenStore::Keychain,
            Some(other) => {
                return Err(SettingsError::Invalid {
                    name: "CODEX_PROXY_TOKEN_STORE",
                    value: other.to_string(),
                    reason: "use keychain or file",
                })
            }
        };
        let millis = |name: &'static str, default: u64| {
            parse_number(get(name), name, default).map(Duration::from_millis)
        };
        let settings = Settings {
            port,
            paths: Paths {
                settings_file: sources.file.path.clone(),
                ..Paths::resolve(&get)
            },
            token_store,
            keychain_service: get("CODEX_PROXY_KEYCHAIN_SERVICE")
                .unwrap_or_else(|| crate::store::DEFAULT_KEYCHAIN_SERVICE.to_string()),
            upstream_url: trim_slash(get("CODEX_PROXY_UPSTREAM_URL"), DEFAULT_UPSTREAM_URL),
            models_url: trim_slash(get("CODEX_PROXY_UPSTREAM_MODELS_URL"), DEFAULT_MODELS_URL),
            usage_url: trim_slash(get("CODEX_PROXY_USAGE_URL"), DEFAULT_USAGE_URL),
            oauth_issuer: trim_slash(get("CODEX_PROXY_OAUTH_ISSUER"), DEFAULT_OAUTH_ISSUER),
            allow_custom_upstream: get("CODEX_PROXY_ALLOW_CUSTOM_UPSTREAM").as_deref() == Some("1"),
            strategy,
            client_token: get("CODEX_PROXY_TOKEN").map(ClientToken::new),
            debug: get("CODEX_PROXY_DEBUG").is_some_and(|v| v != "0"),
            max_body_bytes: parse_number(
                get("CODEX_PROXY_MAX_BODY_BYTES"),
                "CODEX_PROXY_MAX_BODY_BYTES",
                DEFAULT_MAX_BODY_BYTES,
            )?,
            first_byte_timeout: millis("CODEX_PROXY_FIRST_BYTE_TIMEOUT_MS", 60_000)?,
            stream_idle_timeout: millis("CODEX_PROXY_STREAM_IDLE_TIMEOUT_MS", 300_000)?,
            binding_ttl: Duration::from_secs(parse_number(
                get("CODEX_PROXY_BINDING_TTL_SECS"),
                "CODEX_PROXY_BINDING_TTL_SECS",
                86_400,
            )?),
            browser: get("CODEX_PROXY_BROWSER"),
            websockets: switch(
                get("CODEX_PROXY_WEBSOCKETS"),
                "CODEX_PROXY_WEBSOCKETS",
                "use 1 (proxy WebSocket upgrades) or 0 (answer them with 426)",
            )?,
            history: switch(
                get("CODEX_PROXY_HISTORY"),
                "CODEX_PROXY_HISTORY",
                "use 1 (keep the usage history) or 0 (keep none)",
            )?,
            alert_thresholds: match get("CODEX_PROXY_ALERT_THRESHOLDS") {
                None => vec![80, 95],
                Some(v) => keys::percents(&v).ok_or_else(|| SettingsError::Invalid {
                    name: "CODEX_PROXY_ALERT_THRESHOLDS",
                    value: v.clone(),
                    reason: "use percents from 1 to 100, comma-separated (80,95), or off",
                })?,
            },
            login_ports: match get("CODEX_PROXY_LOGIN_PORT") {
                None => crate::oauth::CALLBACK_PORTS.to_vec(),
                Some(v) => vec![v.trim().parse().map_err(|_| SettingsError::Invalid {
                    name: "CODEX_PROXY_LOGIN_PORT",
                    value: v,
                    reason: "expected a port number",
                })?],
            },
            host,
            file_problems: sources.file.problems.clone(),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Refuses settings that would expose accounts: a public listener without a token, or
    /// tokens sent to an upstream the user did not explicitly allow.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !is_loopback_host(&self.host) && self.client_token.is_none() {
            return Err(SettingsError::ExposedWithoutToken {
                host: self.host.clone(),
            });
        }
        if !self.allow_custom_upstream {
            let defaults = [
                (
                    "CODEX_PROXY_UPSTREAM_URL",
                    &self.upstream_url,
                    DEFAULT_UPSTREAM_URL,
                ),
                (
                    "CODEX_PROXY_UPSTREAM_MODELS_URL",
                    &self.models_url,
                    DEFAULT_MODELS_URL,
                ),
                ("CODEX_PROXY_USAGE_URL", &self.usage_url, DEFAULT_USAGE_URL),
                (
                    "CODEX_PROXY_OAUTH_ISSUER",
                    &self.oauth_issuer,
                    DEFAULT_OAUTH_ISSUER,
                ),
            ];
            for (name, value, default) in defaults {
                if value != default {
                    return Err(SettingsError::CustomUpstream {
                        name,
                        value: value.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The base URL Codex should use.
    pub fn base_url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("http://{host}:{}/v1", self.port)
    }

    /// The store for these settings: files where `paths` says, tokens where
    /// `CODEX_PROXY_TOKEN_STORE` says.
    pub fn store(&self) -> crate::store::Store {
        let mode = match self.token_store {
            TokenStore::File => crate::store::TokenMode::File,
            TokenStore::Keychain => crate::store::TokenMode::Keychain,
        };
        let keychain = crate::store::Keychain::new(&self.keychain_service);
        crate::store::Store::with_tokens(&self.paths, mode, keychain)
    }

    /// The token endpoint used for refreshes.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.oauth_issuer)
    }
}

/// True for `localhost` and loopback IPs: the only hosts that may run without a client token.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A switch that is on unless set to `0`, `off` or `false`.
fn switch(
    value: Option<String>,
    name: &'static str,
    reason: &'static str,
) -> Result<bool, SettingsError> {
    match value.as_deref() {
        None | Some("1" | "on" | "true") => Ok(true),
        Some("0" | "off" | "false") => Ok(false),
        Some(other) => Err(SettingsError::Invalid {
            name,
            value: other.to_string(),
            reason,
        }),
    }
}

fn trim_slash(value: Option<String>, default: &str) -> String {
    value
        .map(|v| v.trim().trim_end_matches('/').to_string())
        .unwrap_or_else(|| default.to_string())
}

fn parse_number<T: std::str::FromStr>(
    value: Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, SettingsError> {
    match value {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| SettingsError::Invalid {
            name,
            value: v,
            reason: "expected a whole number",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_vars(&move |name| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_are_loopback_sticky_and_chatgpt() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.base_url(), "http://127.0.0.1:8787/v1");
        assert_eq!(s.strategy, Strategy::Sticky);
        assert_eq!(s.upstream_url, DEFAULT_UPSTREAM_URL);
        assert_eq!(s.max_body_bytes, 128 * 1024 * 1024);
    }

    #[test]
    fn public_host_without_token_is_refused_naming_the_variable() {
        let err = settings(&[("CODEX_PROXY_HOST", "0.0.0.0")]).unwrap_err();
        assert!(err.to_string().contains("CODEX_PROXY_TOKEN"), "{err}");
        assert!(settings(&[("CODEX_PROXY_HOST", "0.0.0.0"), ("CODEX_PROXY_TOKEN", "t")]).is_ok());
        assert!(settings(&[("CODEX_PROXY_HOST", "::1")]).is_ok());
    }

    #[test]
    fn custom_upstream_needs_the_explicit_opt_in() {
        let url = (
            "CODEX_PROXY_UPSTREAM_URL",
            "http://127.0.0.1:9/backend-api/codex",
        );
        let err = settings(&[url]).unwrap_err();
        assert!(
            err.to_string()
                .contains("CODEX_PROXY_ALLOW_CUSTOM_UPSTREAM=1"),
            "{err}"
        );
        assert!(settings(&[url, ("CODEX_PROXY_ALLOW_CUSTOM_UPSTREAM", "1")]).is_ok());
    }

    fn with_file(pairs: &[(&str, &str)], text: &str) -> Result<Settings, SettingsError> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |name: &str| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let file = FileReading::parse(Path::new("/c/settings.toml"), text);
        Settings::from_sources(&Sources::new(&env, file))
    }

    #[test]
    fn the_file_fills_in_what_the_environment_does_not_set() {
        let text =
            "port = 8788\nstrategy = \"hybrid\"\nwebsockets = false\ntoken_store = \"file\"\n";
        let s = with_file(&[("CODEX_PROXY_PORT", "9000")], text).unwrap();
        assert_eq!(s.port, 9000, "the environment wins");
        assert_eq!(s.strategy, Strategy::Hybrid);
        assert!(!s.websockets);
        assert_eq!(s.token_store, TokenStore::File);
        assert_eq!(s.paths.settings_file, PathBuf::from("/c/settings.toml"));
        assert!(s.file_problems.is_empty());
    }

    #[test]
    fn bad_values_in_the_file_are_warnings_and_the_defaults_apply() {
        let s = with_file(
            &[],
            "port = 0\nstrategy = \"fast\"\nfirst_byte_timeout_ms = \"soon\"\n",
        )
        .unwrap();
        assert_eq!((s.port, s.strategy), (DEFAULT_PORT, Strategy::Sticky));
        assert_eq!(s.first_byte_timeout, Duration::from_secs(60));
        assert_eq!(s.file_problems.len(), 3, "{:?}", s.file_problems);
        let s = with_file(&[], "port = 8788\nstrategy = [\n").unwrap();
        assert_eq!(s.port, DEFAULT_PORT, "nothing is used from a broken file");
        assert!(s.file_problems[0].to_string().contains("line 2"));
    }

    #[test]
    fn bad_numbers_and_strategies_name_the_variable() {
        let err = settings(&[("CODEX_PROXY_PORT", "eighty")]).unwrap_err();
        assert!(err.to_string().starts_with("CODEX_PROXY_PORT="), "{err}");
        let err = settings(&[("CODEX_PROXY_STRATEGY", "random")]).unwrap_err();
        assert!(err.to_string().contains("round-robin"), "{err}");
    }
}
