//! Choosing the account for a request: session and turn bindings first, then the strategy
//! for sessions that have none (or whose account can no longer serve).

mod bindings;
mod choice;
mod session;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use bindings::Bindings;
pub use choice::{availability, choose_account, first_awake, Availability};
pub use session::RequestIdentity;

use crate::accounts::Pool;
use crate::settings::Strategy;

/// The routing state shared by every request.
#[derive(Clone)]
pub struct Routing {
    pub pool: Pool,
    pub bindings: Bindings,
    /// Changeable at run time (the tray's strategy menu); new sessions follow it at once.
    strategy: Arc<std::sync::Mutex<Strategy>>,
    cursor: Arc<AtomicUsize>,
}

impl Routing {
    pub fn new(pool: Pool, bindings: Bindings, strategy: Strategy) -> Routing {
        Routing {
            pool,
            bindings,
            strategy: Arc::new(std::sync::Mutex::new(strategy)),
            cursor: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn strategy(&self) -> Strategy {
        *self.strategy.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_strategy(&self, strategy: Strategy) {
        *self.strategy.lock().unwrap_or_else(|p| p.into_inner()) = strategy;
    }

    /// The account for the next attempt of a request. A turn keeps its account, a session
    /// keeps its binding while that account can serve; otherwise the strategy picks one
    /// (not in `tried`) and the session is bound to it.
    pub fn account_for(
        &self,
        identity: &RequestIdentity,
        model: &str,
        now_ms: i64,
        tried: &HashSet<String>,
    ) -> Option<String> {
        let accounts = self.pool.accounts();
        let usable = |key: &str| {
            !tried.contains(key)
                && accounts
                    .iter()
                    .find(|a| a.key == key)
                    .is_some_and(|a| availability(a, model, now_ms) == Availability::Ok)
        };
        if let Some(turn) = identity.turn_state.as_deref() {
            if let Some(key) = self.bindings.turn_account(turn).filter(|k| usable(k)) {
                return Some(key);
            }
        }
        let bound = identity
            .session
            .as_deref()
            .and_then(|s| self.bindings.session_account(s));
        if let Some(key) = bound.as_deref().filter(|k| usable(k)) {
            return Some(key.to_string());
        }
        let preferred = self.pool.preferred();
        let mut cursor = self.cursor.load(Ordering::Relaxed);
        let chosen = choose_account(
            &accounts,
            self.strategy(),
            preferred.as_deref(),
            &mut cursor,
            model,
            now_ms,
            tried,
        );
        // Every account that could serve rests after errors (a moment's outage answered them
        // all): refusing every request until the rests end would fail Codex while the upstream
        // may be back, so a request that has tried nothing yet tries the first to wake.
        let Some(chosen) = chosen else {
            return tried
                .is_empty()
                .then(|| first_awake(&accounts, bound.as_deref(), model, now_ms))
                .flatten();
        };
        self.cursor.store(cursor, Ordering::Relaxed);
        match identity.session.as_deref() {
            // A concurrent first request may have bound the session meanwhile: follow it.
            Some(session) => {
                let key = self
                    .bindings
                    .bind(session, bound.as_deref(), &chosen, now_ms);
                Some(if usable(&key) { key } else { chosen })
            }
            None => Some(chosen),
        }
    }
}
