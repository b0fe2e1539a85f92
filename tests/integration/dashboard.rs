//! The dashboard window end to end: the real app, driven through WebKitWebDriver under an X
//! server (`scripts/test` starts Xvfb), against the fake backend and issuer. Each test runs its
//! own app in a temp HOME with its own router and login ports; the app is single-instance per
//! session bus, so the tests take turns.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;
use crate::support::{AccountSpec, Behaviour, FakeOpenAi};

const APP: &str = env!("CARGO_BIN_EXE_codex-app-account-router");
const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");
const KEY_A: &str = "acct-a/user-acct-a";
const KEY_B: &str = "acct-b/user-acct-b";
const KEY_C: &str = "acct-c/user-acct-c";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const TITLE: &str = "Codex App Account Router";

static ONE_APP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the dashboard shows, read in one script so that a re-render cannot split it.
const SNAPSHOT: &str = r#"
const text = (root, css) => { const e = root.querySelector(css); return e ? e.textContent.trim() : null; };
const error = document.querySelector('#error');
const shown = error && !error.hidden && getComputedStyle(error).display !== 'none' && error.textContent.trim() !== '';
return {
  address: text(document, '#router-address'),
  error: shown ? { code: error.getAttribute('data-code'), text: error.textContent.trim() } : null,
  accounts: Array.from(document.querySelectorAll('#accounts .account'), a => ({
    key: a.getAttribute('data-key'), email: text(a, '.email'), plan: text(a, '.plan'),
    state: text(a, '.state'), primary: text(a, '.usage-primary .percent'),
    secondary: text(a, '.usage-secondary .percent'), reset: text(a, '.reset-primary'),
  })),
  recent: Array.from(document.querySelectorAll('#recent tr.request'), r => r.textContent.trim()),
};"#;

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    probe.local_addr().expect("address").port()
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The WebKitWebDriver to use, or `None` when the test is skipped; panics when the machine
/// lacks what the test needs.
fn webdriver_binary() -> Option<PathBuf> {
    let driver = on_path("WebKitWebDriver");
    let mut missing = Vec::new();
    if std::env::var_os("DISPLAY").is_none() {
        missing.push("an X display (DISPLAY)");
    }
    if driver.is_none() {
        missing.push("WebKitWebDriver (Debian package webkit2gtk-driver)");
    }
    if missing.is_empty() {
        return driver;
    }
    if std::env::var("CMA_SKIP_GUI_E2E").as_deref() == Ok("1") {
        eprintln!("dashboard e2e skipped (CMA_SKIP_GUI_E2E=1)");
        return None;
    }
    panic!(
        "the dashboard end-to-end tests need {}: run scripts/test, which installs and starts \
         them (or set CMA_SKIP_GUI_E2E=1 to skip these tests)",
        missing.join(" and ")
    );
}

fn row<'a>(snapshot: &'a Value, key: &str) -> Option<&'a Value> {
    let accounts = snapshot["accounts"].as_array()?;
    accounts.iter().find(|a| a["key"] == key)
}

fn percent(a: &Value, field: &str) -> Option<f64> {
    let text = a[field].as_str()?.trim().trim_end_matches('%');
    text.trim().parse().ok()
}

/// Pids of the live (not zombie) children of a process.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let stat = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|pid| {
            let stat = stat(&pid)?;
            let mut after = stat.rsplit_once(')')?.1.split_whitespace();
            let (state, ppid) = (after.next()?, after.next()?.parse::<u32>().ok()?);
            (ppid == parent && state != "Z").then(|| pid.parse().ok())?
        })
        .collect()
}

/// A WebKitWebDriver with one session on the app. Dropping it deletes the session (which
/// ends the app), kills whatever is left and stops WebKitWebDriver.
struct Driver {
    child: Child,
    port: u16,
    http: reqwest::Client,
    session: Option<String>,
    log: PathBuf,
}

impl Driver {
    async fn start(binary: &Path, env: Vec<(String, String)>, log: PathBuf) -> Driver {
        let port = free_port();
        let out = std::fs::File::create(&log).expect("webdriver log");
        let child = Command::new(binary)
            .args([format!("--port={port}"), "--host=127.0.0.1".into()])
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .expect("WebKitWebDriver starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let mut driver = Driver {
            child,
            port,
            http,
            session: None,
            log,
        };
        for _ in 0..100 {
            if driver.raw(Method::GET, "/status", None).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let started = Instant::now();
        let options = json!({"binary": APP, "args": []});
        let caps = json!({"capabilities": {"alwaysMatch": {"webkitgtk:browserOptions": options}}});
        let session = driver.raw(Method::POST, "/session", Some(caps)).await;
        let session = session.unwrap_or_else(|e| {
            panic!("no WebDriver session on the app (it must open its `dashboard` window): {e}")
        });
        driver.session = session["sessionId"].as_str().map(str::to_string);
        eprintln!("dashboard: session open in {:.1?}", started.elapsed());
        driver
    }

    async fn raw(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut request = self
            .http
            .request(method, url)
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let answer: Value = response.json().await.map_err(|e| e.to_string())?;
        match status.is_success() {
            true => Ok(answer["value"].clone()),
            false => Err(format!("{status} {}", answer["value"])),
        }
    }

    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let session = self.session.as_deref().ok_or("no session")?;
        self.raw(method, &format!("/session/{session}{path}"), body)
            .await
    }

    async fn find(&self, css: &str) -> Result<String, String> {
        let by = json!({"using": "css selector", "value": css});
        let found = self.cmd(Method::POST, "/element", Some(by)).await?;
        found[ELEMENT]
            .as_str()
            .map(str::to_string)
            .ok_or(found.to_string())
    }

    async fn text(&self, element: &str) -> Result<String, String> {
        let path = format!("/element/{element}/text");
        let text = self.cmd(Method::GET, &path, None).await?;
        Ok(text.as_str().unwrap_or_default().to_string())
    }

    async fn attribute(&self, element: &str, name: &str) -> Result<Value, String> {
        let path = format!("/element/{element}/attribute/{name}");
        self.cmd(Method::GET, &path, None).await
    }

    /// Finds and clicks, retrying for up to 5 s (the element may not be rendered yet, or be
    /// replaced by a refresh between the find and the click).
    async fn click(&self, css: &str) {
        let mut last = String::new();
        for _ in 0..20 {
            match self.find(css).await {
                Ok(el) => match self
                    .cmd(
                        Method::POST,
                        &format!("/element/{el}/click"),
                        Some(json!({})),
                    )
                    .await
                {
                    Ok(_) => return,
                    Err(e) => last = e,
                },
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("could not click {css}: {last}");
    }

    async fn script(&self, js: &str) -> Result<Value, String> {
        let body = json!({"script": js, "args": []});
        self.cmd(Method::POST, "/execute/sync", Some(body)).await
    }

    async fn screenshot(&self, name: &str) {
        let Ok(png) = self.cmd(Method::GET, "/screenshot", None).await else {
            return eprintln!("dashboard: no screenshot for {name}");
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or(""));
        let dir = Path::new(APP)
            .parent()
            .and_then(Path::parent)
            .expect("target dir");
        let path = dir
            .join("screenshots")
            .join(format!("dashboard-{name}.png"));
        std::fs::create_dir_all(path.parent().unwrap()).expect("screenshots dir");
        std::fs::write(&path, bytes.expect("base64 PNG")).expect("write screenshot");
        eprintln!("dashboard: saved {}", path.display());
    }

    async fn close(&mut self) {
        if self.cmd(Method::DELETE, "", None).await.is_ok() {
            self.session = None;
        }
    }

    /// The fallback for a test that panicked: a plain HTTP DELETE, without the runtime.
    fn delete_session_blocking(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(
            s,
            "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let _ = s.read_to_end(&mut Vec::new());
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let app = children(self.child.id());
        self.delete_session_blocking();
        for _ in 0..100 {
            if app
                .iter()
                .all(|pid| !children(self.child.id()).contains(pid))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in children(self.child.id()) {
            eprintln!("dashboard: the app (pid {pid}) outlived its session; killing it");
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- WebKitWebDriver and app log (last lines) ---\n{}",
                tail.join("\n")
            );
        }
    }
}

/// The app with accounts A and B on the fakes, its dashboard open under WebDriver.
struct Dashboard {
    driver: Driver,
    fake: FakeOpenAi,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`, the router inside the app.
    router: String,
    login_port: u16,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Dashboard {
    /// `None` when skipped (`CMA_SKIP_GUI_E2E=1` on a machine without the tools).
    async fn open(prepare: impl FnOnce(&FakeOpenAi)) -> Option<Dashboard> {
        let webdriver = webdriver_binary()?;
        let turn = ONE_APP.lock().await;
        let fake = FakeOpenAi::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let records: Vec<Value> = [A, B].iter().map(|a| register(&fake, a)).collect();
        write_accounts(&dir.path().join("openai-accounts.json"), &records);
        prepare(&fake);
        let browser = dir.path().join("browser.sh");
        let script = "#!/bin/sh\nexec curl -sL --max-time 10 \"$1\" >/dev/null\n";
        std::fs::write(&browser, script).expect("browser script");
        std::fs::set_permissions(
            &browser,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let (port, login_port) = (free_port(), free_port());
        let mut env: Vec<(String, String)> = fake_vars(&fake, dir.path()).into_iter().collect();
        let home = dir.path().join("home");
        let own = [
            ("CODEX_PROXY_PORT", port.to_string()),
            ("CODEX_PROXY_LOGIN_PORT", login_port.to_string()),
            ("CODEX_PROXY_BROWSER", browser.display().to_string()),
            ("TAURI_WEBVIEW_AUTOMATION", "true".into()),
            ("HOME", home.display().to_string()),
            (
                "XDG_CONFIG_HOME",
                home.join(".config").display().to_string(),
            ),
            (
                "XDG_DATA_HOME",
                home.join(".local/share").display().to_string(),
            ),
            ("XDG_CACHE_HOME", home.join(".cache").display().to_string()),
            ("NO_COLOR", "1".into()),
        ];
        env.retain(|(k, _)| k != "CODEX_PROXY_PORT");
        env.extend(own.into_iter().map(|(k, v)| (k.to_string(), v)));
        for name in [
            "PATH",
            "DISPLAY",
            "XAUTHORITY",
            "DBUS_SESSION_BUS_ADDRESS",
            "XDG_RUNTIME_DIR",
            "RUST_LOG",
        ] {
            if let Ok(value) = std::env::var(name) {
                env.push((name.to_string(), value));
            }
        }
        std::fs::create_dir_all(&home).expect("home");
        let log = dir.path().join("webdriver.log");
        let driver = Driver::start(&webdriver, env, log).await;
        let router = format!("http://127.0.0.1:{port}");
        let d = Dashboard {
            driver,
            fake,
            dir,
            router,
            login_port,
            _turn: turn,
        };
        let title = d.driver.cmd(Method::GET, "/title", None).await;
        assert_eq!(title, Ok(json!(TITLE)), "the dashboard window's title");
        Some(d)
    }

    async fn snapshot(&self) -> Value {
        let snapshot = self.driver.script(SNAPSHOT).await;
        snapshot.unwrap_or_else(|e| json!({ "scriptError": e }))
    }

    /// Polls the dashboard (every 250 ms, up to `secs`) until `check` accepts what it shows.
    async fn until<T>(&self, what: &str, secs: u64, check: impl Fn(&Value) -> Option<T>) -> T {
        let mut last = Value::Null;
        for _ in 0..secs * 4 {
            last = self.snapshot().await;
            if let Some(found) = check(&last) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.driver.screenshot("failed").await;
        panic!("the dashboard did not show {what} within {secs} s; it shows {last:#}");
    }

    /// Waits until A and B are listed with a state.
    async fn both_listed(&self) -> Value {
        self.until("accounts A and B", 10, |s| {
            let listed = [KEY_A, KEY_B]
                .iter()
                .all(|k| row(s, k).is_some_and(|a| a["state"].is_string()));
            listed.then(|| s.clone())
        })
        .await
    }

    fn accounts_in_file(&self) -> Vec<String> {
        let file =
            std::fs::read(self.dir.path().join("openai-accounts.json")).expect("accounts file");
        let file: Value = serde_json::from_slice(&file).expect("json");
        let accounts = file["accounts"].as_array().cloned().unwrap_or_default();
        accounts
            .iter()
            .filter_map(|a| Some(a["accountId"].as_str()?.to_string()))
            .collect()
    }

    async fn finish(mut self, screenshot: &str) {
        self.driver.screenshot(screenshot).await;
        self.driver.close().await;
    }
}

#[tokio::test]
async fn dashboard_lists_the_accounts_with_their_usage_and_the_router_address() {
    let Some(d) = Dashboard::open(|fake| {
        fake.set_usage("acct-a", 42.0, 10.0);
        fake.set_usage("acct-b", 73.0, 55.0);
    })
    .await
    else {
        return;
    };
    let address = format!("{}/v1", d.router);
    d.until("the router address", 10, |s| {
        s["address"].as_str()?.contains(&address).then_some(())
    })
    .await;
    let element = d
        .driver
        .find("#router-address")
        .await
        .expect("#router-address");
    let text = d.driver.text(&element).await.expect("text");
    assert!(
        text.contains(&address),
        "#router-address says {text:?}, not {address}"
    );
    let usage = |a: &Value| (percent(a, "primary"), percent(a, "secondary"));
    let shown = d
        .until("A at 42 %/10 % and B at 73 %/55 %", 10, |s| {
            let (a, b) = (row(s, KEY_A)?, row(s, KEY_B)?);
            let expected = [(Some(42.0), Some(10.0)), (Some(73.0), Some(55.0))];
            ([usage(a), usage(b)] == expected).then(|| s.clone())
        })
        .await;
    for (key, email) in [(KEY_A, "a@example.com"), (KEY_B, "b@example.com")] {
        let a = row(&shown, key).expect("listed");
        assert_eq!(
            (a["email"].as_str(), a["state"].as_str()),
            (Some(email), Some("ok")),
            "{a}"
        );
        assert!(
            a["plan"]
                .as_str()
                .is_some_and(|p| p.to_lowercase().contains("plus")),
            "{a}"
        );
    }
    assert_eq!(shown["error"], Value::Null, "no error on a healthy start");
    let first = d.driver.find(".account").await.expect(".account");
    let key = d
        .driver
        .attribute(&first, "data-key")
        .await
        .expect("data-key");
    assert!(
        key == KEY_A || key == KEY_B,
        "first .account has data-key {key}"
    );
    d.finish("1-accounts").await;
}

#[tokio::test]
async fn dashboard_add_account_signs_in_through_the_issuer_and_lists_the_new_account() {
    let Some(d) = Dashboard::open(|fake| {
        fake.add_account(AccountSpec::new("c@example.com", "acct-c", "user-acct-c"));
        fake.set_next_login("acct-c");
    })
    .await
    else {
        return;
    };
    d.both_listed().await;
    let started = Instant::now();
    d.driver.click("#add-account").await;
    let c = d
        .until("the new account C", 10, |s| row(s, KEY_C).cloned())
        .await;
    eprintln!(
        "dashboard: C listed {:.1?} after the click",
        started.elapsed()
    );
    assert_eq!(c["email"], "c@example.com", "{c}");
    let callback = format!(":{}/auth/callback", d.login_port);
    let authorize = d
        .fake
        .issuer_requests()
        .into_iter()
        .find(|r| r.path == "/oauth/authorize");
    let redirect = authorize
        .map(|r| r.body["redirect_uri"].clone())
        .unwrap_or_default();
    assert!(
        redirect.as_str().is_some_and(|r| r.contains(&callback)),
        "redirect_uri {redirect}"
    );
    assert!(
        d.accounts_in_file().contains(&"acct-c".to_string()),
        "C saved"
    );
    d.finish("2-added").await;
}

#[tokio::test]
async fn dashboard_remove_asks_first_then_drops_the_account_from_the_list_and_the_file() {
    let Some(d) = Dashboard::open(|_| {}).await else {
        return;
    };
    d.both_listed().await;
    let b = format!(".account[data-key=\"{KEY_B}\"]");
    d.driver
        .click(&format!("{b} button[data-action=\"remove\"]"))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shown = d.snapshot().await;
    assert!(
        row(&shown, KEY_B).is_some(),
        "the first click only asks: {shown:#}"
    );
    assert!(
        d.accounts_in_file().contains(&"acct-b".to_string()),
        "B kept until confirmed"
    );
    d.driver.screenshot("3-confirm").await;
    d.driver
        .click(&format!("{b} button[data-action=\"confirm-remove\"]"))
        .await;
    d.until("the list without B", 10, |s| {
        (row(s, KEY_B).is_none() && row(s, KEY_A).is_some()).then_some(())
    })
    .await;
    assert_eq!(
        d.accounts_in_file(),
        ["acct-a"],
        "B removed from the accounts file"
    );
    d.finish("3-removed").await;
}

#[tokio::test]
async fn dashboard_shows_a_usage_limit_within_seconds() {
    let Some(d) = Dashboard::open(|_| {}).await else {
        return;
    };
    let shown = d.both_listed().await;
    assert_eq!(row(&shown, KEY_A).unwrap()["state"], "ok", "{shown:#}");
    d.fake.push_behaviour(
        "acct-a",
        Behaviour::UsageLimit {
            resets_in_seconds: 3600,
        },
    );
    let started = Instant::now();
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(format!("{}/v1/responses", d.router))
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .header("session-id", "dash-limit")
        .header("x-cma-account", KEY_A)
        .body(codex_body("dash-limit", "gpt-5.5").to_string())
        .send()
        .await
        .expect("the router answers");
    let status = response.status();
    let _ = response.bytes().await;
    assert_eq!(status, 429, "A pinned and limited");
    let a = d
        .until("A limited", 10, |s| {
            (row(s, KEY_A)?["state"] == "limited").then(|| s.clone())
        })
        .await;
    eprintln!(
        "dashboard: A limited {:.1?} after the request",
        started.elapsed()
    );
    assert_eq!(row(&a, KEY_B).unwrap()["state"], "ok", "B untouched: {a:#}");
    let reset = row(&a, KEY_A).unwrap()["reset"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reset.chars().any(|c| c.is_ascii_digit()),
        "A's reset countdown: {reset:?}"
    );
    d.until("the request in #recent", 10, |s| {
        let rows = s["recent"].as_array()?;
        rows.iter()
            .any(|r| r.as_str().is_some_and(|r| r.contains("gpt-5.5")))
            .then_some(())
    })
    .await;
    d.finish("4-limited").await;
}
