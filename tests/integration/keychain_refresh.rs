//! Refreshes in `keychain` mode against the real Secret Service of the test run: the entry
//! keeps what a refresh answer leaves out, a newer entry written by another router is seen,
//! and a refresh racing a removal leaves no live token behind.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;
use crate::keychain::{keychain_tokens, secret_text, service};
use crate::support::{FakeOpenAi, IssuedTokens};

const A_EXPIRED: TestAccount = expired_account("a@example.com", "acct-a");
const A_USER: &str = "acct-a/user-acct-a";

/// A keychain-mode pool holding a@, as a login leaves it: the file says `keychain` and the
/// entry holds the access, refresh and id tokens.
struct KeychainPool {
    fake: FakeOpenAi,
    dir: tempfile::TempDir,
    vars: HashMap<String, String>,
}

impl KeychainPool {
    async fn new(a: &TestAccount) -> KeychainPool {
        let fake = FakeOpenAi::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut record = register(&fake, a);
        let tokens = fake.current_tokens(a.id);
        let fields = record.as_object_mut().unwrap();
        fields.remove("access");
        fields.insert("parts".into(), json!({}));
        fields.insert("tokenStore".into(), json!("keychain"));
        write_accounts(&dir.path().join("openai-accounts.json"), &[record]);
        let mut vars = fake_vars(&fake, dir.path());
        vars.insert("CODEX_PROXY_KEYCHAIN_SERVICE".into(), service(dir.path()));
        vars.insert("CODEX_PROXY_TOKEN_STORE".into(), "keychain".into());
        let pool = KeychainPool { fake, dir, vars };
        pool.write_entry(&json!({
            "access": tokens.access_token,
            "refresh": tokens.refresh_token,
            "idToken": tokens.id_token,
        }));
        pool
    }

    fn keyring(&self) -> keyring::Entry {
        keyring::Entry::new(&self.vars["CODEX_PROXY_KEYCHAIN_SERVICE"], A_USER).unwrap()
    }

    fn write_entry(&self, value: &Value) {
        self.keyring().set_password(&value.to_string()).unwrap();
    }

    fn entry(&self) -> Option<Value> {
        match self.keyring().get_password() {
            Ok(secret) => Some(serde_json::from_str(&secret).expect("the entry is JSON")),
            Err(keyring::Error::NoEntry) => None,
            Err(e) => panic!("the Secret Service of the test run failed: {e}"),
        }
    }

    fn settings(&self) -> router::settings::Settings {
        let vars = self.vars.clone();
        router::settings::Settings::from_vars(&move |n| vars.get(n).cloned()).unwrap()
    }

    async fn start(&self) -> (router::app::RunningRouter, String) {
        let router = router::app::start_router(self.settings()).await.unwrap();
        let base = format!("http://{}", router.addr);
        (router, base)
    }
}

impl Drop for KeychainPool {
    fn drop(&mut self) {
        let _ = self.keyring().delete_credential();
    }
}

async fn respond(base: &str, session: &str) -> (u16, String) {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{base}/v1/responses"))
        .header("content-type", "application/json")
        .body(codex_body(session, "gpt-5.5").to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Spends `refresh` at the fake issuer as another router would.
async fn refresh_elsewhere(fake: &FakeOpenAi, refresh: &str) -> IssuedTokens {
    let answer: Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/oauth/token", fake.issuer_url))
        .json(&json!({"client_id": "app_EMoamEEZ73f0CkXaXp7hrann", "grant_type": "refresh_token", "refresh_token": refresh}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let current = fake.current_tokens("acct-a");
    assert_eq!(answer["refresh_token"], current.refresh_token.as_str());
    current
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_answer_without_a_refresh_token_keeps_the_stored_one() {
    let pool = KeychainPool::new(&A_EXPIRED).await;
    let before = keychain_tokens(&pool.vars, "acct-a");
    pool.fake
        .omit_from_refresh_answers("acct-a", &["refresh_token", "id_token"]);
    let (router, base) = pool.start().await;
    let (status, body) = respond(&base, "s1").await;
    assert_eq!(status, 200, "{body}");
    router.stop().await;
    assert_eq!(pool.fake.refresh_count("acct-a"), 1);

    assert!(pool.entry().is_some(), "the entry is still there");
    let after = keychain_tokens(&pool.vars, "acct-a");
    assert_eq!(
        after.refresh, before.refresh,
        "the keychain entry kept its refresh token"
    );
    assert_eq!(after.id_token, before.id_token, "and its id_token");
    assert_eq!(
        secret_text(&after.access),
        Some(pool.fake.current_tokens("acct-a").access_token.as_str())
    );

    // The kept refresh token still works: a restarted router refreshes again after a 401.
    pool.fake.expire_access_token("acct-a");
    let (router, base) = pool.start().await;
    let (status, body) = respond(&base, "s2").await;
    router.stop().await;
    assert_eq!(status, 200, "the account still serves: {body}");
    assert_eq!(pool.fake.refresh_count("acct-a"), 2);
}

/// Waits (at most 5 s) until the issuer has seen a refresh of a@.
async fn until_refresh_sent(fake: &FakeOpenAi) {
    for _ in 0..250 {
        if fake.refresh_count("acct-a") > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the router never refreshed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_racing_a_removal_leaves_no_token_in_the_keychain() {
    for logout in [false, true] {
        let pool = KeychainPool::new(&A_EXPIRED).await;
        // The issuer rotates at once and answers 300 ms later; the removal lands in between.
        pool.fake
            .set_refresh_answer_delay(Duration::from_millis(300));
        let (router, base) = pool.start().await;
        let request = tokio::spawn(async move { respond(&base, "s1").await });
        until_refresh_sent(&pool.fake).await;
        let store = pool.settings().store();
        tokio::task::spawn_blocking(move || {
            if logout {
                router::app::logout_all(&store).map(drop)
            } else {
                let a = router::app::AccountSelector("a@example.com".into());
                router::app::remove_account(&store, &a).map(drop)
            }
        })
        .await
        .unwrap()
        .expect("the account is removed");
        let _ = request.await.unwrap();
        router.stop().await;
        assert_eq!(
            pool.fake.refresh_count("acct-a"),
            1,
            "the refresh did happen"
        );
        let file = std::fs::read_to_string(pool.dir.path().join("openai-accounts.json")).unwrap();
        assert!(!file.contains("acct-a"), "the account is gone: {file}");
        assert!(
            pool.entry().is_none(),
            "a live token stayed in the keychain after {}",
            if logout { "logout" } else { "remove" }
        );
    }
}

const A: TestAccount = account("a@example.com", "acct-a");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_keychain_entry_left_by_a_crashed_router_is_used() {
    let pool = KeychainPool::new(&A).await;
    let (router, base) = pool.start().await;
    let (status, body) = respond(&base, "s1").await;
    assert_eq!(status, 200, "{body}");
    // Another router refreshed and wrote the keychain, then died before the file said so.
    let first = pool.fake.current_tokens("acct-a");
    let rotated = refresh_elsewhere(&pool.fake, &first.refresh_token).await;
    pool.write_entry(&json!({
        "access": rotated.access_token,
        "refresh": rotated.refresh_token,
        "idToken": rotated.id_token,
    }));
    // This router's access token is now superseded: its 401 leads to the refresh path.
    let (status, body) = respond(&base, "s2").await;
    router.stop().await;
    assert_eq!(status, 200, "the account still serves: {body}");
    assert_eq!(
        pool.fake.refresh_count("acct-a"),
        1,
        "the keychain's newer tokens were used, the spent refresh token not replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_tokens_to_the_file_waits_for_a_refresh_in_flight() {
    let pool = KeychainPool::new(&A).await;
    let keychain_store = pool.settings().store();
    let mut file_vars = pool.vars.clone();
    file_vars.insert("CODEX_PROXY_TOKEN_STORE".into(), "file".into());
    let file_settings =
        router::settings::Settings::from_vars(&move |n| file_vars.get(n).cloned()).unwrap();
    let path = pool.dir.path().join("openai-accounts.json");

    // A router's refresh of a@ is in flight: it holds a@'s refresh lock. (The accounts-file
    // lock is held too, so a move that does not wait for the refresh stops between reading
    // the keychain and writing the file, where the refresh lands.)
    let refresh_lock = keychain_store.refresh_lock(A_USER).unwrap();
    let file_lock =
        router::store::FileLock::acquire(&path.with_file_name("openai-accounts.json.lock"))
            .unwrap();
    let mover = std::thread::spawn(move || file_settings.store().move_tokens_to_current_store());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The refresh: the issuer rotates, the keychain gets the new tokens, then the file.
    let first = pool.fake.current_tokens("acct-a");
    let rotated = refresh_elsewhere(&pool.fake, &first.refresh_token).await;
    pool.write_entry(&json!({
        "access": rotated.access_token,
        "refresh": rotated.refresh_token,
        "idToken": rotated.id_token,
    }));
    let mut file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    file["accounts"][0]["tokensUpdatedAt"] = json!(router::accounts::now_ms());
    std::fs::write(&path, file.to_string()).unwrap();
    drop(file_lock);
    drop(refresh_lock);

    let moved = tokio::task::spawn_blocking(move || mover.join().unwrap())
        .await
        .unwrap()
        .expect("the move succeeds");
    assert_eq!(moved, 1);
    let file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        file["accounts"][0]["parts"]["refreshToken"],
        rotated.refresh_token.as_str(),
        "the file got the live refresh token, not the one the refresh spent"
    );
    assert!(
        pool.entry().is_none(),
        "the keychain entry went after the move"
    );
}
