//! Where every file lives: an explicit value first, then the environment, then the OS default.

use std::path::{Path, PathBuf};

/// The files the router reads and writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub accounts_file: PathBuf,
    pub bindings_file: PathBuf,
    pub codex_home: PathBuf,
}

impl Paths {
    /// Resolves paths from environment lookups (`CODEX_PROXY_ACCOUNTS_FILE`,
    /// `CODEX_PROXY_BINDINGS_FILE`, `CODEX_HOME`), falling back to `~/.codex/multi-auth/...`.
    pub fn resolve(var: &dyn Fn(&str) -> Option<String>) -> Paths {
        let home = var("HOME")
            .or_else(|| var("USERPROFILE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
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
        }
    }

    /// Every file under one folder: what tests use instead of touching `HOME`.
    pub fn under(dir: &Path) -> Paths {
        Paths {
            accounts_file: dir.join("openai-accounts.json"),
            bindings_file: dir.join("session-bindings.json"),
            codex_home: dir.join("codex-home"),
        }
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
}
