//! The OS keychain side of the token store: one small entry per account, never over the
//! smallest keychain's limit. Keychain calls run on their own thread with a deadline, so a
//! keychain that hangs on a password prompt turns into a clear error instead of a frozen router.

use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::StoredSecret;

/// How long a keychain call may take before it is reported as stuck.
const KEYCHAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Windows Credential Manager, the smallest of the three keychains, holds a password of at
/// most 2,560 bytes, which `keyring` writes as UTF-16: 1,280 characters. Every entry is held
/// to it on every system, so a test on Linux catches what would fail on Windows.
pub const MAX_ENTRY_UTF16: usize = 1_280;

/// One account's tokens, wherever they are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<StoredSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<StoredSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<StoredSecret>,
}

/// A keychain entry as stored. Today's shape holds the refresh token and the key of the
/// account's sealed access and id tokens (`sealed.rs`); the old shape held all three tokens
/// and is still read, then rewritten in today's shape on the next write.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<StoredSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_key: Option<StoredSecret>,
    /// Old shape only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<StoredSecret>,
    /// Old shape only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<StoredSecret>,
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the OS keychain is not available ({detail}); on a machine without a desktop keyring, set CODEX_PROXY_TOKEN_STORE=file to keep tokens in the accounts file (mode 0600)")]
    Unavailable { detail: String },
    #[error("the OS keychain is locked or has no default keyring ({detail}); unlock it (log in to the desktop, or `gnome-keyring-daemon --unlock`), or set CODEX_PROXY_TOKEN_STORE=file")]
    Locked { detail: String },
    #[error("the OS keychain did not answer within {} s; it may be waiting for a password prompt. Unlock it, or set CODEX_PROXY_TOKEN_STORE=file", .0.as_secs())]
    TimedOut(Duration),
    #[error("the keychain has no tokens for account {0}; log in to it again")]
    Missing(String),
    #[error("the keychain entry of account {0} is not readable; log in to it again")]
    Garbled(String),
    #[error("the keychain entry of account {account} would be {size} characters, over the {max} that Windows Credential Manager (the smallest keychain) holds; nothing was written. Set CODEX_PROXY_TOKEN_STORE=file to keep tokens in the accounts file (mode 0600)")]
    TooLarge {
        account: String,
        size: usize,
        max: usize,
    },
    #[error("the OS keychain does not hold an entry of {MAX_ENTRY_UTF16} characters ({detail}), so an account could not be saved in it; set CODEX_PROXY_TOKEN_STORE=file to keep tokens in the accounts file (mode 0600)")]
    NoRoom { detail: String },
    #[error("keychain error: {0}")]
    Other(String),
}

/// The keychain side of the token store.
#[derive(Clone, Debug)]
pub struct Keychain {
    service: String,
}

impl Keychain {
    pub fn new(service: &str) -> Keychain {
        Keychain {
            service: service.to_string(),
        }
    }

    pub(super) fn read_entry(&self, account_key: &str) -> Result<Entry, VaultError> {
        let key = account_key.to_string();
        let secret = self.call(account_key, move |entry| entry.get_password())?;
        serde_json::from_str(&secret).map_err(|_| VaultError::Garbled(key))
    }

    /// Writes an entry, or refuses it, before the keychain sees it, when it is over
    /// [`MAX_ENTRY_UTF16`].
    pub(super) fn write_entry(&self, account_key: &str, entry: &Entry) -> Result<(), VaultError> {
        let secret = serde_json::to_string(entry).map_err(|e| VaultError::Other(e.to_string()))?;
        let size = secret.encode_utf16().count();
        if size > MAX_ENTRY_UTF16 {
            return Err(VaultError::TooLarge {
                account: account_key.to_string(),
                size,
                max: MAX_ENTRY_UTF16,
            });
        }
        self.call(account_key, move |entry| entry.set_password(&secret))
    }

    /// Deletes the entry; a missing entry is not an error.
    pub fn delete(&self, account_key: &str) -> Result<(), VaultError> {
        match self.call(account_key, |entry| entry.delete_credential()) {
            Err(VaultError::Missing(_)) => Ok(()),
            other => other,
        }
    }

    /// Checks that the keychain answers, without touching any entry of ours.
    pub fn probe(&self) -> Result<(), VaultError> {
        match self.call("probe", |entry| entry.get_password()) {
            Ok(_) | Err(VaultError::Missing(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Checks, before a sign-in, that the keychain takes an entry of the largest size we
    /// write: a probe entry of [`MAX_ENTRY_UTF16`] characters is written, read back and
    /// deleted. A keychain that answers but refuses it fails here, not after the sign-in.
    pub fn probe_largest_entry(&self) -> Result<(), VaultError> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| VaultError::Other(e.to_string()))?;
        let name: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let user = format!("size-probe-{}-{name}", std::process::id());
        let written = "x".repeat(MAX_ENTRY_UTF16);
        let expected = written.clone();
        let result = self.call(&user, move |entry| {
            entry.set_password(&written)?;
            entry.get_password()
        });
        // Best effort: a probe that was never written has nothing to delete.
        let _ = self.delete(&user);
        match result {
            Ok(read) if read == expected => Ok(()),
            Ok(_) => Err(VaultError::NoRoom {
                detail: "it gave back a shorter entry".to_string(),
            }),
            Err(VaultError::Other(detail)) => Err(VaultError::NoRoom { detail }),
            Err(VaultError::Missing(_)) => Err(VaultError::NoRoom {
                detail: "it did not keep it".to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    fn call<T: Send + 'static>(
        &self,
        account_key: &str,
        op: impl FnOnce(&keyring::Entry) -> keyring::Result<T> + Send + 'static,
    ) -> Result<T, VaultError> {
        let (service, user) = (self.service.clone(), account_key.to_string());
        let result = with_deadline(KEYCHAIN_DEADLINE, move || {
            keyring::Entry::new(&service, &user).and_then(|entry| op(&entry))
        })?;
        result.map_err(|e| classify(e, account_key))
    }
}

/// Runs `work` on its own thread and gives up waiting after `deadline`: a keychain blocked on
/// a password prompt must not block the caller. The thread is left to finish on its own.
fn with_deadline<T: Send + 'static>(
    deadline: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, VaultError> {
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("keychain".to_string())
        .spawn(move || {
            let _ = sender.send(work());
        })
        .map_err(|e| VaultError::Other(e.to_string()))?;
    receiver
        .recv_timeout(deadline)
        .map_err(|_| VaultError::TimedOut(deadline))
}

fn classify(e: keyring::Error, account_key: &str) -> VaultError {
    match e {
        keyring::Error::NoEntry => VaultError::Missing(account_key.to_string()),
        keyring::Error::NoStorageAccess(inner) => VaultError::Locked {
            detail: inner.to_string(),
        },
        keyring::Error::PlatformFailure(inner) => VaultError::Unavailable {
            detail: inner.to_string(),
        },
        other => VaultError::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hanging_keychain_call_times_out_with_advice() {
        let started = std::time::Instant::now();
        let result = with_deadline(Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_secs(5));
        });
        let err = result.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(matches!(err, VaultError::TimedOut(_)));
        assert!(
            err.to_string().contains("CODEX_PROXY_TOKEN_STORE=file"),
            "{err}"
        );
        assert_eq!(with_deadline(Duration::from_secs(1), || 7).unwrap(), 7);
    }

    #[test]
    fn an_entry_over_the_smallest_keychains_limit_is_refused_before_the_keychain_sees_it() {
        // No keychain is reached: the service name is one no test writes.
        let keychain = Keychain::new("cma-unit-test-never-written");
        let entry = Entry {
            refresh: Some(StoredSecret("r".repeat(MAX_ENTRY_UTF16))),
            ..Default::default()
        };
        let err = keychain.write_entry("acct/user", &entry).unwrap_err();
        assert!(
            matches!(err, VaultError::TooLarge { size, max: MAX_ENTRY_UTF16, .. } if size > MAX_ENTRY_UTF16),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("CODEX_PROXY_TOKEN_STORE=file"), "{text}");
        assert!(!text.contains("rrrr"), "no token in the error: {text}");
    }
}
