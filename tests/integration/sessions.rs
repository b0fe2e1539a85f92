//! Session stickiness, the three strategies, bindings across restarts, usage learning.

use serde_json::json;

use crate::harness::*;
use crate::support::Behaviour;

const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");
const C: TestAccount = account("c@example.com", "acct-c");

#[tokio::test]
async fn sticky_uses_the_first_account_until_it_is_limited() {
    let h = Harness::start(&[A, B]).await;
    for s in ["s1", "s2", "s3"] {
        assert_eq!(served_by(&h.respond(s).await), "acct-a");
    }
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::UsageLimit {
            resets_in_seconds: 600,
        },
    );
    assert_eq!(served_by(&h.respond("s4").await), "acct-b");
    assert_eq!(
        served_by(&h.respond("s1").await),
        "acct-b",
        "a bound session moves once its account is limited"
    );
}

#[tokio::test]
async fn a_session_stays_on_its_account() {
    let h = Harness::start_with(&[A, B, C], &[("CODEX_PROXY_STRATEGY", "round-robin")]).await;
    let first: Vec<String> =
        futures_util::future::join_all(["s1", "s2", "s3"].map(|s| h.respond(s)))
            .await
            .iter()
            .map(served_by)
            .collect();
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "round-robin spreads new sessions: {first:?}"
    );
    for (session, account) in ["s1", "s2", "s3"].iter().zip(&first) {
        for _ in 0..2 {
            assert_eq!(
                &served_by(&h.respond(session).await),
                account,
                "{session} moved"
            );
        }
    }
}

#[tokio::test]
async fn concurrent_first_requests_of_one_session_land_on_one_account() {
    let h = Harness::start_with(&[A, B, C], &[("CODEX_PROXY_STRATEGY", "round-robin")]).await;
    let served: Vec<String> =
        futures_util::future::join_all((0..12).map(|_| h.respond("same-session")))
            .await
            .iter()
            .map(served_by)
            .collect();
    assert!(served.iter().all(|s| s == &served[0]), "{served:?}");
}

#[tokio::test]
async fn hybrid_prefers_the_account_with_most_headroom() {
    let mut h = Harness::start_with(&[A, B, C], &[("CODEX_PROXY_STRATEGY", "hybrid")]).await;
    // The usage poll at start runs beside the first request and may win (seen once in a
    // clean-clone run): this router learns usage from answers only, as the test means.
    let no_usage = format!("{}/not-served", h.fake.usage_url);
    h.vars.insert("CODEX_PROXY_USAGE_URL".to_string(), no_usage);
    h.restart().await;
    h.fake.set_usage("acct-a", 80.0, 50.0);
    h.fake.set_usage("acct-b", 10.0, 20.0);
    h.fake.set_usage("acct-c", 50.0, 90.0);
    // Unknown usage scores in the middle: the first session goes to A (file order), and
    // once A is known to be 80 % used, the second goes to an unknown one, B.
    assert_eq!(served_by(&h.respond("learn-1").await), "acct-a");
    assert_eq!(served_by(&h.respond("learn-2").await), "acct-b");
    // Now B (80 % left) beats unknown C (scored 75 %) and A (20 % left); sticky would
    // say A and round-robin C.
    assert_eq!(served_by(&h.respond("new-session").await), "acct-b");
}

#[tokio::test]
async fn bindings_survive_a_restart_by_account_key() {
    let mut h = Harness::start_with(&[A, B], &[("CODEX_PROXY_STRATEGY", "round-robin")]).await;
    let s1 = served_by(&h.respond("s1").await);
    let s2 = served_by(&h.respond("s2").await);
    assert_ne!(s1, s2);
    h.restart().await;
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.dir.path().join("session-bindings.json")).unwrap())
            .unwrap();
    assert_eq!(
        saved["bindings"]["s2"]["account"],
        format!("{s2}/user-{s2}"),
        "{saved}"
    );
    assert_eq!(served_by(&h.respond("s2").await), s2);
    assert_eq!(served_by(&h.respond("s1").await), s1);
}

#[tokio::test]
async fn a_sub_agent_follows_its_parent() {
    let h = Harness::start_with(&[A, B], &[("CODEX_PROXY_STRATEGY", "round-robin")]).await;
    let parent = served_by(&h.respond("parent").await);
    for child in ["child-1", "child-2", "child-3"] {
        let response = h
            .post(
                "/v1/responses",
                &codex_body(child, "gpt-5.5"),
                &[("x-codex-parent-thread-id", "parent")],
            )
            .await;
        assert_eq!(served_by(&response), parent);
    }
}

#[tokio::test]
async fn usage_is_learned_from_headers_and_rate_limit_events() {
    let h = Harness::start(&[A]).await;
    h.fake.set_usage("acct-a", 42.0, 17.0);
    assert_eq!(h.respond("s1").await.status(), 200);
    let a = h.account_status("acct-a").await;
    assert_eq!(a["usage"]["primary"]["usedPercent"], json!(42.0), "{a}");
    assert_eq!(a["usage"]["secondary"]["usedPercent"], json!(17.0), "{a}");
    assert!(a["usage"]["primary"]["resetsAt"].as_i64().is_some(), "{a}");
}

#[tokio::test]
async fn accounts_added_or_removed_by_another_process_are_picked_up() {
    let h = Harness::start(&[A]).await;
    assert_eq!(served_by(&h.respond("s1").await), "acct-a");
    // Another process (here: the test) rewrites the file with B in front and A gone.
    let b = register(&h.fake, &B);
    write_accounts(&h.accounts_path(), &[b]);
    let response = h.respond("s1").await;
    assert_eq!(served_by(&response), "acct-b");
    let status = h.status().await;
    assert_eq!(status["accounts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_turn_keeps_its_account() {
    let h = Harness::start_with(&[A, B], &[("CODEX_PROXY_STRATEGY", "round-robin")]).await;
    let mut body = codex_body("", "gpt-5.5");
    body.as_object_mut().unwrap().remove("prompt_cache_key");
    let turn = [("x-codex-turn-state", "turn-1")];
    let first = served_by(&h.post("/v1/responses", &body, &turn).await);
    // Without a session key round-robin alternates; the turn state pins the account.
    for _ in 0..3 {
        assert_eq!(
            served_by(&h.post("/v1/responses", &body, &turn).await),
            first
        );
    }
    let other = served_by(&h.post("/v1/responses", &body, &[]).await);
    assert_ne!(
        other, first,
        "round-robin still alternates outside the turn"
    );
}

#[tokio::test]
async fn usage_is_polled_at_start_without_spending_a_refresh() {
    let h = Harness::start(&[A, expired_account("x@example.com", "acct-x")]).await;
    let mut known = false;
    for _ in 0..100 {
        if h.account_status("acct-a").await["usage"]["primary"].is_object() {
            known = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        known,
        "usage of A known before any request: {}",
        h.status().await
    );
    assert!(h
        .fake
        .requests()
        .iter()
        .all(|r| r.path.ends_with("/wham/usage")));
    assert!(h.account_status("acct-x").await["usage"].is_null());
    assert_eq!(h.fake.refresh_count("acct-x"), 0, "no refresh just to poll");
}

#[tokio::test]
async fn a_file_broken_while_running_is_reported_and_the_last_good_pool_serves() {
    let h = Harness::start(&[A]).await;
    assert_eq!(served_by(&h.respond("s1").await), "acct-a");
    std::fs::write(h.accounts_path(), "{\"version\": 1, \"accounts\": [").unwrap();
    assert_eq!(served_by(&h.respond("s1").await), "acct-a");
    let status = h.status().await;
    let error = status["accountsFileError"]
        .as_str()
        .expect("the error is shown");
    assert!(
        error.contains("openai-accounts.json") && error.contains("line 1"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(h.accounts_path()).unwrap(),
        "{\"version\": 1, \"accounts\": ["
    );
}
