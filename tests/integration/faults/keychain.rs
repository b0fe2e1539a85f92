//! The keychain going away under a running `cma start`: its gnome-keyring daemon killed, or
//! its login collection locked. Each test runs a session bus and a gnome-keyring of its own,
//! so killing or locking them cannot disturb a test on the shared bus. The router answers
//! within its timeouts, marks no account "needs login", loses none, and once the keyring is
//! back the accounts serve again with no new login and no refresh token sent twice.

mod private_keyring;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{account_status, replayed_refresh_tokens, respond, CmaStart};
use crate::harness::*;
use crate::keychain::{run, service};
use crate::support::{Behaviour, FakeOpenAi};
use private_keyring::PrivateKeyring;

const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");
/// The keychain's own deadline (10 s in `store/vault.rs`) plus room for a slow machine.
const ANSWER_LIMIT: Duration = Duration::from_secs(15);

/// a@ and b@ in keychain mode on the private keyring, and `cma start` on them.
struct Pool {
    fake: FakeOpenAi,
    dir: tempfile::TempDir,
    keyring: PrivateKeyring,
    vars: HashMap<String, String>,
    runs: usize,
}

impl Pool {
    /// The accounts are written in file mode; the first `cma start` in keychain mode moves
    /// their tokens into the private keyring, as it would on a user's machine.
    async fn new(activation: bool) -> Option<Pool> {
        let fake = FakeOpenAi::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let keyring = PrivateKeyring::start(dir.path(), activation)?;
        let records = [register(&fake, &A), register(&fake, &B)];
        write_accounts(&dir.path().join("openai-accounts.json"), &records);
        let mut vars = fake_vars(&fake, dir.path());
        let pairs = [
            ("CODEX_PROXY_TOKEN_STORE", "keychain".to_string()),
            ("CODEX_PROXY_KEYCHAIN_SERVICE", service(dir.path())),
            ("CODEX_PROXY_STRATEGY", "sticky".to_string()),
            ("DBUS_SESSION_BUS_ADDRESS", keyring.address.clone()),
        ];
        vars.extend(pairs.map(|(k, v)| (k.to_string(), v)));
        let (ok, _, stderr) = run(&vars, &["use", "a@example.com"]);
        assert!(ok, "{stderr}");
        let pool = Pool {
            fake,
            dir,
            keyring,
            vars,
            runs: 0,
        };
        Some(pool)
    }

    fn start(&mut self) -> CmaStart {
        self.runs += 1;
        let log = self.dir.path().join(format!("cma-{}.log", self.runs));
        CmaStart::spawn(&self.vars, log)
    }

    fn records(&self) -> Vec<Value> {
        let path = self.dir.path().join("openai-accounts.json");
        let file: Value = serde_json::from_slice(&std::fs::read(path).expect("accounts file"))
            .expect("the accounts file parses");
        file["accounts"].as_array().cloned().unwrap_or_default()
    }

    /// When the account's tokens were last written, as the accounts file says.
    fn tokens_updated_at(&self, email: &str) -> i64 {
        let records = self.records();
        let record = records.iter().find(|r| r["email"] == email);
        record
            .and_then(|r| r["tokensUpdatedAt"].as_i64())
            .unwrap_or_default()
    }

    /// Both accounts are in the file, still in keychain mode, and neither needs a login.
    #[track_caller]
    fn assert_nothing_lost(&self) {
        let records = self.records();
        let emails: Vec<_> = records.iter().map(|r| r["email"].as_str()).collect();
        assert_eq!(
            emails,
            [Some(A.email), Some(B.email)],
            "an account was lost"
        );
        for record in records {
            assert_eq!(record["tokenStore"], "keychain", "{record}");
            assert!(
                record.get("needsLogin").is_none(),
                "marked needs login: {record}"
            );
        }
    }
}

/// The router's answer and how long it took; it must come within the keychain's deadline.
async fn timed(base: &str, session: &str) -> (u16, String, String, Duration) {
    let started = Instant::now();
    let answer = tokio::time::timeout(ANSWER_LIMIT, respond(base, session))
        .await
        .unwrap_or_else(|_| {
            panic!("no answer to {session} within {ANSWER_LIMIT:?}: the router hangs")
        });
    let (status, served, body) = answer;
    (status, served, body, started.elapsed())
}

async fn assert_no_needs_login(base: &str) {
    for id in [A.id, B.id] {
        let account = account_status(base, id).await;
        assert_ne!(account["state"], "needs-login", "{account}");
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    DaemonKilled,
    LoginLocked,
    /// Locked, on a bus that activates `gcr-prompter` (which finds no display).
    LoginLockedPrompterFails,
}

/// Serves a@ (its tokens read from the keychain), breaks the keychain, then asks for (1) a
/// refresh of a@ and (2) b@, whose tokens were never read; brings the keychain back and
/// checks a@ and b@ serve with the tokens it holds, from a router started afresh too.
async fn keychain_goes_away_mid_run(fault: Fault) {
    let activation = matches!(fault, Fault::LoginLockedPrompterFails);
    let Some(mut pool) = Pool::new(activation).await else {
        return;
    };
    let router = pool.start();
    for record in pool.records() {
        assert_eq!(record["tokenStore"], "keychain", "{record}");
        assert!(record.get("access").is_none(), "{record}");
    }
    let (status, served, body, _) = timed(&router.base, "s0").await;
    assert_eq!((status, served.as_str()), (200, "acct-a"), "{body}");
    let written = pool.tokens_updated_at(A.email);

    match fault {
        Fault::DaemonKilled => pool.keyring.kill_daemon(),
        Fault::LoginLocked | Fault::LoginLockedPrompterFails => pool.keyring.lock_login(),
    }

    // (1) a@'s access token is refused: the router refreshes it while the keychain is gone.
    pool.fake.expire_access_token(A.id);
    let (status, served, body, took) = timed(&router.base, "s1").await;
    println!(
        "{fault:?}: a refresh of a@ answered {status} by {served:?} in {took:?}: {}",
        head(&body)
    );
    assert_answer(status, &body);
    assert_eq!(pool.fake.refresh_count(A.id), 1, "a@ was refreshed once");
    assert_no_needs_login(&router.base).await;
    pool.assert_nothing_lost();

    // (2) a@ is limited, so a new session goes to b@, whose tokens are only in the keychain.
    pool.fake.push_behaviour(
        A.id,
        Behaviour::UsageLimit {
            resets_in_seconds: 2,
        },
    );
    let (status, served, body, took) = timed(&router.base, "s2").await;
    println!(
        "{fault:?}: a failover to b@ answered {status} by {served:?} in {took:?}: {}",
        head(&body)
    );
    assert_answer(status, &body);
    if status >= 500 {
        assert!(
            body.to_lowercase().contains("keychain"),
            "the error names the keychain: {body}"
        );
    }
    assert_no_needs_login(&router.base).await;
    pool.assert_nothing_lost();

    // The keychain is back (headless, unlocking needs the daemon started again). a@'s
    // refreshed tokens, held in memory, are saved on a request's retry: the keychain first,
    // then the file's `tokensUpdatedAt`.
    pool.keyring.kill_daemon();
    pool.keyring.start_daemon();
    tokio::time::sleep(Duration::from_secs(2)).await; // a@'s limit resets
    let started = Instant::now();
    let (mut first_served, mut n) = (None, 0);
    let saved = loop {
        n += 1;
        let (status, served, body, _) = timed(&router.base, &format!("back-{n}")).await;
        assert_eq!(status, 200, "{body}");
        first_served.get_or_insert((served, started.elapsed()));
        let saved = pool.tokens_updated_at(A.email) > written;
        if saved || started.elapsed() > Duration::from_secs(10) {
            break saved;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "{fault:?}: keychain back: first answer by {first_served:?}, a@'s tokens saved after {:?}",
        started.elapsed()
    );
    assert!(
        saved,
        "a@'s refreshed tokens were never saved; log:\n{}",
        router.log()
    );
    assert_no_needs_login(&router.base).await;
    router.kill_9();

    // A router started afresh reads both accounts from the keychain, and a@'s next refresh
    // sends the token the keychain now holds, not the one the refresh spent.
    let router = pool.start();
    pool.fake.expire_access_token(A.id);
    let (status, served, body, _) = timed(&router.base, "after-1").await;
    assert_eq!((status, served.as_str()), (200, "acct-a"), "{body}");
    assert_eq!(pool.fake.refresh_count(A.id), 2);
    pool.fake.push_behaviour(
        A.id,
        Behaviour::UsageLimit {
            resets_in_seconds: 60,
        },
    );
    let (status, served, body, _) = timed(&router.base, "after-2").await;
    assert_eq!((status, served.as_str()), (200, "acct-b"), "{body}");
    assert_eq!(
        replayed_refresh_tokens(&pool.fake),
        0,
        "a refresh token was sent twice"
    );
    assert_no_needs_login(&router.base).await;
    pool.assert_nothing_lost();
}

/// The start of an answer, for the test's output.
fn head(body: &str) -> &str {
    body.get(..400).unwrap_or(body)
}

/// Served, or a clear error: a 5xx with a JSON `error`.
#[track_caller]
fn assert_answer(status: u16, body: &str) {
    if status == 200 {
        return;
    }
    assert!(status >= 500, "{status}: {body}");
    let json: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert!(json.get("error").is_some(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keychain_daemon_killed_mid_run_costs_no_account_and_serves_again_once_back() {
    keychain_goes_away_mid_run(Fault::DaemonKilled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keychain_locked_mid_run_costs_no_account_and_serves_again_once_unlocked() {
    keychain_goes_away_mid_run(Fault::LoginLocked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keychain_locked_mid_run_where_the_prompter_has_no_display_costs_no_account() {
    keychain_goes_away_mid_run(Fault::LoginLockedPrompterFails).await;
}
