//! `/health` and `/status`: what the router is doing, for `cma`, the tray and scripts.
//! Never a token.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::ProxyState;
use crate::accounts::{now_ms, Account, Usage, ALL_MODELS};
use crate::routing::{availability, Availability};

/// Marks our `/health` answer, so a busy port can be told apart from another program.
pub const SERVICE_NAME: &str = "codex-app-account-router";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouterStatus {
    pub service: String,
    pub version: String,
    pub base_url: String,
    pub strategy: String,
    pub started_at: i64,
    pub accounts_file: String,
    /// Set when the accounts file went bad while running; the last good pool serves.
    pub accounts_file_error: Option<String>,
    pub bindings: usize,
    pub accounts: Vec<AccountStatus>,
    /// The last requests, newest first.
    #[serde(default)]
    pub recent: Vec<super::RequestRecord>,
    /// The last sessions moved to another account, newest first, with why.
    #[serde(default)]
    pub moves: Vec<super::moves::MoveRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountStatus {
    pub index: usize,
    pub key: String,
    pub label: Option<String>,
    pub email: Option<String>,
    pub plan: Option<String>,
    pub enabled: bool,
    /// `ok`, `disabled`, `needs-login`, `needs-attention` (deactivated upstream), `limited`
    /// or `cooling-down`.
    pub state: String,
    /// Epoch ms until which the account is limited or resting.
    pub until: Option<i64>,
    /// The code that took the account out of service: the issuer's or the backend's.
    pub needs_login_reason: Option<String>,
    /// Why the account needs the user, in plain words (for `needs-login` and
    /// `needs-attention`).
    #[serde(default)]
    pub attention: Option<String>,
    /// Per-model limits, epoch ms.
    pub limits: std::collections::BTreeMap<String, i64>,
    pub usage: Option<serde_json::Value>,
    pub last_used: Option<i64>,
    pub preferred: bool,
    /// Epoch ms at which the 5-hour window runs out at the pace seen since it started being
    /// watched; absent when it resets first or the pace is unknown.
    #[serde(default)]
    pub empty_at: Option<i64>,
}

impl AccountStatus {
    pub fn from_account(
        index: usize,
        account: &Account,
        preferred: Option<&str>,
        now: i64,
    ) -> AccountStatus {
        // An account limited for some model shows as limited until the first such reset.
        let model_limit = account
            .record
            .rate_limit_resets
            .values()
            .copied()
            .filter(|until| *until > now)
            .min();
        let (state, until) = match availability(account, ALL_MODELS, now) {
            Availability::Ok => match model_limit {
                Some(until) => ("limited", Some(until)),
                None => ("ok", None),
            },
            Availability::Disabled => ("disabled", None),
            Availability::NeedsLogin => ("needs-login", None),
            Availability::NeedsAttention => ("needs-attention", None),
            Availability::Limited { until } => ("limited", Some(until)),
            Availability::CoolingDown { until } => ("cooling-down", Some(until)),
        };
        let record = &account.record;
        AccountStatus {
            index,
            key: account.key.clone(),
            label: record.label.clone(),
            email: record.email.clone(),
            plan: record.plan_type.clone(),
            enabled: record.enabled,
            state: state.to_string(),
            until,
            needs_login_reason: record.needs_login.as_ref().map(|n| n.code.clone()),
            attention: account.attention().map(|a| a.describe().to_string()),
            limits: record
                .rate_limit_resets
                .iter()
                .filter(|(_, until)| **until > now)
                .map(|(m, u)| (m.clone(), *u))
                .collect(),
            usage: account.usage.as_ref().map(usage_json),
            last_used: record.last_used,
            preferred: preferred == Some(account.key.as_str()),
            empty_at: account.forecast_empty_at(now),
        }
    }
}

fn usage_json(usage: &Usage) -> serde_json::Value {
    serde_json::to_value(usage).unwrap_or_default()
}

pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "service": SERVICE_NAME,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

pub async fn status(State(state): State<ProxyState>) -> Json<RouterStatus> {
    Json(snapshot(&state))
}

pub fn snapshot(state: &ProxyState) -> RouterStatus {
    let routing = state.routing();
    routing.pool.sync_from_disk();
    let now = now_ms();
    let preferred = routing.pool.preferred();
    let settings = state.settings();
    RouterStatus {
        service: SERVICE_NAME.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        base_url: state.base_url(),
        strategy: routing.strategy().name().to_string(),
        started_at: state.inner.started_at,
        accounts_file: settings.paths.accounts_file.display().to_string(),
        accounts_file_error: routing.pool.load_error(),
        bindings: routing.bindings.len(),
        accounts: routing
            .pool
            .accounts()
            .iter()
            .enumerate()
            .map(|(i, a)| AccountStatus::from_account(i, a, preferred.as_deref(), now))
            .collect(),
        recent: state.recent_requests(),
        moves: state.moves().recent(),
    }
}
