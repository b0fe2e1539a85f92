//! Paths the router has no route of its own for, under `/v1/` and `/backend-api/codex/`:
//! passed on to the upstream base as the session's account, the answer streamed back as it
//! comes (Codex sends `/files`, `/files/{id}/uploaded`, `/transcribe`, `/alpha/search`, and
//! each release may add more).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::harness::*;
use crate::support::Behaviour;

const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");

async fn get(h: &Harness, path: &str, session: &str) -> reqwest::Response {
    let request = h.http.get(format!("{}{path}", h.base));
    let response = request.header("session-id", session).send().await;
    response.expect("the router answers")
}

async fn json_of(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200, "passed on and answered");
    response.json().await.expect("JSON")
}

#[tokio::test]
async fn paths_codex_adds_go_to_the_upstream_as_the_sessions_account() {
    let h = Harness::start(&[A, B]).await;
    let first = h.respond("files-session").await;
    let account = served_by(&first);
    let _ = event_types(first).await;

    let upload = json!({"file_name": "notes.txt", "file_size": 12, "use_case": "codex"});
    let answer = h
        .post("/v1/files", &upload, &[("session-id", "files-session")])
        .await;
    let seen = json_of(answer).await;
    assert_eq!(seen["path"], "/backend-api/codex/files");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["bytes"], upload.to_string().len());
    let on = |seen: &Value| seen["account"].as_str().unwrap_or("").to_string();
    assert_eq!(on(&seen), account, "the session's account");

    // Codex's own base works the same, and the query goes along.
    let uploaded = h
        .post(
            "/backend-api/codex/files/file_1/uploaded",
            &json!({}),
            &[("session-id", "files-session")],
        )
        .await;
    assert_eq!(
        json_of(uploaded).await["path"],
        "/backend-api/codex/files/file_1/uploaded"
    );
    let search = json_of(get(&h, "/v1/alpha/search?q=router&limit=3", "files-session").await).await;
    assert_eq!(search["path"], "/backend-api/codex/alpha/search");
    assert_eq!(search["query"], "q=router&limit=3");

    // The session moves when its account runs out; its other calls follow it.
    let first_id = on(&seen);
    h.fake.push_behaviour(
        &first_id,
        Behaviour::UsageLimit {
            resets_in_seconds: 3600,
        },
    );
    let moved = h.respond("files-session").await;
    let now = served_by(&moved);
    assert_ne!(now, account, "the session moved");
    let _ = event_types(moved).await;
    let again = h
        .post(
            "/v1/transcribe",
            &json!({"audio": "…"}),
            &[("session-id", "files-session")],
        )
        .await;
    let seen = json_of(again).await;
    assert_eq!(seen["path"], "/backend-api/codex/transcribe");
    assert_eq!(on(&seen), now, "the account the session moved to");
}

#[tokio::test]
async fn an_answer_from_such_a_path_streams_as_it_comes() {
    let h = Harness::start(&[A]).await;
    let response = get(&h, "/v1/files/file_1/content", "download").await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    // The upstream holds its second piece back until the first one has reached the client:
    // a router that buffered the answer would deliver nothing here.
    let first = tokio::time::timeout(Duration::from_secs(5), body.next()).await;
    let first = first
        .expect("the first piece before the end")
        .expect("a chunk");
    assert_eq!(&first.expect("bytes")[..], b"first piece;");
    h.fake.release_download();
    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("the rest")
    {
        rest.extend_from_slice(&chunk.expect("bytes"));
    }
    assert_eq!(rest, b"second piece");
}

#[tokio::test]
async fn such_a_path_with_a_body_over_the_limit_gets_413_and_others_stay_404() {
    let h = Harness::start_with(&[A], &[("CODEX_PROXY_MAX_BODY_BYTES", "1024")]).await;
    let big = json!({"audio": "x".repeat(4096)});
    let answer = h
        .post("/v1/transcribe", &big, &[("session-id", "big")])
        .await;
    assert_eq!(answer.status(), 413);
    let paths: Vec<String> = h.fake.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        !paths.iter().any(|p| p.ends_with("/transcribe")),
        "{paths:?}"
    );
    // Outside the two API bases nothing is passed on.
    let elsewhere = get(&h, "/v2/files", "elsewhere").await;
    assert_eq!(elsewhere.status(), 404);
}
