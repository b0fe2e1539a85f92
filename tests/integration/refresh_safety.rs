//! No account is burned by what happens around a refresh: a client hanging up mid-refresh, a
//! refresh answer without some tokens, a save that fails, a store move or a removal racing it.

use std::time::Duration;

use router::accounts::Pool;

use crate::harness::*;

const A_EXPIRED: TestAccount = expired_account("a@example.com", "acct-a");
const A_KEY: &str = "acct-a/user-acct-a";

fn refresh_token_on_disk(h: &Harness) -> Option<String> {
    h.accounts_file()["accounts"][0]["parts"]["refreshToken"]
        .as_str()
        .map(str::to_string)
}

/// Waits (at most `limit`) until the file holds the issuer's current refresh token.
async fn until_saved(h: &Harness, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let current = h.fake.current_tokens("acct-a").refresh_token;
        if refresh_token_on_disk(h).as_deref() == Some(current.as_str()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_refresh_leaves_the_account_serving() {
    let h = Harness::start(&[A_EXPIRED]).await;
    // The issuer rotates at once and answers 400 ms later; the client gives up after 150.
    h.fake.set_refresh_answer_delay(Duration::from_millis(400));
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("{}/v1/responses", h.base))
        .header("content-type", "application/json")
        .body(codex_body("s1", "gpt-5.5").to_string())
        .send()
        .await;
    assert!(gave_up.is_err(), "the client hung up before the answer");
    assert_eq!(h.fake.refresh_count("acct-a"), 1, "the refresh was sent");

    let saved = until_saved(&h, Duration::from_secs(3)).await;
    h.fake.set_refresh_answer_delay(Duration::ZERO);
    let response = h.respond("s2").await;
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "the account still serves: {body}");
    assert!(saved, "the rotated refresh token reached the file");
    assert_eq!(
        h.fake.refresh_count("acct-a"),
        1,
        "no second refresh, so no old token replayed"
    );
    let a = h.account_status("acct-a").await;
    assert_ne!(a["state"], "needs-login", "{a}");
}

#[tokio::test]
async fn a_refresh_outlives_the_caller_that_started_it() {
    // The pool as the HTTP and WebSocket paths both reach it: a caller dropped mid-refresh.
    let h = Harness::start(&[A_EXPIRED]).await;
    let settings = h.settings();
    let pool = Pool::open(
        settings.store(),
        reqwest::Client::new(),
        settings.token_url(),
    )
    .unwrap();
    h.fake.set_refresh_answer_delay(Duration::from_millis(300));
    let dropped = tokio::time::timeout(
        Duration::from_millis(100),
        pool.credentials(A_KEY, router::accounts::now_ms()),
    )
    .await;
    assert!(dropped.is_err(), "the caller was dropped mid-refresh");
    assert!(
        until_saved(&h, Duration::from_secs(3)).await,
        "the rotated refresh token reached the file"
    );
    h.fake.set_refresh_answer_delay(Duration::ZERO);
    let credentials = pool
        .credentials(A_KEY, router::accounts::now_ms())
        .await
        .expect("the account still has working credentials");
    assert_eq!(
        credentials.access_token.expose(),
        h.fake.current_tokens("acct-a").access_token
    );
    assert_eq!(h.fake.refresh_count("acct-a"), 1);
}

#[tokio::test]
async fn a_refresh_answer_without_a_refresh_token_keeps_it_in_the_file() {
    let h = Harness::start(&[A_EXPIRED]).await;
    let before = refresh_token_on_disk(&h);
    h.fake
        .omit_from_refresh_answers("acct-a", &["refresh_token", "id_token"]);
    assert_eq!(h.respond("s1").await.status(), 200);
    assert_eq!(refresh_token_on_disk(&h), before, "the file kept it");
    h.fake.expire_access_token("acct-a");
    assert_eq!(h.respond("s2").await.status(), 200, "and it still works");
    assert_eq!(h.fake.refresh_count("acct-a"), 2);
}

/// Makes every accounts-file write of this process fail (as a full disk would) while it
/// lives: the temp file `write_atomic` creates is taken by a folder.
struct BlockedWrites(std::path::PathBuf);

impl BlockedWrites {
    fn new(h: &Harness) -> BlockedWrites {
        let temp = h
            .dir
            .path()
            .join(format!(".openai-accounts.json.{}.tmp", std::process::id()));
        std::fs::create_dir(&temp).unwrap();
        BlockedWrites(temp)
    }
}

impl Drop for BlockedWrites {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[tokio::test]
async fn a_rotated_token_that_could_not_be_saved_survives_a_reload_and_is_saved_later() {
    let h = Harness::start(&[A_EXPIRED]).await;
    let on_disk_before = refresh_token_on_disk(&h);
    let blocked = BlockedWrites::new(&h);
    assert_eq!(h.respond("s1").await.status(), 200);
    assert_eq!(h.fake.refresh_count("acct-a"), 1);
    assert_eq!(refresh_token_on_disk(&h), on_disk_before, "the save failed");

    // Another process edits the file (a label): the router reloads it.
    let mut file = h.accounts_file();
    file["accounts"][0]["label"] = "work".into();
    std::fs::write(h.accounts_path(), file.to_string()).unwrap();
    assert_eq!(
        h.account_status("acct-a").await["label"],
        "work",
        "reloaded"
    );

    // The next refresh must spend the token only memory has, not the spent one on disk.
    h.fake.expire_access_token("acct-a");
    let response = h.respond("s2").await;
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "the account still serves: {body}");
    assert_eq!(h.fake.refresh_count("acct-a"), 2);
    let a = h.account_status("acct-a").await;
    assert_ne!(a["state"], "needs-login", "{a}");

    // Once the disk takes writes again, the token is saved without waiting for a refresh.
    drop(blocked);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let current = h.fake.current_tokens("acct-a").refresh_token;
    while refresh_token_on_disk(&h).as_deref() != Some(current.as_str()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unsaved token never reached the file"
        );
        h.status().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.accounts_file()["accounts"][0]["label"], "work");
    assert_eq!(h.fake.refresh_count("acct-a"), 2, "saved, not refreshed");
}
