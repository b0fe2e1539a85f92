//! Reading, writing, moving and deleting an account's tokens in whichever store holds them.
//! The file always says where (`tokenStore`), so a router never guesses. In the keychain an
//! account's entry holds its refresh token and the key of its access and id tokens, which are
//! sealed in a file beside the accounts file: three JWTs do not fit Windows' keychain.

use super::accounts_file::KEYCHAIN;
use super::sealed::{self, SealKey, SealedPair, SealedTokens};
use super::vault::Entry;
use super::{AccountRecord, Store, StoreError, StoredSecret, TokenMode, TokenSet, VaultError};

impl Store {
    /// Checks, before a sign-in, that its tokens can be saved: in keychain mode the keychain
    /// must answer and take an entry of the largest size written (see
    /// [`super::Keychain::probe_largest_entry`]). Blocking: it may wait on the keychain.
    pub fn check_before_login(&self) -> Result<(), StoreError> {
        if self.mode == TokenMode::Keychain {
            self.keychain.probe_largest_entry()?;
        }
        Ok(())
    }

    /// An account's tokens from wherever they are. May wait on the keychain: call it off the
    /// request path, once per account and token change.
    pub fn read_tokens(&self, record: &AccountRecord) -> Result<TokenSet, StoreError> {
        if record.tokens_in_keychain() {
            // The file says keychain: read from there even in file mode.
            return Ok(self.read_keychain(&record.key())?.0);
        }
        Ok(TokenSet {
            access: record.access.clone(),
            refresh: record.refresh_token().map(|t| StoredSecret(t.to_string())),
            id_token: None,
        })
    }

    /// Saves new tokens for `key` in the current store, then records the change in the file.
    /// `upsert` creates the account when it is not in the file yet (a new login); `apply`
    /// updates its metadata. Returns whether the account already existed. Takes the account's
    /// refresh lock, so a login never interleaves with a refresh's write.
    pub fn save_tokens(
        &self,
        key: &str,
        tokens: &TokenSet,
        expires: Option<i64>,
        upsert: Option<AccountRecord>,
        apply: impl FnOnce(&mut AccountRecord),
    ) -> Result<bool, StoreError> {
        let _refreshing = self.refresh_lock(key)?;
        // Keychain first: the file must never point to tokens that are not there yet.
        if self.mode == TokenMode::Keychain {
            self.write_keychain(key, tokens, None)?;
        }
        self.record_token_write(key, tokens, expires, upsert, apply)
    }

    /// The file's side of a token write: tokens (file mode) or where they are (keychain
    /// mode), the expiry, `tokensUpdatedAt` so other processes reload, and `apply`.
    fn record_token_write(
        &self,
        key: &str,
        tokens: &TokenSet,
        expires: Option<i64>,
        upsert: Option<AccountRecord>,
        apply: impl FnOnce(&mut AccountRecord),
    ) -> Result<bool, StoreError> {
        let now = crate::accounts::now_ms();
        let mode = self.mode;
        self.update_accounts(|file| {
            let existed = file.accounts.iter().any(|r| r.key() == key);
            if !existed {
                match upsert {
                    Some(record) => file.accounts.push(record),
                    None => return false,
                }
            }
            let Some(record) = file.accounts.iter_mut().find(|r| r.key() == key) else {
                return existed;
            };
            place_tokens(record, tokens, mode);
            if tokens.access.is_some() {
                record.expires = expires;
            }
            record.tokens_updated_at = Some(now);
            apply(record);
            existed
        })
    }

    /// Saves the answer of a refresh of `key`. A refresh answer may leave out any token
    /// (protocol §1.7), and an absent one stays valid: the keychain entry keeps its stored
    /// value for each absent field, as the file does. Returns whether the account still exists;
    /// when it does not, no token of it is left in the keychain. The caller holds the account's
    /// refresh lock ([`Store::refresh_lock`]) from before the refresh until this returns.
    pub fn save_refreshed_tokens(
        &self,
        key: &str,
        answer: &TokenSet,
        expires: Option<i64>,
        apply: impl FnOnce(&mut AccountRecord),
    ) -> Result<bool, StoreError> {
        if self.mode == TokenMode::Keychain {
            let (stored, seal_key) = match self.read_keychain(key) {
                Ok(stored) => stored,
                // Nothing to keep: the answer is all there is.
                Err(StoreError::Vault(VaultError::Missing(_) | VaultError::Garbled(_))) => {
                    (TokenSet::default(), None)
                }
                Err(e) => return Err(e),
            };
            let merged = TokenSet {
                access: answer.access.clone().or(stored.access),
                refresh: answer.refresh.clone().or(stored.refresh),
                id_token: answer.id_token.clone().or(stored.id_token),
            };
            self.write_keychain(key, &merged, seal_key)?;
        }
        let exists = self.record_token_write(key, answer, expires, None, apply)?;
        if !exists && self.mode == TokenMode::Keychain {
            // Removed (or logged out) while the refresh ran: its delete may have come before
            // the write above, which would leave a live token that nothing points to.
            self.delete_keychain(key)?;
        }
        Ok(exists)
    }

    /// Deletes an account's keychain entry, if it has one.
    pub fn delete_tokens(&self, record: &AccountRecord) -> Result<(), StoreError> {
        if record.tokens_in_keychain() {
            self.delete_keychain(&record.key())?;
        }
        Ok(())
    }

    /// Moves every account's tokens into the current store (after the user switched
    /// `CODEX_PROXY_TOKEN_STORE`). Each account is written to its new place and read back
    /// before the old copy goes, so a failure half-way loses nothing. Returns how many moved.
    /// Each account moves under its refresh lock, read again once the lock is held: a router
    /// refreshing it meanwhile would otherwise have its new tokens overwritten by spent ones.
    pub fn move_tokens_to_current_store(&self) -> Result<usize, StoreError> {
        let in_keychain = self.mode == TokenMode::Keychain;
        let keys: Vec<String> = self
            .load_accounts()?
            .accounts
            .iter()
            .filter(|r| r.tokens_in_keychain() != in_keychain)
            .map(AccountRecord::key)
            .collect();
        let mut moved = 0;
        for key in keys {
            let _refreshing = self.refresh_lock(&key)?;
            let file = self.load_accounts()?;
            let Some(record) = file
                .accounts
                .iter()
                .find(|r| r.key() == key && r.tokens_in_keychain() != in_keychain)
            else {
                continue;
            };
            if self.move_one(record)? {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Moves one account's tokens; the caller holds its refresh lock. Returns whether any
    /// tokens moved.
    fn move_one(&self, record: &AccountRecord) -> Result<bool, StoreError> {
        let in_keychain = self.mode == TokenMode::Keychain;
        let tokens = match self.read_tokens(record) {
            Ok(tokens) => tokens,
            // An entry deleted behind our back must not lock out every other account:
            // this one is flagged for a new login and the rest move on.
            Err(StoreError::Vault(VaultError::Missing(_) | VaultError::Garbled(_))) => {
                let key = record.key();
                self.update_accounts(|file| {
                    if let Some(r) = file.accounts.iter_mut().find(|r| r.key() == key) {
                        r.token_store = None;
                        r.needs_login = Some(super::NeedsLogin {
                            code: "keychain_entry_missing".to_string(),
                            since: crate::accounts::now_ms(),
                        });
                    }
                })?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if tokens.refresh.is_none() && tokens.access.is_none() {
            return Ok(false);
        }
        let key = record.key();
        if in_keychain {
            self.write_keychain(&key, &tokens, None)?;
            if self.read_keychain(&key)?.0 != tokens {
                return Err(StoreError::Vault(super::VaultError::Other(format!(
                    "the keychain did not keep the tokens of {key}; nothing was moved for it"
                ))));
            }
        }
        let old = record.clone();
        let mode = self.mode;
        self.update_accounts(|file| {
            if let Some(r) = file.accounts.iter_mut().find(|r| r.key() == key) {
                place_tokens(r, &tokens, mode);
                r.tokens_updated_at = Some(crate::accounts::now_ms());
            }
        })?;
        if !in_keychain {
            // The file holds them now; the old keychain entry can go.
            let _ = self.delete_tokens(&old);
        }
        Ok(true)
    }
}

impl Store {
    /// An account's tokens from its keychain entry (and the sealed file, for an entry of
    /// today's shape), with the entry's seal key for the next write.
    fn read_keychain(&self, key: &str) -> Result<(TokenSet, Option<SealKey>), StoreError> {
        let entry = self.keychain.read_entry(key)?;
        let Some(text) = &entry.seal_key else {
            // The old shape: the three tokens in the entry itself.
            let tokens = TokenSet {
                access: entry.access,
                refresh: entry.refresh,
                id_token: entry.id_token,
            };
            return Ok((tokens, None));
        };
        let seal_key =
            SealKey::from_text(text).ok_or_else(|| VaultError::Garbled(key.to_string()))?;
        // A blob that does not open (a writer died between the entry and the file) only
        // costs a refresh: the refresh token is in the entry.
        let pair = SealedTokens::beside(&self.accounts_path)
            .get(key)?
            .and_then(|blob| sealed::open(&seal_key, key, &blob))
            .unwrap_or_default();
        let tokens = TokenSet {
            access: pair.access,
            refresh: entry.refresh,
            id_token: pair.id_token,
        };
        Ok((tokens, Some(seal_key)))
    }

    /// Writes an account's tokens in today's shape: first the entry (refresh token and seal
    /// key) in one keychain call, so the rotated refresh token is safe once it returns, then
    /// the sealed access and id tokens. `seal_key` is the entry's current key, kept so that
    /// readers meanwhile still open the sealed file; `None` makes a new one.
    fn write_keychain(
        &self,
        key: &str,
        tokens: &TokenSet,
        seal_key: Option<SealKey>,
    ) -> Result<(), StoreError> {
        let seal_key = match seal_key {
            Some(seal_key) => seal_key,
            None => SealKey::generate()?,
        };
        let entry = Entry {
            refresh: tokens.refresh.clone(),
            seal_key: Some(seal_key.to_text()),
            ..Entry::default()
        };
        self.keychain.write_entry(key, &entry)?;
        let pair = SealedPair {
            access: tokens.access.clone(),
            id_token: tokens.id_token.clone(),
        };
        let blob = sealed::seal(&seal_key, key, &pair)?;
        SealedTokens::beside(&self.accounts_path).put(key, blob)
    }

    /// Deletes the entry, then the sealed tokens it was the key to.
    fn delete_keychain(&self, key: &str) -> Result<(), StoreError> {
        self.keychain.delete(key)?;
        SealedTokens::beside(&self.accounts_path).remove(key)
    }
}

fn place_tokens(record: &mut AccountRecord, tokens: &TokenSet, mode: TokenMode) {
    match mode {
        TokenMode::Keychain => {
            record.token_store = Some(KEYCHAIN.to_string());
            record.access = None;
            if let Some(parts) = record.parts.as_mut() {
                parts.refresh_token = None;
            }
        }
        TokenMode::File => {
            record.token_store = None;
            if let Some(access) = &tokens.access {
                record.access = Some(access.clone());
            }
            if let Some(refresh) = &tokens.refresh {
                record.set_refresh_token(&refresh.0);
            }
        }
    }
}
