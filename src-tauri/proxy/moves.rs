//! A session that has to move to another account (its own is limited, or failing) carries
//! reasoning and compaction items whose `encrypted_content` only the old account can read:
//! the new one answers `400 invalid_encrypted_content` (openai/codex#13724). So when a
//! session moves, every encrypted item already in its history is remembered as foreign, and
//! dropped from this and every later request of that session. Codex keeps resending its
//! whole history, so forgetting would bring the 400 back on the next turn.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Moves kept for `/status`.
const KEPT: usize = 20;
/// Sessions whose foreign items are remembered, oldest forgotten first.
const SESSIONS: usize = 4096;

/// One move, as `/status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveRecord {
    pub at: i64,
    /// The session's tag (a prefix of its id), never the whole id.
    pub session: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    /// Encrypted items dropped from the request that moved.
    pub dropped: usize,
}

/// Fingerprints of `encrypted_content` each session's current account cannot read, and the
/// sessions in the order they were first seen (to forget the oldest).
#[derive(Default)]
struct Foreign {
    by_session: HashMap<String, HashSet<u64>>,
    order: VecDeque<String>,
}

#[derive(Default)]
pub struct Moves {
    foreign: Mutex<Foreign>,
    recent: Mutex<VecDeque<MoveRecord>>,
}

impl Moves {
    /// Remembers everything encrypted in `input` as foreign to the session from now on.
    pub fn mark_foreign(&self, session: &str, input: &Value) {
        let found = fingerprints(input);
        if found.is_empty() {
            return;
        }
        let mut guard = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
        let Foreign {
            by_session: map,
            order,
        } = &mut *guard;
        if !map.contains_key(session) {
            order.push_back(session.to_string());
            if order.len() > SESSIONS {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        map.entry(session.to_string()).or_default().extend(found);
    }

    /// Whether the session has foreign items to drop (cheap: no body is read).
    pub fn knows(&self, session: &str) -> bool {
        let guard = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
        guard.by_session.contains_key(session)
    }

    /// The request body without the session's foreign items, and how many were dropped;
    /// `None` when nothing had to go.
    pub fn clean(&self, session: &str, body: &Value) -> Option<(Bytes, usize)> {
        let guard = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
        let foreign = guard.by_session.get(session)?;
        let input = body.get("input")?.as_array()?;
        let keep: Vec<&Value> = input
            .iter()
            .filter(|item| !encrypted(item).is_some_and(|e| foreign.contains(&fingerprint(e))))
            .collect();
        let dropped = input.len() - keep.len();
        if dropped == 0 {
            return None;
        }
        let mut body = body.clone();
        body["input"] = Value::Array(keep.into_iter().cloned().collect());
        let bytes = serde_json::to_vec(&body).ok()?;
        Some((Bytes::from(bytes), dropped))
    }

    pub fn record(&self, record: MoveRecord) {
        tracing::info!(
            session = %record.session,
            from = %record.from,
            to = %record.to,
            reason = %record.reason,
            dropped = record.dropped,
            "session moved to another account"
        );
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// The last moves, newest first.
    pub fn recent(&self) -> Vec<MoveRecord> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().cloned().collect()
    }
}

/// The `encrypted_content` of a reasoning or compaction item.
fn encrypted(item: &Value) -> Option<&str> {
    let kind = item.get("type")?.as_str()?;
    if !matches!(kind, "reasoning" | "compaction" | "compaction_summary") {
        return None;
    }
    item.get("encrypted_content")?.as_str()
}

fn fingerprint(encrypted: &str) -> u64 {
    let mut h = DefaultHasher::new();
    encrypted.hash(&mut h);
    h.finish()
}

fn fingerprints(input: &Value) -> HashSet<u64> {
    let items = input.as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .filter_map(encrypted)
        .map(fingerprint)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(items: Value) -> Value {
        json!({"model": "gpt-5.5", "input": items, "stream": true})
    }

    #[test]
    fn after_a_move_the_old_accounts_items_are_dropped_from_every_later_request() {
        let moves = Moves::default();
        let old = body(json!([
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "enc:a:1"},
            {"type": "compaction", "encrypted_content": "cmp:a:1"},
            {"type": "message", "role": "assistant", "content": []}
        ]));
        assert!(moves.clean("s", &old).is_none(), "nothing moved yet");
        moves.mark_foreign("s", &old["input"]);
        let (cleaned, dropped) = moves.clean("s", &old).expect("rewritten");
        assert_eq!(dropped, 2);
        let cleaned: Value = serde_json::from_slice(&cleaned).unwrap();
        let kinds: Vec<&str> = cleaned["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["message", "message"]);
        // The next turn: the old items again, plus the new account's own reasoning.
        let mut next = old["input"].as_array().unwrap().clone();
        next.push(json!({"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "enc:b:1"}));
        let (cleaned, dropped) = moves.clean("s", &body(Value::Array(next))).unwrap();
        assert_eq!(dropped, 2, "the new account's own item stays");
        assert!(String::from_utf8_lossy(&cleaned).contains("enc:b:1"));
        assert!(
            moves.clean("other-session", &old).is_none(),
            "only that session"
        );
    }
}
