//! `cma start` killed with SIGKILL at each step of a refresh, then started again on the same
//! files: the account serves without any refresh token sent twice, except where the issuer
//! rotated and the new token never reached the disk, where it says "needs login" (and only
//! one replay ever reaches the issuer).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::{account_status, replayed_refresh_tokens, respond, until, CmaStart};
use crate::harness::*;
use crate::support::FakeOpenAi;

const A_EXPIRED: TestAccount = expired_account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");
const A_KEY: &str = "acct-a/user-acct-a";
const STEP_WAIT: Duration = Duration::from_secs(10);

/// a@ (its access token expired, so the first request refreshes it) and b@, in file mode.
struct Files {
    fake: FakeOpenAi,
    dir: tempfile::TempDir,
    vars: HashMap<String, String>,
    runs: usize,
}

impl Files {
    async fn new() -> Files {
        let fake = FakeOpenAi::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let records = [register(&fake, &A_EXPIRED), register(&fake, &B)];
        write_accounts(&dir.path().join("openai-accounts.json"), &records);
        let vars = fake_vars(&fake, dir.path());
        Files {
            fake,
            dir,
            vars,
            runs: 0,
        }
    }

    fn start(&mut self) -> CmaStart {
        self.runs += 1;
        let log = self.dir.path().join(format!("cma-{}.log", self.runs));
        CmaStart::spawn(&self.vars, log)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&self) -> Value {
        let bytes = std::fs::read(self.path("openai-accounts.json")).expect("accounts file");
        serde_json::from_slice(&bytes).expect("the accounts file parses")
    }

    fn refresh_token_on_disk(&self) -> String {
        self.file()["accounts"][0]["parts"]["refreshToken"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn settings(&self) -> router::settings::Settings {
        let vars = self.vars.clone();
        router::settings::Settings::from_vars(&move |n| vars.get(n).cloned()).expect("settings")
    }
}

/// Sends a request in the background and forgets it: the router is killed under it.
fn fire(base: &str, session: &str) {
    let request = super::client()
        .post(format!("{base}/v1/responses"))
        .header("content-type", "application/json")
        .body(codex_body(session, "gpt-5.5").to_string());
    tokio::spawn(async move {
        let _ = request.send().await;
    });
}

/// Whether `pid` waits for a file lock another process holds (a `->` line of /proc/locks).
fn waits_on_a_lock(pid: u32) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let pid = pid.to_string();
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"->") && fields.get(5) == Some(&pid.as_str())
    })
}

/// Whether a thread of `pid` is blocked opening a FIFO nobody reads.
fn opens_a_fifo(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("wchan")).is_ok_and(|w| w == "wait_for_partner")
    })
}

/// A FIFO where `write_atomic` of `pid` puts its temp file for `target`: the write blocks there.
fn fifo_for_the_temp_of(dir: &Path, target: &str, pid: u32) -> PathBuf {
    let fifo = dir.join(format!(".{target}.{pid}.tmp"));
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", fifo.display());
    fifo
}

/// After the restart: a@ serves, no refresh token was sent twice.
async fn assert_serves(f: &Files, base: &str, refreshes: usize) {
    let (status, served, body) = respond(base, "after").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served, "acct-a", "a@ serves again");
    assert_eq!(f.fake.refresh_count("acct-a"), refreshes);
    assert_eq!(
        replayed_refresh_tokens(&f.fake),
        0,
        "no refresh token replayed"
    );
    assert_eq!(account_status(base, "acct-a").await["state"], "ok");
}

/// After the restart: a@ says "needs login" after exactly one replay, b@ serves, and a@
/// stays in the file (nothing lost but the rotated token the disk never got).
async fn assert_needs_login(f: &Files, base: &str) {
    let (status, served, body) = respond(base, "after").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served, "acct-b", "the request failed over");
    let a = account_status(base, "acct-a").await;
    assert_eq!(a["state"], "needs-login", "{a}");
    assert_eq!(a["needsLoginReason"], "refresh_token_reused", "{a}");
    let (status, _, _) = respond(base, "again").await;
    assert_eq!(status, 200);
    assert_eq!(
        replayed_refresh_tokens(&f.fake),
        1,
        "one replay, never more"
    );
    assert_eq!(f.file()["accounts"][0]["accountId"], "acct-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_the_token_request_the_account_serves_after_restart() {
    let mut f = Files::new().await;
    // Another process holds a@'s refresh lock: the router stops right before the request.
    let held = f
        .settings()
        .store()
        .refresh_lock(A_KEY)
        .expect("refresh lock");
    let router = f.start();
    fire(&router.base, "s1");
    let pid = router.pid();
    assert!(
        until(STEP_WAIT, || waits_on_a_lock(pid)).await,
        "{}",
        router.log()
    );
    assert_eq!(f.fake.refresh_count("acct-a"), 0);
    router.kill_9();
    drop(held);

    let router = f.start();
    assert_serves(&f, &router.base, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_issuer_rotated_before_its_answer_arrived_the_account_needs_login() {
    let mut f = Files::new().await;
    // The issuer rotates at once and answers a minute later: the answer never arrives.
    f.fake.set_refresh_answer_delay(Duration::from_secs(60));
    let router = f.start();
    fire(&router.base, "s1");
    assert!(until(STEP_WAIT, || f.fake.refresh_count("acct-a") == 1).await);
    router.kill_9();
    f.fake.set_refresh_answer_delay(Duration::ZERO);

    let router = f.start();
    assert_needs_login(&f, &router.base).await;
}

/// A router whose refresh got its answer and is now stopped writing `target`: the save's temp
/// file is a FIFO, where the write waits. Returns the router and the FIFO to remove.
async fn stopped_saving(f: &mut Files, target: &str) -> (CmaStart, PathBuf) {
    f.fake.set_refresh_answer_delay(Duration::from_millis(500));
    let router = f.start();
    let pid = router.pid();
    fire(&router.base, "s1");
    assert!(until(STEP_WAIT, || f.fake.refresh_count("acct-a") == 1).await);
    let fifo = fifo_for_the_temp_of(f.dir.path(), target, pid);
    assert!(
        until(STEP_WAIT, || opens_a_fifo(pid)).await,
        "{}",
        router.log()
    );
    (router, fifo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_as_the_save_starts_the_account_needs_login() {
    let mut f = Files::new().await;
    let (router, fifo) = stopped_saving(&mut f, "openai-accounts.json").await;
    router.kill_9();
    std::fs::remove_file(fifo).expect("remove the FIFO");

    let router = f.start();
    assert_needs_login(&f, &router.base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_accounts_file_and_its_backup_the_account_serves_after_restart() {
    let mut f = Files::new().await;
    let (router, fifo) = stopped_saving(&mut f, "openai-accounts.json.bak").await;
    assert_eq!(
        f.refresh_token_on_disk(),
        f.fake.current_tokens("acct-a").refresh_token,
        "the file has the rotated token, its backup not yet"
    );
    router.kill_9();
    std::fs::remove_file(fifo).expect("remove the FIFO");

    let router = f.start();
    assert_serves(&f, &router.base, 1).await;
}

/// The keychain entry of a@ in the Secret Service of the test run.
fn keychain_entry(service: &str) -> keyring::Entry {
    keyring::Entry::new(service, A_KEY).expect("keyring entry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_keychain_and_the_file_the_account_serves_after_restart() {
    let mut f = Files::new().await;
    // a@ in keychain mode, as a login leaves it.
    let service = crate::keychain::service(f.dir.path());
    let tokens = f.fake.current_tokens("acct-a");
    let mut file = f.file();
    file["accounts"][0]["parts"] = json!({});
    file["accounts"][0]["tokenStore"] = json!("keychain");
    let fields = file["accounts"][0].as_object_mut().expect("record");
    fields.remove("access");
    std::fs::write(f.path("openai-accounts.json"), file.to_string()).expect("write");
    let secret = json!({"access": tokens.access_token, "refresh": tokens.refresh_token, "idToken": tokens.id_token});
    keychain_entry(&service)
        .set_password(&secret.to_string())
        .expect("the Secret Service of the test run takes the entry");
    f.vars
        .insert("CODEX_PROXY_KEYCHAIN_SERVICE".into(), service.clone());
    f.vars
        .insert("CODEX_PROXY_TOKEN_STORE".into(), "keychain".into());
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = keychain_entry(&self.0).delete_credential();
        }
    }
    let _cleanup = Cleanup(service.clone());

    f.fake.set_refresh_answer_delay(Duration::from_millis(500));
    let router = f.start();
    let pid = router.pid();
    fire(&router.base, "s1");
    assert!(until(STEP_WAIT, || f.fake.refresh_count("acct-a") == 1).await);
    // The accounts file is locked: the save writes the keychain, then waits for the file.
    let lock_path = f.path("openai-accounts.json.lock");
    let held = tokio::task::spawn_blocking(move || router::store::FileLock::acquire(&lock_path))
        .await
        .expect("lock task")
        .expect("file lock");
    let rotated = f.fake.current_tokens("acct-a").refresh_token;
    let in_keychain = || {
        let secret = keychain_entry(&service).get_password().unwrap_or_default();
        serde_json::from_str::<Value>(&secret).is_ok_and(|v| v["refresh"] == rotated.as_str())
    };
    assert!(
        until(STEP_WAIT, || waits_on_a_lock(pid) && in_keychain()).await,
        "{}",
        router.log()
    );
    router.kill_9();
    drop(held);

    let router = f.start();
    let (status, served, body) = respond(&router.base, "after").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served, "acct-a", "a@ serves again");
    assert_eq!(
        replayed_refresh_tokens(&f.fake),
        0,
        "no refresh token replayed"
    );
    assert_eq!(account_status(&router.base, "acct-a").await["state"], "ok");
}
