//! A session that has to move to another account (its own is limited, or failing) carries
//! reasoning and compaction items whose `encrypted_content` only the old account can read:
//! the new one answers `400 invalid_encrypted_content` (openai/codex#13724). So when a
//! session leaves an account, every encrypted item in its history not yet attributed is
//! remembered as written by that account, and each request of the session is sent without
//! the items another account wrote. Codex keeps resending its whole history, so forgetting
//! would bring the 400 back on the next turn; and a session that comes back to its first
//! account gets that account's own items back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Moves kept for `/status`.
const KEPT: usize = 20;
/// Sessions whose items are remembered, oldest forgotten first.
const SESSIONS: usize = 4096;
/// Items remembered per session; a history longer than this is far past any context window.
const ITEMS_PER_SESSION: usize = 16_384;
/// Items remembered over all sessions: a session's items are a few tens of bytes each, so
/// this bounds the map near 10 MB whatever clients send.
const ITEMS: usize = 262_144;
/// The writer of items the upstream refused without the router knowing who wrote them: no
/// account can read them.
pub const UNKNOWN_WRITER: &str = "";

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

/// For each session, who wrote each encrypted item (by fingerprint), and the sessions in
/// the order they were first seen (to forget the oldest).
#[derive(Default)]
struct Foreign {
    by_session: HashMap<String, HashMap<u64, String>>,
    order: VecDeque<String>,
    /// Items over all sessions, kept at most `ITEMS`.
    items: usize,
}

impl Foreign {
    /// Forgets the oldest sessions (never `keep`) until `more` items fit under `ITEMS`, and
    /// keeps at most `SESSIONS` sessions.
    fn make_room(&mut self, keep: &str, more: usize) {
        let mut skipped = None;
        while self.items + more > ITEMS || self.order.len() > SESSIONS {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if old == keep {
                skipped = Some(old);
                continue;
            }
            if let Some(items) = self.by_session.remove(&old) {
                self.items -= items.len();
            }
        }
        if let Some(keep) = skipped {
            self.order.push_front(keep);
        }
    }
}

#[derive(Default)]
pub struct Moves {
    foreign: Mutex<Foreign>,
    recent: Mutex<VecDeque<MoveRecord>>,
}

impl Moves {
    /// The session leaves `writer`: every encrypted item in `input` not yet attributed was
    /// written there.
    pub fn written_by(&self, session: &str, input: &Value, writer: &str) {
        let found = fingerprints(input);
        if found.is_empty() {
            return;
        }
        let mut guard = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
        let foreign = &mut *guard;
        if !foreign.by_session.contains_key(session) {
            foreign.order.push_back(session.to_string());
        }
        let held = foreign.by_session.get(session).map_or(0, HashMap::len);
        let more = found.len().min(ITEMS_PER_SESSION.saturating_sub(held));
        // Junk items from one client must not push out the sessions of others forever: the
        // oldest sessions go first, as a session that moved long ago is least likely back.
        foreign.make_room(session, more);
        let known = foreign.by_session.entry(session.to_string()).or_default();
        let before = known.len();
        for fingerprint in found {
            if known.len() >= ITEMS_PER_SESSION {
                break;
            }
            known
                .entry(fingerprint)
                .or_insert_with(|| writer.to_string());
        }
        foreign.items += known.len() - before;
    }

    /// Whether the session has items the router attributed (cheap: no body is read).
    pub fn knows(&self, session: &str) -> bool {
        let guard = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
        guard.by_session.contains_key(session)
    }

    /// The request body without the items another account than `reader` wrote, and how many
    /// were dropped; `None` when nothing had to go.
    pub fn clean(&self, session: &str, body: &Value, reader: &str) -> Option<(Bytes, usize)> {
        let guard = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
        let known = guard.by_session.get(session)?;
        let input = body.get("input")?.as_array()?;
        let foreign = |item: &&Value| {
            let writer = encrypted(item).and_then(|e| known.get(&fingerprint(e)));
            writer.is_some_and(|w| w != reader)
        };
        let keep: Vec<&Value> = input.iter().filter(|i| !foreign(i)).collect();
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

/// One request of a session, as the moves see it: its body is parsed at most once, and only
/// when the session moves or moved (a large body costs milliseconds to parse).
pub struct History<'a> {
    moves: &'a Moves,
    session: Option<&'a str>,
    body: &'a [u8],
    parsed: Option<Value>,
    /// The writer already attributed for this request.
    attributed: bool,
}

impl<'a> History<'a> {
    pub fn new(moves: &'a Moves, session: Option<&'a str>, body: &'a [u8]) -> History<'a> {
        History {
            moves,
            session,
            body,
            parsed: None,
            attributed: false,
        }
    }

    fn input(&mut self) -> &Value {
        let body = self.body;
        let parsed = self
            .parsed
            .get_or_insert_with(|| serde_json::from_slice(body).unwrap_or(Value::Null));
        &parsed["input"]
    }

    /// The body `reader` may be sent, and how many items it lost: `None` when the body goes
    /// as it is. `left` is the account the session is leaving, whose items these are.
    pub fn body_for(&mut self, reader: &str, left: Option<&str>) -> Option<(Bytes, usize)> {
        let session = self.session?;
        if left.is_none() && !self.moves.knows(session) {
            return None;
        }
        if let Some(writer) = left {
            self.leaving(writer);
        }
        self.input();
        let body = self.parsed.as_ref()?;
        self.moves.clean(session, body, reader)
    }

    /// The session leaves `writer`: the encrypted items of this request were written there.
    pub fn leaving(&mut self, writer: &str) {
        let (Some(session), false) = (self.session, self.attributed) else {
            return;
        };
        let moves = self.moves;
        moves.written_by(session, self.input(), writer);
        self.attributed = true;
    }

    /// The upstream could not read items the router did not know about (a restart forgot a
    /// move): none of them goes to any account again.
    pub fn forget_unreadable(&mut self) {
        if let Some(session) = self.session {
            let moves = self.moves;
            moves.written_by(session, self.input(), UNKNOWN_WRITER);
        }
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
        assert!(moves.clean("s", &old, "b").is_none(), "nothing moved yet");
        moves.written_by("s", &old["input"], "a");
        let (cleaned, dropped) = moves.clean("s", &old, "b").expect("rewritten");
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
        let next = body(Value::Array(next));
        let (cleaned, dropped) = moves.clean("s", &next, "b").unwrap();
        assert_eq!(dropped, 2, "the new account's own item stays");
        assert!(String::from_utf8_lossy(&cleaned).contains("enc:b:1"));
        assert!(
            moves.clean("other-session", &old, "b").is_none(),
            "only that session"
        );
        // Back to a: b's item goes, a's own items come back.
        moves.written_by("s", &next["input"], "b");
        let (cleaned, dropped) = moves.clean("s", &next, "a").unwrap();
        assert_eq!(dropped, 1);
        let text = String::from_utf8_lossy(&cleaned);
        assert!(text.contains("enc:a:1") && text.contains("cmp:a:1") && !text.contains("enc:b:1"));
        // Items nobody could read are dropped for everyone.
        moves.written_by("u", &old["input"], UNKNOWN_WRITER);
        assert_eq!(moves.clean("u", &old, "a").map(|c| c.1), Some(2));
    }

    #[test]
    fn a_flood_of_junk_encrypted_items_stays_within_the_cap_and_keeps_the_newest_session() {
        let moves = Moves::default();
        let sessions = 24;
        for s in 0..sessions {
            let items: Vec<Value> = (0..ITEMS_PER_SESSION)
                .map(|i| json!({"type": "reasoning", "encrypted_content": format!("junk:{s}:{i}")}))
                .collect();
            moves.written_by(&format!("flood-{s}"), &Value::Array(items), "a");
        }
        let guard = moves.foreign.lock().unwrap();
        let total: usize = guard.by_session.values().map(HashMap::len).sum();
        assert!(total <= ITEMS, "{total} items remembered");
        let newest = format!("flood-{}", sessions - 1);
        assert_eq!(
            guard.by_session.get(&newest).map(HashMap::len),
            Some(ITEMS_PER_SESSION)
        );
        assert!(
            !guard.by_session.contains_key("flood-0"),
            "the oldest session went"
        );
    }
}
