//! The dashboard window end to end: the real app driven through WebKitWebDriver under an X
//! server (`scripts/test` starts Xvfb), against the fake backend and issuer. Each test runs its
//! own app in a temp HOME with its own router and login ports; the app is single-instance per
//! session bus, so the tests take turns. Screenshots go to `target/screenshots/dashboard-*.png`.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;
use crate::support::{AccountSpec, Behaviour, FakeOpenAi, SeenRequest};

const APP: &str = env!("CARGO_BIN_EXE_codex-app-account-router");
const A: TestAccount = account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");
const KEY_A: &str = "acct-a/user-acct-a";
const KEY_B: &str = "acct-b/user-acct-b";
const KEY_C: &str = "acct-c/user-acct-c";
/// What the app needs from the test's own environment (the rest is cleared).
const PASSED_ON: &str = "PATH DISPLAY XAUTHORITY DBUS_SESSION_BUS_ADDRESS RUST_LOG";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The app is single-instance per session bus: the window and tray tests take turns.
pub static ONE_APP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the dashboard shows, read in one script so that a re-render cannot split it.
const SNAPSHOT: &str = r#"
const text = (root, css) => { const e = root.querySelector(css); return e ? e.textContent.trim() : null; };
const e = document.querySelector('#error');
const shown = e && !e.hidden && getComputedStyle(e).display !== 'none' && e.textContent.trim() !== '';
return {
  address: text(document, '#router-address'),
  notice: document.querySelector('#notice').hidden ? null : text(document, '#notice'),
  error: shown ? { code: e.getAttribute('data-code'), text: e.textContent.trim() } : null,
  accounts: Array.from(document.querySelectorAll('#accounts .account'), a => ({
    key: a.getAttribute('data-key'), email: text(a, '.email'), plan: text(a, '.plan'),
    state: text(a, '.state'), primary: text(a, '.usage-primary .percent'),
    secondary: text(a, '.usage-secondary .percent'), reset: text(a, '.reset-primary'),
  })),
  recent: Array.from(document.querySelectorAll('#recent tr.request'), r => r.textContent.trim()),
};"#;

/// Resolves once the page has painted twice (a screenshot otherwise shows an older frame).
const PAINTED: &str = "const done = arguments[arguments.length - 1];
requestAnimationFrame(() => requestAnimationFrame(() => done(true)));";

fn executable(path: &Path, script: &str) {
    std::fs::write(path, script).expect("script");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(path, mode).expect("chmod");
}

pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    probe.local_addr().expect("address").port()
}

/// The WebKitWebDriver to use; `None` when skipped, a panic when the machine lacks the tools.
fn webdriver_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = std::env::split_paths(&path);
    let driver = dirs.find_map(|dir| Some(dir.join("WebKitWebDriver")).filter(|p| p.is_file()));
    let display = std::env::var_os("DISPLAY");
    if display.is_some() && driver.is_some() {
        return driver;
    }
    if std::env::var("CMA_SKIP_GUI_E2E").as_deref() == Ok("1") {
        eprintln!("dashboard e2e skipped (CMA_SKIP_GUI_E2E=1)");
        return None;
    }
    panic!(
        "the dashboard end-to-end tests need an X display and WebKitWebDriver (package \
         webkit2gtk-driver); here DISPLAY is {display:?} and WebKitWebDriver {driver:?}. Run \
         scripts/test, which installs them and starts Xvfb, or set CMA_SKIP_GUI_E2E=1 to skip."
    );
}

fn row<'a>(snapshot: &'a Value, key: &str) -> Option<&'a Value> {
    let accounts = snapshot["accounts"].as_array()?;
    accounts.iter().find(|a| a["key"] == key)
}

fn percent(a: &Value, field: &str) -> Option<f64> {
    a[field].as_str()?.trim().trim_end_matches('%').parse().ok()
}

/// Pids of the live (not zombie) children of a process.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let child = |pid: String| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
        let (state, ppid) = (fields.next()?, fields.next()?.parse::<u32>().ok()?);
        (ppid == parent && state != "Z").then(|| pid.parse().ok())?
    };
    let names = entries.filter_map(|e| e.ok()?.file_name().into_string().ok());
    names.filter_map(child).collect()
}

/// The app with accounts A and B on the fakes, its dashboard window in a WebKitWebDriver
/// session over one keep-alive client. Dropping it deletes the session (which ends the app),
/// kills what is left and stops WebKitWebDriver.
struct Dashboard {
    webdriver: Child,
    port: u16,
    http: reqwest::Client,
    session: Option<String>,
    fake: FakeOpenAi,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`: the router inside the app.
    router: String,
    login_port: u16,
    /// The app's environment, for a second launch.
    env: std::collections::HashMap<String, String>,
    _tray_host: crate::tray::TrayHost,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Dashboard {
    async fn open(prepare: impl FnOnce(&FakeOpenAi)) -> Option<Dashboard> {
        let webdriver = webdriver_binary()?;
        crate::tray::tools_present()?;
        let _turn = ONE_APP.lock().await;
        // The app runs as it would on a desktop: with a system tray to put its icon in.
        let tray_host = crate::tray::TrayHost::start().await;
        let fake = FakeOpenAi::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let records: Vec<Value> = [A, B].iter().map(|a| register(&fake, a)).collect();
        write_accounts(&dir.path().join("openai-accounts.json"), &records);
        prepare(&fake);
        // The "browser": follows the issuer's redirect to the app's callback.
        let browser = dir.path().join("browser.sh");
        // It waits (at most 20 s) while a `hold` file exists: a test can act mid-login.
        let hold = dir.path().join("hold");
        let script = format!(
            "#!/bin/sh\nn=0\nwhile [ -e '{}' ] && [ $n -lt 200 ]; do sleep 0.1; n=$((n+1)); done\n\
             exec curl -sL --max-time 10 \"$1\" >/dev/null\n",
            hold.display()
        );
        executable(&browser, &script);
        // The system opener: records what it was asked to open, so no real browser starts.
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let opened = dir.path().join("opened.txt");
        let opener = format!("#!/bin/sh\necho \"$@\" >>'{}'\n", opened.display());
        executable(&bin.join("xdg-open"), &opener);
        let (port, router_port, login_port) = (free_port(), free_port(), free_port());
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let mut env = fake_vars(&fake, dir.path());
        let under = |path: &str| home.join(path).display().to_string();
        for (name, value) in [
            ("CODEX_PROXY_PORT", router_port.to_string()),
            ("CODEX_PROXY_LOGIN_PORT", login_port.to_string()),
            ("CODEX_PROXY_BROWSER", browser.display().to_string()),
            ("CODEX_PROXY_STRATEGY", "sticky".into()),
            ("TAURI_WEBVIEW_AUTOMATION", "true".into()),
            ("HOME", home.display().to_string()),
            ("XDG_CONFIG_HOME", under(".config")),
            ("XDG_DATA_HOME", under(".local/share")),
            ("XDG_CACHE_HOME", under(".cache")),
            ("NO_COLOR", "1".into()),
        ] {
            env.insert(name.to_string(), value);
        }
        for name in PASSED_ON.split(' ') {
            if let Ok(value) = std::env::var(name) {
                env.insert(name.to_string(), value);
            }
        }
        let path = format!(
            "{}:{}",
            bin.display(),
            env.get("PATH").cloned().unwrap_or_default()
        );
        env.insert("PATH".to_string(), path);
        // WebKitWebDriver hands its own environment to the app it starts.
        let log = std::fs::File::create(dir.path().join("webdriver.log")).expect("log");
        let webdriver = Command::new(webdriver)
            .args([format!("--port={port}"), "--host=127.0.0.1".into()])
            .env_clear()
            .envs(env.clone())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("WebKitWebDriver starts");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let router = format!("http://127.0.0.1:{router_port}");
        let mut d = Dashboard {
            webdriver,
            port,
            http,
            session: None,
            fake,
            dir,
            router,
            login_port,
            env,
            _tray_host: tray_host,
            _turn,
        };
        for _ in 0..100 {
            if d.call(Method::GET, "/status", None).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let started = Instant::now();
        let options = json!({"binary": APP, "args": []});
        let caps = json!({"capabilities": {"alwaysMatch": {"webkitgtk:browserOptions": options}}});
        let opened = d.call(Method::POST, "/session", Some(caps)).await;
        let opened = opened
            .unwrap_or_else(|e| panic!("no session: did the app open its `dashboard` window? {e}"));
        d.session = opened["sessionId"].as_str().map(str::to_string);
        eprintln!("dashboard: session open in {:.1?}", started.elapsed());
        let title = d.cmd(Method::GET, "/title", None).await;
        assert_eq!(title, Ok(json!("Codex App Account Router")), "window title");
        Some(d)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let request = self.http.request(method, url);
        let mut request = request.timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let timeout = |e: reqwest::Error| format!("{e} (timed out: {})", e.is_timeout());
        let response = request.send().await.map_err(timeout)?;
        let status = response.status();
        let answer: Value = response.json().await.map_err(|e| e.to_string())?;
        match status.is_success() {
            true => Ok(answer["value"].clone()),
            false => Err(format!("{status} {}", answer["value"])),
        }
    }

    /// A command of the session: `path` is relative to `/session/{id}`.
    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let session = self.session.as_deref().ok_or("no session")?;
        let path = format!("/session/{session}{path}");
        self.call(method, &path, body).await
    }

    async fn find(&self, css: &str) -> Result<String, String> {
        let by = json!({"using": "css selector", "value": css});
        let found = self.cmd(Method::POST, "/element", Some(by)).await?;
        let id = found[ELEMENT].as_str().map(str::to_string);
        id.ok_or(found.to_string())
    }

    /// An element's `text` or `attribute/<name>`.
    async fn get(&self, element: &str, what: &str) -> Result<Value, String> {
        let path = format!("/element/{element}/{what}");
        self.cmd(Method::GET, &path, None).await
    }

    /// Finds and clicks, for up to `tries` × 250 ms (the element may not be rendered yet, or
    /// be replaced by a refresh between the find and the click).
    async fn click(&self, css: &str, tries: usize) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..tries {
            let clicked = async {
                let path = format!("/element/{}/click", self.find(css).await?);
                self.cmd(Method::POST, &path, Some(json!({}))).await
            };
            match clicked.await {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!("could not click {css}: {last}"))
    }

    async fn script(&self, js: &str, sync: bool) -> Result<Value, String> {
        let path = ["/execute/async", "/execute/sync"][usize::from(sync)];
        let body = json!({"script": js, "args": []});
        self.cmd(Method::POST, path, Some(body)).await
    }

    async fn screenshot(&self, name: &str) {
        let _ = self.script(PAINTED, false).await;
        let Ok(png) = self.cmd(Method::GET, "/screenshot", None).await else {
            return eprintln!("dashboard: no screenshot for {name}");
        };
        let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or(""));
        let target = Path::new(APP).parent().and_then(Path::parent);
        let dir = target.expect("target dir").join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        let path = dir.join(format!("dashboard-{name}.png"));
        std::fs::write(&path, png.expect("base64 PNG")).expect("write screenshot");
        eprintln!("dashboard: saved {}", path.display());
    }

    async fn snapshot(&self) -> Value {
        let snapshot = self.script(SNAPSHOT, true).await;
        snapshot.unwrap_or_else(|e| json!({ "scriptError": e }))
    }

    /// Polls the dashboard every 250 ms, up to `secs`, until `check` accepts what it shows.
    async fn until<T>(&self, what: &str, secs: u64, check: impl Fn(&Value) -> Option<T>) -> T {
        let mut last = Value::Null;
        for _ in 0..secs * 4 {
            last = self.snapshot().await;
            if let Some(found) = check(&last) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.screenshot("failed").await;
        panic!("the dashboard did not show {what} within {secs} s; it shows {last:#}");
    }

    async fn both_listed(&self) -> Value {
        self.until("accounts A and B", 10, |s| {
            let listed = |k| row(s, k).is_some_and(|a| a["state"].is_string());
            (listed(KEY_A) && listed(KEY_B)).then(|| s.clone())
        })
        .await
    }

    fn accounts_in_file(&self) -> Vec<String> {
        let file = std::fs::read(self.dir.path().join("openai-accounts.json")).expect("file");
        let file: Value = serde_json::from_slice(&file).expect("json");
        let accounts = file["accounts"].as_array().cloned().unwrap_or_default();
        let id = |a: &Value| Some(a["accountId"].as_str()?.to_string());
        accounts.iter().filter_map(id).collect()
    }

    /// Runs the app binary a second time with `args`: the first instance gets them.
    fn launch_again(&self, args: &[&str]) {
        let status = Command::new(APP)
            .args(args)
            .env_clear()
            .envs(self.env.clone())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("a second launch");
        assert!(
            status.success(),
            "the second launch hands over and exits: {status}"
        );
    }

    /// What the system opener was asked to open, one line per call.
    fn opened(&self) -> Vec<String> {
        let opened = std::fs::read_to_string(self.dir.path().join("opened.txt"));
        opened
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// No error shown, a last screenshot, and the session deleted (which ends the app).
    async fn finish(mut self, screenshot: &str) {
        let shown = self.snapshot().await;
        assert_eq!(shown["error"], Value::Null, "no error shown: {shown:#}");
        self.screenshot(screenshot).await;
        if self.cmd(Method::DELETE, "", None).await.is_ok() {
            self.session = None;
        }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let wd = self.webdriver.id();
        let app = children(wd);
        // A test that panicked still holds its session: a plain HTTP DELETE, no runtime needed.
        if let Some(session) = self.session.take() {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let head = format!("DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1");
                let head = format!("{head}\r\nContent-Length: 0\r\nConnection: close");
                let _ = write!(s, "{head}\r\n\r\n");
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        let mut tries = 0..100;
        while children(wd).iter().any(|p| app.contains(p)) && tries.next().is_some() {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in children(wd) {
            eprintln!("dashboard: the app (pid {pid}) outlived its session; killing it");
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.webdriver.kill();
        let _ = self.webdriver.wait();
        if std::thread::panicking() {
            let log = self.dir.path().join("webdriver.log");
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail = log.lines().rev().take(40).collect::<Vec<_>>();
            let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            eprintln!("--- WebKitWebDriver and app output, last lines ---\n{tail}");
        }
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
    let has_address = |s: &Value| s["address"].as_str()?.contains(&address).then_some(());
    d.until("the router address", 10, has_address).await;
    let element = d.find("#router-address").await.unwrap();
    let text = d.get(&element, "text").await.expect("text");
    assert!(text.as_str().unwrap_or("").contains(&address), "{text}");
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
        let seen = (a["email"].as_str(), a["plan"].as_str(), a["state"].as_str());
        assert_eq!(seen, (Some(email), Some("plus"), Some("ok")), "{a}");
    }
    let first = d.find("#accounts .account").await.expect(".account");
    let key = d.get(&first, "attribute/data-key").await.unwrap();
    assert_eq!(key, KEY_A, "accounts in file order");
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
    d.click("#add-account", 20).await.unwrap();
    let c = d.until("account C", 10, |s| row(s, KEY_C).cloned()).await;
    let took = started.elapsed();
    eprintln!("dashboard: C listed {took:.1?} after the click");
    assert_eq!(c["email"], "c@example.com", "{c}");
    let seen = d.fake.issuer_requests();
    let authorize = seen.iter().find(|r| r.path == "/oauth/authorize");
    let redirect = authorize.expect("an authorize request").body["redirect_uri"].to_string();
    let callback = format!(":{}/auth/callback", d.login_port);
    assert!(redirect.contains(&callback), "{redirect}");
    assert_eq!(d.accounts_in_file(), ["acct-a", "acct-b", "acct-c"]);
    d.finish("2-added").await;
}

#[tokio::test]
async fn dashboard_remove_asks_first_then_drops_the_account_from_the_list_and_the_file() {
    let Some(d) = Dashboard::open(|_| {}).await else {
        return;
    };
    d.both_listed().await;
    let remove = format!(".account[data-key=\"{KEY_B}\"] button[data-action=\"remove\"]");
    let confirm = remove.replace("\"remove\"", "\"confirm-remove\"");
    d.click(&remove, 20).await.unwrap();
    let asked = d.until("the confirmation", 2, |s| Some(s.clone())).await;
    assert!(row(&asked, KEY_B).is_some(), "only asks first: {asked:#}");
    assert_eq!(d.accounts_in_file(), ["acct-a", "acct-b"], "B kept");
    d.find(&confirm).await.expect("the confirm button");
    d.screenshot("3-confirm").await;
    // A refresh (every 5 s) may have redrawn the list meanwhile and dropped the confirm button.
    if d.click(&confirm, 1).await.is_err() {
        eprintln!("dashboard: the confirm button was gone after a refresh; asking again");
        d.click(&remove, 20).await.unwrap();
        d.click(&confirm, 4).await.unwrap();
    }
    let gone = |s: &Value| (row(s, KEY_B).is_none() && row(s, KEY_A).is_some()).then_some(());
    d.until("the list without B", 10, gone).await;
    assert_eq!(d.accounts_in_file(), ["acct-a"], "B removed from the file");
    d.finish("3-removed").await;
}

#[tokio::test]
async fn dashboard_shows_a_usage_limit_within_seconds() {
    let Some(d) = Dashboard::open(|_| {}).await else {
        return;
    };
    let shown = d.both_listed().await;
    assert_eq!(row(&shown, KEY_A).unwrap()["state"], "ok", "{shown:#}");
    let limit = Behaviour::UsageLimit {
        resets_in_seconds: 3600,
    };
    d.fake.push_behaviour("acct-a", limit);
    let notifications = crate::tray::Notifications::watch();
    let started = Instant::now();
    // Sticky in file order: A answers 429 usage_limit_reached and B takes the request over.
    let body = codex_body("dash-limit", "gpt-5.5").to_string();
    let request = d.http.post(format!("{}/v1/responses", d.router));
    let request = request.header("content-type", "application/json");
    let request = request.header("session-id", "dash-limit").body(body);
    let response = request.send().await.expect("the router answers");
    assert_eq!(response.status(), 200, "B takes over");
    assert_eq!(served_by(&response), "acct-b");
    let _ = response.bytes().await;
    let asked_a = |r: &SeenRequest| r.account_id.as_deref() == Some("acct-a");
    assert!(d.fake.requests().iter().any(asked_a), "A was asked first");
    let limited = |s: &Value| (row(s, KEY_A)?["state"] == "limited").then(|| s.clone());
    let shown = d.until("A limited", 10, limited).await;
    let took = started.elapsed();
    eprintln!("dashboard: A shown limited {took:.1?} after the request");
    assert_eq!(row(&shown, KEY_B).unwrap()["state"], "ok", "{shown:#}");
    let reset = row(&shown, KEY_A).unwrap()["reset"].to_string();
    assert!(reset.contains(|c: char| c.is_ascii_digit()), "{reset}");
    d.until("the request in #recent", 10, |s| {
        let rows = s["recent"].as_array()?;
        let seen = |r: &Value| r.as_str().is_some_and(|r| r.contains("gpt-5.5"));
        rows.iter().any(seen).then_some(())
    })
    .await;
    let told = notifications.titled("a@example.com reached its usage limit");
    assert_eq!(told.len(), 1, "one notification: {:?}", notifications.all());
    d.finish("4-limited").await;
}

#[tokio::test]
async fn dashboard_usage_link_opens_in_the_system_browser_once() {
    let Some(d) = Dashboard::open(|_| {}).await else {
        return;
    };
    d.both_listed().await;
    d.click("#usage-link", 20).await.unwrap();
    for _ in 0..40 {
        if !d.opened().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        d.opened(),
        ["https://chatgpt.com/codex/settings/usage"],
        "opened once"
    );
    let title = d.cmd(Method::GET, "/title", None).await;
    assert_eq!(
        title,
        Ok(json!("Codex App Account Router")),
        "the window stays on the dashboard"
    );
    d.finish("5-link").await;
}

#[tokio::test]
async fn dashboard_relogin_says_so_when_the_browser_signed_in_someone_else() {
    let Some(d) = Dashboard::open(|fake| {
        fake.add_account(AccountSpec::new("c@example.com", "acct-c", "user-acct-c"));
        fake.set_next_login("acct-c");
    })
    .await
    else {
        return;
    };
    d.both_listed().await;
    let relogin = format!(".account[data-key=\"{KEY_B}\"] button[data-action=\"relogin\"]");
    d.click(&relogin, 20).await.unwrap();
    let notice = d
        .until("a notice naming both accounts", 10, |s| {
            let n = s["notice"].as_str()?;
            (n.contains("c@example.com") && n.contains("not b@example.com")).then(|| n.to_string())
        })
        .await;
    assert!(notice.contains("sign out"), "says how to fix it: {notice}");
    assert_eq!(
        d.accounts_in_file(),
        ["acct-a", "acct-b", "acct-c"],
        "C kept, B kept"
    );
    d.finish("6-relogin-other").await;
}

#[tokio::test]
async fn dashboard_closed_during_a_login_the_login_still_completes() {
    let Some(mut d) = Dashboard::open(|fake| {
        fake.add_account(AccountSpec::new("c@example.com", "acct-c", "user-acct-c"));
        fake.set_next_login("acct-c");
    })
    .await
    else {
        return;
    };
    d.both_listed().await;
    let hold = d.dir.path().join("hold");
    std::fs::write(&hold, "").expect("hold the browser");
    d.click("#add-account", 20).await.unwrap();
    d.until("the sign-in notice", 10, |s| s["notice"].as_str().map(drop))
        .await;
    d.launch_again(&["--close-dashboard"]);
    // The window is gone: the session has nothing to talk to any more.
    let mut closed = false;
    for _ in 0..40 {
        if d.cmd(Method::GET, "/title", None).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(closed, "--close-dashboard closes the window");
    std::fs::remove_file(&hold).expect("let the browser go on");
    let mut added = Vec::new();
    for _ in 0..60 {
        added = d.accounts_in_file();
        if added.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(added, ["acct-a", "acct-b", "acct-c"], "the login completed");
    // The router inside the tray app serves on.
    let health = d.http.get(format!("{}/health", d.router)).send().await;
    assert_eq!(health.map(|r| r.status().as_u16()).ok(), Some(200));
    let _ = d.cmd(Method::DELETE, "", None).await;
    d.session = None;
}
