//! The authorization-code exchange, shared by the browser and device-code logins.

use serde::Deserialize;
use serde_json::Value;

use super::claims::{self, TokenClaims};
use super::CLIENT_ID;
use crate::sensitive::{AccessToken, IdToken, RefreshToken};

/// What a successful login yields: the three tokens and who they belong to.
#[derive(Debug)]
pub struct LoginTokens {
    pub id_token: IdToken,
    pub access_token: AccessToken,
    pub refresh_token: RefreshToken,
    /// From the id_token, with the plan taken from the access token as Codex does.
    pub claims: TokenClaims,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: String,
    access_token: String,
    refresh_token: String,
}

/// Exchanges `code` for tokens at `{issuer}/oauth/token`; the error is the issuer's own words.
pub async fn exchange_code(
    http: &reqwest::Client,
    issuer: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<LoginTokens, String> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("client_id", CLIENT_ID),
        ("code_verifier", verifier),
    ];
    let response = http
        .post(format!("{issuer}/oauth/token"))
        .form(&form)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot reach the sign-in server ({})",
                if e.is_timeout() {
                    "timed out"
                } else {
                    "connection failed"
                }
            )
        })?;
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!(
            "the sign-in server refused the login: {}",
            error_text(&body, status.as_u16())
        ));
    }
    let tokens: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
        "the sign-in server's answer has no id, access and refresh token".to_string()
    })?;
    let mut found = claims::decode(&tokens.id_token).unwrap_or_default();
    let access = claims::decode(&tokens.access_token).unwrap_or_default();
    found.plan = access.plan.or(found.plan);
    found.account_id = found.account_id.or(access.account_id);
    found.user_id = found.user_id.or(access.user_id);
    found.email = found.email.or(access.email);
    found.expires_at = access.expires_at;
    Ok(LoginTokens {
        id_token: IdToken::new(tokens.id_token),
        access_token: AccessToken::new(tokens.access_token),
        refresh_token: RefreshToken::new(tokens.refresh_token),
        claims: found,
    })
}

/// The issuer's message, read the way Codex reads it: `error_description`, `error.message`,
/// `error`, else the body.
pub fn error_text(body: &[u8], status: u16) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(200)
            .collect::<String>();
        return if text.is_empty() {
            format!("HTTP {status}")
        } else {
            text
        };
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    text(value.get("error_description"))
        .or_else(|| text(value.get("error").and_then(|e| e.get("message"))))
        .or_else(|| text(value.get("error")))
        .or_else(|| text(value.get("error").and_then(|e| e.get("code"))))
        .unwrap_or_else(|| format!("HTTP {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_errors_read_like_codex_reads_them() {
        assert_eq!(
            error_text(
                br#"{"error":"invalid_grant","error_description":"bad code"}"#,
                400
            ),
            "bad code"
        );
        assert_eq!(error_text(br#"{"error":{"message":"nope"}}"#, 400), "nope");
        assert_eq!(
            error_text(br#"{"error":"invalid_grant"}"#, 400),
            "invalid_grant"
        );
        assert_eq!(error_text(b"", 502), "HTTP 502");
    }
}
