//! What the backend answers to one admitted Responses request, whatever the transport: the
//! HTTP handler turns an [`Answer`] into a response, the WebSocket session into frames.

use std::time::Duration;

use serde_json::{json, Value};

use super::accounts::now_s;
use super::admission::Admitted;
use super::behaviour::{event_words, Behaviour, Deactivation, OK_DELTAS, OK_TEXT};
use super::org_binding::{
    compaction_encrypted_content, has_foreign_content, mismatch_body, reasoning_encrypted_content,
};
use super::quota::usage_limit_body;
use super::sse::{Step, StreamContext};
use super::{lock, Shared};

/// A JSON error: an HTTP response, or a `{"type":"error","status":…}` frame.
pub(super) struct JsonError {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

pub(super) enum Answer {
    Error(JsonError),
    /// Nothing for `delay`, then the events of `steps`.
    Stream {
        delay: Duration,
        steps: Vec<Step>,
    },
    /// Drop the connection without answering.
    Reset,
}

/// The answer for the behaviours that are plain JSON errors, `None` for the others.
pub(super) fn error_answer(behaviour: &Behaviour, admitted: &Admitted) -> Option<JsonError> {
    let (status, body, headers) = match behaviour {
        Behaviour::UsageLimit { resets_in_seconds } => {
            let seconds = i64::try_from(*resets_in_seconds).unwrap_or(i64::MAX / 2);
            let resets_at = now_s() + seconds;
            let body = usage_limit_body(&admitted.plan, resets_at, *resets_in_seconds);
            let headers = admitted.rate_limit_headers(Some((100.0, resets_at)));
            (429, body, headers)
        }
        Behaviour::RateLimited => {
            let body = json!({"error": {"type": "rate_limit_exceeded", "code": "rate_limit_exceeded", "message": "Rate limit reached for requests on this account. Please try again in 1.5s."}});
            (429, body, admitted.headers.clone())
        }
        Behaviour::Overloaded => {
            let body = json!({"error": {"type": "server_error", "code": "server_is_overloaded", "message": "Our servers are currently overloaded. Please try again later."}});
            (503, body, admitted.headers.clone())
        }
        Behaviour::Status { status, body } => (*status, body.clone(), admitted.headers.clone()),
        Behaviour::Deactivated(shape) => {
            let (status, body, extra) = deactivated(*shape);
            let mut headers = admitted.headers.clone();
            headers.extend(extra);
            (status, body, headers)
        }
        _ => return None,
    };
    Some(JsonError {
        status,
        body,
        headers,
    })
}

/// Status, body and extra headers of one deactivation shape (`shared/protocol.md` has none;
/// these are what users of Codex report the backend sending).
fn deactivated(shape: Deactivation) -> (u16, Value, Vec<(String, String)>) {
    use base64::Engine;
    match shape {
        Deactivation::Account401 => (
            401,
            json!({"error": {"message": "Your OpenAI account has been deactivated, please check your email for more information. If you feel this is an error, contact us through our help center at help.openai.com.", "type": "invalid_request_error", "code": "account_deactivated", "param": null}}),
            Vec::new(),
        ),
        Deactivation::Workspace402 => (
            402,
            json!({"detail": {"code": "deactivated_workspace"}}),
            Vec::new(),
        ),
        Deactivation::Workspace403 => (
            403,
            json!({"error": {"type": "invalid_request_error", "code": "workspace_deactivated", "message": "This workspace is deactivated. Select an active workspace and try again."}}),
            Vec::new(),
        ),
        Deactivation::GovernmentWorkspace403 => (
            403,
            json!({"error": {"code": "governmentWorkspaceRequired", "message": "This workspace requires a government account."}}),
            Vec::new(),
        ),
        Deactivation::AccountInHeader403 => {
            let code = json!({"error": {"code": "account_deactivated"}}).to_string();
            let encoded = base64::engine::general_purpose::STANDARD.encode(code);
            (
                403,
                json!({"detail": "Forbidden"}),
                vec![("x-error-json".to_string(), encoded)],
            )
        }
    }
}

/// Refusals that come before any behaviour is used: a body that is not JSON, or replayed
/// `encrypted_content` of another account (then the queued behaviour stays queued).
pub(super) fn refusal(admitted: &Admitted) -> Option<JsonError> {
    if admitted.body.is_null() {
        let body = json!({"error": {"type": "invalid_request_error", "code": "invalid_json", "message": "The request body is not valid JSON."}});
        let headers = admitted.headers.clone();
        return Some(JsonError {
            status: 400,
            body,
            headers,
        });
    }
    has_foreign_content(&admitted.body["input"], &admitted.account_id).then(|| JsonError {
        status: 400,
        body: mismatch_body(),
        headers: admitted.headers.clone(),
    })
}

/// What a `/responses` call (or a `response.create` frame) gets: the account's next behaviour
/// applied to a success shaped by the request (compaction, prewarm, reasoning or not).
pub(super) fn plan(shared: &Shared, admitted: &Admitted) -> Answer {
    if let Some(refused) = refusal(admitted) {
        return Answer::Error(refused);
    }
    let body = &admitted.body;
    let wants_compaction = body["input"]
        .as_array()
        .and_then(|items| items.last())
        .is_some_and(|item| item["type"] == "compaction_trigger");
    let prewarm = body["generate"] == false;
    let wants_reasoning = body["include"]
        .as_array()
        .is_some_and(|include| include.iter().any(|i| i == "reasoning.encrypted_content"));
    let (behaviour, context, compaction) = {
        let mut registry = lock(shared);
        let behaviour = registry.next_behaviour(admitted.account);
        let reasoning = (wants_reasoning && !wants_compaction && !prewarm).then(|| {
            let blob = reasoning_encrypted_content(&admitted.account_id, registry.serial());
            json!({"id": registry.unique("rs"), "type": "reasoning", "summary": [],
                   "encrypted_content": blob})
        });
        let compaction = (
            registry.unique("cmp"),
            compaction_encrypted_content(&admitted.account_id, registry.serial()),
        );
        let context = StreamContext {
            response_id: registry.unique("resp"),
            message_id: registry.unique("msg"),
            model: body["model"].as_str().unwrap_or("gpt-5.5").to_owned(),
            plan: admitted.plan.clone(),
            usage: admitted.usage,
            created_at: now_s(),
            reasoning,
        };
        (behaviour, context, compaction)
    };
    if let Some(error) = error_answer(&behaviour, admitted) {
        return Answer::Error(error);
    }
    let success = |text: &str, deltas: usize, gap: Duration| {
        if prewarm {
            context.prewarm_steps()
        } else if wants_compaction {
            context.compaction_steps(&compaction.0, &compaction.1)
        } else {
            context.ok_steps(text, deltas, gap)
        }
    };
    let default_steps = || success(OK_TEXT, OK_DELTAS, Duration::ZERO);
    let stream = |steps| Answer::Stream {
        delay: Duration::ZERO,
        steps,
    };
    match behaviour {
        Behaviour::Ok { text, deltas, gap } => stream(success(&text, deltas, gap)),
        Behaviour::Timed { deltas, gap } if !wants_compaction && !prewarm => {
            stream(context.timed_steps(deltas, gap))
        }
        Behaviour::Timed { deltas, gap } => stream(success(&event_words(deltas), deltas, gap)),
        Behaviour::FailedFirst { code } => stream(vec![Step::Event(context.failed(&code))]),
        Behaviour::ErrorEventFirst { code } => {
            stream(vec![Step::Event(super::sse::error_event(&code))])
        }
        Behaviour::CutAfter { deltas_before_cut } => stream(context.cut_steps(deltas_before_cut)),
        Behaviour::StallBeforeHeaders { d } => Answer::Stream {
            delay: d,
            steps: default_steps(),
        },
        Behaviour::StallAfterFirstEvent { d } => {
            let mut steps = default_steps();
            steps.insert(1, Step::Sleep(d));
            stream(steps)
        }
        Behaviour::Reset => Answer::Reset,
        Behaviour::Unfamiliar => {
            let mut steps = default_steps();
            let event = json!({"type": "codex.unfamiliar_event", "from": "a newer backend"});
            steps.insert(1, Step::Event(event));
            stream(steps)
        }
        Behaviour::UsageLimit { .. }
        | Behaviour::RateLimited
        | Behaviour::Overloaded
        | Behaviour::Status { .. }
        | Behaviour::Deactivated(_) => {
            unreachable!("error behaviours were answered above")
        }
    }
}
