//! A full disk (a small tmpfs) and a read-only accounts folder, in a mount namespace of the
//! router's own (`unshare -m`, root only), during a refresh and during a login: a clear error,
//! nothing lost, the router keeps serving, and the rotated token reaches the disk once it can.
//! The test reaches the router's files through `/proc/<pid>/root`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{account_status, replayed_refresh_tokens, respond, until, CmaStart};
use crate::harness::*;
use crate::support::{AccountSpec, FakeOpenAi};

const A_EXPIRED: TestAccount = expired_account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");

#[derive(Clone, Copy, Debug)]
enum Fault {
    DiskFull,
    ReadOnly,
}

impl Fault {
    /// What the router's error must say.
    fn error(self) -> &'static str {
        match self {
            Fault::DiskFull => "No space left on device",
            Fault::ReadOnly => "Read-only file system",
        }
    }
}

/// Whether this machine lets us mount a tmpfs in a mount namespace of our own.
fn namespaces_work(dir: &Path) -> bool {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=64k tmpfs "$1""#)
        .args(["sh", &dir.display().to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `cma start` in a mount namespace where its accounts folder is a 256 KiB tmpfs.
struct Contained {
    fake: FakeOpenAi,
    dir: tempfile::TempDir,
    vars: HashMap<String, String>,
    router: CmaStart,
    /// The accounts folder as seen from the router's namespace.
    store: PathBuf,
}

impl Contained {
    /// `None` (after saying why) where mount namespaces are not available.
    async fn start(test: &str) -> Option<Contained> {
        let fake = FakeOpenAi::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, seed) = (dir.path().join("store"), dir.path().join("seed"));
        for d in [&store, &seed] {
            std::fs::create_dir(d).expect("dir");
        }
        if !namespaces_work(&store) {
            eprintln!("skipped {test}: cannot mount a tmpfs in a mount namespace here (needs root or unshare -m)");
            return None;
        }
        let records = [register(&fake, &A_EXPIRED), register(&fake, &B)];
        write_accounts(&seed.join("openai-accounts.json"), &records);
        let vars = fake_vars(&fake, &store);
        let mut command = Command::new("unshare");
        command
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o size=256k,mode=0700 tmpfs "$1" && cp "$2/openai-accounts.json" "$1/" && exec "$3" start"#)
            .args(["sh", &store.display().to_string(), &seed.display().to_string()])
            .arg(env!("CARGO_BIN_EXE_cma"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("NO_COLOR", "1")
            .envs(&vars);
        let router = CmaStart::spawn_command(command, dir.path().join("cma.log"));
        Some(Contained {
            fake,
            dir,
            vars,
            router,
            store,
        })
    }

    /// A path in the router's accounts folder, reached through its namespace.
    fn path(&self, name: &str) -> PathBuf {
        let inside = self.store.join(name);
        let relative = inside.strip_prefix("/").expect("absolute");
        Path::new(&format!("/proc/{}/root", self.router.pid())).join(relative)
    }

    fn file(&self) -> Value {
        let bytes = std::fs::read(self.path("openai-accounts.json")).expect("accounts file");
        serde_json::from_slice(&bytes).expect("the accounts file parses")
    }

    fn refresh_token_on_disk(&self) -> Value {
        self.file()["accounts"][0]["parts"]["refreshToken"].clone()
    }

    fn set(&self, fault: Fault, on: bool) {
        match (fault, on) {
            (Fault::DiskFull, true) => {
                let mut filler =
                    std::fs::File::create(self.path("filler")).expect("create the filler");
                let block = vec![0u8; 64 * 1024];
                // 256 KiB fill up in a few blocks; the bound only guards a mount gone wrong.
                let full = (0..64).any(|_| filler.write_all(&block).is_err());
                assert!(full, "the tmpfs never filled up");
            }
            (Fault::DiskFull, false) => {
                std::fs::remove_file(self.path("filler")).expect("remove the filler")
            }
            // A read-only bind of the folder over itself (remounting the tmpfs itself is
            // refused while the router holds lock files open for writing); off removes it.
            (Fault::ReadOnly, on) => {
                let script = if on {
                    r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1""#
                } else {
                    r#"umount "$1""#
                };
                let pid = self.router.pid().to_string();
                let status = Command::new("nsenter")
                    .args(["-t", &pid, "-m", "sh", "-c", script, "sh"])
                    .arg(&self.store)
                    .status()
                    .expect("nsenter runs");
                assert!(status.success(), "{script}");
            }
        }
    }
}

async fn a_refresh_under(fault: Fault, test: &str) {
    let Some(c) = Contained::start(test).await else {
        return;
    };
    let on_disk = c.refresh_token_on_disk();
    let (status, served, body) = match fault {
        Fault::DiskFull => {
            c.set(fault, true);
            respond(&c.router.base, "s1").await
        }
        // Read-only once the refresh lock is held and the issuer has rotated (a folder that
        // is read-only already only delays the refresh: its lock cannot be taken, so no
        // token is spent and the request goes to b@).
        Fault::ReadOnly => {
            c.fake.set_refresh_answer_delay(Duration::from_millis(500));
            let base = c.router.base.clone();
            let request = tokio::spawn(async move { respond(&base, "s1").await });
            assert!(
                until(Duration::from_secs(10), || c.fake.refresh_count("acct-a")
                    == 1)
                .await
            );
            c.set(fault, true);
            request.await.expect("request task")
        }
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        served, "acct-a",
        "a@ serves with the token only memory holds"
    );
    assert_eq!(c.fake.refresh_count("acct-a"), 1);
    let log = c.router.log();
    assert!(log.contains("could not be saved"), "{log}");
    assert!(log.contains(fault.error()), "{log}");
    assert_eq!(c.refresh_token_on_disk(), on_disk, "the file is intact");
    let (status, served, _) = respond(&c.router.base, "s2").await;
    assert_eq!((status, served.as_str()), (200, "acct-a"));

    c.set(fault, false);
    let rotated = c.fake.current_tokens("acct-a").refresh_token;
    let mut saved = false;
    for _ in 0..50 {
        // Any request to the pool retries the save, at most once a second.
        account_status(&c.router.base, "acct-a").await;
        if c.refresh_token_on_disk() == rotated.as_str() {
            saved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saved, "the rotated token reached the disk once it could");
    assert_eq!(c.fake.refresh_count("acct-a"), 1, "saved, not refreshed");
    assert_eq!(replayed_refresh_tokens(&c.fake), 0);
    assert_eq!(
        account_status(&c.router.base, "acct-a").await["state"],
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_during_a_refresh_loses_no_token_and_the_router_keeps_serving() {
    a_refresh_under(Fault::DiskFull, "a_full_disk_during_a_refresh").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_accounts_folder_during_a_refresh_loses_no_token_and_the_router_keeps_serving()
{
    a_refresh_under(
        Fault::ReadOnly,
        "a_read_only_accounts_folder_during_a_refresh",
    )
    .await;
}

/// `cma login --no-browser` for c@, done over HTTP as a browser would, writing to the
/// router's accounts folder: (success, stdout, stderr).
async fn log_in(c: &Contained) -> (bool, String, String) {
    let mut vars = c.vars.clone();
    for (name, file) in [
        ("CODEX_PROXY_ACCOUNTS_FILE", "openai-accounts.json"),
        ("CODEX_PROXY_BINDINGS_FILE", "session-bindings.json"),
    ] {
        vars.insert(name.into(), c.path(file).display().to_string());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    vars.insert("CODEX_PROXY_LOGIN_PORT".into(), port.to_string());
    c.fake.set_next_login("acct-c");
    let login = crate::login::Login::start(&vars, &["login", "--no-browser", "--timeout", "30"]);
    let _ = super::client().get(&login.url).send().await;
    login.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_a_full_disk_or_a_read_only_folder_fails_clearly_and_loses_nothing() {
    let Some(c) = Contained::start("a_login_on_a_full_disk_or_a_read_only_folder").await else {
        return;
    };
    c.fake
        .add_account(AccountSpec::new("c@example.com", "acct-c", "user-acct-c"));
    for fault in [Fault::DiskFull, Fault::ReadOnly] {
        c.set(fault, true);
        // Read with the fault on: the router may save a refresh between two rounds, but
        // nothing can write while the fault holds, so any change would be the login's.
        let before = std::fs::read(c.path("openai-accounts.json")).expect("accounts file");
        let (ok, stdout, stderr) = log_in(&c).await;
        println!("login under {fault:?}: {stderr}");
        assert!(!ok, "{stdout}");
        assert!(stderr.contains(fault.error()), "{stderr}");
        assert!(stderr.contains("/store/"), "names the path: {stderr}");
        let after = std::fs::read(c.path("openai-accounts.json")).expect("accounts file");
        assert_eq!(after, before, "the accounts file is untouched");
        let (status, _, body) = respond(&c.router.base, &format!("{fault:?}")).await;
        assert_eq!(status, 200, "the router keeps serving: {body}");
        c.set(fault, false);
    }
    // With room again the same login works, and the router picks the account up.
    let (ok, _, stderr) = log_in(&c).await;
    assert!(ok, "{stderr}");
    let found = until(Duration::from_secs(5), || {
        let file = std::fs::read_to_string(c.path("openai-accounts.json")).unwrap_or_default();
        file.contains("acct-c")
    })
    .await;
    assert!(found);
    assert_eq!(
        account_status(&c.router.base, "acct-c").await["state"],
        "ok"
    );
    let _ = c.dir.path();
}
