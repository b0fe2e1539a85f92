//! Why an account is out of service until the user acts: a dead sign-in, or the ChatGPT
//! backend saying the account or its workspace can no longer be used. Both are kept in the
//! record's `needsLogin` (`code` says which), so they persist, are skipped by routing and are
//! cleared by a new sign-in alike.

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::Pool;
use crate::store::NeedsLogin;

/// What the user has to do something about, read from a recorded code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    /// The refresh token is dead (or missing): only a new sign-in helps.
    Login,
    AccountDeactivated,
    WorkspaceDeactivated,
    GovernmentWorkspaceRequired,
}

impl Attention {
    /// The attention a recorded code calls for; codes that are not a deactivation are the
    /// issuer's refresh failures, which need a login.
    pub fn from_code(code: &str) -> Attention {
        Attention::deactivation(code).unwrap_or(Attention::Login)
    }

    /// The deactivation an upstream error code names, matched on the code, never on text.
    /// Codes come in snake case (`account_deactivated`, `deactivated_workspace`) or camel
    /// case (`governmentWorkspaceRequired`).
    pub fn deactivation(code: &str) -> Option<Attention> {
        let code: String = code
            .chars()
            .filter(|c| *c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        match code.as_str() {
            "accountdeactivated" | "deactivatedaccount" => Some(Attention::AccountDeactivated),
            "workspacedeactivated" | "deactivatedworkspace" => {
                Some(Attention::WorkspaceDeactivated)
            }
            "governmentworkspacerequired" => Some(Attention::GovernmentWorkspaceRequired),
            _ => None,
        }
    }

    pub fn is_deactivation(self) -> bool {
        self != Attention::Login
    }

    /// The reason in plain words, for the tray, notifications, `cma status` and `/status`.
    pub fn describe(self) -> &'static str {
        match self {
            Attention::Login => "the sign-in is no longer valid; log in again",
            Attention::AccountDeactivated => "ChatGPT says this account is deactivated",
            Attention::WorkspaceDeactivated => "ChatGPT says its workspace is deactivated",
            Attention::GovernmentWorkspaceRequired => {
                "ChatGPT says this workspace requires a government account"
            }
        }
    }
}

/// The deactivation code an upstream answer carries, as sent: a 401, 402 or 403 whose body
/// has it in `error.code`, `error.type`, `detail.code` or `error.detail.code` (or as `detail`
/// itself), or whose
/// `x-error-json` header (base64 JSON, read by Codex too) has it in `error.code`.
pub fn deactivation_code(status: u16, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    if !matches!(status, 401..=403) {
        return None;
    }
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let in_body = [
        json.pointer("/error/code"),
        json.pointer("/error/type"),
        json.pointer("/detail/code"),
        json.get("detail"),
        // A WebSocket error frame carries a `detail` body inside its `error`.
        json.pointer("/error/detail/code"),
    ];
    let in_header = headers
        .get("x-error-json")
        .and_then(|v| v.to_str().ok())
        .and_then(header_code);
    let found = in_body
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .chain(in_header)
        .find(|code| Attention::deactivation(code).is_some());
    found
}

fn header_code(encoded: &str) -> Option<String> {
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let json: Value = serde_json::from_slice(&decoded).ok()?;
    json.pointer("/error/code")?.as_str().map(str::to_string)
}

impl Pool {
    /// Takes `key` out of service for `code` (a deactivation): in memory now, in the file in
    /// the background, like a dead refresh token, so a restart keeps it and a new sign-in
    /// clears it. Returns whether this changed anything, so it is told once.
    pub fn record_attention(&self, key: &str, code: &str, now_ms: i64) -> bool {
        let needs = NeedsLogin {
            code: code.to_string(),
            since: now_ms,
        };
        {
            let mut state = self.state();
            let Some(a) = state.accounts.iter_mut().find(|a| a.key == key) else {
                return false;
            };
            if a.record.needs_login.as_ref().map(|n| n.code.as_str()) == Some(code) {
                return false;
            }
            a.record.needs_login = Some(needs.clone());
        }
        let (store, key) = (self.inner.store.clone(), key.to_string());
        tokio::task::spawn_blocking(move || {
            let result = store.update_accounts(|file| {
                if let Some(r) = file.accounts.iter_mut().find(|r| r.key() == key) {
                    r.needs_login = Some(needs);
                }
            });
            if let Err(e) = result {
                tracing::warn!("could not save that the account needs attention: {e}");
            }
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use reqwest::header::HeaderValue;

    fn code(status: u16, body: &str) -> Option<String> {
        deactivation_code(status, &HeaderMap::new(), body.as_bytes())
    }

    #[test]
    fn every_deactivated_shape_is_read_from_its_code() {
        let openai = r#"{"error":{"message":"Your OpenAI account has been deactivated","type":"invalid_request_error","code":"account_deactivated","param":null}}"#;
        assert_eq!(code(401, openai).as_deref(), Some("account_deactivated"));
        let detail = r#"{"detail":{"code":"deactivated_workspace"}}"#;
        assert_eq!(code(402, detail).as_deref(), Some("deactivated_workspace"));
        let workspace = r#"{"error":{"code":"workspace_deactivated","message":"x"}}"#;
        assert_eq!(
            code(403, workspace).as_deref(),
            Some("workspace_deactivated")
        );
        let government = r#"{"error":{"code":"governmentWorkspaceRequired"}}"#;
        assert_eq!(
            code(403, government).as_deref(),
            Some("governmentWorkspaceRequired")
        );
        assert_eq!(
            code(403, r#"{"detail":"account_deactivated"}"#).as_deref(),
            Some("account_deactivated")
        );
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(r#"{"error":{"code":"workspace_deactivated"}}"#);
        headers.insert("x-error-json", HeaderValue::from_str(&encoded).unwrap());
        assert_eq!(
            deactivation_code(403, &headers, br#"{"detail":"Forbidden"}"#).as_deref(),
            Some("workspace_deactivated")
        );
    }

    #[test]
    fn other_answers_are_not_a_deactivation() {
        // The words alone do not count, nor the code on a status that is not about access.
        let words = r#"{"error":{"message":"Your OpenAI account has been deactivated"}}"#;
        assert_eq!(code(401, words), None);
        assert_eq!(
            code(429, r#"{"error":{"code":"account_deactivated"}}"#),
            None
        );
        assert_eq!(
            code(403, r#"{"error":{"code":"invalid_workspace_selected"}}"#),
            None
        );
        assert_eq!(code(403, "not json"), None);
        assert_eq!(code(402, r#"{"detail":{"code":"payment_required"}}"#), None);
    }

    #[test]
    fn each_code_has_its_own_words_and_refresh_codes_need_a_login() {
        let text = |c: &str| Attention::from_code(c).describe();
        assert_eq!(
            text("account_deactivated"),
            "ChatGPT says this account is deactivated"
        );
        assert_eq!(
            text("deactivated_workspace"),
            "ChatGPT says its workspace is deactivated"
        );
        assert_eq!(text("WORKSPACE_DEACTIVATED"), text("deactivated_workspace"));
        assert_eq!(
            text("governmentWorkspaceRequired"),
            "ChatGPT says this workspace requires a government account"
        );
        assert_eq!(
            Attention::from_code("refresh_token_reused"),
            Attention::Login
        );
        assert!(!Attention::from_code("keychain_entry_missing").is_deactivation());
    }
}
