//! Persistent state: the accounts file and the bindings file, written atomically under a
//! lock shared by every process, and never overwritten when they do not parse.

mod accounts_file;
mod atomic;
mod bindings_file;
mod sealed;
mod tokens;
mod vault;

use std::path::{Path, PathBuf};

pub use accounts_file::{AccountRecord, AccountsFile, NeedsLogin, Parts, StoredSecret};
pub use atomic::{create_private_dir, write_atomic, FileLock};
pub use bindings_file::{BindingsFile, StoredBinding};
use sha2::{Digest, Sha256};
pub use vault::{Keychain, TokenSet, VaultError, MAX_ENTRY_UTF16};

use crate::paths::Paths;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} is not valid JSON (line {line}, column {column}: {message}); it was left untouched. Fix it by hand, or put back the last good copy with `cp '{path}.bak' '{path}'`")]
    Corrupt {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path} has version {version}, but this file must be version 1; run `cma sync-accounts --from '{path}'` to import other formats")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Identifies one version of a file on disk, to notice another process's writes cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    inode: u64,
}

/// The keychain service name entries are stored under, unless configured otherwise.
pub const DEFAULT_KEYCHAIN_SERVICE: &str = "codex-app-account-router";

/// Where new and rotated tokens are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenMode {
    File,
    Keychain,
}

/// Reads and writes the router's files and the tokens.
#[derive(Clone, Debug)]
pub struct Store {
    accounts_path: PathBuf,
    bindings_path: PathBuf,
    mode: TokenMode,
    /// Used in keychain mode, and in file mode to reach tokens left in the keychain.
    keychain: Keychain,
}

impl Store {
    /// A store that keeps tokens in the accounts file (tests, headless machines).
    pub fn new(paths: &Paths) -> Store {
        Store::with_tokens(
            paths,
            TokenMode::File,
            Keychain::new(DEFAULT_KEYCHAIN_SERVICE),
        )
    }

    pub fn with_tokens(paths: &Paths, mode: TokenMode, keychain: Keychain) -> Store {
        Store {
            accounts_path: paths.accounts_file.clone(),
            bindings_path: paths.bindings_file.clone(),
            mode,
            keychain,
        }
    }

    pub fn token_mode(&self) -> TokenMode {
        self.mode
    }

    pub fn keychain(&self) -> &Keychain {
        &self.keychain
    }

    pub fn accounts_path(&self) -> &Path {
        &self.accounts_path
    }

    /// The accounts file, or an empty pool when it does not exist yet.
    pub fn load_accounts(&self) -> Result<AccountsFile, StoreError> {
        let bytes = match std::fs::read(&self.accounts_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(AccountsFile::default())
            }
            Err(source) => {
                return Err(StoreError::Read {
                    path: self.accounts_path.clone(),
                    source,
                })
            }
        };
        let file: AccountsFile = parse(&self.accounts_path, &bytes)?;
        if file.version != 1 {
            return Err(StoreError::UnsupportedVersion {
                path: self.accounts_path.clone(),
                version: file.version,
            });
        }
        Ok(file)
    }

    /// Read-modify-write under the cross-process lock. The change is applied to what is on
    /// disk now, so another process's edits are never undone. A file that does not parse
    /// is left as it is and the change is refused.
    pub fn update_accounts<R>(
        &self,
        change: impl FnOnce(&mut AccountsFile) -> R,
    ) -> Result<R, StoreError> {
        let _lock = self.lock(&self.accounts_path)?;
        let mut file = self.load_accounts()?;
        let result = change(&mut file);
        for (index, account) in file.accounts.iter_mut().enumerate() {
            account.index = Some(index);
        }
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Write {
            path: self.accounts_path.clone(),
            source: std::io::Error::other(e),
        })?;
        let write = |path: &Path| {
            write_atomic(path, &bytes).map_err(|source| StoreError::Write {
                path: path.to_path_buf(),
                source,
            })
        };
        write(&self.accounts_path)?;
        // The backup is the newest good version, not the previous one: an older copy would
        // hold refresh tokens that have since rotated, and restoring it would burn them.
        write(&backup_path(&self.accounts_path))?;
        Ok(result)
    }

    /// Cheap identity of the accounts file as it is now; `None` when it does not exist.
    pub fn accounts_stamp(&self) -> Option<FileStamp> {
        let meta = std::fs::metadata(&self.accounts_path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        })
    }

    /// The bindings file; an unreadable one is reported, and the caller starts empty
    /// without overwriting it until the next binding is made.
    pub fn load_bindings(&self) -> Result<BindingsFile, StoreError> {
        match std::fs::read(&self.bindings_path) {
            Ok(bytes) => parse(&self.bindings_path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BindingsFile::default()),
            Err(source) => Err(StoreError::Read {
                path: self.bindings_path.clone(),
                source,
            }),
        }
    }

    pub fn save_bindings(&self, file: &BindingsFile) -> Result<(), StoreError> {
        let _lock = self.lock(&self.bindings_path)?;
        let bytes = serde_json::to_vec(file).map_err(|e| StoreError::Write {
            path: self.bindings_path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&self.bindings_path, &bytes).map_err(|source| StoreError::Write {
            path: self.bindings_path.clone(),
            source,
        })
    }

    /// The lock that serializes refreshes of one account across processes.
    pub fn refresh_lock(&self, account_key: &str) -> Result<FileLock, StoreError> {
        let digest = Sha256::digest(account_key.as_bytes());
        let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let dir = self
            .accounts_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
            .join("locks");
        let path = dir.join(format!("refresh-{name}.lock"));
        FileLock::acquire(&path).map_err(|source| StoreError::Lock { path, source })
    }

    fn lock(&self, file: &Path) -> Result<FileLock, StoreError> {
        let path = PathBuf::from(format!("{}.lock", file.display()));
        FileLock::acquire(&path).map_err(|source| StoreError::Lock { path, source })
    }
}

fn backup_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.bak", path.display()))
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e
            .to_string()
            .split(" at line")
            .next()
            .unwrap_or("")
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> Store {
        Store::new(&Paths::under(dir))
    }

    #[test]
    fn corrupt_file_is_reported_with_line_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        std::fs::write(
            s.accounts_path(),
            "{\n  \"version\": 1,\n  \"accounts\": [oops]\n}",
        )
        .unwrap();
        let err = s.update_accounts(|f| f.accounts.clear()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("openai-accounts.json.bak"), "{text}");
        let after = std::fs::read_to_string(s.accounts_path()).unwrap();
        assert!(after.contains("[oops]"), "the file was left as it was");
    }

    #[test]
    fn update_renumbers_and_keeps_a_backup_of_the_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.update_accounts(|f| {
            for id in ["a", "b"] {
                f.accounts.push(AccountRecord {
                    account_id: Some(id.into()),
                    ..Default::default()
                })
            }
        })
        .unwrap();
        s.update_accounts(|f| f.accounts.remove(0)).unwrap();
        let file = s.load_accounts().unwrap();
        assert_eq!(file.accounts.len(), 1);
        assert_eq!(file.accounts[0].index, Some(0));
        let backup = std::fs::read(backup_path(s.accounts_path())).unwrap();
        assert_eq!(backup, std::fs::read(s.accounts_path()).unwrap());
    }

    #[test]
    fn concurrent_writers_lose_no_update() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = store(dir.path());
                std::thread::spawn(move || {
                    for j in 0..5 {
                        s.update_accounts(|f| {
                            f.accounts.push(AccountRecord {
                                account_id: Some(format!("{i}-{j}")),
                                ..Default::default()
                            })
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            store(dir.path()).load_accounts().unwrap().accounts.len(),
            40
        );
    }

    #[test]
    fn other_versions_are_refused_with_the_import_command() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        std::fs::write(s.accounts_path(), r#"{"version":3,"accounts":[]}"#).unwrap();
        let err = s.load_accounts().unwrap_err().to_string();
        assert!(err.contains("cma sync-accounts"), "{err}");
    }
}
