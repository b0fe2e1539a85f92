//! Pointing Codex at the router: a patch of `$CODEX_HOME/config.toml` that keeps every other
//! line, table and comment, keeps a backup of the original, and can be undone exactly.

mod patch;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use patch::{desired_block, PROVIDER_ID, PROVIDER_NAME};

use crate::store::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path} is not valid TOML ({message}); it was not changed. Fix it (or move it away) and run this again")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}; check that it and its folder are writable")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is read-only; make it writable (chmod u+w) so that cma can change it")]
    ReadOnly(PathBuf),
    #[error("there is nothing to revert: {0} has no backup made by cma")]
    NothingToRevert(PathBuf),
}

/// What the router's block says: where it listens and whether clients need a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSettings {
    pub base_url: String,
    pub with_token: bool,
}

/// The result of planning a change: the file now and as it would be.
#[derive(Clone, Debug)]
pub struct Plan {
    pub path: PathBuf,
    pub before: Option<String>,
    pub after: String,
}

impl Plan {
    pub fn changes(&self) -> bool {
        self.before.as_deref() != Some(self.after.as_str())
    }

    /// A line diff for `--dry-run`.
    pub fn diff(&self) -> String {
        let before: Vec<&str> = self.before.as_deref().unwrap_or("").lines().collect();
        let after: Vec<&str> = self.after.lines().collect();
        let mut out = format!(
            "--- {}\n+++ {} (after cma configure)\n",
            self.path.display(),
            self.path.display()
        );
        for line in &before {
            if !after.contains(line) {
                out.push_str(&format!("-{line}\n"));
            }
        }
        for line in &after {
            if !before.contains(line) {
                out.push_str(&format!("+{line}\n"));
            }
        }
        out
    }
}

/// What `configure` remembers, beside the backup, to undo only its own change.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    /// Whether revert leaves a config.toml: it existed before the first change, or the user
    /// wrote lines of their own into it since.
    original_existed: bool,
    /// SHA-256 of the file as cma last wrote it.
    written_sha256: String,
}

/// The files of one Codex home.
pub struct CodexConfig {
    path: PathBuf,
}

impl CodexConfig {
    pub fn new(codex_home: &Path) -> CodexConfig {
        CodexConfig {
            path: codex_home.join("config.toml"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn backup_path(&self) -> PathBuf {
        PathBuf::from(format!("{}.cma-backup", self.path.display()))
    }

    fn state_path(&self) -> PathBuf {
        PathBuf::from(format!("{}.cma-state.json", self.path.display()))
    }

    fn read(&self) -> Result<Option<String>, ConfigError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ConfigError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The change `apply` would make, without making it.
    pub fn plan(&self, settings: &ProviderSettings) -> Result<Plan, ConfigError> {
        let before = self.read()?;
        let after =
            patch::apply_block(before.as_deref().unwrap_or(""), settings).map_err(|message| {
                ConfigError::Invalid {
                    path: self.path.clone(),
                    message,
                }
            })?;
        Ok(Plan {
            path: self.path.clone(),
            before,
            after,
        })
    }

    /// Applies the plan. The backup holds the user's file without cma's lines: the original
    /// before the first change, renewed at a later change when the user edited the file since.
    pub fn apply(&self, settings: &ProviderSettings) -> Result<Plan, ConfigError> {
        let plan = self.plan(settings)?;
        if !plan.changes() {
            return Ok(plan);
        }
        let write = |path: &Path, bytes: &[u8]| {
            write_atomic(path, bytes).map_err(|source| ConfigError::Write {
                path: path.to_path_buf(),
                source,
            })
        };
        let mut state = self.load_state();
        match std::fs::read(self.backup_path()) {
            Err(_) => {
                write(
                    &self.backup_path(),
                    plan.before.as_deref().unwrap_or("").as_bytes(),
                )?;
                state = State {
                    original_existed: plan.before.is_some(),
                    written_sha256: String::new(),
                };
            }
            // The user changed the file since cma last wrote it. Revert must give back their
            // file as it is now without cma's lines, not the one from before the first apply:
            // the backup becomes that, or the next write would make the file look untouched
            // and revert would drop their edits.
            Ok(old) if plan.before.as_deref().map(sha256) != Some(state.written_sha256.clone()) => {
                let before = plan.before.as_deref().unwrap_or("");
                let users = patch::remove_block(before, &String::from_utf8_lossy(&old)).map_err(
                    |message| ConfigError::Invalid {
                        path: self.path.clone(),
                        message,
                    },
                )?;
                write(&self.backup_path(), users.as_bytes())?;
                // A file the user filled (or deleted) decides whether revert leaves one.
                state.original_existed =
                    plan.before.is_some() && (state.original_existed || !users.trim().is_empty());
            }
            Ok(_) => {}
        }
        write_user_file(&self.path, plan.after.as_bytes())?;
        state.written_sha256 = sha256(&plan.after);
        let json = serde_json::to_vec_pretty(&state).unwrap_or_default();
        write(&self.state_path(), &json)?;
        Ok(plan)
    }

    /// Undoes `apply`. When the file is still exactly what cma wrote, the original bytes come
    /// back; when the user edited it since, only cma's own lines are taken out.
    pub fn revert(&self) -> Result<(), ConfigError> {
        let backup = self.backup_path();
        let original = match std::fs::read(&backup) {
            Ok(bytes) => bytes,
            Err(_) => return Err(ConfigError::NothingToRevert(self.path.clone())),
        };
        let state = self.load_state();
        let current = self.read()?;
        let untouched = current.as_deref().map(sha256) == Some(state.written_sha256.clone());
        let result = if untouched {
            if state.original_existed {
                write_user_file(&self.path, &original)
            } else {
                std::fs::remove_file(&self.path)
                    .or_else(ignore_missing)
                    .map_err(|source| ConfigError::Write {
                        path: self.path.clone(),
                        source,
                    })
            }
        } else {
            let text = current.unwrap_or_default();
            let backup_text = String::from_utf8_lossy(&original);
            let cleaned = patch::remove_block(&text, &backup_text).map_err(|message| {
                ConfigError::Invalid {
                    path: self.path.clone(),
                    message,
                }
            })?;
            write_user_file(&self.path, cleaned.as_bytes())
        };
        result?;
        let _ = std::fs::remove_file(&backup);
        let _ = std::fs::remove_file(self.state_path());
        Ok(())
    }

    /// Whether the file points Codex at the router with these settings.
    pub fn is_applied(&self, settings: &ProviderSettings) -> Result<bool, ConfigError> {
        Ok(!self.plan(settings)?.changes())
    }

    fn load_state(&self) -> State {
        std::fs::read(self.state_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

/// Replaces a file of the user's the way an editor would: through a symlink to its target,
/// keeping its permissions, and refusing a read-only one (a rename would silently replace it).
fn write_user_file(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let permissions = std::fs::metadata(&target).ok().map(|m| m.permissions());
    if permissions.as_ref().is_some_and(|p| p.readonly()) {
        return Err(ConfigError::ReadOnly(target));
    }
    let failed = |source| ConfigError::Write {
        path: target.clone(),
        source,
    };
    write_atomic(&target, bytes).map_err(failed)?;
    if let Some(p) = permissions {
        std::fs::set_permissions(&target, p).map_err(failed)?;
    }
    Ok(())
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(port: u16, with_token: bool) -> ProviderSettings {
        ProviderSettings {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            with_token,
        }
    }

    const ORIGINALS: [Option<&str>; 3] = [
        None,
        Some("model = \"gpt-5.5\" # mine\nmodel_provider = \"openai\"\n"),
        Some("[model_providers.multi-auth-proxy]\nname = \"old\"\nstream_max_retries = 3\n"),
    ];

    /// Edits a user makes between applies, each leaving a line only they wrote.
    fn edit(text: &str, which: usize, round: usize) -> (String, String) {
        let line = format!("user_line_{round} = {which}");
        let edited = match which {
            0 => format!("{line}\n{text}"),
            1 => format!("{text}\n[profiles.p{round}]\n{line}\n"),
            _ => text.replacen("\n[", &format!("\n{line}\n["), 1),
        };
        (edited, line)
    }

    /// Apply, edit, apply with other settings, edit, apply again, revert: in every order, no line
    /// the user wrote is lost and none of cma's stays; without edits the original comes back
    /// byte for byte.
    #[test]
    fn revert_keeps_every_line_the_user_wrote_between_any_applies() {
        for original in ORIGINALS {
            for first in 0..3 {
                for second in 0..3 {
                    let home = tempfile::tempdir().unwrap();
                    let config = CodexConfig::new(home.path());
                    if let Some(text) = original {
                        std::fs::write(config.path(), text).unwrap();
                    }
                    config.apply(&settings(8787, false)).unwrap();
                    let mut lines = Vec::new();
                    for (round, (which, port)) in [(first, 8788), (second, 8789)].iter().enumerate()
                    {
                        let now = std::fs::read_to_string(config.path()).unwrap();
                        let (edited, line) = edit(&now, *which, round);
                        std::fs::write(config.path(), edited).unwrap();
                        lines.push(line);
                        config.apply(&settings(*port, round == 1)).unwrap();
                    }
                    config.revert().unwrap();
                    let after = std::fs::read_to_string(config.path()).unwrap();
                    let case = format!("{original:?} {first} {second}:\n{after}");
                    for line in &lines {
                        assert!(after.contains(line.as_str()), "{line} lost in {case}");
                    }
                    assert!(
                        !after.contains("8789") && !after.contains("Account Router"),
                        "{case}"
                    );
                    assert_eq!(
                        original.is_some_and(|o| o.contains("stream_max_retries")),
                        after.contains("stream_max_retries = 3"),
                        "{case}"
                    );
                }
            }
            let home = tempfile::tempdir().unwrap();
            let config = CodexConfig::new(home.path());
            if let Some(text) = original {
                std::fs::write(config.path(), text).unwrap();
            }
            config.apply(&settings(8787, false)).unwrap();
            config.apply(&settings(8788, true)).unwrap();
            config.revert().unwrap();
            let after = std::fs::read_to_string(config.path()).ok();
            assert_eq!(after.as_deref(), original, "no edits");
        }
    }
}

#[cfg(test)]
#[path = "revert_properties.rs"]
mod properties;
