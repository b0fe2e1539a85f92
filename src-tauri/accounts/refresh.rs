//! Single-flight token refresh: one refresh per account at a time, in this process (an
//! async lock) and across processes (a file lock), with the rotated token saved first.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::{AccountsError, Credentials, Pool};
use crate::oauth::{self, RefreshError};
use crate::sensitive::{AccessToken, RefreshToken};
use crate::store::{FileLock, NeedsLogin, StoredSecret, TokenSet};

/// How long to wait for another process that holds the refresh lock.
const CROSS_PROCESS_WAIT: Duration = Duration::from_secs(60);

impl Pool {
    /// Refreshes `key` (or takes what a concurrent refresh got). Once a refresh token is
    /// sent the issuer has spent it, so the refresh runs as a task of its own: a caller that
    /// goes away (Codex interrupted, a client timeout, a closed socket) drops only its wait,
    /// never the answer or its save.
    pub(super) async fn refresh_single_flight(
        &self,
        key: &str,
        now_ms: i64,
        stale_generation: Option<u64>,
    ) -> Result<Credentials, AccountsError> {
        let pool = self.clone();
        let key = key.to_string();
        let refresh = async move { pool.refresh_detached(&key, now_ms, stale_generation).await };
        let task = match &self.inner.home {
            Some(home) => home.spawn(refresh),
            None => tokio::spawn(refresh),
        };
        task.await
            .map_err(|e| AccountsError::RefreshTask(e.to_string()))?
    }

    async fn refresh_detached(
        &self,
        key: &str,
        now_ms: i64,
        stale_generation: Option<u64>,
    ) -> Result<Credentials, AccountsError> {
        let flight = self.flight(key);
        let _in_process = flight.lock().await;
        // Someone may have refreshed while we queued.
        if let Some(found) = self.fresh_credentials(key, now_ms, stale_generation)? {
            return Ok(found);
        }

        let _cross_process = self.cross_process_lock(key).await?;

        // Another process may have refreshed already: its tokens are on disk, or only in the
        // keychain if it died between writing there and writing the file.
        let before = self.generation(key);
        self.sync_from_disk();
        self.ensure_tokens(key).await?;
        self.adopt_newer_keychain_tokens(key).await?;
        if self.generation(key) != before {
            if let Some(found) = self.fresh_credentials(key, now_ms, None)? {
                return Ok(found);
            }
        }

        let refresh_token = self.refresh_token(key)?;
        // `instrument`, not `enter`: a guard held across an await would tag whatever else
        // this worker thread runs meanwhile with this account.
        let span = tracing::info_span!("refresh", account = %self.display_name(key));
        self.spend_refresh_token(key, &refresh_token, now_ms)
            .instrument(span)
            .await
    }

    async fn spend_refresh_token(
        &self,
        key: &str,
        refresh_token: &RefreshToken,
        now_ms: i64,
    ) -> Result<Credentials, AccountsError> {
        match oauth::refresh(&self.inner.http, &self.inner.token_url, refresh_token).await {
            Ok(tokens) => {
                self.save_refreshed(key, tokens).await;
                tracing::info!("access token refreshed");
                self.fresh_credentials(key, now_ms, None)?
                    .ok_or_else(|| AccountsError::NotFound(key.to_string()))
            }
            Err(RefreshError::Permanent { code }) => {
                tracing::warn!(%code, "refresh token rejected; the account needs a new login");
                self.save_needs_login(key, &code, now_ms).await;
                Err(AccountsError::NeedsLogin {
                    account: self.display_name(key),
                    code,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The account's refresh lock shared with other processes, waited for off the runtime.
    pub(super) async fn cross_process_lock(&self, key: &str) -> Result<FileLock, AccountsError> {
        let store = self.inner.store.clone();
        let lock_key = key.to_string();
        let locking = tokio::task::spawn_blocking(move || store.refresh_lock(&lock_key));
        tokio::time::timeout(CROSS_PROCESS_WAIT, locking)
            .await
            .map_err(|_| AccountsError::Lock("timed out".to_string()))?
            .map_err(|e| AccountsError::Lock(e.to_string()))?
            .map_err(AccountsError::from)
    }

    pub(super) fn flight(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.inner.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.entry(key.to_string()).or_default().clone()
    }

    /// Under the refresh lock the keychain entry is the newest copy of a keychain account's
    /// tokens (every writer puts them there before the file). Takes them when they differ
    /// from memory, unless memory holds tokens the store refused.
    async fn adopt_newer_keychain_tokens(&self, key: &str) -> Result<(), AccountsError> {
        let record = {
            let state = self.state();
            let account = state.find(key)?;
            if !account.record.tokens_in_keychain() || account.unsaved_since.is_some() {
                return Ok(());
            }
            account.record.clone()
        };
        let store = self.inner.store.clone();
        let read = tokio::task::spawn_blocking(move || store.read_tokens(&record)).await;
        let stored = match read {
            Ok(Ok(stored)) => stored,
            // Not worse than before this check: the refresh goes on with what memory has.
            Ok(Err(e)) => {
                tracing::warn!("could not check the keychain for newer tokens: {e}");
                return Ok(());
            }
            Err(e) => return Err(AccountsError::Lock(e.to_string())),
        };
        let mut state = self.state();
        if let Some(a) = state.accounts.iter_mut().find(|a| a.key == key) {
            let newer = stored
                .refresh
                .as_ref()
                .is_some_and(|r| a.refresh.as_ref().map(RefreshToken::expose) != Some(&r.0));
            if newer && a.unsaved_since.is_none() {
                tracing::info!("took newer tokens another router left in the keychain");
                a.access = stored.access.map(|t| AccessToken::new(t.0));
                a.refresh = stored.refresh.map(|t| RefreshToken::new(t.0));
                // The file's expiry is the old token's; the new JWT's own `exp` counts.
                a.record.expires = None;
                a.generation += 1;
            }
        }
        Ok(())
    }

    fn generation(&self, key: &str) -> Option<u64> {
        self.state()
            .accounts
            .iter()
            .find(|a| a.key == key)
            .map(|a| a.generation)
    }

    /// The account's label or email, without copying the pool.
    pub fn display_name(&self, key: &str) -> String {
        self.state()
            .accounts
            .iter()
            .find(|a| a.key == key)
            .map(|a| a.record.display_name())
            .unwrap_or_else(|| key.to_string())
    }

    fn refresh_token(&self, key: &str) -> Result<RefreshToken, AccountsError> {
        let state = self.state();
        let account = state.find(key)?;
        account
            .refresh
            .clone()
            .ok_or_else(|| AccountsError::NoRefreshToken {
                account: account.record.display_name(),
            })
    }

    /// The old refresh token is burned from here on, so the new one goes to disk before
    /// anything uses it. If the disk write fails the tokens still live in memory, which is
    /// the only copy left; the error is logged loudly.
    async fn save_refreshed(&self, key: &str, tokens: oauth::RefreshedTokens) {
        let access = tokens.access_token.map(|t| t.expose().to_string());
        let refresh = tokens.refresh_token.map(|t| t.expose().to_string());
        let expires = access
            .as_deref()
            .and_then(oauth::claims::decode)
            .and_then(|c| c.expires_at)
            .map(|s| s * 1000);
        let claims = tokens
            .id_token
            .as_ref()
            .and_then(|t| oauth::claims::decode(t.expose()));
        let apply = {
            let (access, claims) = (access.clone(), claims.clone());
            move |record: &mut crate::store::AccountRecord| {
                if access.is_some() {
                    record.expires = expires;
                }
                if let Some(plan) = claims.as_ref().and_then(|c| c.plan.clone()) {
                    record.plan_type = Some(plan);
                }
                record.needs_login = None;
            }
        };
        // Only what the answer carries: the store keeps its values for the rest.
        let tokens = TokenSet {
            access: access.clone().map(StoredSecret),
            refresh: refresh.clone().map(StoredSecret),
            id_token: tokens
                .id_token
                .map(|t| StoredSecret(t.expose().to_string())),
        };
        let store = self.inner.store.clone();
        let file_key = key.to_string();
        let file_apply = apply.clone();
        let saved = tokio::task::spawn_blocking(move || {
            store.save_refreshed_tokens(&file_key, &tokens, expires, file_apply)
        })
        .await;
        let saved = match saved {
            Ok(Ok(true)) => true,
            Ok(Ok(false)) => {
                tracing::warn!("the account was removed while its token refreshed");
                true
            }
            Ok(Err(e)) => {
                tracing::error!("the rotated refresh token could not be saved; it stays in memory and is saved again later: {e}");
                false
            }
            Err(e) => {
                tracing::error!("the rotated refresh token could not be saved; it stays in memory and is saved again later: {e}");
                false
            }
        };
        let mut state = self.state();
        if let Some(account) = state.accounts.iter_mut().find(|a| a.key == key) {
            apply(&mut account.record);
            if let Some(a) = access {
                account.access = Some(AccessToken::new(a));
            }
            if let Some(r) = refresh {
                account.refresh = Some(RefreshToken::new(r));
            }
            account.unsaved_since = (!saved).then(super::now_ms);
            account.generation += 1;
        }
    }

    async fn save_needs_login(&self, key: &str, code: &str, now_ms: i64) {
        let needs = NeedsLogin {
            code: code.to_string(),
            since: now_ms,
        };
        {
            let mut state = self.state();
            if let Some(a) = state.accounts.iter_mut().find(|a| a.key == key) {
                a.record.needs_login = Some(needs.clone());
            }
        }
        let store = self.inner.store.clone();
        let file_key = key.to_string();
        let saved = tokio::task::spawn_blocking(move || {
            store.update_accounts(|file| {
                if let Some(r) = file.accounts.iter_mut().find(|r| r.key() == file_key) {
                    r.needs_login = Some(needs);
                }
            })
        })
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::warn!("could not save that the account needs a new login");
        }
    }
}
