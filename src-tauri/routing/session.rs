//! Which Codex session (and which turn) a request belongs to.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

/// The identity of a request for routing purposes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestIdentity {
    /// Sessions stick to one account: `x-codex-parent-thread-id` for a sub-agent (it follows
    /// its parent), else the body's `prompt_cache_key`, else the `session-id`/`session_id`
    /// header, else `thread-id`.
    pub session: Option<String>,
    /// `x-codex-turn-state`: within one turn the upstream must not change.
    pub turn_state: Option<String>,
}

impl RequestIdentity {
    pub fn read(headers: &HeaderMap, prompt_cache_key: Option<&str>) -> RequestIdentity {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let session = header("x-codex-parent-thread-id")
            .or_else(|| {
                prompt_cache_key
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
            })
            .or_else(|| header("session-id"))
            .or_else(|| header("session_id"))
            .or_else(|| header("thread-id"));
        RequestIdentity {
            session,
            turn_state: header("x-codex-turn-state"),
        }
    }

    /// A short hash of the session key for logs: enough to follow a session, not to replay it.
    pub fn session_tag(&self) -> String {
        match &self.session {
            None => "-".to_string(),
            Some(s) => {
                // Made for every request's log span: hex by table, not by `format!`.
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let digest = Sha256::digest(s.as_bytes());
                let mut tag = String::with_capacity(8);
                for b in &digest[..4] {
                    tag.push(HEX[usize::from(b >> 4)] as char);
                    tag.push(HEX[usize::from(b & 0xf)] as char);
                }
                tag
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn prompt_cache_key_wins_over_headers_and_parents_win_over_all() {
        let h = headers(&[("session-id", "s"), ("thread-id", "t")]);
        assert_eq!(
            RequestIdentity::read(&h, Some("pck")).session.as_deref(),
            Some("pck")
        );
        assert_eq!(
            RequestIdentity::read(&h, None).session.as_deref(),
            Some("s")
        );
        let h = headers(&[("thread-id", "t")]);
        assert_eq!(
            RequestIdentity::read(&h, None).session.as_deref(),
            Some("t")
        );
        let h = headers(&[("session_id", "u")]);
        assert_eq!(
            RequestIdentity::read(&h, None).session.as_deref(),
            Some("u")
        );
        let h = headers(&[
            ("x-codex-parent-thread-id", "parent"),
            ("x-codex-turn-state", "ts"),
        ]);
        let id = RequestIdentity::read(&h, Some("child"));
        assert_eq!(id.session.as_deref(), Some("parent"));
        assert_eq!(id.turn_state.as_deref(), Some("ts"));
    }
}
