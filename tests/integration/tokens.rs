//! Access-token refresh: before use when expired, once on a 401, single-flight in one
//! process and across two, rotated tokens saved first, dead tokens flag the account.

use std::time::Duration;

use crate::harness::*;
use crate::support::Behaviour;

const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");
const A_EXPIRED: TestAccount = expired_account("a@example.com", "acct-a");

fn refresh_token_on_disk(h: &Harness, index: usize) -> String {
    h.accounts_file()["accounts"][index]["parts"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_and_the_new_refresh_token_saved() {
    let h = Harness::start(&[A_EXPIRED]).await;
    let old_refresh = refresh_token_on_disk(&h, 0);
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(h.fake.refresh_count("acct-a"), 1);
    let current = h.fake.current_tokens("acct-a");
    assert_ne!(current.refresh_token, old_refresh);
    assert_eq!(
        refresh_token_on_disk(&h, 0),
        current.refresh_token,
        "the rotated token is on disk"
    );
    assert_eq!(
        h.accounts_file()["accounts"][0]["access"],
        current.access_token.as_str()
    );
    // The next request uses the saved token, no second refresh.
    assert_eq!(h.respond("s1").await.status(), 200);
    assert_eq!(h.fake.refresh_count("acct-a"), 1);
}

#[tokio::test]
async fn a_401_gets_one_refresh_and_a_retry_on_the_same_account() {
    let h = Harness::start(&[A, B]).await;
    h.fake.expire_access_token("acct-a");
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        served_by(&response),
        "acct-a",
        "the session stays where its cache is"
    );
    assert_eq!(h.fake.refresh_count("acct-a"), 1);
}

#[tokio::test]
async fn concurrent_requests_share_one_refresh() {
    let h = Harness::start_with(&[A_EXPIRED], &[("CODEX_PROXY_STRATEGY", "sticky")]).await;
    h.fake.set_refresh_delay(Duration::from_millis(300));
    let responses = futures_util::future::join_all((0..8).map(|i| {
        let session = format!("s{i}");
        let h = &h;
        async move { h.respond(&session).await.status().as_u16() }
    }))
    .await;
    assert!(responses.iter().all(|s| *s == 200), "{responses:?}");
    assert_eq!(
        h.fake.refresh_count("acct-a"),
        1,
        "one refresh for eight requests"
    );
}

#[tokio::test]
async fn two_routers_on_one_file_refresh_once() {
    let mut first = Harness::start(&[A_EXPIRED]).await;
    first.fake.set_refresh_delay(Duration::from_millis(300));
    // A second router (its own pool, as a second process has) on the same files.
    let second = router::app::start_router(first.settings()).await.unwrap();
    let second_base = format!("http://{}", second.addr);
    let body = codex_body("s1", "gpt-5.5");
    let via_second = first
        .http
        .post(format!("{second_base}/v1/responses"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send();
    let (a, b) = tokio::join!(first.respond("s1"), via_second);
    assert_eq!(a.status(), 200);
    assert_eq!(b.unwrap().status(), 200);
    assert_eq!(
        first.fake.refresh_count("acct-a"),
        1,
        "the second router took the first one's tokens from disk"
    );
    second.stop().await;
    first.restart().await;
    assert_eq!(first.respond("s2").await.status(), 200);
    assert_eq!(first.fake.refresh_count("acct-a"), 1);
}

#[tokio::test]
async fn a_reused_refresh_token_flags_the_account_and_keeps_it() {
    let h = Harness::start(&[A_EXPIRED, B]).await;
    h.fake
        .fail_next_refresh("acct-a", Some("refresh_token_reused"), 401);
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "acct-b", "another account served");
    let a = h.account_status("acct-a").await;
    assert_eq!(a["state"], "needs-login", "{a}");
    assert_eq!(a["needsLoginReason"], "refresh_token_reused");
    let file = h.accounts_file();
    assert_eq!(
        file["accounts"].as_array().unwrap().len(),
        2,
        "the account is kept"
    );
    assert_eq!(
        file["accounts"][0]["needsLogin"]["code"],
        "refresh_token_reused"
    );
    // No further refresh attempts are made with the dead token.
    assert_eq!(h.respond("s2").await.status(), 200);
    assert_eq!(h.fake.refresh_count("acct-a"), 1);
}

#[tokio::test]
async fn expired_and_invalidated_refresh_tokens_need_a_login_too() {
    for code in ["refresh_token_expired", "refresh_token_invalidated"] {
        let h = Harness::start(&[A_EXPIRED]).await;
        h.fake.fail_next_refresh("acct-a", Some(code), 401);
        let response = h.respond("s1").await;
        assert_eq!(response.status(), 400, "{code}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "accounts_need_login",
            "{code}: {body}"
        );
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a@example.com"));
    }
}

#[tokio::test]
async fn a_transient_refresh_failure_keeps_the_account_usable_later() {
    let h = Harness::start(&[A_EXPIRED, B]).await;
    h.fake
        .fail_next_refresh("acct-a", Some("server_error"), 500);
    let response = h.respond("s1").await;
    assert_eq!(served_by(&response), "acct-b");
    let a = h.account_status("acct-a").await;
    assert_eq!(a["state"], "cooling-down", "{a}");
    assert!(a["needsLoginReason"].is_null());
}

#[tokio::test]
async fn the_upstream_never_sees_a_burned_refresh_token_replayed() {
    // Expire, refresh, expire again: each refresh must use the newest token.
    let h = Harness::start(&[A_EXPIRED]).await;
    assert_eq!(h.respond("s1").await.status(), 200);
    h.fake.expire_access_token("acct-a");
    h.fake.push_behaviour("acct-a", Behaviour::ok());
    assert_eq!(h.respond("s1").await.status(), 200);
    assert_eq!(h.fake.refresh_count("acct-a"), 2);
    assert_eq!(
        refresh_token_on_disk(&h, 0),
        h.fake.current_tokens("acct-a").refresh_token
    );
}
