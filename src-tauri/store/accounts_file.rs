//! The accounts file: the multi-auth version-1 shape, read as is and written as a superset.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A secret as it sits in the file (`file` token mode only). It serializes, unlike the
/// types in `sensitive`, but it still never prints.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredSecret(pub String);

impl fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The whole file. Fields we do not know are kept and written back.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountsFile {
    pub version: u32,
    #[serde(default)]
    pub accounts: Vec<AccountRecord>,
    /// The account chosen with "use for new sessions", by account key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_account: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for AccountsFile {
    fn default() -> Self {
        AccountsFile {
            version: 1,
            accounts: Vec::new(),
            preferred_account: None,
            extra: Map::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default)]
    pub added_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Parts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<StoredSecret>,
    /// Access-token expiry, epoch ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// Model (or `*` for every model) to the epoch ms its usage limit resets.
    #[serde(default)]
    pub rate_limit_resets: BTreeMap<String, i64>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Set when the refresh token is dead, or the backend says the account or its workspace
    /// is deactivated: the account stays, out of service until a new login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_login: Option<NeedsLogin>,
    /// `keychain` when this account's tokens are in the OS keychain, not in this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_store: Option<String>,
    /// Epoch ms of the last token write, so other processes notice rotated keychain tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_updated_at: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `tokenStore` value of accounts whose tokens are in the keychain.
pub const KEYCHAIN: &str = "keychain";

fn enabled_by_default() -> bool {
    true
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<StoredSecret>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NeedsLogin {
    /// The issuer's error code, e.g. `refresh_token_reused`, or the backend's deactivation
    /// code, e.g. `account_deactivated` (see `accounts::Attention`).
    pub code: String,
    /// Epoch ms.
    pub since: i64,
}

impl AccountRecord {
    /// The stable identity of an account: one (account id, user id) pair. Team members share an
    /// account id, so the user id is part of it; old files without ids fall back to the email.
    pub fn key(&self) -> String {
        match (&self.account_id, &self.user_id) {
            (None, None) => format!("email:{}", self.email.as_deref().unwrap_or("unknown")),
            (account, user) => format!(
                "{}/{}",
                account.as_deref().unwrap_or("-"),
                user.as_deref().unwrap_or("-")
            ),
        }
    }

    pub fn refresh_token(&self) -> Option<&str> {
        self.parts
            .as_ref()
            .and_then(|p| p.refresh_token.as_ref())
            .map(|s| s.0.as_str())
    }

    pub fn set_refresh_token(&mut self, token: &str) {
        self.parts.get_or_insert_with(Parts::default).refresh_token =
            Some(StoredSecret(token.to_string()));
    }

    pub fn tokens_in_keychain(&self) -> bool {
        self.token_store.as_deref() == Some(KEYCHAIN)
    }

    /// A short human name: the label, else the email, else the key.
    pub fn display_name(&self) -> String {
        self.label
            .clone()
            .or_else(|| self.email.clone())
            .unwrap_or_else(|| self.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{
      "version": 1,
      "accounts": [{
        "index": 0, "email": "a@example.com", "userId": "user-a", "accountId": "acct-a",
        "planType": "plus", "addedAt": 1700000000000, "lastUsed": 1700000001000,
        "parts": {"refreshToken": "rt-a"}, "access": "at-a", "expires": 1700003600000,
        "rateLimitResets": {"gpt-5.5": 1700000500000}, "consecutiveFailures": 0,
        "enabled": true, "somethingElse": {"kept": true}
      }],
      "activeAccountIndex": 0, "roundRobinCursor": 3
    }"#;

    #[test]
    fn reads_the_multi_auth_v1_shape_and_keeps_unknown_fields() {
        let file: AccountsFile = serde_json::from_str(V1).unwrap();
        let a = &file.accounts[0];
        assert_eq!(a.key(), "acct-a/user-a");
        assert_eq!(a.refresh_token(), Some("rt-a"));
        assert_eq!(a.rate_limit_resets["gpt-5.5"], 1700000500000);
        let written = serde_json::to_value(&file).unwrap();
        assert_eq!(written["activeAccountIndex"], 0);
        assert_eq!(written["roundRobinCursor"], 3);
        assert_eq!(written["accounts"][0]["consecutiveFailures"], 0);
        assert_eq!(written["accounts"][0]["somethingElse"]["kept"], true);
        assert_eq!(written["accounts"][0]["parts"]["refreshToken"], "rt-a");
    }

    #[test]
    fn debug_output_hides_tokens() {
        let file: AccountsFile = serde_json::from_str(V1).unwrap();
        let shown = format!("{file:?}");
        assert!(
            !shown.contains("rt-a") && !shown.contains("at-a"),
            "{shown}"
        );
    }
}

#[cfg(test)]
#[path = "accounts_file_properties.rs"]
mod properties;
