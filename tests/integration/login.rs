//! `cma login` as a user runs it: the browser flow through a real headless Chromium and at the
//! HTTP level (wrong state, error callbacks, `/cancel`, timeout, busy ports), and the device
//! code.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;
use crate::keychain::{cma, has, service, Output};
use crate::support::{AccountSpec, FakeOpenAi, IssuedTokens};

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    probe.local_addr().expect("address").port()
}

#[track_caller]
fn assert_tokens(record: &Value, tokens: &IssuedTokens) {
    let stored = [&record["access"], &record["parts"]["refreshToken"]];
    assert_eq!(stored, [&tokens.access_token, &tokens.refresh_token]);
}

fn emails(file: &Value) -> Vec<&Value> {
    let accounts = file["accounts"].as_array().unwrap();
    accounts.iter().map(|a| &a["email"]).collect()
}

#[track_caller]
fn assert_port_free(port: u16) {
    let connect = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(connect.is_err(), "something still listens on {port}");
}

/// A fake issuer knowing a@ (the default login) and b@, an accounts file holding c@, and the
/// variables for `cma` with the callback on a free port and a keychain service of its own.
pub(crate) struct Setup {
    pub fake: FakeOpenAi,
    pub dir: tempfile::TempDir,
    pub vars: HashMap<String, String>,
    pub port: u16,
}

pub(crate) async fn setup(store: &str) -> Setup {
    let fake = FakeOpenAi::start().await;
    fake.add_account(AccountSpec::new("a@example.com", "acct-a", "user-acct-a"));
    fake.add_account(AccountSpec::new("b@example.com", "acct-b", "user-acct-b"));
    let dir = tempfile::tempdir().expect("temp dir");
    let c = register(&fake, &account("c@example.com", "acct-c"));
    write_accounts(&dir.path().join("openai-accounts.json"), &[c]);
    let mut vars = fake_vars(&fake, dir.path());
    let port = free_port();
    vars.insert("CODEX_PROXY_LOGIN_PORT".into(), port.to_string());
    vars.insert("CODEX_PROXY_TOKEN_STORE".into(), store.into());
    vars.insert("CODEX_PROXY_KEYCHAIN_SERVICE".into(), service(dir.path()));
    Setup {
        fake,
        dir,
        vars,
        port,
    }
}

impl Setup {
    pub fn accounts_path(&self) -> std::path::PathBuf {
        self.dir.path().join("openai-accounts.json")
    }
    pub fn accounts_text(&self) -> String {
        std::fs::read_to_string(self.accounts_path()).expect("accounts file")
    }
    pub fn accounts(&self) -> Value {
        serde_json::from_str(&self.accounts_text()).expect("json")
    }
}

/// A `cma login` in the background; `url` is the first line it printed.
pub(crate) struct Login {
    child: Child,
    stdout: BufReader<ChildStdout>,
    pub url: String,
}

impl Login {
    pub fn start(vars: &HashMap<String, String>, args: &[&str]) -> Login {
        let mut child = cma(vars, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cma runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut url = String::new();
        stdout.read_line(&mut url).expect("cma stdout");
        let url = url.trim().to_string();
        Login { child, stdout, url }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    pub fn finish(mut self) -> Output {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "cma login still runs after 30 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        let (mut stdout, mut stderr) = (String::new(), String::new());
        self.stdout.read_to_string(&mut stdout).unwrap();
        let mut err = self.child.stderr.take().unwrap();
        err.read_to_string(&mut stderr).unwrap();
        (status.success(), stdout, stderr)
    }

    fn query(&self, name: &str) -> String {
        let url = reqwest::Url::parse(&self.url).unwrap_or_else(|_| panic!("{:?}", self.url));
        let found = url.query_pairs().find(|(k, _)| k == name);
        found.map(|(_, v)| v.to_string()).unwrap_or_default()
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(follow: bool) -> reqwest::Client {
    let policy = match follow {
        true => reqwest::redirect::Policy::limited(5),
        false => reqwest::redirect::Policy::none(),
    };
    let builder = reqwest::Client::builder().no_proxy().redirect(policy);
    builder.build().unwrap()
}

/// A whole browser login done over HTTP, following the redirects as a browser does.
pub(crate) async fn login_over_http(vars: &HashMap<String, String>) -> Output {
    let login = Login::start(vars, &["login", "--no-browser", "--timeout", "30"]);
    let page = client(true).get(&login.url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    has(&page.text().await.unwrap(), "Signed in");
    login.finish()
}

// The Chromium test needs Debian's /usr/bin/chromium and a Unix process group: Linux only.
#[cfg(target_os = "linux")]
const CHROMIUM_FLAGS: &str = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync";

/// Opens `url` in a real headless Chromium and returns the DOM it ended on.
#[cfg(target_os = "linux")]
fn chromium(url: &str, profile: &std::path::Path) -> String {
    use std::os::unix::process::CommandExt as _;
    use std::process::Command;
    let mut child = Command::new("/usr/bin/chromium")
        .args(CHROMIUM_FLAGS.split(' '))
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("/usr/bin/chromium runs");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = out.read_to_string(&mut dom);
        dom
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Chromium's helpers share its process group: end the group this test started.
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    let _ = child.wait();
    reader.join().unwrap()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_through_headless_chromium_adds_the_account() {
    let s = setup("file").await;
    let login = Login::start(&s.vars, &["login", "--no-browser", "--timeout", "90"]);
    let redirect_uri = login.query("redirect_uri");
    let expected = format!("http://localhost:{}/auth/callback", s.port);
    assert_eq!(redirect_uri, expected);
    let state = login.query("state");
    assert!(state.len() >= 32, "a guessable state: {state:?}");
    let dom = chromium(&login.url, &s.dir.path().join("chromium"));
    has(&dom, "Signed in");
    let (ok, stdout, stderr) = login.finish();
    assert!(ok, "{stderr}");
    has(&stdout, "added a@example.com (plus)");
    let file = s.accounts();
    assert_eq!(emails(&file), ["c@example.com", "a@example.com"]);
    let a = &file["accounts"][1];
    let identity = [&a["email"], &a["accountId"], &a["userId"], &a["planType"]];
    assert_eq!(identity, ["a@example.com", "acct-a", "user-acct-a", "plus"]);
    assert_tokens(a, &s.fake.current_tokens("acct-a"));
    let seen = s.fake.issuer_requests();
    let auth = seen.iter().find(|r| r.path == "/oauth/authorize").unwrap();
    assert_eq!(auth.body["code_challenge_method"], "S256");
    assert_eq!(auth.body["state"], state.as_str());
    let exchange = seen
        .iter()
        .find(|r| r.path == "/oauth/token" && r.body["grant_type"] == "authorization_code")
        .expect("the code was exchanged");
    let verifier = exchange.body["code_verifier"].as_str().unwrap();
    let challenge = crate::support::pkce_challenge(verifier);
    assert_eq!(auth.body["code_challenge"], challenge.as_str());
    assert_eq!(exchange.body["redirect_uri"], redirect_uri.as_str());
    assert_port_free(s.port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_again_renews_the_account_and_another_one_is_added() {
    let s = setup("file").await;
    assert!(login_over_http(&s.vars).await.0);
    let mut file = s.accounts();
    file["accounts"][1]["needsLogin"] = json!({"code": "refresh_token_reused", "since": 1});
    std::fs::write(s.accounts_path(), file.to_string()).unwrap();
    let (ok, stdout, stderr) = login_over_http(&s.vars).await;
    assert!(ok, "{stderr}");
    has(&stdout, "renewed the sign-in of a@example.com (plus)");
    let file = s.accounts();
    assert_eq!(emails(&file), ["c@example.com", "a@example.com"]);
    assert!(file["accounts"][1].get("needsLogin").is_none(), "{file}");
    assert_tokens(&file["accounts"][1], &s.fake.current_tokens("acct-a"));
    s.fake.set_next_login("acct-b");
    has(
        &login_over_http(&s.vars).await.1,
        "added b@example.com (plus)",
    );
    let all = ["c@example.com", "a@example.com", "b@example.com"];
    assert_eq!(emails(&s.accounts()), all);
    assert_port_free(s.port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_with_the_wrong_state_is_refused_and_the_login_keeps_waiting() {
    let s = setup("file").await;
    let mut login = Login::start(&s.vars, &["login", "--no-browser", "--timeout", "30"]);
    let issuer = client(false).get(&login.url).send().await.unwrap();
    assert_eq!(issuer.status(), 302);
    let callback = issuer.headers()["location"].to_str().unwrap().to_string();
    let forged = callback.replace(&format!("state={}", login.query("state")), "state=forged");
    assert_ne!(forged, callback);
    let response = client(false).get(&forged).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.text().await.unwrap(), "State mismatch");
    std::thread::sleep(Duration::from_millis(200));
    assert!(login.running(), "a forged callback ended the login");
    let page = client(true).get(&callback).send().await.unwrap();
    has(&page.text().await.unwrap(), "Signed in");
    let (ok, stdout, stderr) = login.finish();
    assert!(ok, "{stderr}");
    has(&stdout, "added a@example.com");
    assert_port_free(s.port);
}

/// Runs a login that must fail; returns its stderr after checking that nothing was kept.
async fn failed_login(s: &Setup, args: &[&str], browser: impl AsyncFnOnce(&Login)) -> String {
    let before = s.accounts_text();
    let login = Login::start(&s.vars, args);
    browser(&login).await;
    let (ok, stdout, stderr) = login.finish();
    assert!(!ok, "the login succeeded: {stdout}");
    has(&stderr, "error: ");
    assert_eq!(s.accounts_text(), before, "the accounts file changed");
    assert_port_free(s.port);
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sign_in_fails_with_the_issuers_message() {
    let s = setup("file").await;
    s.fake.fail_next_login("The user said no to Codex");
    let err = failed_login(&s, &["login", "--no-browser"], async |login: &Login| {
        let page = client(true).get(&login.url).send().await.unwrap();
        assert_eq!(page.status(), 400);
        has(&page.text().await.unwrap(), "The user said no to Codex");
    })
    .await;
    has(&err, "The user said no to Codex");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_without_a_code_fails_clearly() {
    let s = setup("file").await;
    let err = failed_login(&s, &["login", "--no-browser"], async |login: &Login| {
        let state = login.query("state");
        let url = format!("http://localhost:{}/auth/callback?state={state}", s.port);
        assert_eq!(client(false).get(url).send().await.unwrap().status(), 400);
    })
    .await;
    has(&err, "no authorization code");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_the_login() {
    let s = setup("file").await;
    let err = failed_login(&s, &["login", "--no-browser"], async |_: &Login| {
        let url = format!("http://localhost:{}/cancel", s.port);
        assert_eq!(client(false).get(url).send().await.unwrap().status(), 200);
    })
    .await;
    has(&err, "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_nobody_completes_times_out() {
    let s = setup("file").await;
    let args = ["login", "--no-browser", "--timeout", "1"];
    let err = failed_login(&s, &args, async |_: &Login| {}).await;
    has(&err, "no login completed within 1 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_callback_port_is_named() {
    let mut s = setup("file").await;
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    s.vars
        .insert("CODEX_PROXY_LOGIN_PORT".into(), port.to_string());
    let before = s.accounts_text();
    let (ok, _, stderr) = Login::start(&s.vars, &["login", "--no-browser"]).finish();
    assert!(!ok);
    has(&stderr, &format!("ports [{port}] are all in use"));
    assert_eq!(s.accounts_text(), before);
    drop(holder);
    assert_port_free(port);
}

/// The only test touching 1455/1457: with 1455 held, the callback moves to 1457.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_falls_back_to_1457_when_1455_is_taken() {
    let mut s = setup("file").await;
    s.vars.remove("CODEX_PROXY_LOGIN_PORT");
    let ours = std::net::TcpListener::bind(("127.0.0.1", 1455)).ok();
    let login = Login::start(&s.vars, &["login", "--no-browser", "--timeout", "20"]);
    if login.url.is_empty() {
        // 1457 is taken by something else too: the error must name both ports.
        has(&login.finish().2, "[1455, 1457] are all in use");
        return;
    }
    let redirect = reqwest::Url::parse(&login.query("redirect_uri")).unwrap();
    let port = redirect.port().unwrap();
    match ours {
        Some(_) => assert_eq!(port, 1457, "1455 is held by this test"),
        None => assert!([1455, 1457].contains(&port), "{port}"),
    }
    let cancel = client(false).get(format!("http://localhost:{port}/cancel"));
    assert_eq!(cancel.send().await.unwrap().status(), 200);
    let (ok, _, stderr) = login.finish();
    assert!(!ok);
    has(&stderr, "cancelled");
    if ours.is_some() {
        drop(ours);
        assert_port_free(port);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_login_prints_the_code_and_adds_the_account() {
    let s = setup("file").await;
    let login = Login::start(&s.vars, &["login", "--device", "--timeout", "30"]);
    assert_eq!(login.url, "FAKE-0001", "the user code first");
    let (ok, stdout, stderr) = login.finish();
    assert!(ok, "{stderr}");
    has(&stderr, &format!("{}/codex/device", s.fake.issuer_url));
    has(&stdout, "added a@example.com (plus)");
    let file = s.accounts();
    assert_eq!(file["accounts"][1]["accountId"], "acct-a");
    assert_tokens(&file["accounts"][1], &s.fake.current_tokens("acct-a"));
}

/// One raw HTTP/1.1 GET with exactly these extra header lines (a `Host` among them or not) to
/// the callback listener; the status code of the answer.
fn raw_get(port: u16, target: &str, headers: &[&str]) -> u16 {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("GET {target} HTTP/1.1\r\n");
    for header in headers {
        request.push_str(&format!("{header}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer.split(' ').nth(1).unwrap_or_default();
    status
        .parse()
        .unwrap_or_else(|_| panic!("no status in {answer:?}"))
}

/// Fails before the fix: `/cancel` and the callback answered whatever the `Host`, and
/// `/cancel` whoever asked, so a web page (an `<img>`, or a page whose name was rebound to
/// 127.0.0.1) could end the login. Now a foreign or missing Host gets 403, and `/cancel`
/// refuses what a browser sends for a page (`Sec-Fetch-Site`, `Origin`, a foreign `Referer`),
/// while `codex login`'s own cancel and the real redirect still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_our_host_and_no_web_page_can_cancel_or_answer_the_login() {
    let s = setup("file").await;
    let mut login = Login::start(&s.vars, &["login", "--no-browser", "--timeout", "30"]);
    let issuer = client(false).get(&login.url).send().await.unwrap();
    let callback = issuer.headers()["location"].to_str().unwrap().to_string();
    let callback = reqwest::Url::parse(&callback).unwrap();
    let target = format!("{}?{}", callback.path(), callback.query().unwrap());
    let port = s.port;
    let (ours, evil) = (format!("Host: localhost:{port}"), "Host: evil.example");
    let refused: [(&str, Vec<String>); 9] = [
        ("/cancel", vec![]),
        ("/cancel", vec![format!("Host: evil.example:{port}")]),
        ("/cancel", vec![format!("Host: localhost:{}", port + 1)]),
        ("/cancel", vec![format!("Host: [::1]:{port}")]),
        (
            "/cancel",
            vec![ours.clone(), "Sec-Fetch-Site: cross-site".into()],
        ),
        (
            "/cancel",
            vec![ours.clone(), "Sec-Fetch-Site: same-site".into()],
        ),
        (
            "/cancel",
            vec![ours.clone(), "Origin: https://evil.example".into()],
        ),
        (
            "/cancel",
            vec![ours.clone(), "Referer: https://evil.example/".into()],
        ),
        (&target, vec![evil.into()]),
    ];
    for (path, headers) in &refused {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        assert_eq!(raw_get(port, path, &headers), 403, "{path} {headers:?}");
        std::thread::sleep(Duration::from_millis(50));
        assert!(login.running(), "{path} {headers:?} ended the login");
    }
    // Nothing answers for the redirect's `localhost` on IPv6 loopback: a browser trying
    // [::1] first falls back to 127.0.0.1.
    let v6 = std::net::TcpStream::connect(("::1", port));
    assert!(v6.is_err(), "something answers on [::1]:{port}");
    // The redirect as the browser sends it, from the sign-in page: cross-site, our Host.
    let page = client(true)
        .get(callback.as_str())
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    has(&page.text().await.unwrap(), "Signed in");
    let (ok, stdout, stderr) = login.finish();
    assert!(ok, "{stderr}");
    has(&stdout, "added a@example.com");

    // `codex login`'s cancel of a busy port: Host 127.0.0.1, no browser headers.
    let login = Login::start(&s.vars, &["login", "--no-browser", "--timeout", "30"]);
    let host = format!("Host: 127.0.0.1:{port}");
    assert_eq!(raw_get(port, "/cancel", &[&host]), 200);
    let (ok, _, stderr) = login.finish();
    assert!(!ok);
    has(&stderr, "cancelled");
    assert_port_free(port);
}

/// Fails before the fix: with something else listening on [::1] at the callback port, the
/// login still used that port, though a browser resolving the redirect's `localhost` to ::1
/// would hand the code and state to it. Such a port now counts as taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_taken_on_ipv6_loopback_is_not_used_for_the_callback() {
    let mut s = setup("file").await;
    let Ok(squatter) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here: nothing to take the port on");
        return;
    };
    let port = squatter.local_addr().unwrap().port();
    s.vars
        .insert("CODEX_PROXY_LOGIN_PORT".into(), port.to_string());
    let args = ["login", "--no-browser", "--timeout", "2"];
    let (ok, stdout, stderr) = Login::start(&s.vars, &args).finish();
    assert!(!ok, "the login used the port: {stdout}");
    has(&stderr, &format!("ports [{port}] are all in use"));
    drop(squatter);
}
