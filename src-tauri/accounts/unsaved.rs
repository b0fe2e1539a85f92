//! Tokens a refresh got but the store refused (disk full, read-only folder, keychain
//! locked): the only live copy is in memory, so it wins over older copies on disk during a
//! reload and is written again, a few seconds apart, until the store takes it.

use super::{now_ms, Account, Pool};
use crate::store::{AccountRecord, StoredSecret, TokenSet};

/// Minimum time between two attempts to save refused tokens.
const RETRY_EVERY_MS: i64 = 1_000;

impl Pool {
    /// Starts, in the background, a new save of every account whose tokens the store refused,
    /// at most once per [`RETRY_EVERY_MS`]. Cheap when there are none.
    pub(super) fn retry_unsaved_tokens(&self) {
        let keys: Vec<String> = self
            .state()
            .accounts
            .iter()
            .filter(|a| a.unsaved_since.is_some())
            .map(|a| a.key.clone())
            .collect();
        if keys.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut last = self
                .inner
                .last_save_retry
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = now_ms();
            if now - *last < RETRY_EVERY_MS {
                return;
            }
            *last = now;
        }
        for key in keys {
            let pool = self.clone();
            runtime.spawn(async move { pool.save_unsaved(&key).await });
        }
    }

    /// Writes an account's refused tokens, as a refresh would: under its refresh locks, so
    /// it never overwrites a newer refresh or login.
    async fn save_unsaved(&self, key: &str) {
        let flight = self.flight(key);
        let _in_process = flight.lock().await;
        let Ok(_cross_process) = self.cross_process_lock(key).await else {
            return;
        };
        let (tokens, expires, generation) = {
            let state = self.state();
            let Some(account) = state.accounts.iter().find(|a| a.key == key) else {
                return;
            };
            if account.unsaved_since.is_none() {
                return;
            }
            let tokens = TokenSet {
                access: account
                    .access
                    .as_ref()
                    .map(|t| StoredSecret(t.expose().to_string())),
                refresh: account
                    .refresh
                    .as_ref()
                    .map(|t| StoredSecret(t.expose().to_string())),
                id_token: None,
            };
            (tokens, account.record.expires, account.generation)
        };
        let store = self.inner.store.clone();
        let file_key = key.to_string();
        let saved = tokio::task::spawn_blocking(move || {
            store.save_refreshed_tokens(&file_key, &tokens, expires, |_| {})
        })
        .await;
        match saved {
            Ok(Ok(_)) => {
                let mut state = self.state();
                if let Some(a) = state.accounts.iter_mut().find(|a| a.key == key) {
                    if a.generation == generation {
                        a.unsaved_since = None;
                        tracing::info!(account = %a.record.display_name(), "the refreshed tokens are saved now");
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!("the refreshed tokens still cannot be saved: {e}"),
            Err(e) => tracing::warn!("the refreshed tokens still cannot be saved: {e}"),
        }
    }
}

/// The account with its unsaved tokens (and their expiry) and the rest from disk.
pub(super) fn keep_unsaved(mut old: Account, record: AccountRecord) -> Account {
    let kept = old.record;
    old.record = AccountRecord {
        expires: kept.expires,
        plan_type: kept.plan_type,
        needs_login: kept.needs_login,
        last_used: record.last_used.max(kept.last_used),
        ..record
    };
    for (model, until) in kept.rate_limit_resets {
        let entry = old.record.rate_limit_resets.entry(model).or_insert(until);
        *entry = (*entry).max(until);
    }
    old
}

/// Whether an account's unsaved tokens are newer than what the disk says.
pub(super) fn memory_wins(old: &Account, record: &AccountRecord) -> bool {
    let Some(since) = old.unsaved_since else {
        return false;
    };
    // A login or import written after our refresh is newer than what we hold.
    record.tokens_updated_at.is_none_or(|at| at < since)
}
