//! The `keychain` token store against the real Secret Service of the test run (gnome-keyring
//! under `dbus-run-session`): tokens stored, read, rotated and deleted there and never left in
//! the accounts file; switching stores moves them; a missing keychain is a clear error.
//! Also the `cma` runner that `login.rs` and `import.rs` share.

use std::collections::HashMap;
use std::process::Command;

use serde_json::{json, Value};

use router::store::{AccountRecord, StoredSecret, TokenSet, MAX_ENTRY_UTF16};

use crate::harness::*;
use crate::login::setup;
use crate::support::{FakeOpenAi, IssuedTokens};

/// What a finished `cma` printed: (success, stdout, stderr).
pub(crate) type Output = (bool, String, String);

/// `cma` with exactly these variables (plus PATH, HOME, NO_COLOR and the session bus).
pub(crate) fn cma(vars: &HashMap<String, String>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cma"));
    command.args(args).env_clear().env("NO_COLOR", "1");
    command.env("PATH", std::env::var("PATH").unwrap_or_default());
    command.env("HOME", vars.get("CODEX_HOME").cloned().unwrap_or_default());
    if let Ok(bus) = std::env::var("DBUS_SESSION_BUS_ADDRESS") {
        command.env("DBUS_SESSION_BUS_ADDRESS", bus);
    }
    command.envs(vars);
    command
}

/// Runs `cma` to the end: (success, stdout, stderr).
pub(crate) fn run(vars: &HashMap<String, String>, args: &[&str]) -> Output {
    let out = cma(vars, args).output().expect("cma runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[track_caller]
pub(crate) fn has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} is not in:\n{text}");
}

/// A keychain service name of this test's own, so parallel tests never share an entry.
pub(crate) fn service(dir: &std::path::Path) -> String {
    format!("cma-test:{}", dir.display())
}

const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");

/// The keychain entry of an account, as the `keyring` crate reads it; `None` when there is none.
/// Every entry the router wrote fits the smallest keychain (Windows) and holds no JWT.
fn entry(vars: &HashMap<String, String>, account_id: &str) -> Option<Value> {
    let service = &vars["CODEX_PROXY_KEYCHAIN_SERVICE"];
    let user = format!("{account_id}/user-{account_id}");
    let entry = keyring::Entry::new(service, &user).expect("keyring entry");
    match entry.get_password() {
        Ok(secret) => {
            let size = secret.encode_utf16().count();
            assert!(size <= MAX_ENTRY_UTF16, "an entry of {size} UTF-16 units");
            let value: Value = serde_json::from_str(&secret).expect("the entry is JSON");
            assert!(value.get("access").is_none() && value.get("idToken").is_none());
            Some(value)
        }
        Err(keyring::Error::NoEntry) => None,
        Err(e) => panic!("the Secret Service of the test run failed: {e}"),
    }
}

/// An account's tokens as the store reads them: the keychain entry and the sealed file.
pub(crate) fn keychain_tokens(vars: &HashMap<String, String>, account_id: &str) -> TokenSet {
    let vars = vars.clone();
    let settings = router::settings::Settings::from_vars(&move |n| vars.get(n).cloned()).unwrap();
    let record = AccountRecord {
        account_id: Some(account_id.into()),
        user_id: Some(format!("user-{account_id}")),
        token_store: Some("keychain".into()),
        ..Default::default()
    };
    settings
        .store()
        .read_tokens(&record)
        .expect("the tokens read")
}

/// The file of sealed access and id tokens beside `accounts`; empty when there is none.
fn sealed_text(accounts: &std::path::Path) -> String {
    std::fs::read_to_string(format!("{}.sealed", accounts.display())).unwrap_or_default()
}

/// A stored token as text, to compare with what the issuer issued.
pub(crate) fn secret_text(token: &Option<StoredSecret>) -> Option<&str> {
    token.as_ref().map(|t| t.0.as_str())
}

/// Deletes what a test left in the keychain, even when it fails half-way.
struct Cleanup(HashMap<String, String>, &'static [&'static str]);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in self.1 {
            let user = format!("{id}/user-{id}");
            let service = &self.0["CODEX_PROXY_KEYCHAIN_SERVICE"];
            if let Ok(entry) = keyring::Entry::new(service, &user) {
                let _ = entry.delete_credential();
            }
        }
    }
}

#[track_caller]
fn assert_no_secret_in(file: &str, tokens: &IssuedTokens) {
    let secrets = [
        &tokens.access_token,
        &tokens.refresh_token,
        &tokens.id_token,
    ];
    let found = secrets.iter().any(|secret| file.contains(secret.as_str()));
    assert!(!found, "a token is in the accounts file:\n{file}");
}

type Started = Result<router::app::RunningRouter, router::app::AppError>;

async fn start(vars: &HashMap<String, String>) -> Started {
    let vars = vars.clone();
    let settings = router::settings::Settings::from_vars(&move |n| vars.get(n).cloned()).unwrap();
    router::app::start_router(settings).await
}

async fn serve(vars: &HashMap<String, String>, session: &str) -> String {
    let router = start(vars).await.expect("router starts");
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("http://{}/v1/responses", router.addr))
        .header("content-type", "application/json")
        .body(codex_body(session, "gpt-5.5").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let account = served_by(&response);
    response.text().await.unwrap();
    router.stop().await;
    account
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_keeps_its_tokens_in_the_keychain_through_refresh_and_removal() {
    let s = setup("keychain").await;
    let _cleanup = Cleanup(s.vars.clone(), &["acct-a", "acct-c"]);
    let (ok, stdout, stderr) = run(&s.vars, &["login", "--device", "--timeout", "30"]);
    assert!(ok, "{stderr}");
    has(&stdout, "added a@example.com (plus)");
    let first = s.fake.current_tokens("acct-a");
    let file = s.accounts_text();
    assert_no_secret_in(&file, &first);
    let record = &s.accounts()["accounts"][1];
    assert_eq!(record["tokenStore"], "keychain", "{file}");
    let stored = entry(&s.vars, "acct-a").expect("a keychain entry");
    assert_eq!(stored["refresh"], first.refresh_token.as_str());
    let stored = keychain_tokens(&s.vars, "acct-a");
    assert_eq!(
        secret_text(&stored.access),
        Some(first.access_token.as_str())
    );
    assert_eq!(secret_text(&stored.id_token), Some(first.id_token.as_str()));
    assert_no_secret_in(&sealed_text(&s.accounts_path()), &first);
    // Opening the store in keychain mode moved c@ (from the file) too.
    assert!(entry(&s.vars, "acct-c").is_some());

    let mut vars = s.vars.clone();
    vars.insert("CODEX_PROXY_STRATEGY".into(), "sticky".into());
    assert!(run(&vars, &["use", "a@example.com"]).0);
    assert_eq!(serve(&vars, "s1").await, "acct-a");
    s.fake.expire_access_token("acct-a");
    assert_eq!(serve(&vars, "s2").await, "acct-a");
    assert_eq!(
        s.fake.refresh_count("acct-a"),
        1,
        "one refresh after the 401"
    );
    let rotated = s.fake.current_tokens("acct-a");
    assert_ne!(rotated.refresh_token, first.refresh_token);
    let stored = entry(&s.vars, "acct-a").unwrap();
    assert_eq!(stored["refresh"], rotated.refresh_token.as_str());
    let stored = keychain_tokens(&s.vars, "acct-a");
    assert_eq!(
        secret_text(&stored.access),
        Some(rotated.access_token.as_str())
    );
    let file = s.accounts_text();
    assert_no_secret_in(&file, &first);
    assert_no_secret_in(&file, &rotated);

    let (ok, _, stderr) = run(&s.vars, &["remove", "a@example.com"]);
    assert!(ok, "{stderr}");
    assert!(entry(&s.vars, "acct-a").is_none(), "remove left the entry");
    assert!(
        !sealed_text(&s.accounts_path()).contains("acct-a"),
        "remove left sealed tokens"
    );
    let (ok, _, stderr) = run(&s.vars, &["logout", "--yes"]);
    assert!(ok, "{stderr}");
    assert!(entry(&s.vars, "acct-c").is_none(), "logout left the entry");
}

/// A file-mode accounts file with a@ and b@, and variables for `cma` and a router on it.
async fn file_mode_pool() -> (FakeOpenAi, tempfile::TempDir, HashMap<String, String>) {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let records = [register(&fake, &A), register(&fake, &B)];
    write_accounts(&dir.path().join("openai-accounts.json"), &records);
    let mut vars = fake_vars(&fake, dir.path());
    vars.insert("CODEX_PROXY_KEYCHAIN_SERVICE".into(), service(dir.path()));
    (fake, dir, vars)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_token_stores_moves_the_tokens_and_loses_none() {
    let (fake, dir, file_vars) = file_mode_pool().await;
    let _cleanup = Cleanup(file_vars.clone(), &["acct-a", "acct-b"]);
    let path = dir.path().join("openai-accounts.json");
    let read = || std::fs::read_to_string(&path).unwrap();
    let original: Value = serde_json::from_str(&read()).unwrap();
    let mut keychain_vars = file_vars.clone();
    keychain_vars.insert("CODEX_PROXY_TOKEN_STORE".into(), "keychain".into());

    let (ok, stdout, stderr) = run(&keychain_vars, &["logout"]);
    assert!(ok, "{stderr}");
    has(&stdout, "would remove b@example.com");
    let text = read();
    for (i, id) in ["acct-a", "acct-b"].iter().enumerate() {
        let tokens = fake.current_tokens(id);
        assert_no_secret_in(&text, &tokens);
        let stored = entry(&keychain_vars, id).expect("moved to the keychain");
        assert_eq!(stored["refresh"], tokens.refresh_token.as_str());
        let stored = keychain_tokens(&keychain_vars, id);
        assert_eq!(
            secret_text(&stored.access),
            Some(tokens.access_token.as_str())
        );
        let record = &serde_json::from_str::<Value>(&text).unwrap()["accounts"][i];
        assert_eq!(record["tokenStore"], "keychain");
        assert_eq!(record["email"], original["accounts"][i]["email"]);
    }
    assert_eq!(serve(&keychain_vars, "s1").await, "acct-a");

    let (ok, _, stderr) = run(&file_vars, &["logout"]);
    assert!(ok, "{stderr}");
    let back: Value = serde_json::from_str(&read()).unwrap();
    for (i, id) in ["acct-a", "acct-b"].iter().enumerate() {
        let (now, was) = (&back["accounts"][i], &original["accounts"][i]);
        assert_eq!(now["parts"]["refreshToken"], was["parts"]["refreshToken"]);
        assert_eq!(now["access"], was["access"]);
        assert!(now.get("tokenStore").is_none(), "{now}");
        assert!(
            entry(&file_vars, id).is_none(),
            "the keychain entry of {id} stayed"
        );
    }
    assert_eq!(serve(&file_vars, "s2").await, "acct-a");
    assert_eq!(fake.refresh_count("acct-a"), 0, "the tokens still work");
}

fn without_keychain(vars: &HashMap<String, String>) -> HashMap<String, String> {
    let mut vars = vars.clone();
    vars.insert("CODEX_PROXY_TOKEN_STORE".into(), "keychain".into());
    vars.insert(
        "DBUS_SESSION_BUS_ADDRESS".into(),
        "unix:path=/nonexistent".into(),
    );
    vars
}

#[track_caller]
fn assert_keychain_error(stderr: &str) {
    has(stderr, "error: ");
    has(stderr, "keychain");
    has(stderr, "CODEX_PROXY_TOKEN_STORE=file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_service_moving_tokens_fails_clearly_and_keeps_the_file() {
    let (_fake, dir, vars) = file_mode_pool().await;
    let path = dir.path().join("openai-accounts.json");
    let before = std::fs::read(&path).unwrap();
    let (ok, _, stderr) = run(&without_keychain(&vars), &["remove", "a@example.com"]);
    assert!(!ok);
    assert_keychain_error(&stderr);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the accounts file changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_service_login_fails_before_the_user_signs_in() {
    let s = setup("keychain").await;
    let vars = without_keychain(&s.vars);
    // An accounts file with nothing to move: only the login itself needs the keychain.
    write_accounts(&s.accounts_path(), &[]);
    let before = s.accounts_text();
    let (ok, stdout, stderr) = run(&vars, &["login", "--device", "--timeout", "30"]);
    assert!(!ok, "{stdout}");
    assert_keychain_error(&stderr);
    assert_eq!(s.accounts_text(), before, "the accounts file changed");
    let asked = s.fake.issuer_requests();
    let asked: Vec<_> = asked.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        asked,
        Vec::<&str>::new(),
        "the user was sent through a sign-in that could not be saved \
         (src-tauri/cli/login.rs: `open_store` does not probe the keychain): {stdout:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_in_keychain_mode_leaves_no_token_in_the_file() {
    let (fake, dir, mut vars) = file_mode_pool().await;
    let _cleanup = Cleanup(vars.clone(), &["acct-a", "acct-b"]);
    let path = dir.path().join("openai-accounts.json");
    let from = dir.path().join("other-tool.json");
    std::fs::rename(&path, &from).unwrap();
    vars.insert("CODEX_PROXY_TOKEN_STORE".into(), "keychain".into());
    let (ok, stdout, stderr) = run(&vars, &["sync-accounts", "--from", from.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    has(&stdout, "added b@example.com");
    let text = std::fs::read_to_string(&path).unwrap();
    for id in ["acct-a", "acct-b"] {
        let tokens = fake.current_tokens(id);
        assert_no_secret_in(&text, &tokens);
        let stored = entry(&vars, id).expect("imported into the keychain");
        assert_eq!(stored["refresh"], tokens.refresh_token.as_str());
    }
    assert_eq!(serve(&vars, "s1").await, "acct-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_whose_keychain_entry_is_gone_does_not_lock_out_the_others_in_file_mode() {
    // b@'s tokens went to the keychain earlier; its entry has since been deleted (by hand, or
    // the file was copied from another machine). a@ still has its tokens in the file.
    let (_fake, dir, vars) = file_mode_pool().await;
    let path = dir.path().join("openai-accounts.json");
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let b = file["accounts"][1].as_object_mut().unwrap();
    b.remove("access");
    b.insert("parts".into(), json!({}));
    b.insert("tokenStore".into(), json!("keychain"));
    std::fs::write(&path, file.to_string()).unwrap();
    match start(&vars).await {
        Ok(router) => router.stop().await,
        Err(e) => panic!(
            "one account without its keychain entry stops the router for every account, and \
             `cma login` fails the same way (src-tauri/store/tokens.rs, \
             move_tokens_to_current_store: `self.read_tokens(record)?`): {e}"
        ),
    }
    let (ok, _, stderr) = run(&vars, &["remove", "b@example.com"]);
    assert!(ok, "the account cannot even be removed: {stderr}");
}
