//! Failover before the first byte, and clean endings after it.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;
use crate::support::Behaviour;

const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");

async fn assert_served_by_b_after(behaviour: Behaviour) -> Harness {
    let h = Harness::start(&[A, B]).await;
    h.fake.push_behaviour("acct-a", behaviour.clone());
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 200, "{behaviour:?}");
    assert_eq!(served_by(&response), "acct-b", "{behaviour:?}");
    let events = event_types(response).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("response.completed"),
        "{behaviour:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e == "response.failed" || e == "error"),
        "{behaviour:?}: {events:?}"
    );
    h
}

#[tokio::test]
async fn fails_over_when_first_account_hits_its_usage_limit() {
    let h = assert_served_by_b_after(Behaviour::UsageLimit {
        resets_in_seconds: 3600,
    })
    .await;
    let a = h.account_status("acct-a").await;
    assert_eq!(a["state"], "limited", "{a}");
    let reset = a["limits"]["gpt-5.5"]
        .as_i64()
        .expect("a reset for the model");
    let expected = router::accounts::now_ms() + 3_600_000;
    assert!(
        (reset - expected).abs() < 10_000,
        "reset {reset} vs {expected}"
    );
    // The limit is on disk too (written in the background), so a restart knows it.
    let mut on_disk = false;
    for _ in 0..50 {
        on_disk = h.accounts_file()["accounts"][0]["rateLimitResets"]["gpt-5.5"].is_i64();
        if on_disk {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(on_disk, "{}", h.accounts_file());
    // The next new session goes straight to B without asking A again.
    let before = h.model_requests().len();
    let response = h.respond("s2").await;
    assert_eq!(served_by(&response), "acct-b");
    assert_eq!(h.model_requests().len(), before + 1);
}

#[tokio::test]
async fn fails_over_on_5xx() {
    assert_served_by_b_after(Behaviour::Status {
        status: 500,
        body: serde_json::json!({"error": {"type": "server_error"}}),
    })
    .await;
}

#[tokio::test]
async fn fails_over_on_overload() {
    assert_served_by_b_after(Behaviour::Overloaded).await;
}

#[tokio::test]
async fn fails_over_on_burst_429() {
    assert_served_by_b_after(Behaviour::RateLimited).await;
}

#[tokio::test]
async fn fails_over_when_the_stream_opens_with_a_limit_failure() {
    let h = assert_served_by_b_after(Behaviour::FailedFirst {
        code: "usage_limit_reached".into(),
    })
    .await;
    assert_eq!(h.account_status("acct-a").await["state"], "limited");
}

#[tokio::test]
async fn fails_over_when_the_stream_opens_with_an_error_event() {
    assert_served_by_b_after(Behaviour::ErrorEventFirst {
        code: "usage_limit_reached".into(),
    })
    .await;
}

#[tokio::test]
async fn fails_over_when_the_connection_drops_without_an_answer() {
    assert_served_by_b_after(Behaviour::Reset).await;
}

#[tokio::test]
async fn fails_over_when_the_upstream_stalls_before_answering() {
    let started = Instant::now();
    assert_served_by_b_after(Behaviour::StallBeforeHeaders {
        d: Duration::from_secs(10),
    })
    .await;
    // Bounded by CODEX_PROXY_FIRST_BYTE_TIMEOUT_MS (2 s in tests), not by the stall.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn every_account_limited_gives_codex_the_earliest_reset() {
    let h = Harness::start(&[A, B]).await;
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::UsageLimit {
            resets_in_seconds: 7200,
        },
    );
    h.fake.push_behaviour(
        "acct-b",
        Behaviour::UsageLimit {
            resets_in_seconds: 1800,
        },
    );
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "usage_limit_reached");
    let now_s = router::accounts::now_ms() / 1000;
    let resets_at = body["error"]["resets_at"].as_i64().unwrap();
    assert!((resets_at - (now_s + 1800)).abs() < 10, "{body}");
    assert!((body["error"]["resets_in_seconds"].as_i64().unwrap() - 1800).abs() < 10);
    // Asked again, the router answers from what it knows, without hammering the upstream.
    let before = h.model_requests().len();
    let again = h.respond("s2").await;
    assert_eq!(
        again.status(),
        429,
        "served by {}: {}",
        served_by(&again),
        h.status().await
    );
    assert_eq!(h.model_requests().len(), before);
}

#[tokio::test]
async fn limits_are_per_model() {
    let h = Harness::start(&[A, B]).await;
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::UsageLimit {
            resets_in_seconds: 3600,
        },
    );
    assert_eq!(served_by(&h.respond("s1").await), "acct-b");
    let mini = h
        .post("/v1/responses", &codex_body("s2", "gpt-5.4-mini"), &[])
        .await;
    assert_eq!(
        served_by(&mini),
        "acct-a",
        "another model is still served by the first account"
    );
}

#[tokio::test]
async fn a_cut_after_output_reaches_the_client_as_a_cut_not_a_hang() {
    let h = Harness::start(&[A, B]).await;
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::CutAfter {
            deltas_before_cut: 2,
        },
    );
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "acct-a");
    let started = Instant::now();
    let body = response.text().await;
    // Either an error or a body without `response.completed`: Codex retries both.
    if let Ok(text) = body {
        assert!(!text.contains("response.completed"), "{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_stall_mid_stream_ends_the_stream_within_the_idle_timeout() {
    let h = Harness::start(&[A, B]).await;
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::Ok {
            text: "a b".into(),
            deltas: 2,
            gap: Duration::from_secs(30),
        },
    );
    let response = h.respond("s1").await;
    assert_eq!(
        served_by(&response),
        "acct-a",
        "output had started, so no failover"
    );
    let started = Instant::now();
    let body = response.text().await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    if let Ok(text) = body {
        assert!(!text.contains("response.completed"));
    }
}

/// A stream that opened (`response.created`) is the upstream working as that account: it is
/// passed on after the hold (`opening_hold.rs`) and, if it never resumes, cut by the idle
/// timeout like any stalled stream, never sent to a second account.
#[tokio::test]
async fn a_stall_after_the_opening_is_passed_on_and_cut_at_the_idle_timeout() {
    let h = Harness::start(&[A, B]).await;
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::StallAfterFirstEvent {
            d: Duration::from_secs(30),
        },
    );
    let started = Instant::now();
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "acct-a");
    let body = response.text().await;
    assert!(started.elapsed() < Duration::from_secs(8));
    if let Ok(text) = body {
        assert!(text.contains("response.created"), "{text}");
        assert!(!text.contains("response.completed"), "{text}");
    }
    assert_eq!(h.model_requests().len(), 1, "B was not spent");
}

#[tokio::test]
async fn a_5xx_from_every_account_is_passed_on_for_codex_to_retry() {
    let h = Harness::start(&[A, B]).await;
    h.fake
        .fail_each_once(&["acct-a", "acct-b"], 502, "bad gateway");
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 502);
}

/// A moment's outage answered every account with an error, and each now rests: the next
/// request is not turned away for the rest of the rest but tries the account that wakes
/// first, which then serves again like any other.
#[tokio::test]
async fn after_every_account_failed_once_the_next_request_is_tried_not_refused() {
    let h = Harness::start(&[A, B]).await;
    h.fake
        .fail_each_once(&["acct-a", "acct-b"], 503, "upstream connect error");
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 503, "both tried, the error passed on");
    assert_eq!(h.model_requests().len(), 2);
    // The upstream is back: the next request is served, by the account that rested first.
    let response = h.respond("s2").await;
    assert_eq!(response.status(), 200, "tried, not refused while resting");
    assert_eq!(served_by(&response), "acct-a");
    let _ = event_types(response).await;
    assert_eq!(h.model_requests().len(), 3, "one try");
    // Serving ended its rest: another session is served by it at once.
    let response = h.respond("s3").await;
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "acct-a");
    let status: Value = h.status().await;
    let a = &status["accounts"][0];
    assert_eq!(a["state"], "ok", "A is in service again: {a}");
    assert_eq!(
        status["accounts"][1]["state"], "cooling-down",
        "B still rests"
    );
    // Pinned to B (as `cma smoke --all-accounts` does), it is tried though it rests.
    let pinned = [
        ("session-id", "s4"),
        ("x-cma-account", "acct-b/user-acct-b"),
    ];
    let response = h
        .post("/v1/responses", &codex_body("s4", "gpt-5.5"), &pinned)
        .await;
    assert_eq!(response.status(), 200, "the pinned account is tried");
    assert_eq!(served_by(&response), "acct-b");
}

#[tokio::test]
async fn request_errors_are_not_retried_on_other_accounts() {
    let h = Harness::start(&[A, B]).await;
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::Status { status: 400, body: serde_json::json!({"error": {"code": "context_length_exceeded", "message": "too long"}}) },
    );
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert_eq!(h.model_requests().len(), 1);
}

#[tokio::test]
async fn an_unreachable_upstream_gives_a_clean_502_quickly() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/backend-api/codex", closed.local_addr().unwrap());
    drop(closed);
    let h = Harness::start_with(&[A, B], &[("CODEX_PROXY_UPSTREAM_URL", &url)]).await;
    let started = Instant::now();
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not connect"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}
