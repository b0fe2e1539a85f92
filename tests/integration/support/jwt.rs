//! Unsigned JWTs shaped like the ones auth.openai.com issues, which is all Codex and the router
//! look at: they decode the payload and never check a signature (protocol §1.9).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

/// The claim object Codex reads the workspace, plan and user from.
pub const AUTH_CLAIM: &str = "https://api.openai.com/auth";
/// The claim object holding the e-mail in access tokens.
pub const PROFILE_CLAIM: &str = "https://api.openai.com/profile";

/// Encodes `payload` as a three-part JWT with an `alg: none` header and a non-empty dummy
/// signature, since Codex rejects tokens with an empty third segment.
pub fn make_jwt(payload: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT"});
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode("fake-signature"),
    )
}

/// Decodes the payload of any three-part JWT; `None` if it is not one or not JSON.
pub fn decode_payload(jwt: &str) -> Option<Value> {
    let mut parts = jwt.split('.');
    let (_header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.is_empty() || signature.is_empty() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Who a token is about; the same for every token of an account.
pub struct Subject<'a> {
    pub email: &'a str,
    pub account_id: &'a str,
    pub user_id: &'a str,
    pub plan: &'a str,
}

impl Subject<'_> {
    fn auth_claim(&self) -> Value {
        json!({
            "chatgpt_account_id": self.account_id,
            "chatgpt_plan_type": self.plan,
            "chatgpt_user_id": self.user_id,
            "user_id": self.user_id,
        })
    }

    /// Access token payload. `jti` keeps two tokens issued in the same second distinct.
    pub fn access_claims(&self, issuer: &str, iat: i64, exp: i64, jti: &str) -> Value {
        json!({
            "iss": issuer,
            "aud": ["https://api.openai.com/v1"],
            "sub": self.user_id,
            "iat": iat,
            "exp": exp,
            "jti": jti,
            AUTH_CLAIM: self.auth_claim(),
            PROFILE_CLAIM: {"email": self.email, "email_verified": true},
        })
    }

    /// id_token payload, the one Codex parses when it loads auth.json.
    pub fn id_claims(&self, issuer: &str, iat: i64, exp: i64, jti: &str) -> Value {
        json!({
            "iss": issuer,
            "aud": ["app_EMoamEEZ73f0CkXaXp7hrann"],
            "sub": self.user_id,
            "iat": iat,
            "exp": exp,
            "jti": jti,
            "email": self.email,
            "email_verified": true,
            AUTH_CLAIM: self.auth_claim(),
        })
    }
}
