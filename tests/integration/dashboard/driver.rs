//! Drives the app's dashboard window through WebKitWebDriver: the app started with accounts on the fakes,
//! the WebDriver session, and what the page shows, read in one script.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;
use crate::support::FakeOpenAi;

pub(crate) const APP: &str = env!("CARGO_BIN_EXE_codex-app-account-router");
pub(crate) const A: TestAccount = account("a@example.com", "acct-a");
pub(crate) const B: TestAccount = account("b@example.com", "acct-b");
pub(crate) const KEY_A: &str = "acct-a/user-acct-a";
pub(crate) const KEY_B: &str = "acct-b/user-acct-b";
pub(crate) const KEY_C: &str = "acct-c/user-acct-c";
/// What the app needs from the test's own environment (the rest is cleared).
const PASSED_ON: &str = "PATH DISPLAY XAUTHORITY DBUS_SESSION_BUS_ADDRESS RUST_LOG";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The app is single-instance per session bus: the window and tray tests take turns.
pub(crate) static ONE_APP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

pub(crate) fn free_port() -> u16 {
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

pub(crate) fn row<'a>(snapshot: &'a Value, key: &str) -> Option<&'a Value> {
    let accounts = snapshot["accounts"].as_array()?;
    accounts.iter().find(|a| a["key"] == key)
}

pub(crate) fn percent(a: &Value, field: &str) -> Option<f64> {
    a[field].as_str()?.trim().trim_end_matches('%').parse().ok()
}

/// Pids of the live (not zombie) children of a process.
pub(crate) fn children(parent: u32) -> Vec<u32> {
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
pub(crate) struct Dashboard {
    pub(crate) webdriver: Child,
    pub(crate) port: u16,
    pub(crate) http: reqwest::Client,
    pub(crate) session: Option<String>,
    pub(crate) fake: FakeOpenAi,
    pub(crate) dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`: the router inside the app.
    pub(crate) router: String,
    pub(crate) login_port: u16,
    /// The app's environment, for a second launch.
    pub(crate) env: std::collections::HashMap<String, String>,
    pub(crate) _tray_host: crate::tray::TrayHost,
    pub(crate) _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Dashboard {
    pub(crate) async fn open(prepare: impl FnOnce(&FakeOpenAi)) -> Option<Dashboard> {
        Dashboard::open_as(prepare, None, |_| {}).await
    }

    /// As `open`, with GTK (and so the page's `prefers-color-scheme`) in `gtk_theme`, such as
    /// `Adwaita:dark`, and `files` given the folder of the accounts file before the app starts.
    pub(crate) async fn open_as(
        prepare: impl FnOnce(&FakeOpenAi),
        gtk_theme: Option<&str>,
        files: impl FnOnce(&std::path::Path),
    ) -> Option<Dashboard> {
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
        files(dir.path());
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
        if let Some(theme) = gtk_theme {
            env.insert("GTK_THEME".to_string(), theme.to_string());
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

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
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
    pub(crate) async fn cmd(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let session = self.session.as_deref().ok_or("no session")?;
        let path = format!("/session/{session}{path}");
        self.call(method, &path, body).await
    }

    pub(crate) async fn find(&self, css: &str) -> Result<String, String> {
        let by = json!({"using": "css selector", "value": css});
        let found = self.cmd(Method::POST, "/element", Some(by)).await?;
        let id = found[ELEMENT].as_str().map(str::to_string);
        id.ok_or(found.to_string())
    }

    /// An element's `text` or `attribute/<name>`.
    pub(crate) async fn get(&self, element: &str, what: &str) -> Result<Value, String> {
        let path = format!("/element/{element}/{what}");
        self.cmd(Method::GET, &path, None).await
    }

    /// Finds and clicks, for up to `tries` × 250 ms (the element may not be rendered yet, or
    /// be replaced by a refresh between the find and the click).
    pub(crate) async fn click(&self, css: &str, tries: usize) -> Result<(), String> {
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

    /// Replaces the text of the field `css` with `text` and presses Enter (one change event);
    /// tries again for up to 5 s when a redraw replaced the field meanwhile.
    pub(crate) async fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..20 {
            let typed = async {
                let element = self.find(css).await?;
                let path = format!("/element/{element}/value");
                // Ctrl+A selects what is there, so the typing replaces it in one change.
                let keys = json!({ "text": format!("\u{E009}a\u{E009}{text}\u{E007}") });
                self.cmd(Method::POST, &path, Some(keys)).await
            };
            match typed.await {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!("could not type into {css}: {last}"))
    }

    pub(crate) async fn script(&self, js: &str, sync: bool) -> Result<Value, String> {
        let path = ["/execute/async", "/execute/sync"][usize::from(sync)];
        let body = json!({"script": js, "args": []});
        self.cmd(Method::POST, path, Some(body)).await
    }

    pub(crate) async fn screenshot(&self, name: &str) {
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

    pub(crate) async fn snapshot(&self) -> Value {
        let snapshot = self.script(SNAPSHOT, true).await;
        snapshot.unwrap_or_else(|e| json!({ "scriptError": e }))
    }

    /// Polls the dashboard every 250 ms, up to `secs`, until `check` accepts what it shows.
    pub(crate) async fn until<T>(
        &self,
        what: &str,
        secs: u64,
        check: impl Fn(&Value) -> Option<T>,
    ) -> T {
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

    pub(crate) async fn both_listed(&self) -> Value {
        self.until("accounts A and B", 10, |s| {
            let listed = |k| row(s, k).is_some_and(|a| a["state"].is_string());
            (listed(KEY_A) && listed(KEY_B)).then(|| s.clone())
        })
        .await
    }

    pub(crate) fn accounts_in_file(&self) -> Vec<String> {
        let file = std::fs::read(self.dir.path().join("openai-accounts.json")).expect("file");
        let file: Value = serde_json::from_slice(&file).expect("json");
        let accounts = file["accounts"].as_array().cloned().unwrap_or_default();
        let id = |a: &Value| Some(a["accountId"].as_str()?.to_string());
        accounts.iter().filter_map(id).collect()
    }

    /// Runs the app binary a second time with `args`: the first instance gets them.
    pub(crate) fn launch_again(&self, args: &[&str]) {
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
    pub(crate) fn opened(&self) -> Vec<String> {
        let opened = std::fs::read_to_string(self.dir.path().join("opened.txt"));
        opened
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// No error shown, a last screenshot, and the session deleted (which ends the app).
    pub(crate) async fn finish(mut self, screenshot: &str) {
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
