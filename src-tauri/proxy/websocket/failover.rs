//! Which account serves a socket's requests: the first one tries accounts until one serves,
//! as on HTTP; a later one stays on the socket's account while it can serve, and otherwise
//! the session moves (the client is closed with 1012 and reconnects).

use std::collections::HashSet;
use std::time::Instant;

use bytes::Bytes;

use super::super::forward::{
    exhausted, move_reason, next_account, note_failure, record_move, resting, usable, FORCE_HEADER,
};
use super::super::moves::History;
use super::super::upstream::{self, Failure};
use super::super::ProxyState;
use super::frames::{generates, CLOSE_RESTART};
use super::link::{self, Link, Opened, Unanswered};
use super::session::{Flow, Session};
use crate::accounts::now_ms;
use crate::routing::{availability, Availability, RequestIdentity};

/// Where a session was before this socket: the account it is bound to and the one that
/// issued its turn state. Read by the first request's failover, and at the handshake to open
/// the socket that failover will then find.
pub(super) struct Holders {
    pub bound: Option<String>,
    pub turn: Option<String>,
}

impl Holders {
    pub(super) fn read(state: &ProxyState, identity: &RequestIdentity) -> Holders {
        let bindings = &state.routing().bindings;
        Holders {
            bound: (identity.session.as_deref()).and_then(|s| bindings.session_account(s)),
            turn: (identity.turn_state.as_deref()).and_then(|t| bindings.turn_account(t)),
        }
    }

    /// Whether the client's turn state goes along to `account`: only when the session stays
    /// on the account that issued it.
    pub(super) fn keep_turn_state(&self, account: &str) -> bool {
        self.bound.as_deref().is_none_or(|b| b == account)
            && self.turn.as_deref().is_none_or(|t| t == account)
    }
}

impl Session {
    /// The first request of the socket: try accounts until one serves, as on HTTP.
    pub(super) async fn open(
        &mut self,
        frame: Bytes,
        model: &str,
        identity: &RequestIdentity,
        started: Instant,
    ) -> Flow {
        let state = self.state.clone();
        let routing = state.routing();
        routing.pool.sync_from_disk();
        let holders = Holders::read(&state, identity);
        let forced = self
            .headers
            .get(FORCE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let session = identity.session.as_deref();
        let mut history = History::new(state.moves(), session, &frame);
        let mut healed = false;
        let mut tried = HashSet::new();
        let mut last: Option<Failure> = None;
        while let Some(account) = next_account(&state, forced.as_deref(), identity, model, &tried) {
            tried.insert(account.clone());
            // A session leaving its account drops what only that account can read, and the
            // turn state that account issued.
            let moving = holders.bound.as_deref().filter(|b| *b != account);
            let keep_turn_state = holders.keep_turn_state(&account);
            let (sent, dropped) = history
                .body_for(&account, moving)
                .unwrap_or_else(|| (frame.clone(), 0));
            let opened = match self.ready.take() {
                Some(ready)
                    if ready.link.account == account
                        && ready.keep_turn_state == keep_turn_state =>
                {
                    link::first_request_on(&state, &self.headers, ready.link, keep_turn_state, sent)
                        .await
                }
                other => {
                    if let Some(mut ready) = other {
                        link::close(&mut ready.link.socket).await;
                    }
                    link::open(&state, &self.headers, &account, keep_turn_state, sent).await
                }
            };
            let now = now_ms();
            match opened {
                Opened::Ready(link, opening) => {
                    if let Some(from) = moving {
                        record_move(
                            &state,
                            identity,
                            from,
                            &account,
                            model,
                            last.as_ref(),
                            dropped,
                        );
                    }
                    let turn = link
                        .turn
                        .clone()
                        .or(identity.turn_state.clone().filter(|_| keep_turn_state));
                    routing
                        .bindings
                        .confirm(session, turn.as_deref(), &account, now);
                    self.link = Some(*link);
                    self.marking = moving.filter(|_| !generates(&frame)).map(str::to_string);
                    return self.deliver(opening, model, started).await;
                }
                Opened::Failed(Failure::ForeignContent { replay })
                    if !healed && session.is_some() =>
                {
                    // The move was not known (a restart forgot it): once more, without them.
                    history.forget_unreadable();
                    tracing::info!(account = %routing.pool.display_name(&account), "encrypted content from another account; retrying without it");
                    healed = true;
                    tried.remove(&account);
                    last = Some(Failure::ForeignContent { replay });
                }
                Opened::Failed(failure) => {
                    note_failure(&state, &account, model, &failure, now);
                    last = Some(failure);
                }
                Opened::Refused(response) => {
                    return self.answer(response, model, Some(account), started).await;
                }
                Opened::NoWebSocket => {
                    self.close_client(CLOSE_RESTART, "the upstream refuses WebSocket; use HTTP")
                        .await;
                    return Flow::Stop;
                }
            }
        }
        let response = exhausted(&state, model, last);
        self.answer(response, model, None, started).await
    }

    /// A later request on the socket: the same upstream socket while its account serves.
    pub(super) async fn reuse(
        &mut self,
        mut link: Link,
        frame: Bytes,
        model: &str,
        identity: &RequestIdentity,
        started: Instant,
    ) -> Flow {
        let state = self.state.clone();
        let account = link.account.clone();
        // A link whose account only rests after an error serves on when no other account
        // could: trying it beats refusing until the rest ends.
        let worth_a_try =
            || resting(&state, &account, model) && !another_account(&state, &account, model);
        if !usable(&state, &account, model) && !worth_a_try() {
            return self
                .leave(&account, Some(link), &frame, model, identity, None, started)
                .await;
        }
        let session = identity.session.as_deref();
        let mut history = History::new(state.moves(), session, &frame);
        let mut healed = false;
        loop {
            let sent = history
                .body_for(&account, self.marking.as_deref())
                .map_or_else(|| frame.clone(), |(body, _)| body);
            let failure = match link::request(&state, &mut link, sent).await {
                Ok(opening) => {
                    if generates(&frame) {
                        self.marking = None;
                    }
                    let turn = link.turn.clone().or(identity.turn_state.clone());
                    let bindings = &state.routing().bindings;
                    bindings.confirm(session, turn.as_deref(), &account, now_ms());
                    self.link = Some(link);
                    return self.deliver(opening, model, started).await;
                }
                Err(Unanswered::Lost(reason)) => {
                    // The upstream closed the socket while it idled: nothing is known about
                    // the account; a new socket, routed afresh, serves the request.
                    tracing::info!(%reason, "the upstream socket was lost; closing the client socket so Codex reconnects");
                    link::close(&mut link.socket).await;
                    self.close_client(CLOSE_RESTART, "the upstream connection was lost; reconnect")
                        .await;
                    return Flow::Stop;
                }
                Err(Unanswered::Failed(failure)) => failure,
            };
            match failure {
                Failure::ForeignContent { .. } if !healed && session.is_some() => {
                    // Encrypted content this account cannot read (another account wrote it
                    // and the router did not know): once more, without it.
                    history.forget_unreadable();
                    tracing::info!(account = %state.routing().pool.display_name(&account), "encrypted content from another account; retrying without it");
                    healed = true;
                }
                Failure::ForeignContent { replay } => {
                    self.link = Some(link);
                    let response = upstream::replayed(replay);
                    return self.answer(response, model, Some(account), started).await;
                }
                failure => {
                    note_failure(&state, &account, model, &failure, now_ms());
                    // After an error frame the socket still works; after anything else it
                    // may not.
                    let alive = matches!(
                        failure,
                        Failure::Limited { .. }
                            | Failure::Transient {
                                replay: Some(_),
                                ..
                            }
                    );
                    if !alive {
                        link::close(&mut link.socket).await;
                    }
                    let kept = alive.then_some(link);
                    return self
                        .leave(
                            &account,
                            kept,
                            &frame,
                            model,
                            identity,
                            Some(failure),
                            started,
                        )
                        .await;
                }
            }
        }
    }

    /// The socket's account cannot serve this request. When another can, the session moves:
    /// the client is closed with 1012 and reconnects; otherwise it gets the error frame
    /// of "no account can serve" and keeps its socket.
    #[expect(
        clippy::too_many_arguments,
        reason = "one request's context, passed through"
    )]
    async fn leave(
        &mut self,
        from: &str,
        link: Option<Link>,
        frame: &Bytes,
        model: &str,
        identity: &RequestIdentity,
        failure: Option<Failure>,
        started: Instant,
    ) -> Flow {
        let state = self.state.clone();
        let forced = self.headers.contains_key(FORCE_HEADER);
        let elsewhere = !forced && another_account(&state, from, model);
        if elsewhere {
            // The items in this frame were written there; the reconnected socket's first
            // request goes without them.
            History::new(state.moves(), identity.session.as_deref(), frame).leaving(from);
            let reason = move_reason(&state, from, model, failure.as_ref());
            tracing::info!(%reason, "the session moves to another account; closing the client socket so Codex reconnects");
            if let Some(mut link) = link {
                link::close(&mut link.socket).await;
            }
            self.close_client(
                CLOSE_RESTART,
                "the session moves to another account; reconnect",
            )
            .await;
            return Flow::Stop;
        }
        self.link = link;
        let response = exhausted(&state, model, failure);
        self.answer(response, model, None, started).await
    }
}

/// Whether an account other than `from` could serve `model` now (nothing is bound).
fn another_account(state: &ProxyState, from: &str, model: &str) -> bool {
    let now = now_ms();
    state
        .routing()
        .pool
        .accounts()
        .iter()
        .any(|a| a.key != from && availability(a, model, now) == Availability::Ok)
}
