//! The device-code login, for machines without a browser: the user types a code on another
//! device while this one polls.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use super::exchange::{error_text, exchange_code, LoginTokens};
use super::{LoginError, CLIENT_ID};

/// What to show the user.
#[derive(Clone, Debug)]
pub struct DeviceCode {
    pub user_code: String,
    pub verification_url: String,
    device_auth_id: String,
    interval: Duration,
}

#[derive(Deserialize)]
struct UserCodeResponse {
    device_auth_id: String,
    #[serde(alias = "usercode")]
    user_code: String,
    /// A string on the wire ("5"); a number is accepted too.
    interval: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct DeviceTokenResponse {
    authorization_code: String,
    code_verifier: String,
}

pub async fn request_device_code(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<DeviceCode, LoginError> {
    let response = http
        .post(format!("{issuer}/api/accounts/deviceauth/usercode"))
        .json(&json!({"client_id": CLIENT_ID}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|_| LoginError::Exchange("cannot reach the sign-in server".to_string()))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(LoginError::Exchange(
            "device-code login is not enabled for this sign-in server; use the browser login"
                .to_string(),
        ));
    }
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    if !status.is_success() {
        return Err(LoginError::Exchange(error_text(&body, status.as_u16())));
    }
    let parsed: UserCodeResponse = serde_json::from_slice(&body)
        .map_err(|_| LoginError::Exchange("the device-code answer has no user code".to_string()))?;
    let seconds = match parsed.interval {
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(5),
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(5),
        _ => 5,
    };
    Ok(DeviceCode {
        user_code: parsed.user_code,
        verification_url: format!("{issuer}/codex/device"),
        device_auth_id: parsed.device_auth_id,
        interval: Duration::from_secs(seconds.clamp(1, 60)),
    })
}

/// Polls until the user has entered the code (or `timeout`), then exchanges it.
pub async fn complete_device_login(
    http: &reqwest::Client,
    issuer: &str,
    code: &DeviceCode,
    timeout: Duration,
) -> Result<LoginTokens, LoginError> {
    let started = Instant::now();
    loop {
        if started.elapsed() > timeout {
            return Err(LoginError::TimedOut(timeout));
        }
        let response = http
            .post(format!("{issuer}/api/accounts/deviceauth/token"))
            .json(&json!({"device_auth_id": code.device_auth_id, "user_code": code.user_code}))
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => {
                let grant: DeviceTokenResponse = r.json().await.map_err(|_| {
                    LoginError::Exchange("the device-code grant is malformed".to_string())
                })?;
                let redirect_uri = format!("{issuer}/deviceauth/callback");
                return exchange_code(
                    http,
                    issuer,
                    &grant.authorization_code,
                    &redirect_uri,
                    &grant.code_verifier,
                )
                .await
                .map_err(LoginError::Exchange);
            }
            // 403 and 404 mean the user has not entered the code yet.
            Ok(r) if matches!(r.status().as_u16(), 403 | 404) => {}
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.bytes().await.unwrap_or_default();
                return Err(LoginError::Denied(error_text(&body, status)));
            }
            Err(_) => {}
        }
        tokio::time::sleep(code.interval).await;
    }
}
