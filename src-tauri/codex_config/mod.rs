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
    /// Whether config.toml existed before the first change.
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

    /// Applies the plan: the original is backed up before the first change only.
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
        if !self.backup_path().exists() {
            write(
                &self.backup_path(),
                plan.before.as_deref().unwrap_or("").as_bytes(),
            )?;
            state = State {
                original_existed: plan.before.is_some(),
                written_sha256: String::new(),
            };
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
