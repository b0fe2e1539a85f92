//! Failover: try accounts one after another until one serves, all before the first byte
//! reaches the client; then answer the way Codex handles best when none can.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tracing::Instrument;

use super::error::ProxyError;
use super::moves::{History, MoveRecord};
use super::upstream::{self, Answer, Failure, Outgoing, Replay};
use super::ProxyState;
use crate::accounts::{now_ms, AccountsError, Attention};
use crate::routing::{availability, Availability, RequestIdentity};

/// Request header naming the account (by key) that must serve, for checks.
pub const FORCE_HEADER: &str = "x-cma-account";
/// Response header naming the account that served.
pub const SERVED_BY_HEADER: &str = "x-cma-account";

/// When a limit answer says nothing about its reset, look again after this long.
const UNKNOWN_RESET: Duration = Duration::from_secs(300);

pub async fn forward(
    state: &ProxyState,
    out: Outgoing,
    model: &str,
    identity: RequestIdentity,
) -> Response {
    let plain = out.body.clone();
    forward_plain(state, out, model, identity, plain).await
}

/// `forward` for a body that may be compressed: `plain` is its JSON, read when the session
/// moves and its input must change.
pub async fn forward_plain(
    state: &ProxyState,
    out: Outgoing,
    model: &str,
    identity: RequestIdentity,
    plain: Bytes,
) -> Response {
    let span = tracing::info_span!("request", path = %out.url.rsplit('/').next().unwrap_or(""), model, session = %identity.session_tag());
    run(state, out, model, identity, plain)
        .instrument(span)
        .await
}

/// The request with another body: plain JSON, so no `Content-Encoding` any more.
fn with_body(out: &Outgoing, body: Bytes) -> Outgoing {
    let mut headers = out.headers.clone();
    headers.remove(axum::http::header::CONTENT_ENCODING);
    Outgoing {
        method: out.method.clone(),
        url: out.url.clone(),
        headers,
        body,
        streaming: out.streaming,
    }
}

/// Why a session is leaving `from`: what this request met there, or the account's state.
pub(super) fn move_reason(
    state: &ProxyState,
    from: &str,
    model: &str,
    met: Option<&Failure>,
) -> String {
    match met {
        Some(Failure::Limited { code, .. }) => format!("{code} on the old account"),
        Some(Failure::Unauthorized) => "the old account's token was refused".to_string(),
        Some(Failure::Transient { reason, .. }) => reason.clone(),
        Some(Failure::ForeignContent { .. }) => "unreadable encrypted content".to_string(),
        Some(Failure::Deactivated { code }) => format!(
            "the old account needs attention: {}",
            Attention::from_code(code).describe()
        ),
        None => {
            let accounts = state.routing().pool.accounts();
            match accounts.iter().find(|a| a.key == from) {
                None => "the old account was removed".to_string(),
                Some(a) => match availability(a, model, now_ms()) {
                    Availability::Limited { .. } => "the old account is limited".to_string(),
                    Availability::Disabled => "the old account is disabled".to_string(),
                    Availability::NeedsLogin => "the old account needs a new login".to_string(),
                    Availability::NeedsAttention => format!(
                        "the old account needs attention: {}",
                        a.attention().unwrap_or(Attention::Login).describe()
                    ),
                    other => format!("the old account is {other:?}").to_lowercase(),
                },
            }
        }
    }
}

/// The account for the next attempt: the pinned one (`x-cma-account`) while it can serve,
/// else routing's choice.
pub(super) fn next_account(
    state: &ProxyState,
    forced: Option<&str>,
    identity: &RequestIdentity,
    model: &str,
    tried: &HashSet<String>,
) -> Option<String> {
    match forced {
        // A pinned account that only rests after an error is tried once all the same.
        Some(key) => ((usable(state, key, model)
            || tried.is_empty() && resting(state, key, model))
            && !tried.contains(key))
        .then(|| key.to_string()),
        None => state
            .routing()
            .account_for(identity, model, now_ms(), tried),
    }
}

/// Whether the account `key` can take `model` now; `None` when there is no such account.
fn availability_of(state: &ProxyState, key: &str, model: &str) -> Option<Availability> {
    let accounts = state.routing().pool.accounts();
    let account = accounts.iter().find(|a| a.key == key)?;
    Some(availability(account, model, now_ms()))
}

/// Whether the account `key` can serve `model` now.
pub(super) fn usable(state: &ProxyState, key: &str, model: &str) -> bool {
    availability_of(state, key, model) == Some(Availability::Ok)
}

/// Whether the account `key` only rests after an error (it is not limited, disabled or
/// signed out): worth a try when nothing else can serve.
pub(super) fn resting(state: &ProxyState, key: &str, model: &str) -> bool {
    matches!(
        availability_of(state, key, model),
        Some(Availability::CoolingDown { .. })
    )
}

/// Logs a session's move from `from` to `to` and lists it in `/status`.
pub(super) fn record_move(
    state: &ProxyState,
    identity: &RequestIdentity,
    from: &str,
    to: &str,
    model: &str,
    met: Option<&Failure>,
    dropped: usize,
) {
    let pool = &state.routing().pool;
    state.moves().record(MoveRecord {
        at: now_ms(),
        session: identity.session_tag(),
        from: pool.display_name(from),
        to: pool.display_name(to),
        reason: move_reason(state, from, model, met),
        dropped,
    });
}

async fn run(
    state: &ProxyState,
    out: Outgoing,
    model: &str,
    identity: RequestIdentity,
    plain: Bytes,
) -> Response {
    let routing = state.routing();
    routing.pool.sync_from_disk();
    let started = Instant::now();
    let settings = state.settings();
    let timeouts = (settings.first_byte_timeout, settings.stream_idle_timeout);
    let mut tried = HashSet::new();
    let mut last: Option<Failure> = None;
    let turn_account = identity
        .turn_state
        .as_deref()
        .and_then(|t| routing.bindings.turn_account(t));

    // `x-cma-account` pins one account (what `cma smoke --all-accounts` uses): no failover.
    let forced = out
        .headers
        .get(FORCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let session = identity.session.clone();
    let bound = session
        .as_deref()
        .and_then(|s| routing.bindings.session_account(s));
    let mut history = History::new(state.moves(), session.as_deref(), &plain);
    let mut healed = false;
    while let Some(account) = next_account(state, forced.as_deref(), &identity, model, &tried) {
        tried.insert(account.clone());
        // A session leaving its account drops what only that account can read, and its
        // turn state, which that account issued.
        let moving = bound.as_deref().filter(|b| *b != account);
        let keep_turn_state =
            moving.is_none() && turn_account.as_deref().is_none_or(|t| t == account);
        let (rewritten, dropped) = match history.body_for(&account, moving) {
            Some((body, n)) => (Some(with_body(&out, body)), n),
            None => (None, 0),
        };
        let sent = rewritten.as_ref().unwrap_or(&out);
        let answer = attempt(state, sent, &account, keep_turn_state, timeouts).await;
        let now = now_ms();
        match answer {
            Answer::Fail(Failure::ForeignContent { replay }) if !healed && session.is_some() => {
                // The move was not known (a restart forgot it): once more, without them.
                history.forget_unreadable();
                tracing::info!(account = %routing.pool.display_name(&account), "encrypted content from another account; retrying without it");
                healed = true;
                tried.remove(&account);
                last = Some(Failure::ForeignContent { replay });
            }
            Answer::Serve(response) => {
                if let Some(from) = moving {
                    record_move(
                        state,
                        &identity,
                        from,
                        &account,
                        model,
                        last.as_ref(),
                        dropped,
                    );
                }
                let turn = response
                    .headers()
                    .get("x-codex-turn-state")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .or(identity.turn_state.clone().filter(|_| keep_turn_state));
                routing.bindings.confirm(
                    identity.session.as_deref(),
                    turn.as_deref(),
                    &account,
                    now,
                );
                routing.pool.mark_used(&account, now);
                let mut response = response;
                let name = routing.pool.display_name(&account);
                if let Ok(value) = HeaderValue::from_str(&name) {
                    response.headers_mut().insert(SERVED_BY_HEADER, value);
                }
                if response.status().is_success() {
                    super::pooled::rewrite_headers(state, response.headers_mut());
                }
                tracing::debug!(
                    account = %name,
                    status = response.status().as_u16(),
                    first_byte_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "served"
                );
                state.record_request(super::RequestRecord {
                    at: now,
                    account: Some(name),
                    key: Some(account.clone()),
                    model: model.to_string(),
                    status: response.status().as_u16(),
                    first_byte_ms: started.elapsed().as_secs_f64() * 1000.0,
                });
                return response;
            }
            Answer::Fail(failure) => {
                note_failure(state, &account, model, &failure, now);
                last = Some(failure);
            }
        }
    }
    let response = exhausted(state, model, last);
    state.record_request(super::RequestRecord {
        at: now_ms(),
        account: None,
        key: None,
        model: model.to_string(),
        status: response.status().as_u16(),
        first_byte_ms: started.elapsed().as_secs_f64() * 1000.0,
    });
    response
}

/// One account's go: credentials (refreshing if due), the request, one refresh and retry on
/// a 401, then the classification of the answer.
async fn attempt(
    state: &ProxyState,
    out: &Outgoing,
    account: &str,
    keep_turn_state: bool,
    timeouts: (Duration, Duration),
) -> Answer {
    let pool = &state.routing().pool;
    let credentials = match pool.credentials(account, now_ms()).await {
        Ok(c) => c,
        Err(e) => return Answer::Fail(credential_failure(e)),
    };
    let http = &state.http();
    let mut response =
        match upstream::send(http, out, &credentials, keep_turn_state, timeouts.0).await {
            Ok(r) => r,
            Err(f) => return Answer::Fail(f),
        };
    if response.status() == reqwest::StatusCode::UNAUTHORIZED {
        if let Some(deactivated) = upstream::deactivated_401(response, timeouts.0).await {
            return Answer::Fail(deactivated);
        }
        let renewed = match pool
            .credentials_after_401(account, &credentials, now_ms())
            .await
        {
            Ok(c) => c,
            Err(e) => return Answer::Fail(credential_failure(e)),
        };
        response = match upstream::send(http, out, &renewed, keep_turn_state, timeouts.0).await {
            Ok(r) => r,
            Err(f) => return Answer::Fail(f),
        };
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let deactivated = upstream::deactivated_401(response, timeouts.0).await;
            return Answer::Fail(deactivated.unwrap_or(Failure::Unauthorized));
        }
    }
    let history = state.history();
    upstream::classify(
        response,
        out,
        pool,
        account,
        history,
        timeouts,
        now_ms() / 1000,
    )
    .await
}

pub(super) fn credential_failure(e: AccountsError) -> Failure {
    match e {
        // The pool has marked the account; routing skips it from now on.
        AccountsError::NeedsLogin { .. }
        | AccountsError::NoRefreshToken { .. }
        | AccountsError::NotFound(_) => Failure::Transient {
            reason: e.to_string(),
            cooldown: Duration::ZERO,
            replay: None,
        },
        other => Failure::Transient {
            reason: other.to_string(),
            cooldown: Duration::from_secs(30),
            replay: None,
        },
    }
}

pub(super) fn note_failure(
    state: &ProxyState,
    account: &str,
    model: &str,
    failure: &Failure,
    now: i64,
) {
    let pool = &state.routing().pool;
    let name = pool.display_name(account);
    match failure {
        Failure::Limited { code, reset } => {
            let until = reset
                .map(|s| s * 1000)
                .filter(|&ms| ms > now)
                .unwrap_or(now + UNKNOWN_RESET.as_millis() as i64);
            tracing::info!(account = %name, %code, resets_in_s = (until - now) / 1000, "limit reached; trying another account");
            pool.record_limit(account, model, until);
        }
        Failure::Unauthorized => {
            tracing::warn!(account = %name, "refused even after a token refresh; trying another account");
            pool.record_cooldown(account, now + 60_000);
        }
        Failure::Transient {
            reason, cooldown, ..
        } => {
            tracing::info!(account = %name, %reason, "trying another account");
            pool.record_cooldown(account, now + cooldown.as_millis() as i64);
        }
        Failure::Deactivated { code } => {
            if pool.record_attention(account, code, now) {
                let reason = Attention::from_code(code).describe();
                tracing::warn!(account = %name, %code, "{reason}; the account needs attention, trying another account");
            }
        }
        // The request's fault, not the account's: no rest.
        Failure::ForeignContent { .. } => {
            tracing::info!(account = %name, "encrypted content this account cannot read");
        }
    }
}

/// No account served: say why in the form Codex handles best.
pub(super) fn exhausted(state: &ProxyState, model: &str, last: Option<Failure>) -> Response {
    let accounts = state.routing().pool.accounts();
    let now = now_ms();
    if accounts.is_empty() {
        return ProxyError::NoAccounts.into_response();
    }
    let states: Vec<Availability> = accounts
        .iter()
        .map(|a| availability(a, model, now))
        .collect();
    if states.iter().all(|s| *s == Availability::Disabled) {
        return ProxyError::AllDisabled.into_response();
    }
    let live: Vec<&Availability> = states
        .iter()
        .filter(|s| {
            !matches!(
                s,
                Availability::Disabled | Availability::NeedsLogin | Availability::NeedsAttention
            )
        })
        .collect();
    if live.is_empty() {
        // A deactivated account answers like one that needs a login (Codex stops and shows
        // it), with the backend's reason beside its name.
        let names: Vec<String> = accounts
            .iter()
            .filter_map(|a| match a.attention()? {
                Attention::Login => Some(a.record.display_name()),
                other => Some(format!("{}: {}", a.record.display_name(), other.describe())),
            })
            .collect();
        return ProxyError::AllNeedLogin(names.join(", ")).into_response();
    }
    let resets: Option<Vec<i64>> = live
        .iter()
        .map(|s| match s {
            Availability::Limited { until } => Some(*until),
            _ => None,
        })
        .collect();
    if let Some(earliest) = resets.and_then(|r| r.into_iter().min()) {
        return ProxyError::AllLimited {
            resets_at: earliest / 1000,
            resets_in_seconds: ((earliest - now) / 1000).max(1),
        }
        .into_response();
    }
    match last {
        Some(Failure::Transient { replay: Some(replay), .. }) => upstream::replayed(replay),
        Some(Failure::ForeignContent { replay }) => upstream::replayed(replay),
        Some(Failure::Transient { reason, .. }) => ProxyError::UpstreamUnavailable(reason).into_response(),
        // A pinned account (`x-cma-account`) that is deactivated, while others are not.
        Some(Failure::Deactivated { code }) => ProxyError::AccountNeedsAttention(
            Attention::from_code(&code).describe().to_string(),
        )
        .into_response(),
        Some(Failure::Unauthorized) => upstream::replayed(Replay {
            status: reqwest::StatusCode::UNAUTHORIZED,
            headers: Default::default(),
            body: bytes::Bytes::from_static(br#"{"error":{"code":"upstream_unauthorized","message":"the ChatGPT backend refused every account's token"}}"#),
        }),
        // A pinned account (`x-cma-account`) that is limited, while others are not.
        Some(Failure::Limited { reset, .. }) => {
            let resets_at = reset.unwrap_or((now + UNKNOWN_RESET.as_millis() as i64) / 1000);
            ProxyError::AccountLimited {
                resets_at,
                resets_in_seconds: (resets_at - now / 1000).max(1),
            }
            .into_response()
        }
        // Limited accounts are handled above; cooling-down ones land here.
        _ => ProxyError::UpstreamUnavailable("every account is resting after errors".to_string()).into_response(),
    }
}
