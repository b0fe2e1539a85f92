//! The refresh-token grant, and the classification of its failures.

use serde::Deserialize;
use serde_json::Value;

use crate::sensitive::{AccessToken, IdToken, RefreshToken};

/// Codex's public OAuth client: the only one whose tokens the ChatGPT backend accepts.
pub const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";

/// Tokens returned by a refresh; each may be absent, and then the old one stays valid.
#[derive(Debug)]
pub struct RefreshedTokens {
    pub access_token: Option<AccessToken>,
    pub refresh_token: Option<RefreshToken>,
    pub id_token: Option<IdToken>,
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The refresh token is dead; only a new login helps.
    #[error("the sign-in for this account is no longer valid ({code}); log in to it again")]
    Permanent { code: String },
    /// Worth trying again later: network trouble, 5xx, an unknown answer.
    #[error("token refresh failed: {reason}")]
    Transient { reason: String },
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    refresh_token: Option<String>,
    id_token: Option<String>,
}

/// Spends `refresh_token` at `token_url`. The caller must store the rotated token before
/// anything else uses the account: the old one is now burned.
pub async fn refresh(
    http: &reqwest::Client,
    token_url: &str,
    refresh_token: &RefreshToken,
) -> Result<RefreshedTokens, RefreshError> {
    let body = serde_json::json!({
        "client_id": CLIENT_ID,
        "grant_type": "refresh_token",
        "refresh_token": refresh_token.expose(),
    });
    let response = http
        .post(token_url)
        .json(&body)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| RefreshError::Transient {
            reason: format!("cannot reach the token endpoint ({})", without_url(&e)),
        })?;
    let status = response.status();
    let bytes = response.bytes().await.unwrap_or_default();
    if status.is_success() {
        let parsed: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|_| RefreshError::Transient {
                reason: "the token endpoint answered something that is not a token response"
                    .to_string(),
            })?;
        return Ok(RefreshedTokens {
            access_token: parsed.access_token.map(AccessToken::new),
            refresh_token: parsed.refresh_token.map(RefreshToken::new),
            id_token: parsed.id_token.map(IdToken::new),
        });
    }
    let code = error_code(&bytes);
    match code.as_deref() {
        Some(
            c @ ("refresh_token_reused" | "refresh_token_expired" | "refresh_token_invalidated"),
        ) => Err(RefreshError::Permanent {
            code: c.to_string(),
        }),
        // Codex treats any 401 from the token endpoint as needing a new login.
        _ if status.as_u16() == 401 => Err(RefreshError::Permanent {
            code: code.unwrap_or_else(|| "unauthorized".to_string()),
        }),
        _ => Err(RefreshError::Transient {
            reason: format!(
                "the token endpoint answered {}{}",
                status.as_u16(),
                code.map(|c| format!(" ({c})")).unwrap_or_default()
            ),
        }),
    }
}

/// The error code the way Codex reads it: `error.code`, a string `error`, or `code`.
fn error_code(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let code = match value.get("error") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(e) => e.get("code").and_then(Value::as_str).map(str::to_string),
        None => None,
    }
    .or_else(|| {
        value
            .get("code")
            .and_then(Value::as_str)
            .map(str::to_string)
    })?;
    Some(code.to_ascii_lowercase())
}

/// reqwest errors print the URL; ours carry no secret, but keep messages short anyway.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_error_code_in_every_shape_codex_reads() {
        assert_eq!(
            error_code(br#"{"error":{"code":"refresh_token_reused","message":"m"}}"#).as_deref(),
            Some("refresh_token_reused")
        );
        assert_eq!(
            error_code(br#"{"error":"invalid_grant"}"#).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(
            error_code(br#"{"code":"REFRESH_TOKEN_EXPIRED"}"#).as_deref(),
            Some("refresh_token_expired")
        );
        assert_eq!(error_code(b"<html>"), None);
    }
}
