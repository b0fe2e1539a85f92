//! The fake backend's newer protocol surface, tested directly: zstd request bodies,
//! `encrypted_content` bound to its account, remote compaction v2, and the WebSocket.

use serde_json::{json, Value};

use super::{add_ada, client, post, send, start_with_ada, types};
use crate::support::{
    encrypted_content_owner, reasoning_encrypted_content, sse_events, zstd, AccountSpec, Behaviour,
    FakeOpenAi, IssuedTokens, WsClient,
};

/// A small Codex-shaped body that asks for reasoning blobs, as Codex always does.
fn codex_body(input: Value) -> Value {
    json!({"model": "gpt-5.5", "stream": true, "store": false, "input": input,
           "reasoning": {"effort": "medium"}, "include": ["reasoning.encrypted_content"]})
}

fn say_hi() -> Value {
    json!({"type": "message", "role": "user",
           "content": [{"type": "input_text", "text": "hi"}]})
}

/// Status and SSE events (or the JSON error as the only element) of a `/responses` call.
async fn respond(fake: &FakeOpenAi, tokens: &IssuedTokens, body: &Value) -> (u16, Vec<Value>) {
    let request = post(format!("{}/responses", fake.upstream_url));
    let reply = request
        .bearer_auth(&tokens.access_token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    let text = reply.text().await.unwrap();
    match serde_json::from_str::<Value>(&text) {
        Ok(error) => (status, vec![error]),
        Err(_) => (status, sse_events(&text)),
    }
}

/// The finished output items of a stream, from its `response.completed`.
fn completed_output(events: &[Value]) -> Vec<Value> {
    let completed = events.last().unwrap();
    assert_eq!(completed["type"], "response.completed", "{events:?}");
    completed["response"]["output"].as_array().unwrap().clone()
}

fn add_bo(fake: &FakeOpenAi) -> IssuedTokens {
    fake.add_account(AccountSpec::new("bo@example.com", "acct-bo", "user-bo"))
}

async fn connect(fake: &FakeOpenAi, tokens: &IssuedTokens) -> WsClient {
    let bearer = format!("Bearer {}", tokens.access_token);
    let headers = [
        ("authorization", bearer.as_str()),
        ("openai-beta", "responses_websockets=2026-02-06"),
    ];
    WsClient::connect(&fake.ws_url, &headers).await.unwrap()
}

#[tokio::test]
async fn zstd_bodies_are_decoded_and_recorded_with_their_encoding() {
    let (fake, tokens) = start_with_ada().await;
    let body = codex_body(json!([say_hi()]));
    let compressed = zstd(body.to_string().as_bytes());
    for path in ["responses", "responses/compact"] {
        let request = post(format!("{}/{path}", fake.upstream_url))
            .bearer_auth(&tokens.access_token)
            .header("content-type", "application/json")
            .header("content-encoding", "zstd")
            .body(compressed.clone());
        let reply = request.send().await.unwrap();
        assert_eq!(reply.status(), 200, "{path}");
    }
    for seen in fake.requests() {
        assert_eq!(seen.content_encoding.as_deref(), Some("zstd"));
        assert_eq!(seen.body, body);
        assert_eq!(seen.raw_body.as_ref(), compressed.as_slice());
    }
    // Plain JSON is recorded without an encoding.
    respond(&fake, &tokens, &body).await;
    let plain = fake.requests().pop().unwrap();
    assert_eq!(plain.content_encoding, None);
    assert_eq!(plain.raw_body.as_ref(), body.to_string().as_bytes());
}

#[tokio::test]
async fn undecodable_zstd_gets_400_invalid_request() {
    let (fake, tokens) = start_with_ada().await;
    let request = post(format!("{}/responses", fake.upstream_url))
        .bearer_auth(&tokens.access_token)
        .header("content-encoding", "zstd")
        .body(br#"{"model":"gpt-5.5","input":[]}"#.to_vec());
    let (status, body) = send(request).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_request");
    assert!(body["error"]["message"].as_str().unwrap().contains("zstd"));
    // A bad bearer is still a 401 first.
    let bad = post(format!("{}/responses", fake.upstream_url)).bearer_auth("nope");
    let bad = bad.header("content-encoding", "zstd").body("x");
    assert_eq!(send(bad).await.0, 401);
}

#[tokio::test]
async fn reasoning_blobs_are_refused_on_another_account() {
    let (fake, ada) = start_with_ada().await;
    let bo = add_bo(&fake);
    let (status, events) = respond(&fake, &ada, &codex_body(json!([say_hi()]))).await;
    assert_eq!(status, 200);
    let output = completed_output(&events);
    assert_eq!(output.len(), 2, "reasoning, then the message");
    let reasoning = &output[0];
    assert_eq!(reasoning["type"], "reasoning");
    assert!(reasoning["id"].as_str().unwrap().starts_with("rs_"));
    assert_eq!(reasoning["summary"], json!([]));
    let blob = reasoning["encrypted_content"].as_str().unwrap();
    assert_eq!(encrypted_content_owner(blob), Some("acct-ada"));
    assert_eq!(output[1]["type"], "message");
    let done: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.output_item.done")
        .collect();
    assert_eq!(done[0]["item"], *reasoning);
    assert_eq!(done[1]["output_index"], 1);

    // Codex replays the reasoning item on the next request.
    let replay = codex_body(json!([say_hi(), reasoning, output[1], say_hi()]));
    let (status, refused) = respond(&fake, &bo, &replay).await;
    assert_eq!(status, 400);
    let expected = json!({"error": {
        "message": "Encrypted content organization_id did not match the target organization.",
        "type": "invalid_request_error", "param": null, "code": "invalid_encrypted_content"}});
    assert_eq!(refused[0], expected);
    assert_eq!(respond(&fake, &ada, &replay).await.0, 200);
    // Blobs the fake did not issue are opaque to it, so hand-written bodies still work.
    let foreign = json!({"type": "reasoning", "summary": [], "encrypted_content": "gAAAAB-x"});
    let hand_written = codex_body(json!([foreign, say_hi()]));
    assert_eq!(respond(&fake, &bo, &hand_written).await.0, 200);
    // A fabricated blob of another account is refused like a replayed one.
    let fabricated = json!({"type": "reasoning", "summary": [],
                            "encrypted_content": reasoning_encrypted_content("acct-ada", 7)});
    let fabricated = codex_body(json!([fabricated, say_hi()]));
    assert_eq!(respond(&fake, &bo, &fabricated).await.0, 400);
    // Without `include` there is no reasoning item.
    let bare = json!({"model": "gpt-5.5", "input": [say_hi()]});
    let (_, events) = respond(&fake, &ada, &bare).await;
    assert_eq!(completed_output(&events).len(), 1);
}

#[tokio::test]
async fn compaction_trigger_streams_exactly_one_bound_compaction_item() {
    let (fake, ada) = start_with_ada().await;
    let bo = add_bo(&fake);
    let body = codex_body(json!([say_hi(), {"type": "compaction_trigger"}]));
    let (status, events) = respond(&fake, &ada, &body).await;
    assert_eq!(status, 200);
    let kinds = types(&events);
    let items: Vec<&str> = kinds
        .into_iter()
        .filter(|t| t.starts_with("response.output_item"))
        .collect();
    assert_eq!(
        items,
        ["response.output_item.added", "response.output_item.done"]
    );
    let output = completed_output(&events);
    assert_eq!(output.len(), 1, "{output:?}");
    let compaction = &output[0];
    assert_eq!(compaction["type"], "compaction");
    assert!(compaction["id"].as_str().unwrap().starts_with("cmp_"));
    let blob = compaction["encrypted_content"].as_str().unwrap();
    assert!(blob.starts_with("cmp:acct-ada:"), "{blob}");
    assert!(events[events.len() - 1]["response"]["usage"].is_object());

    // The next turn carries the compaction item; only its own account accepts it.
    let next = codex_body(json!([say_hi(), compaction, say_hi()]));
    assert_eq!(respond(&fake, &ada, &next).await.0, 200);
    let (status, refused) = respond(&fake, &bo, &next).await;
    assert_eq!(status, 400);
    assert_eq!(refused[0]["error"]["code"], "invalid_encrypted_content");
    let compact = post(format!("{}/responses/compact", fake.upstream_url));
    let compact = compact.bearer_auth(&bo.access_token).json(&next);
    assert_eq!(send(compact).await.0, 400);
}

#[tokio::test]
async fn websocket_streams_json_frames_per_response_create() {
    let (fake, ada) = start_with_ada().await;
    fake.set_usage("acct-ada", 42.0, 7.0);
    let mut ws = connect(&fake, &ada).await;
    assert_eq!(ws.header("x-codex-primary-used-percent"), Some("42"));
    assert_eq!(ws.header("x-fake-account-id"), Some("acct-ada"));

    let mut prewarm = codex_body(json!([say_hi()]));
    prewarm["generate"] = json!(false);
    let events = ws.create(&prewarm).await;
    assert_eq!(types(&events), ["response.created", "response.completed"]);
    let first_id = events[1]["response"]["id"].clone();
    assert_eq!(completed_output(&events), Vec::<Value>::new());

    let mut next = codex_body(json!([]));
    next["previous_response_id"] = first_id.clone();
    let events = ws.create(&next).await;
    assert_eq!(events[0]["type"], "response.created");
    assert_eq!(events[1]["type"], "codex.rate_limits");
    let text: String = events.iter().filter_map(|e| e["delta"].as_str()).collect();
    assert_eq!(text, "hello from fake upstream");
    let output = completed_output(&events);
    assert_eq!(output[0]["type"], "reasoning");
    assert_eq!(output[1]["content"][0]["text"], "hello from fake upstream");
    assert!(!ws.closed);
    assert_eq!(fake.open_websockets(), 1);
    ws.close().await;

    let seen = fake.requests();
    assert_eq!(seen.len(), 1, "one handshake, frames are not requests");
    assert!(seen[0].websocket);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/backend-api/codex/responses");
    assert_eq!(seen[0].account_id.as_deref(), Some("acct-ada"));
    let frames = fake.ws_frames();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].socket, 1);
    assert_eq!(frames[1].body["type"], "response.create");
    assert_eq!(frames[1].body["previous_response_id"], first_id);
}

#[tokio::test]
async fn websocket_reports_a_usage_limit_as_an_error_frame_with_status() {
    let (fake, ada) = start_with_ada().await;
    let bo = add_bo(&fake);
    fake.push_behaviour(
        "acct-ada",
        Behaviour::UsageLimit {
            resets_in_seconds: 60,
        },
    );
    let mut ws = connect(&fake, &ada).await;
    let events = ws.create(&codex_body(json!([say_hi()]))).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let error = &events[0];
    assert_eq!(error["type"], "error");
    assert_eq!(error["status"], 429);
    assert_eq!(error["error"]["type"], "usage_limit_reached");
    assert_eq!(error["error"]["resets_in_seconds"], 60);
    assert_eq!(error["headers"]["x-codex-primary-used-percent"], "100");
    // The socket stays usable; the next frame gets the default answer.
    let events = ws.create(&codex_body(json!([say_hi()]))).await;
    let output = completed_output(&events);

    // Replayed blobs are refused on a socket too, with the HTTP status in the frame.
    let mut bo_ws = connect(&fake, &bo).await;
    let events = bo_ws.create(&codex_body(json!(output))).await;
    assert_eq!(events[0]["status"], 400);
    assert_eq!(events[0]["error"]["code"], "invalid_encrypted_content");

    // A cut stream drops the socket itself.
    let cut = Behaviour::CutAfter {
        deltas_before_cut: 1,
    };
    fake.push_behaviour("acct-ada", cut);
    let events = ws.create(&codex_body(json!([say_hi()]))).await;
    assert!(ws.closed, "{events:?}");
    assert_eq!(types(&events).last(), Some(&"response.output_text.delta"));
}

#[tokio::test]
async fn websocket_handshake_checks_the_bearer_and_can_be_refused_with_426() {
    let fake = FakeOpenAi::start().await;
    let ada = add_ada(&fake);
    let refused = WsClient::connect(&fake.ws_url, &[("authorization", "Bearer nope")]).await;
    let refused = refused.err().expect("a bad bearer is refused");
    assert_eq!(refused.status, 401);

    fake.refuse_websockets(true);
    let bearer = format!("Bearer {}", ada.access_token);
    let refused = WsClient::connect(&fake.ws_url, &[("authorization", &bearer)]).await;
    assert_eq!(refused.err().expect("upgrades are refused").status, 426);
    fake.refuse_websockets(false);
    let ws = connect(&fake, &ada).await;
    assert!(!ws.closed);
    // A plain GET without an upgrade gets 426 too.
    let plain = client().get(format!("{}/responses", fake.upstream_url));
    assert_eq!(send(plain.bearer_auth(&ada.access_token)).await.0, 426);

    let seen = fake.requests();
    assert_eq!(seen.len(), 4);
    assert!(seen[..3].iter().all(|r| r.websocket && r.method == "GET"));
    assert!(!seen[3].websocket);
    fake.drop_websockets();
    assert_eq!(fake.open_websockets(), 0);
}
