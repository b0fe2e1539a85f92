//! Adding an account from a finished login: a new (account id, user id) pair is added, a
//! known one gets its tokens renewed (and its "needs login" cleared), never a duplicate.

use crate::accounts::now_ms;
use crate::oauth::{LoginError, LoginTokens};
use crate::store::{AccountRecord, Store, StoredSecret, TokenSet};

use super::AppError;

/// What a login did to the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    Added {
        email: Option<String>,
        plan: Option<String>,
    },
    Renewed {
        email: Option<String>,
        plan: Option<String>,
    },
}

impl LoginOutcome {
    pub fn describe(&self) -> String {
        let (verb, email, plan) = match self {
            LoginOutcome::Added { email, plan } => ("added", email, plan),
            LoginOutcome::Renewed { email, plan } => ("renewed the sign-in of", email, plan),
        };
        format!(
            "{verb} {}{}",
            email.as_deref().unwrap_or("the account"),
            plan.as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        )
    }
}

/// Stores a login's tokens (keychain or file, as configured) and its account metadata.
/// Blocking: it may wait on the keychain.
pub fn save_login(store: &Store, tokens: LoginTokens) -> Result<LoginOutcome, AppError> {
    let claims = tokens.claims;
    if claims.account_id.is_none() {
        return Err(LoginError::NoIdentity.into());
    }
    let record = AccountRecord {
        email: claims.email.clone(),
        user_id: claims.user_id.clone(),
        account_id: claims.account_id.clone(),
        plan_type: claims.plan.clone(),
        added_at: now_ms(),
        enabled: true,
        ..Default::default()
    };
    let key = record.key();
    let set = TokenSet {
        access: Some(StoredSecret(tokens.access_token.expose().to_string())),
        refresh: Some(StoredSecret(tokens.refresh_token.expose().to_string())),
        id_token: Some(StoredSecret(tokens.id_token.expose().to_string())),
    };
    let expires = claims.expires_at.map(|s| s * 1000);
    let (email, plan) = (claims.email.clone(), claims.plan.clone());
    let existed = store.save_tokens(&key, &set, expires, Some(record), |r| {
        if claims.email.is_some() {
            r.email = claims.email.clone();
        }
        if claims.plan.is_some() {
            r.plan_type = claims.plan.clone();
        }
        r.needs_login = None;
        r.rate_limit_resets.clear();
    })?;
    Ok(if existed {
        LoginOutcome::Renewed { email, plan }
    } else {
        LoginOutcome::Added { email, plan }
    })
}

/// Opens a sign-in page: with `CODEX_PROXY_BROWSER` when set, else the system browser.
pub fn open_in_browser(settings: &crate::settings::Settings, url: &str) -> Result<(), String> {
    match settings.browser.as_deref().map(str::split_whitespace) {
        Some(mut words) => {
            let program = words.next().ok_or("CODEX_PROXY_BROWSER is empty")?;
            std::process::Command::new(program)
                .args(words)
                .arg(url)
                .spawn()
                .map(drop)
                .map_err(|e| format!("CODEX_PROXY_BROWSER ({program}) did not start: {e}"))
        }
        None => open::that_detached(url).map_err(|e| e.to_string()),
    }
}
