//! Claims read from ChatGPT's JWTs (unverified: they only label accounts and time refreshes).

use base64::Engine;
use serde_json::Value;

const AUTH_CLAIM: &str = "https://api.openai.com/auth";
const PROFILE_CLAIM: &str = "https://api.openai.com/profile";

/// What an id_token or access token says about the account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenClaims {
    pub email: Option<String>,
    pub account_id: Option<String>,
    pub user_id: Option<String>,
    pub plan: Option<String>,
    /// Expiry, epoch seconds.
    pub expires_at: Option<i64>,
}

/// Decodes the payload of a JWT; `None` when it is not one.
pub fn decode(jwt: &str) -> Option<TokenClaims> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let auth = value.get(AUTH_CLAIM);
    Some(TokenClaims {
        email: text(value.get("email"))
            .or_else(|| text(value.get(PROFILE_CLAIM).and_then(|p| p.get("email")))),
        account_id: text(auth.and_then(|a| a.get("chatgpt_account_id"))),
        user_id: text(auth.and_then(|a| a.get("chatgpt_user_id")))
            .or_else(|| text(auth.and_then(|a| a.get("user_id")))),
        plan: text(auth.and_then(|a| a.get("chatgpt_plan_type"))),
        expires_at: value.get("exp").and_then(Value::as_i64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            enc.encode(r#"{"alg":"none"}"#),
            enc.encode(payload)
        )
    }

    #[test]
    fn reads_chatgpt_auth_claims() {
        let claims = decode(&jwt(
            r#"{"email":"a@x.com","exp":17,"https://api.openai.com/auth":{"chatgpt_account_id":"acct","chatgpt_user_id":"u","chatgpt_plan_type":"pro"}}"#,
        ))
        .unwrap();
        assert_eq!(claims.account_id.as_deref(), Some("acct"));
        assert_eq!(claims.user_id.as_deref(), Some("u"));
        assert_eq!(claims.plan.as_deref(), Some("pro"));
        assert_eq!(claims.expires_at, Some(17));
    }

    #[test]
    fn opaque_tokens_have_no_claims() {
        assert_eq!(decode("not-a-jwt"), None);
    }
}
