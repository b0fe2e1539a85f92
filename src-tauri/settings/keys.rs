//! The settings a user may keep in `settings.toml`: each key's variable, default and allowed
//! values, and the one check every value passes, whether it comes from the file or from
//! `cma settings set`. `CODEX_PROXY_TOKEN` is a secret and has no key here on purpose.

/// What a key's value may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Host,
    /// 1 to 65535: port 0 (any free port) would leave Codex pointing at a port nobody knows.
    Port,
    Path,
    Url,
    Text,
    /// A whole number, 1 or more (timeouts, sizes).
    Count,
    Switch,
    Choice(&'static [&'static str]),
    /// Percents from 1 to 100, comma-separated (`80,95`), or `off`.
    Percents,
}

/// One setting: its name in the file, the variable that overrides it, and its default.
#[derive(Debug, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub var: &'static str,
    pub kind: Kind,
    /// The default as the README states it.
    pub default: &'static str,
    pub help: &'static str,
}

pub const STRATEGIES: &[&str] = &["sticky", "round-robin", "hybrid"];
pub const TOKEN_STORES: &[&str] = &["keychain", "file"];

const fn key(
    name: &'static str,
    var: &'static str,
    kind: Kind,
    default: &'static str,
    help: &'static str,
) -> Key {
    Key {
        name,
        var,
        kind,
        default,
        help,
    }
}

/// Every key, in the README's order. One line each, so the table reads as one.
#[rustfmt::skip]
pub const KEYS: &[Key] = &[
    key("host", "CODEX_PROXY_HOST", Kind::Host, "127.0.0.1", "listen host; a non-loopback host requires CODEX_PROXY_TOKEN"),
    key("port", "CODEX_PROXY_PORT", Kind::Port, "8787", "listen port"),
    key("accounts_file", "CODEX_PROXY_ACCOUNTS_FILE", Kind::Path, "~/.codex/multi-auth/openai-accounts.json", "the account pool"),
    key("bindings_file", "CODEX_PROXY_BINDINGS_FILE", Kind::Path, "~/.codex/multi-auth/session-bindings.json", "session bindings"),
    key("token_store", "CODEX_PROXY_TOKEN_STORE", Kind::Choice(TOKEN_STORES), "keychain", "where tokens are kept: the OS keychain, or the accounts file (0600)"),
    key("keychain_service", "CODEX_PROXY_KEYCHAIN_SERVICE", Kind::Text, "codex-app-account-router", "keychain service name of the entries"),
    key("browser", "CODEX_PROXY_BROWSER", Kind::Text, "system browser", "command that opens sign-in pages (<command> <url>)"),
    key("login_port", "CODEX_PROXY_LOGIN_PORT", Kind::Port, "1455, then 1457", "callback port of the browser login"),
    key("upstream_url", "CODEX_PROXY_UPSTREAM_URL", Kind::Url, super::DEFAULT_UPSTREAM_URL, "base for /responses and /responses/compact"),
    key("upstream_models_url", "CODEX_PROXY_UPSTREAM_MODELS_URL", Kind::Url, super::DEFAULT_MODELS_URL, "model metadata"),
    key("usage_url", "CODEX_PROXY_USAGE_URL", Kind::Url, super::DEFAULT_USAGE_URL, "per-account usage"),
    key("oauth_issuer", "CODEX_PROXY_OAUTH_ISSUER", Kind::Url, super::DEFAULT_OAUTH_ISSUER, "sign-in server"),
    key("allow_custom_upstream", "CODEX_PROXY_ALLOW_CUSTOM_UPSTREAM", Kind::Switch, "false", "must be true for any non-default URL above"),
    key("strategy", "CODEX_PROXY_STRATEGY", Kind::Choice(STRATEGIES), "sticky", "how new sessions pick an account"),
    key("debug", "CODEX_PROXY_DEBUG", Kind::Switch, "false", "verbose logs (still no secrets)"),
    key("max_body_bytes", "CODEX_PROXY_MAX_BODY_BYTES", Kind::Count, "134217728", "larger request bodies get 413"),
    key("first_byte_timeout_ms", "CODEX_PROXY_FIRST_BYTE_TIMEOUT_MS", Kind::Count, "60000", "time for an upstream answer before trying another account"),
    key("stream_idle_timeout_ms", "CODEX_PROXY_STREAM_IDLE_TIMEOUT_MS", Kind::Count, "300000", "silence allowed mid-stream before the stream is cut"),
    key("binding_ttl_secs", "CODEX_PROXY_BINDING_TTL_SECS", Kind::Count, "86400", "idle time after which a session binding is forgotten"),
    key("websockets", "CODEX_PROXY_WEBSOCKETS", Kind::Switch, "true", "false answers WebSocket upgrades with 426"),
    key("history", "CODEX_PROXY_HISTORY", Kind::Switch, "true", "keep usage and requests in history.sqlite beside the accounts file (90 days)"),
    key("alert_thresholds", "CODEX_PROXY_ALERT_THRESHOLDS", Kind::Percents, "80,95", "usage percents of a 5-hour or weekly window the app notifies at, once per window and account; off for none"),
    key("codex_home", "CODEX_HOME", Kind::Path, "~/.codex", "where Codex's config.toml lives"),
];

/// Keys that hold secrets: refused in the file, with the variable to use instead.
pub const SECRETS: &[(&str, &str)] = &[("token", "CODEX_PROXY_TOKEN")];

/// The key named `name` (`port`), also found by its variable (`CODEX_PROXY_PORT`) or with
/// dashes (`first-byte-timeout-ms`), since people type what they saw in the README.
pub fn find(name: &str) -> Option<&'static Key> {
    let wanted = name.trim().replace('-', "_");
    KEYS.iter()
        .find(|k| k.name.eq_ignore_ascii_case(&wanted) || k.var.eq_ignore_ascii_case(&wanted))
}

/// `80, 95` as `[80, 95]` (sorted, once each), `off` or `none` as `[]`; `None` when a part is
/// not a percent from 1 to 100.
pub fn percents(value: &str) -> Option<Vec<u8>> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") || value.eq_ignore_ascii_case("none") {
        return Some(Vec::new());
    }
    let mut out = value
        .split(',')
        .map(|p| p.trim().trim_end_matches('%').trim().parse::<u8>().ok())
        .collect::<Option<Vec<u8>>>()?;
    if out.is_empty() || out.iter().any(|p| !(1..=100).contains(p)) {
        return None;
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Every key name, for messages.
pub fn names() -> String {
    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// The key called `name` (or its variable), or why there is none.
pub fn known_key(name: &str) -> Result<&'static Key, super::SettingsError> {
    if let Some((key, variable)) = SECRETS
        .iter()
        .find(|(s, v)| s.eq_ignore_ascii_case(name.trim()) || v.eq_ignore_ascii_case(name.trim()))
    {
        return Err(super::SettingsError::Secret {
            key: key.to_string(),
            variable,
        });
    }
    find(name).ok_or_else(|| super::SettingsError::UnknownKey {
        key: name.to_string(),
        known: names(),
    })
}

impl Kind {
    /// The value in its canonical form (`round_robin` becomes `round-robin`, `1` becomes
    /// `true`, a URL loses its trailing slash), or `None` when it is not allowed.
    pub fn normalize(self, raw: &str) -> Option<String> {
        let value = raw.trim();
        match self {
            Kind::Host => (!value.is_empty()
                && !value.contains(|c: char| c.is_whitespace() || c == '/'))
            .then(|| value.to_string()),
            Kind::Port => value
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .map(|p| p.to_string()),
            Kind::Count => value
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .map(|n| n.to_string()),
            Kind::Path => (std::path::Path::new(value).is_absolute() || value.starts_with("~/"))
                .then(|| value.to_string()),
            Kind::Url => {
                let lower = value.to_ascii_lowercase();
                let scheme = lower.starts_with("http://") || lower.starts_with("https://");
                let rest = value.split_once("://").map(|(_, r)| r).unwrap_or("");
                (scheme && !rest.is_empty() && !value.contains(char::is_whitespace))
                    .then(|| value.trim_end_matches('/').to_string())
            }
            Kind::Text => (!value.is_empty()).then(|| value.to_string()),
            Kind::Percents => percents(value).map(|p| match p.as_slice() {
                [] => "off".to_string(),
                p => p.iter().map(u8::to_string).collect::<Vec<_>>().join(","),
            }),
            Kind::Switch => match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "on" | "yes" => Some("true".to_string()),
                "false" | "0" | "off" | "no" => Some("false".to_string()),
                _ => None,
            },
            Kind::Choice(choices) => {
                let wanted = value.to_ascii_lowercase().replace('_', "-");
                let wanted = if wanted == "roundrobin" {
                    "round-robin".to_string()
                } else {
                    wanted
                };
                choices
                    .iter()
                    .find(|c| **c == wanted)
                    .map(|c| c.to_string())
            }
        }
    }

    /// What the value may be, in words, for errors and `cma settings`.
    pub fn allowed(self) -> String {
        match self {
            Kind::Host => "a host name or IP address, such as 127.0.0.1 or ::1".to_string(),
            Kind::Port => "a port number from 1 to 65535".to_string(),
            Kind::Count => "a whole number, 1 or more".to_string(),
            Kind::Path => "an absolute path (or one starting with ~/)".to_string(),
            Kind::Url => "an http:// or https:// URL".to_string(),
            Kind::Text => "any text that is not empty".to_string(),
            Kind::Percents => {
                "percents from 1 to 100, comma-separated (such as 80,95), or off".to_string()
            }
            Kind::Switch => "true or false".to_string(),
            Kind::Choice(choices) => match choices.split_last() {
                Some((last, [])) => last.to_string(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            },
        }
    }

    /// The values a picker offers; empty for free input.
    pub fn choices(self) -> Vec<&'static str> {
        match self {
            Kind::Switch => vec!["true", "false"],
            Kind::Choice(choices) => choices.to_vec(),
            _ => Vec::new(),
        }
    }

    /// The canonical value as the environment variable spells it, which is what
    /// `Settings` parses (a switch is `1` or `0` there).
    pub fn as_variable(self, canonical: &str) -> String {
        match (self, canonical) {
            (Kind::Switch, "true") => "1".to_string(),
            (Kind::Switch, "false") => "0".to_string(),
            _ => canonical.to_string(),
        }
    }

    /// Whether the file stores it as a TOML integer or boolean rather than a string.
    pub fn toml_value(self, canonical: &str) -> toml_edit::Value {
        match self {
            Kind::Port | Kind::Count => match canonical.parse::<i64>() {
                Ok(n) => toml_edit::Value::from(n),
                // Above i64 (TOML's integer range): kept exact as a string.
                Err(_) => toml_edit::Value::from(canonical),
            },
            Kind::Switch => toml_edit::Value::from(canonical == "true"),
            _ => toml_edit::Value::from(canonical),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_thresholds_are_percents_in_order_or_off() {
        assert_eq!(percents("95, 80,80%"), Some(vec![80, 95]));
        assert_eq!(percents("off"), Some(vec![]));
        assert_eq!(percents("0,50"), None, "0 is no threshold");
        assert_eq!(percents("101"), None);
        assert_eq!(percents("eighty"), None);
        assert_eq!(
            Kind::Percents.normalize(" 90,70 ").as_deref(),
            Some("70,90")
        );
        assert_eq!(Kind::Percents.normalize("none").as_deref(), Some("off"));
    }

    #[test]
    fn every_key_is_the_snake_case_of_its_variable_and_none_is_secret() {
        for k in KEYS {
            let expected = k
                .var
                .trim_start_matches("CODEX_PROXY_")
                .to_ascii_lowercase();
            assert_eq!(k.name, expected, "{}", k.var);
            assert!(!SECRETS.iter().any(|(s, _)| *s == k.name));
        }
        assert_eq!(find("CODEX_PROXY_PORT").map(|k| k.name), Some("port"));
        assert_eq!(
            find("first-byte-timeout-ms").map(|k| k.name),
            Some("first_byte_timeout_ms")
        );
        assert!(find("token").is_none());
    }

    #[test]
    fn out_of_range_values_are_refused_and_good_ones_made_canonical() {
        assert_eq!(Kind::Port.normalize("0"), None);
        assert_eq!(Kind::Port.normalize("65536"), None);
        assert_eq!(Kind::Port.normalize(" 8788 ").as_deref(), Some("8788"));
        let strategy = Kind::Choice(STRATEGIES);
        assert_eq!(strategy.normalize("fast"), None);
        assert_eq!(
            strategy.normalize("Round_Robin").as_deref(),
            Some("round-robin")
        );
        assert_eq!(strategy.allowed(), "sticky, round-robin or hybrid");
        assert_eq!(Kind::Count.normalize("soon"), None);
        assert_eq!(Kind::Count.normalize("0"), None);
        assert_eq!(Kind::Switch.normalize("1").as_deref(), Some("true"));
        assert_eq!(Kind::Switch.as_variable("false"), "0");
        assert_eq!(Kind::Url.normalize("ftp://x"), None);
        assert_eq!(
            Kind::Url.normalize("https://x/a/").as_deref(),
            Some("https://x/a")
        );
        assert_eq!(Kind::Path.normalize("relative/file"), None);
    }
}
