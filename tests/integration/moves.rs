//! A session that must move to another account: the old account's encrypted reasoning is
//! dropped (the new one would answer `400 invalid_encrypted_content`), on this turn and the
//! next, and the move shows in `/status` with its reason.

use serde_json::{json, Value};

use crate::harness::*;
use crate::support::Behaviour;

const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");
const KEY_A: &str = "acct-a/user-acct-a";
const KEY_B: &str = "acct-b/user-acct-b";

/// The output items of a finished SSE answer (`response.output_item.done`).
async fn output_items(response: reqwest::Response) -> Vec<Value> {
    let text = response.text().await.expect("body");
    text.split("\n\n")
        .filter_map(|event| {
            let data = event.lines().find_map(|l| l.strip_prefix("data: "))?;
            let v: Value = serde_json::from_str(data).ok()?;
            (v["type"] == "response.output_item.done").then(|| v["item"].clone())
        })
        .collect()
}

fn reasoning(items: &[Value]) -> Value {
    let found = items.iter().find(|i| i["type"] == "reasoning").cloned();
    found.unwrap_or_else(|| panic!("the answer carries encrypted reasoning: {items:?}"))
}

fn user(text: &str) -> Value {
    json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
}

fn turn(session: &str, input: Vec<Value>) -> Value {
    let mut body = codex_body(session, "gpt-5.5");
    body["input"] = Value::Array(input);
    body
}

fn encrypted_in(body: &Value) -> Vec<String> {
    let items = body["input"].as_array().cloned().unwrap_or_default();
    let text = |i: &Value| i["encrypted_content"].as_str().map(str::to_string);
    items.iter().filter_map(text).collect()
}

/// The session's first turn, "one", served by A: its output items.
async fn first_turn_on_a(h: &Harness, s: &str) -> Vec<Value> {
    let body = turn(s, vec![user("one")]);
    let first = h.post("/v1/responses", &body, &[("session-id", s)]).await;
    assert_eq!(served_by(&first), "acct-a");
    output_items(first).await
}

#[tokio::test]
async fn a_moved_session_continues_without_the_old_accounts_reasoning_and_status_says_why() {
    let h = Harness::start(&[A, B]).await;
    let s = "move-1";
    let items = first_turn_on_a(&h, s).await;
    let from_a = reasoning(&items);

    // A runs out; the next turn carries A's reasoning back, as Codex does.
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::UsageLimit {
            resets_in_seconds: 3600,
        },
    );
    let mut history = vec![user("one"), from_a.clone()];
    history.extend(items.iter().filter(|i| i["type"] == "message").cloned());
    history.push(user("two"));
    let second = h
        .post(
            "/v1/responses",
            &turn(s, history.clone()),
            &[("session-id", s)],
        )
        .await;
    assert_eq!(second.status(), 200, "B continues the session");
    assert_eq!(served_by(&second), "acct-b");
    let from_b = reasoning(&output_items(second).await);
    let to_b = h
        .model_requests()
        .into_iter()
        .rfind(|r| r.account_id.as_deref() == Some("acct-b"));
    let to_b = to_b.expect("B was asked");
    assert!(
        encrypted_in(&to_b.body).is_empty(),
        "A's item dropped: {:?}",
        to_b.body["input"]
    );
    let texts = to_b.body["input"].to_string();
    assert!(
        texts.contains("one") && texts.contains("two"),
        "the conversation kept: {texts}"
    );

    // The turn after: A's item is still in Codex's history, B's own is new; only A's goes.
    history.push(from_b.clone());
    history.push(user("three"));
    let third = h
        .post("/v1/responses", &turn(s, history), &[("session-id", s)])
        .await;
    assert_eq!(third.status(), 200);
    assert_eq!(served_by(&third), "acct-b");
    let _ = third.bytes().await;
    let last = h.model_requests().pop().expect("a request");
    let kept = encrypted_in(&last.body);
    assert_eq!(
        kept,
        [from_b["encrypted_content"].as_str().unwrap()],
        "B's own reasoning stays"
    );

    let status = h.status().await;
    let moves = status["moves"].as_array().cloned().unwrap_or_default();
    assert_eq!(moves.len(), 1, "one move: {status}");
    let m = &moves[0];
    assert_eq!(
        (m["from"].as_str(), m["to"].as_str()),
        (Some("a@example.com"), Some("b@example.com")),
        "{m}"
    );
    assert!(
        m["reason"].as_str().unwrap_or("").contains("usage_limit"),
        "{m}"
    );
    assert_eq!(m["dropped"], 1, "{m}");
    assert!(!m["session"].as_str().unwrap_or("").is_empty(), "{m}");
}

#[tokio::test]
async fn reasoning_from_another_account_that_the_router_did_not_know_about_is_dropped_on_a_400() {
    // After a restart the router no longer knows which items came from where: the upstream's
    // 400 tells it, and it retries once without them.
    let h = Harness::start(&[A, B]).await;
    let pin_a = [("x-cma-account", KEY_A), ("session-id", "heal-a")];
    let first = h
        .post("/v1/responses", &turn("heal-a", vec![user("one")]), &pin_a)
        .await;
    let from_a = reasoning(&output_items(first).await);
    let pin_b = [("x-cma-account", KEY_B), ("session-id", "heal-b")];
    let body = turn("heal-b", vec![user("one"), from_a, user("two")]);
    let response = h.post("/v1/responses", &body, &pin_b).await;
    assert_eq!(response.status(), 200, "served after dropping A's item");
    assert_eq!(served_by(&response), "acct-b");
    let _ = response.bytes().await;
    let to_b: Vec<_> = h
        .model_requests()
        .into_iter()
        .filter(|r| r.account_id.as_deref() == Some("acct-b"))
        .collect();
    assert_eq!(to_b.len(), 2, "refused once, then served");
    assert_eq!(encrypted_in(&to_b[0].body).len(), 1);
    assert!(encrypted_in(&to_b[1].body).is_empty());
}

#[tokio::test]
async fn a_session_that_comes_back_gets_its_first_accounts_own_reasoning_back() {
    let h = Harness::start(&[A, B]).await;
    let s = "back-1";
    let from_a = reasoning(&first_turn_on_a(&h, s).await);
    // A is limited for a second: B takes the session.
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::UsageLimit {
            resets_in_seconds: 1,
        },
    );
    let mut history = vec![user("one"), from_a.clone(), user("two")];
    let second = h
        .post(
            "/v1/responses",
            &turn(s, history.clone()),
            &[("session-id", s)],
        )
        .await;
    assert_eq!(served_by(&second), "acct-b");
    let from_b = reasoning(&output_items(second).await);
    // A is back, B runs out: the session returns to A, with A's item and without B's.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    h.fake.push_behaviour(
        "acct-b",
        Behaviour::UsageLimit {
            resets_in_seconds: 3600,
        },
    );
    history.extend([from_b.clone(), user("three")]);
    let third = h
        .post("/v1/responses", &turn(s, history), &[("session-id", s)])
        .await;
    assert_eq!(third.status(), 200);
    assert_eq!(served_by(&third), "acct-a");
    let _ = third.bytes().await;
    let last = h.model_requests().pop().expect("a request");
    assert_eq!(last.account_id.as_deref(), Some("acct-a"));
    let a_own = from_a["encrypted_content"].as_str().unwrap();
    assert_eq!(
        encrypted_in(&last.body),
        [a_own],
        "A's own reasoning back, B's gone"
    );
    let status = h.status().await;
    assert_eq!(
        status["moves"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
}
