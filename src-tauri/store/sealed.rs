//! The access and id tokens of keychain accounts, too big for Windows' keychain: sealed with
//! ChaCha20-Poly1305 in a file beside the accounts file, under a key that lives only in the
//! account's keychain entry. Without that entry the file tells nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use serde::{Deserialize, Serialize};

use super::{write_atomic, FileLock, StoreError, StoredSecret, VaultError};

/// Binds a sealed blob to this use and to its account, so no blob opens under another.
const CONTEXT: &str = "codex-app-account-router sealed tokens v1:";

/// The 32-byte key of one account's sealed tokens. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct SealKey([u8; 32]);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

impl SealKey {
    /// A fresh random key from the OS.
    pub(super) fn generate() -> Result<SealKey, VaultError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| VaultError::Other(format!("no randomness for a token key: {e}")))?;
        Ok(SealKey(bytes))
    }

    /// The key as the keychain entry holds it (43 characters).
    pub(super) fn to_text(&self) -> StoredSecret {
        StoredSecret(URL_SAFE_NO_PAD.encode(self.0))
    }

    pub(super) fn from_text(text: &StoredSecret) -> Option<SealKey> {
        let bytes = URL_SAFE_NO_PAD.decode(&text.0).ok()?;
        Some(SealKey(bytes.try_into().ok()?))
    }

    fn cipher(&self) -> Result<LessSafeKey, VaultError> {
        UnboundKey::new(&CHACHA20_POLY1305, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| VaultError::Other("the token key was refused".to_string()))
    }
}

/// What is sealed for one account.
#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SealedPair {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<StoredSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<StoredSecret>,
}

/// Seals `pair` for `account`: base64url of a random nonce, the ciphertext and its tag.
pub(super) fn seal(key: &SealKey, account: &str, pair: &SealedPair) -> Result<String, VaultError> {
    let mut data = serde_json::to_vec(pair).map_err(|e| VaultError::Other(e.to_string()))?;
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)
        .map_err(|e| VaultError::Other(format!("no randomness for a nonce: {e}")))?;
    key.cipher()?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(account)),
            &mut data,
        )
        .map_err(|_| VaultError::Other("the tokens could not be sealed".to_string()))?;
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&data);
    Ok(URL_SAFE_NO_PAD.encode(blob))
}

/// Opens a blob of `account`; `None` when it was sealed under another key or is damaged (a
/// new login replaced the key, or a writer died between the entry and this file).
pub(super) fn open(key: &SealKey, account: &str, blob: &str) -> Option<SealedPair> {
    let bytes = URL_SAFE_NO_PAD.decode(blob).ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let mut sealed = sealed.to_vec();
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let plain = key
        .cipher()
        .ok()?
        .open_in_place(nonce, Aad::from(aad(account)), &mut sealed)
        .ok()?;
    serde_json::from_slice(plain).ok()
}

fn aad(account: &str) -> Vec<u8> {
    format!("{CONTEXT}{account}").into_bytes()
}

/// The file: account key to sealed blob.
#[derive(Serialize, Deserialize)]
struct SealedFile {
    version: u32,
    #[serde(default)]
    accounts: BTreeMap<String, String>,
}

impl Default for SealedFile {
    fn default() -> Self {
        SealedFile {
            version: 1,
            accounts: BTreeMap::new(),
        }
    }
}

/// `<accounts file>.sealed`, written 0600 and atomically under its own lock.
pub(super) struct SealedTokens {
    path: PathBuf,
}

impl SealedTokens {
    pub(super) fn beside(accounts_path: &Path) -> SealedTokens {
        SealedTokens {
            path: PathBuf::from(format!("{}.sealed", accounts_path.display())),
        }
    }

    /// The blob of `account`, if any.
    pub(super) fn get(&self, account: &str) -> Result<Option<String>, StoreError> {
        Ok(self.load()?.accounts.remove(account))
    }

    pub(super) fn put(&self, account: &str, blob: String) -> Result<(), StoreError> {
        self.update(|file| {
            file.accounts.insert(account.to_string(), blob);
        })
    }

    pub(super) fn remove(&self, account: &str) -> Result<(), StoreError> {
        if !self.path.exists() {
            return Ok(());
        }
        self.update(|file| {
            file.accounts.remove(account);
        })
    }

    fn update(&self, change: impl FnOnce(&mut SealedFile)) -> Result<(), StoreError> {
        let lock_path = PathBuf::from(format!("{}.lock", self.path.display()));
        let _lock = FileLock::acquire(&lock_path).map_err(|source| StoreError::Lock {
            path: lock_path.clone(),
            source,
        })?;
        let mut file = self.load()?;
        change(&mut file);
        let bytes = serde_json::to_vec(&file).map_err(|e| self.write_error(e))?;
        write_atomic(&self.path, &bytes).map_err(|e| self.write_error(e))
    }

    /// The file, or an empty one when it is missing. A file that does not parse holds only
    /// tokens a refresh gets again, so it reads as empty and the next write replaces it.
    fn load(&self) -> Result<SealedFile, StoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                tracing::warn!(path = %self.path.display(), "the sealed tokens file does not parse; the access tokens in it are fetched again");
                SealedFile::default()
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SealedFile::default()),
            Err(source) => Err(StoreError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn write_error(&self, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(access: &str, id: &str) -> SealedPair {
        SealedPair {
            access: Some(StoredSecret(access.to_string())),
            id_token: Some(StoredSecret(id.to_string())),
        }
    }

    #[test]
    fn a_sealed_pair_opens_only_with_its_key_and_account() {
        let key = SealKey::generate().unwrap();
        let blob = seal(&key, "acct-a/user-a", &pair("at-secret", "id-secret")).unwrap();
        assert!(!blob.contains("at-secret"));
        let opened = open(&key, "acct-a/user-a", &blob).expect("opens");
        assert_eq!(opened.access.unwrap().0, "at-secret");
        assert_eq!(opened.id_token.unwrap().0, "id-secret");
        assert!(
            open(&key, "acct-b/user-b", &blob).is_none(),
            "another account"
        );
        let other = SealKey::generate().unwrap();
        assert!(
            open(&other, "acct-a/user-a", &blob).is_none(),
            "another key"
        );
        assert!(open(&key, "acct-a/user-a", "garbage!").is_none());
    }

    #[test]
    fn the_key_survives_its_text_form_and_never_prints() {
        let key = SealKey::generate().unwrap();
        let text = key.to_text();
        assert_eq!(text.0.len(), 43);
        assert_eq!(SealKey::from_text(&text), Some(key.clone()));
        assert_eq!(format!("{key:?}"), "SealKey(<redacted>)");
        assert!(SealKey::from_text(&StoredSecret("short".into())).is_none());
    }

    #[test]
    fn the_file_keeps_one_blob_per_account_and_forgets_removed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = SealedTokens::beside(&dir.path().join("openai-accounts.json"));
        file.put("a", "blob-a".into()).unwrap();
        file.put("b", "blob-b".into()).unwrap();
        file.put("a", "blob-a2".into()).unwrap();
        assert_eq!(file.get("a").unwrap().as_deref(), Some("blob-a2"));
        file.remove("a").unwrap();
        assert_eq!(file.get("a").unwrap(), None);
        assert_eq!(file.get("b").unwrap().as_deref(), Some("blob-b"));
        std::fs::write(&file.path, "not json").unwrap();
        assert_eq!(
            file.get("b").unwrap(),
            None,
            "a damaged file reads as empty"
        );
    }
}
