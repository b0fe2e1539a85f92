//! Session and turn bindings: which account a Codex session (and a turn) is on. Kept in
//! memory for the request path and saved in the background, by account key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::accounts::Account;
use crate::store::{BindingsFile, Store, StoredBinding};

/// A turn lasts seconds to minutes; an hour is ample and bounds the map.
const TURN_TTL_MS: i64 = 60 * 60 * 1000;
/// Above this many live turns, old ones are dropped when a new one comes.
const MAX_TURNS: usize = 4096;
/// Sessions kept at most.
const MAX_SESSIONS: usize = 65_536;

#[derive(Clone, Debug)]
struct Binding {
    account: String,
    last_seen: i64,
}

#[derive(Default)]
struct Maps {
    sessions: HashMap<String, Binding>,
    turns: HashMap<String, Binding>,
}

/// The live bindings; clones share them.
#[derive(Clone)]
pub struct Bindings {
    maps: Arc<Mutex<Maps>>,
    dirty: Arc<AtomicBool>,
    /// Held for a whole save, so the save at shutdown waits for one in flight.
    saving: Arc<Mutex<()>>,
    ttl_ms: i64,
}

impl Bindings {
    /// Loads saved bindings, mapping peers' bare indexes to account keys and dropping
    /// idle ones. A file that does not parse is reported and left alone.
    pub fn load(store: &Store, accounts: &[Account], ttl: Duration, now_ms: i64) -> Bindings {
        let ttl_ms = ttl.as_millis() as i64;
        let file = store.load_bindings().unwrap_or_else(|e| {
            tracing::warn!("{e}; starting without saved session bindings");
            BindingsFile::default()
        });
        let sessions = file
            .bindings
            .into_iter()
            .filter_map(|(session, stored)| {
                let binding = match stored {
                    StoredBinding::Keyed { account, last_seen } => Binding { account, last_seen },
                    StoredBinding::Index(i) => Binding {
                        account: accounts.get(i)?.key.clone(),
                        last_seen: now_ms,
                    },
                };
                (now_ms - binding.last_seen < ttl_ms).then_some((session, binding))
            })
            .collect();
        Bindings {
            maps: Arc::new(Mutex::new(Maps {
                sessions,
                turns: HashMap::new(),
            })),
            dirty: Arc::new(AtomicBool::new(false)),
            saving: Arc::new(Mutex::new(())),
            ttl_ms,
        }
    }

    fn maps(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn session_account(&self, session: &str) -> Option<String> {
        self.maps().sessions.get(session).map(|b| b.account.clone())
    }

    pub fn turn_account(&self, turn_state: &str) -> Option<String> {
        self.maps().turns.get(turn_state).map(|b| b.account.clone())
    }

    /// Binds `session` to `account` unless it is bound to something other than `expected`
    /// already; returns the account the session is bound to afterwards. This is what makes
    /// concurrent first requests of one session land on the same account.
    pub fn bind(
        &self,
        session: &str,
        expected: Option<&str>,
        account: &str,
        now_ms: i64,
    ) -> String {
        let mut maps = self.maps();
        if let Some(current) = maps.sessions.get_mut(session) {
            if Some(current.account.as_str()) != expected {
                current.last_seen = now_ms;
                return current.account.clone();
            }
        }
        make_room(&mut maps.sessions, session);
        let changed = maps
            .sessions
            .insert(
                session.to_string(),
                Binding {
                    account: account.to_string(),
                    last_seen: now_ms,
                },
            )
            .is_none_or(|old| old.account != account);
        if changed {
            self.dirty.store(true, Ordering::Relaxed);
        }
        account.to_string()
    }

    /// Records that `session` (and its turn) was served by `account`.
    pub fn confirm(&self, session: Option<&str>, turn: Option<&str>, account: &str, now_ms: i64) {
        let mut maps = self.maps();
        if let Some(session) = session {
            make_room(&mut maps.sessions, session);
            let entry = maps.sessions.entry(session.to_string()).or_insert(Binding {
                account: String::new(),
                last_seen: now_ms,
            });
            if entry.account != account {
                entry.account = account.to_string();
                self.dirty.store(true, Ordering::Relaxed);
            }
            entry.last_seen = now_ms;
        }
        if let Some(turn) = turn {
            // Turns are not saved, so they are pruned here, where they are added.
            if maps.turns.len() >= MAX_TURNS && !maps.turns.contains_key(turn) {
                maps.turns.retain(|_, b| now_ms - b.last_seen < TURN_TTL_MS);
                evict_oldest(&mut maps.turns, MAX_TURNS);
            }
            maps.turns.insert(
                turn.to_string(),
                Binding {
                    account: account.to_string(),
                    last_seen: now_ms,
                },
            );
        }
    }

    pub fn len(&self) -> usize {
        self.maps().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the bindings when they changed, dropping idle sessions and old turns.
    pub fn save_if_changed(&self, store: &Store, now_ms: i64) {
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let file = {
            let mut maps = self.maps();
            let ttl = self.ttl_ms;
            maps.sessions.retain(|_, b| now_ms - b.last_seen < ttl);
            maps.turns.retain(|_, b| now_ms - b.last_seen < TURN_TTL_MS);
            BindingsFile {
                version: 1,
                bindings: maps
                    .sessions
                    .iter()
                    .map(|(k, b)| {
                        let stored = StoredBinding::Keyed {
                            account: b.account.clone(),
                            last_seen: b.last_seen,
                        };
                        (k.clone(), stored)
                    })
                    .collect(),
            }
        };
        if let Err(e) = store.save_bindings(&file) {
            tracing::warn!("{e}");
            self.dirty.store(true, Ordering::Relaxed);
        }
    }
}

/// Makes room for `key` in a full session map: the least recently seen sessions go, as the
/// idle time-out would take them first.
fn make_room(map: &mut HashMap<String, Binding>, key: &str) {
    if map.len() >= MAX_SESSIONS && !map.contains_key(key) {
        evict_oldest(map, MAX_SESSIONS);
    }
}

/// Keys are chosen by clients, so a full map drops its least recently seen eighth at once:
/// one sort per many inserts instead of a scan per insert.
fn evict_oldest(map: &mut HashMap<String, Binding>, cap: usize) {
    if map.len() < cap {
        return;
    }
    let mut seen: Vec<i64> = map.values().map(|b| b.last_seen).collect();
    let cut = (map.len() - cap + cap / 8).min(seen.len() - 1);
    let (_, threshold, _) = seen.select_nth_unstable(cut);
    let threshold = *threshold;
    map.retain(|_, b| b.last_seen > threshold);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Bindings {
        Bindings {
            maps: Arc::new(Mutex::new(Maps::default())),
            dirty: Arc::new(AtomicBool::new(false)),
            saving: Arc::new(Mutex::new(())),
            ttl_ms: 24 * 60 * 60 * 1000,
        }
    }

    #[test]
    fn a_flood_of_client_chosen_turn_states_keeps_the_newest_within_the_cap() {
        let bindings = empty();
        let now = 1_000_000;
        for i in 0..(MAX_TURNS * 4) {
            let turn = format!("junk-turn-{i}");
            bindings.confirm(None, Some(&turn), "a", now + i as i64);
        }
        let maps = bindings.maps();
        assert!(maps.turns.len() <= MAX_TURNS, "{} turns", maps.turns.len());
        let newest = format!("junk-turn-{}", MAX_TURNS * 4 - 1);
        assert!(maps.turns.contains_key(&newest), "the newest turn is kept");
        assert!(!maps.turns.contains_key("junk-turn-0"), "the oldest went");
    }

    #[test]
    fn a_flood_of_client_chosen_session_keys_keeps_the_newest_within_the_cap() {
        let bindings = empty();
        let now = 1_000_000;
        for i in 0..(MAX_SESSIONS + MAX_SESSIONS / 2) {
            let session = format!("junk-session-{i}");
            let account = bindings.bind(&session, None, "a", now + i as i64);
            assert_eq!(account, "a");
        }
        for i in 0..1000 {
            let session = format!("confirmed-{i}");
            bindings.confirm(Some(&session), None, "a", now + 10_000_000 + i);
        }
        let maps = bindings.maps();
        assert!(
            maps.sessions.len() <= MAX_SESSIONS,
            "{} sessions",
            maps.sessions.len()
        );
        assert!(maps.sessions.contains_key("confirmed-999"));
        assert!(!maps.sessions.contains_key("junk-session-0"));
    }
}
