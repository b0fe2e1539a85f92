//! The account pool: accounts as loaded from the store, with their tokens, usage, limits
//! and cooldowns, kept in step with the file that other processes may change.

mod attention;
mod pace;
mod poll;
mod refresh;
mod unsaved;
pub mod usage;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::oauth;
use crate::sensitive::{AccessToken, RefreshToken};
use crate::store::{AccountRecord, FileStamp, Store, StoreError};
pub use attention::{deactivation_code, Attention};
use pace::Pace;
use unsaved::{keep_unsaved, memory_wins};
pub use usage::{Usage, Window};

/// Limits recorded for every model at once use this key.
pub const ALL_MODELS: &str = "*";

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("no account matches {0:?}")]
    NotFound(String),
    #[error("account {account} needs a new login ({code}); run `cma login`")]
    NeedsLogin { account: String, code: String },
    #[error("account {account} has no refresh token; log in to it again")]
    NoRefreshToken { account: String },
    #[error(transparent)]
    Refresh(#[from] oauth::RefreshError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] crate::store::VaultError),
    #[error("waiting for another process's token refresh failed: {0}")]
    Lock(String),
    #[error("the token refresh stopped unexpectedly: {0}")]
    RefreshTask(String),
}

/// An account as the router holds it in memory.
#[derive(Clone, Debug)]
pub struct Account {
    pub key: String,
    pub record: AccountRecord,
    access: Option<AccessToken>,
    refresh: Option<RefreshToken>,
    /// False while keychain tokens have not been read (or changed elsewhere since).
    tokens_loaded: bool,
    /// Bumped whenever the tokens change, so concurrent refreshers can tell they are late.
    generation: u64,
    /// Epoch ms of a refresh whose tokens the store refused (disk full, keychain locked).
    /// Memory then holds the only live refresh token: it wins over older copies on disk and
    /// is written again until the store takes it.
    unsaved_since: Option<i64>,
    pub usage: Option<Usage>,
    /// The first usage seen in the current 5-hour window, to measure the pace against.
    pace: Option<Pace>,
    /// Epoch ms until which the account rests after a transient failure.
    pub cooldown_until: i64,
}

impl Account {
    pub fn from_record(record: AccountRecord) -> Account {
        // Keychain tokens are read later, off the request path, once per change.
        let in_file = !record.tokens_in_keychain();
        Account {
            key: record.key(),
            access: record
                .access
                .as_ref()
                .filter(|_| in_file)
                .map(|s| AccessToken::new(s.0.clone())),
            refresh: record
                .refresh_token()
                .filter(|_| in_file)
                .map(RefreshToken::new),
            tokens_loaded: in_file,
            generation: 0,
            unsaved_since: None,
            usage: None,
            pace: None,
            cooldown_until: 0,
            record,
        }
    }

    /// Access-token expiry in epoch ms, from the file or else from the JWT itself.
    pub(crate) fn expires_ms(&self) -> Option<i64> {
        self.record.expires.or_else(|| {
            let claims = oauth::claims::decode(self.access.as_ref()?.expose())?;
            claims.expires_at.map(|s| s * 1000)
        })
    }

    /// Epoch ms at which `model` (or every model) is usable again; 0 when it is now.
    pub fn limited_until(&self, model: &str) -> i64 {
        let r = &self.record.rate_limit_resets;
        r.get(model)
            .copied()
            .unwrap_or(0)
            .max(r.get(ALL_MODELS).copied().unwrap_or(0))
    }

    /// When the 5-hour window runs out at the pace seen since it was first observed (at least
    /// five minutes of it); `None` when it resets first or nothing was used.
    pub fn forecast_empty_at(&self, now_ms: i64) -> Option<i64> {
        let primary = self.usage.as_ref()?.primary.as_ref()?;
        self.pace?.empty_at(primary, now_ms)
    }

    /// Out of service until the user signs in again: a dead sign-in or a deactivation.
    pub fn needs_login(&self) -> bool {
        self.record.needs_login.is_some()
    }

    /// What the user must do something about, when anything.
    pub fn attention(&self) -> Option<Attention> {
        let needs = self.record.needs_login.as_ref()?;
        Some(Attention::from_code(&needs.code))
    }
}

/// What a request needs to go upstream as this account.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_token: AccessToken,
    pub account_id: Option<String>,
    pub generation: u64,
}

struct PoolState {
    stamp: Option<FileStamp>,
    accounts: Vec<Account>,
    preferred: Option<String>,
    /// Set when the file went bad while running: the last good pool keeps serving.
    load_error: Option<String>,
}

impl PoolState {
    fn find(&self, key: &str) -> Result<&Account, AccountsError> {
        self.accounts
            .iter()
            .find(|a| a.key == key)
            .ok_or_else(|| AccountsError::NotFound(key.to_string()))
    }
}

struct PoolInner {
    store: Store,
    http: reqwest::Client,
    token_url: String,
    state: Mutex<PoolState>,
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Epoch ms of the last attempt to save tokens the store refused, to space them out.
    last_save_retry: Mutex<i64>,
    /// Told of every usage reading that changes an account's figures (the history).
    usage_observer: std::sync::OnceLock<UsageObserver>,
    /// The runtime the pool was opened on, which outlives the router's lanes: token
    /// refreshes run there, so stopping the router never cuts one after its token was sent.
    home: Option<tokio::runtime::Handle>,
}

/// Called with an account's key, its display name and a usage reading that changed its
/// figures.
pub type UsageObserver = Arc<dyn Fn(&str, &str, &Usage) + Send + Sync>;

/// The shared pool; clones are cheap handles to the same accounts.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl Pool {
    /// Loads the pool; refuses a file that does not parse.
    pub fn open(
        store: Store,
        http: reqwest::Client,
        token_url: String,
    ) -> Result<Pool, StoreError> {
        let stamp = store.accounts_stamp();
        let file = store.load_accounts()?;
        let state = PoolState {
            stamp,
            preferred: file.preferred_account.clone(),
            accounts: file
                .accounts
                .into_iter()
                .map(Account::from_record)
                .collect(),
            load_error: None,
        };
        Ok(Pool {
            inner: Arc::new(PoolInner {
                store,
                http,
                token_url,
                state: Mutex::new(state),
                flights: Mutex::new(HashMap::new()),
                last_save_retry: Mutex::new(0),
                usage_observer: std::sync::OnceLock::new(),
                home: tokio::runtime::Handle::try_current().ok(),
            }),
        })
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding this lock cannot leave the pool half-updated in a way that
        // matters more than stopping the router would, so keep serving.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Picks up accounts added, removed or re-logged-in by another process. A cheap `stat`
    /// when nothing changed.
    pub fn sync_from_disk(&self) {
        self.retry_unsaved_tokens();
        let stamp = self.inner.store.accounts_stamp();
        if self.state().stamp == stamp {
            return;
        }
        match self.inner.store.load_accounts() {
            Ok(file) => {
                let mut state = self.state();
                state.stamp = stamp;
                state.preferred = file.preferred_account.clone();
                state.load_error = None;
                let mut old: HashMap<String, Account> = state
                    .accounts
                    .drain(..)
                    .map(|a| (a.key.clone(), a))
                    .collect();
                state.accounts = file
                    .accounts
                    .into_iter()
                    .map(|record| merge(old.remove(&record.key()), record))
                    .collect();
            }
            Err(e) => {
                let mut state = self.state();
                if state.load_error.is_none() {
                    tracing::error!("{e}; serving the accounts loaded before");
                }
                state.stamp = stamp;
                state.load_error = Some(e.to_string());
            }
        }
    }

    /// A copy of every account, in file order.
    pub fn accounts(&self) -> Vec<Account> {
        self.state().accounts.clone()
    }

    pub fn preferred(&self) -> Option<String> {
        self.state().preferred.clone()
    }

    pub fn load_error(&self) -> Option<String> {
        self.state().load_error.clone()
    }

    /// Credentials for `key`, refreshing first when the access token has expired.
    pub async fn credentials(&self, key: &str, now_ms: i64) -> Result<Credentials, AccountsError> {
        self.ensure_tokens(key).await?;
        if let Some(found) = self.fresh_credentials(key, now_ms, None)? {
            return Ok(found);
        }
        self.refresh_single_flight(key, now_ms, None).await
    }

    /// After the upstream refused `stale` with a 401: refresh once (or take the tokens a
    /// concurrent refresh already got) and return the new credentials.
    pub async fn credentials_after_401(
        &self,
        key: &str,
        stale: &Credentials,
        now_ms: i64,
    ) -> Result<Credentials, AccountsError> {
        self.refresh_single_flight(key, now_ms, Some(stale.generation))
            .await
    }

    /// Reads an account's tokens from the keychain when memory does not have them. Only the
    /// first request after a login or a change elsewhere waits for this.
    async fn ensure_tokens(&self, key: &str) -> Result<(), AccountsError> {
        let record = {
            let state = self.state();
            let account = state.find(key)?;
            if account.tokens_loaded {
                return Ok(());
            }
            account.record.clone()
        };
        let store = self.inner.store.clone();
        let read = record.clone();
        let tokens = tokio::task::spawn_blocking(move || store.read_tokens(&read))
            .await
            .map_err(|e| AccountsError::Lock(e.to_string()))??;
        let mut state = self.state();
        if let Some(a) = state.accounts.iter_mut().find(|a| a.key == key) {
            if a.record.tokens_updated_at == record.tokens_updated_at && !a.tokens_loaded {
                a.access = tokens.access.map(|t| AccessToken::new(t.0));
                a.refresh = tokens.refresh.map(|t| RefreshToken::new(t.0));
                a.tokens_loaded = true;
            }
        }
        Ok(())
    }

    fn fresh_credentials(
        &self,
        key: &str,
        now_ms: i64,
        stale_generation: Option<u64>,
    ) -> Result<Option<Credentials>, AccountsError> {
        let state = self.state();
        let account = state.find(key)?;
        if let Some(needs) = &account.record.needs_login {
            return Err(AccountsError::NeedsLogin {
                account: account.record.display_name(),
                code: needs.code.clone(),
            });
        }
        let superseded = stale_generation.is_some_and(|g| g != account.generation);
        // Without a known expiry the token is tried as is; a 401 then triggers the refresh.
        let unexpired = account.expires_ms().is_none_or(|exp| exp > now_ms + 30_000);
        let usable = stale_generation.is_none() && unexpired;
        Ok(match &account.access {
            Some(token) if superseded || usable => Some(Credentials {
                access_token: token.clone(),
                account_id: account.record.account_id.clone(),
                generation: account.generation,
            }),
            _ => None,
        })
    }

    /// Records usage learned from an answer.
    /// Tells `observer` of every usage reading that changes an account's figures (set once:
    /// read on every answer, so without a lock).
    pub fn observe_usage(&self, observer: UsageObserver) {
        let _ = self.inner.usage_observer.set(observer);
    }

    /// Follows each account's 5-hour pace through earlier readings (`(account key, epoch ms,
    /// window)`, oldest first, from the usage history), so a restart keeps the forecast.
    /// Accounts that already read their usage since the start are left as they are.
    pub fn restore_pace<'a>(&self, readings: impl IntoIterator<Item = (&'a str, i64, Window)>) {
        let mut state = self.state();
        let mut restored: HashMap<String, Pace> = HashMap::new();
        for (key, at_ms, window) in readings {
            let baseline = restored.get(key).copied();
            restored.insert(key.to_string(), Pace::follow(baseline, at_ms, &window));
        }
        for a in state.accounts.iter_mut().filter(|a| a.pace.is_none()) {
            a.pace = restored.get(&a.key).copied();
        }
    }

    pub fn record_usage(&self, key: &str, usage: Usage) {
        let observer = self.inner.usage_observer.get();
        let mut observed = None;
        let mut state = self.state();
        if let Some(a) = state.accounts.iter_mut().find(|a| a.key == key) {
            if observer.is_some() && usage::changes(a.usage.as_ref(), &usage) {
                observed = Some((a.record.display_name(), usage.clone()));
            }
            if usage.plan.is_some() {
                a.record.plan_type = usage.plan.clone();
            }
            if let Some(p) = &usage.primary {
                a.pace = Some(Pace::follow(a.pace, usage.updated_at * 1000, p));
            }
            a.usage = Some(usage);
        }
        drop(state);
        if let (Some(observer), Some((name, usage))) = (observer, observed) {
            observer(key, &name, &usage);
        }
    }

    /// Marks `model` (or every model) limited on `key` until `until_ms`, in memory now and
    /// in the file in the background so other processes and restarts know it too.
    pub fn record_limit(&self, key: &str, model: &str, until_ms: i64) {
        {
            let mut state = self.state();
            let Some(a) = state.accounts.iter_mut().find(|a| a.key == key) else {
                return;
            };
            a.record
                .rate_limit_resets
                .insert(model.to_string(), until_ms);
        }
        let (store, key, model) = (self.inner.store.clone(), key.to_string(), model.to_string());
        tokio::task::spawn_blocking(move || {
            let result = store.update_accounts(|file| {
                if let Some(r) = file.accounts.iter_mut().find(|r| r.key() == key) {
                    r.rate_limit_resets.insert(model, until_ms);
                    prune_past_limits(&mut r.rate_limit_resets, until_ms.min(now_ms()));
                }
            });
            if let Err(e) = result {
                tracing::warn!("could not save a usage limit: {e}");
            }
        });
    }

    /// Rests an account after a transient failure (a burst 429, a 5xx, a dead connection).
    pub fn record_cooldown(&self, key: &str, until_ms: i64) {
        let mut state = self.state();
        if let Some(a) = state.accounts.iter_mut().find(|a| a.key == key) {
            a.cooldown_until = a.cooldown_until.max(until_ms);
        }
    }

    /// The account served: its last use is now, and any rest after an error is over.
    pub fn mark_used(&self, key: &str, now_ms: i64) {
        let mut state = self.state();
        if let Some(a) = state.accounts.iter_mut().find(|a| a.key == key) {
            a.record.last_used = Some(now_ms);
            a.cooldown_until = 0;
        }
    }
}

/// Keeps what only memory knows (usage, cooldown, generation) across a reload, and takes
/// tokens from disk, which another process may have rotated; unless memory holds tokens the
/// store refused and the disk's are older (written before that refresh).
fn merge(old: Option<Account>, record: AccountRecord) -> Account {
    let old = match old {
        Some(old) if memory_wins(&old, &record) => return keep_unsaved(old, record),
        other => other,
    };
    let mut fresh = Account::from_record(record);
    if let Some(old) = old {
        let same_tokens = if fresh.record.tokens_in_keychain() {
            old.record.tokens_in_keychain()
                && old.record.tokens_updated_at == fresh.record.tokens_updated_at
        } else {
            old.refresh == fresh.refresh && old.access == fresh.access
        };
        if same_tokens && !fresh.tokens_loaded {
            fresh.access = old.access.clone();
            fresh.refresh = old.refresh.clone();
            fresh.tokens_loaded = old.tokens_loaded;
        }
        fresh.generation = if same_tokens {
            old.generation
        } else {
            old.generation + 1
        };
        // Our own writes land in the background; until they do, memory knows better.
        for (model, until) in old.record.rate_limit_resets {
            let entry = fresh.record.rate_limit_resets.entry(model).or_insert(until);
            *entry = (*entry).max(until);
        }
        if same_tokens && fresh.record.needs_login.is_none() {
            fresh.record.needs_login = old.record.needs_login;
        }
        fresh.usage = old.usage;
        fresh.pace = old.pace;
        fresh.cooldown_until = old.cooldown_until;
        fresh.record.last_used = fresh.record.last_used.max(old.record.last_used);
    }
    fresh
}

fn prune_past_limits(resets: &mut BTreeMap<String, i64>, now_ms: i64) {
    resets.retain(|_, until| *until > now_ms);
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
