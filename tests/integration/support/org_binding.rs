//! `encrypted_content` bound to the account that issued it. The real backend refuses reasoning
//! or compaction items replayed to another organization (openai/codex issue #13724), which is
//! why a router must keep a conversation on one account or strip those items.

use serde_json::{json, Value};

const REASONING_PREFIX: &str = "enc";
const COMPACTION_PREFIX: &str = "cmp";

/// The `encrypted_content` of the `n`-th reasoning item the fake issues to `account_id`.
pub fn reasoning_encrypted_content(account_id: &str, n: u64) -> String {
    format!("{REASONING_PREFIX}:{account_id}:{n}")
}

/// The `encrypted_content` of the `n`-th compaction item the fake issues to `account_id`.
pub fn compaction_encrypted_content(account_id: &str, n: u64) -> String {
    format!("{COMPACTION_PREFIX}:{account_id}:{n}")
}

/// The account an `encrypted_content` was issued to, if it has the fake's format; anything
/// else (a hand-written test blob) is `None` and never refused.
pub fn encrypted_content_owner(blob: &str) -> Option<&str> {
    let (prefix, rest) = blob.split_once(':')?;
    let (owner, n) = rest.rsplit_once(':')?;
    let ours = [REASONING_PREFIX, COMPACTION_PREFIX].contains(&prefix);
    let numbered = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    (ours && numbered && !owner.is_empty()).then_some(owner)
}

/// Whether `input` replays an item the fake issued to an account other than `account_id`.
pub(super) fn has_foreign_content(input: &Value, account_id: &str) -> bool {
    let items = input.as_array().map(Vec::as_slice).unwrap_or_default();
    items.iter().any(|item| {
        item["encrypted_content"]
            .as_str()
            .and_then(encrypted_content_owner)
            .is_some_and(|owner| owner != account_id)
    })
}

/// The 400 body of the real backend for a replayed foreign blob (issue #13724).
pub(super) fn mismatch_body() -> Value {
    json!({"error": {
        "message": "Encrypted content organization_id did not match the target organization.",
        "type": "invalid_request_error", "param": null, "code": "invalid_encrypted_content",
    }})
}
