//! The session bindings file: which account serves which Codex session, across restarts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BindingsFile {
    #[serde(default = "version_one")]
    pub version: u32,
    #[serde(default)]
    pub bindings: BTreeMap<String, StoredBinding>,
}

fn version_one() -> u32 {
    1
}

/// A binding as stored. Peers wrote a bare account index here; that form is read and
/// mapped to the account at that index on load, then written back by account key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredBinding {
    Keyed {
        account: String,
        #[serde(rename = "lastSeen")]
        last_seen: i64,
    },
    Index(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_peer_index_bindings_and_keyed_ones() {
        let file: BindingsFile = serde_json::from_str(
            r#"{"version":1,"bindings":{"s1":2,"s2":{"account":"acct/user","lastSeen":5}}}"#,
        )
        .unwrap();
        assert_eq!(file.bindings["s1"], StoredBinding::Index(2));
        assert_eq!(
            file.bindings["s2"],
            StoredBinding::Keyed {
                account: "acct/user".into(),
                last_seen: 5
            }
        );
    }
}
