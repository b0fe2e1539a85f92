//! Reads the tray from the X screen: the tray host (trayer), the icon's pixels, the menu opened
//! with a real click, screenshots, and every desktop notification on the session bus.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::notifications::Notifications;
use crate::dashboard::{children, free_port, ONE_APP};
use crate::harness::*;
use crate::support::FakeOpenAi;

pub(crate) const APP: &str = env!("CARGO_BIN_EXE_codex-app-account-router");
pub(crate) const A: TestAccount = account("a@example.com", "acct-a");
pub(crate) const B: TestAccount = account("b@example.com", "acct-b");
const TOOLS: [&str; 4] = ["trayer", "xdotool", "import", "dbus-monitor"];

/// Colours of `src-tauri/desktop/icon.rs`, as they reach the screen.
pub(crate) const GREEN: [u8; 3] = [34, 197, 94];
pub(crate) const RED: [u8; 3] = [239, 68, 68];
pub(crate) const PURPLE: [u8; 3] = [168, 85, 247];

/// `None` when skipped; a panic when the machine lacks what the test needs.
pub(crate) fn tools_present() -> Option<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = |tool: &&str| std::env::split_paths(&path).any(|d| d.join(tool).is_file());
    let missing: Vec<&str> = TOOLS.iter().filter(|t| !found(t)).copied().collect();
    let display = std::env::var_os("DISPLAY");
    if display.is_some() && missing.is_empty() {
        return Some(());
    }
    if std::env::var("CMA_SKIP_GUI_E2E").as_deref() == Ok("1") {
        eprintln!("tray e2e skipped (CMA_SKIP_GUI_E2E=1)");
        return None;
    }
    panic!(
        "the tray end-to-end tests need an X display and {TOOLS:?} (packages trayer, xdotool, \
         imagemagick, dbus-bin); here DISPLAY is {display:?} and {missing:?} are missing. Run \
         scripts/test, which installs them and starts Xvfb, or set CMA_SKIP_GUI_E2E=1 to skip."
    );
}

pub(crate) fn run(program: &str, args: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output();
    out.ok().filter(|o| o.status.success()).map(|o| o.stdout)
}

/// A screen rectangle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Area {
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) w: u32,
    pub(crate) h: u32,
}

impl Area {
    pub(crate) fn crop(&self) -> String {
        format!("{}x{}+{}+{}", self.w, self.h, self.x, self.y)
    }
}

/// The screen's pixels in `area`, RGB.
pub(crate) fn pixels(area: Area) -> Vec<[u8; 3]> {
    let crop = area.crop();
    let args = ["-window", "root", "-crop", &crop, "-depth", "8", "rgb:-"];
    let raw = run("import", &args);
    let raw = raw.expect("import reads the screen");
    raw.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect()
}

pub(crate) fn near(p: [u8; 3], c: [u8; 3]) -> bool {
    p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 16)
}

/// How many pixels of `area` have colour `c`.
pub(crate) fn count(shot: &[[u8; 3]], c: [u8; 3]) -> usize {
    shot.iter().filter(|p| near(**p, c)).count()
}

pub(crate) fn screenshot(area: Area, name: &str) {
    let target = Path::new(APP).parent().and_then(Path::parent);
    let dir = target.expect("target dir").join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    let path = dir.join(format!("tray-{name}.png"));
    let path_text = path.display().to_string();
    let args = [
        "-window",
        "root",
        "-crop",
        &area.crop(),
        "+repage",
        &path_text,
    ];
    run("import", &args).expect("import saves a screenshot");
    eprintln!("tray: saved {}", path.display());
}

/// A system tray on the X display: trayer, an XEmbed tray host in a panel at the top right.
pub(crate) struct TrayHost(Child);

impl TrayHost {
    pub async fn start() -> TrayHost {
        // The last test's tray must be gone: only one program can own the system tray.
        let gone = || find_window("--name", "^panel$").is_none().then_some(());
        wait_for("the last tray host to go away", gone).await;
        for _ in 0..5 {
            let log = std::env::temp_dir().join(format!("trayer-{}.log", std::process::id()));
            let trayer = Command::new("trayer")
                .args(["--edge", "top", "--align", "right", "--widthtype", "pixel"])
                .args(["--width", "120", "--heighttype", "pixel", "--height", "32"])
                .args([
                    "--transparent",
                    "false",
                    "--tint",
                    "0x303030",
                    "--SetDockType",
                    "true",
                ])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("trayer log"))
                .spawn()
                .expect("trayer starts");
            let mut host = TrayHost(trayer);
            // The tray must exist before the app looks for one.
            for _ in 0..100 {
                if find_window("--name", "^panel$").is_some() {
                    return host;
                }
                if let Ok(Some(_)) = host.0.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            eprintln!("tray: trayer showed no panel ({}); again", said.trim());
            drop(host);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("trayer did not start a tray panel in five tries");
    }
}

impl Drop for TrayHost {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// trayer, then the app in it (tray only), with its accounts on the fakes.
pub(crate) struct Tray {
    pub(crate) _trayer: TrayHost,
    pub(crate) app: Child,
    pub(crate) fake: FakeOpenAi,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) router: String,
    pub(crate) icon: Area,
    pub(crate) notifications: Notifications,
    pub(crate) _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Tray {
    pub(crate) async fn start(
        records: impl FnOnce(&FakeOpenAi) -> Vec<Value>,
        router_port: Option<u16>,
    ) -> Option<Tray> {
        Tray::start_in(records, router_port, |_| {}).await
    }

    /// As `start`, with `prepare` given the app's HOME before the app starts.
    pub(crate) async fn start_in(
        records: impl FnOnce(&FakeOpenAi) -> Vec<Value>,
        router_port: Option<u16>,
        prepare: impl FnOnce(&Path),
    ) -> Option<Tray> {
        tools_present()?;
        let _turn = ONE_APP.lock().await;
        let fake = FakeOpenAi::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        write_accounts(&dir.path().join("openai-accounts.json"), &records(&fake));
        let trayer = TrayHost::start().await;
        let notifications = Notifications::watch();
        let router_port = router_port.unwrap_or_else(free_port);
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        prepare(&home);
        let mut env: HashMap<String, String> = fake_vars(&fake, dir.path());
        let under = |path: &str| home.join(path).display().to_string();
        for (name, value) in [
            ("CODEX_PROXY_PORT", router_port.to_string()),
            ("CODEX_PROXY_LOGIN_PORT", free_port().to_string()),
            ("CODEX_PROXY_STRATEGY", "sticky".into()),
            ("HOME", home.display().to_string()),
            ("XDG_CONFIG_HOME", under(".config")),
            ("XDG_DATA_HOME", under(".local/share")),
            ("XDG_CACHE_HOME", under(".cache")),
        ] {
            env.insert(name.to_string(), value);
        }
        for name in [
            "PATH",
            "DISPLAY",
            "XAUTHORITY",
            "DBUS_SESSION_BUS_ADDRESS",
            "RUST_LOG",
        ] {
            if let Ok(value) = std::env::var(name) {
                env.insert(name.to_string(), value);
            }
        }
        let log = std::fs::File::create(dir.path().join("app.log")).expect("log");
        let app = Command::new(APP)
            .arg("--minimized")
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("the app starts");
        let icon = icon_of_app().await;
        let router = format!("http://127.0.0.1:{router_port}");
        Some(Tray {
            _trayer: trayer,
            app,
            fake,
            dir,
            router,
            icon,
            notifications,
            _turn,
        })
    }

    /// Waits until the icon shows `want` colours and none of `not`; returns its pixels.
    pub(crate) async fn icon_shows(
        &self,
        what: &str,
        want: &[[u8; 3]],
        not: &[[u8; 3]],
    ) -> Vec<[u8; 3]> {
        let mut last = Vec::new();
        for _ in 0..60 {
            last = pixels(self.icon);
            let has = want.iter().all(|c| count(&last, *c) >= 6);
            let lacks = not.iter().all(|c| count(&last, *c) == 0);
            if has && lacks {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let counts: Vec<usize> = [GREEN, RED, PURPLE]
            .iter()
            .map(|c| count(&last, *c))
            .collect();
        screenshot(self.menu_area(), "failed");
        panic!(
            "the tray icon did not show {what} within 15 s (green, red, purple pixels: \
             {counts:?}); app log:\n{}",
            self.log()
        );
    }

    /// Where the menu opens: below the icon, to its left.
    pub(crate) fn menu_area(&self) -> Area {
        let right = self.icon.x + self.icon.w;
        let w = right.min(960);
        Area {
            x: right - w,
            y: 0,
            w,
            h: 520,
        }
    }

    /// Opens the menu with a click on the icon, checks that it opened, saves a screenshot
    /// of icon and menu, and closes it again.
    pub(crate) async fn screenshot_menu(&self, name: &str) {
        let area = self.menu_area();
        let before = pixels(area);
        let (cx, cy) = (self.icon.x + self.icon.w / 2, self.icon.y + self.icon.h / 2);
        let (cx, cy) = (cx.to_string(), cy.to_string());
        run("xdotool", &["mousemove", &cx, &cy, "click", "1"]).expect("xdotool clicks");
        let mut changed = 0;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = pixels(area);
            changed = before.iter().zip(&now).filter(|(a, b)| a != b).count();
            // A menu of a dozen lines covers far more than 10 000 pixels.
            if changed > 10_000 {
                break;
            }
        }
        assert!(
            changed > 10_000,
            "a click on the icon opens the menu ({changed} pixels changed)"
        );
        // Let it finish drawing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        screenshot(area, &format!("menu-{name}"));
        run("xdotool", &["key", "Escape"]).expect("xdotool presses Escape");
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if pixels(area) == before {
                return;
            }
        }
        // The countdowns may have moved meanwhile; the menu is closed by the next click anyway.
    }

    /// Opens the menu with a click on the icon and waits until it shows; returns the pixels
    /// of the menu's area from before the click (the menu closed).
    pub(crate) async fn open_menu(&self) -> Vec<[u8; 3]> {
        let area = self.menu_area();
        let before = pixels(area);
        let (cx, cy) = (self.icon.x + self.icon.w / 2, self.icon.y + self.icon.h / 2);
        let (cx, cy) = (cx.to_string(), cy.to_string());
        run("xdotool", &["mousemove", &cx, &cy, "click", "1"]).expect("xdotool clicks");
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = pixels(area);
            if before.iter().zip(&now).filter(|(a, b)| a != b).count() > 10_000 {
                // Let it finish drawing.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return before;
            }
        }
        panic!(
            "a click on the icon did not open the menu; log:\n{}",
            self.log()
        );
    }

    /// Opens the menu and picks the item `up` places above its end with the keyboard (1 is
    /// the last item, Quit).
    pub(crate) async fn pick_from_menu(&self, up: usize) {
        self.open_menu().await;
        // Up from no selection lands on the last item.
        for _ in 0..up {
            run("xdotool", &["key", "Up"]).expect("xdotool presses Up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        run("xdotool", &["key", "Return"]).expect("xdotool presses Return");
    }

    /// Picks Quit from the menu and waits for the app to stop its router and exit by itself.
    pub(crate) async fn quit_from_menu(&mut self) -> std::process::ExitStatus {
        self.pick_from_menu(1).await;
        for _ in 0..100 {
            if let Ok(Some(status)) = self.app.try_wait() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the app did not exit within 10 s of Quit; log:\n{}",
            self.log()
        );
    }

    pub(crate) async fn request(&self, session: &str) -> reqwest::Response {
        let body = codex_body(session, "gpt-5.5").to_string();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let request = http.post(format!("{}/v1/responses", self.router));
        let request = request.header("content-type", "application/json");
        let response = request
            .header("session-id", session)
            .body(body)
            .send()
            .await;
        response.expect("the router answers")
    }

    /// Waits until the router has read every account's usage, so the menu shows it.
    pub(crate) async fn usage_known(&self) {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        for _ in 0..60 {
            let status = http.get(format!("{}/status", self.router)).send().await;
            let status: Value = match status {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => Value::Null,
            };
            let accounts = status["accounts"].as_array().cloned().unwrap_or_default();
            let known = |a: &Value| a["usage"]["primary"]["usedPercent"].is_number();
            if !accounts.is_empty() && accounts.iter().all(known) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("the router did not read the accounts' usage within 15 s");
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("app.log")).unwrap_or_default()
    }
}

impl Drop for Tray {
    fn drop(&mut self) {
        let app = self.app.id();
        let _ = self.app.kill();
        let _ = self.app.wait();
        for pid in children(app) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if std::thread::panicking() {
            eprintln!("--- app output ---\n{}", self.log());
        }
    }
}

/// Where the app's icon shows in the tray, once it does.
pub(crate) async fn icon_of_app() -> Area {
    let window = wait_for("the app's icon in the tray", || {
        // GTK's status icon, embedded in trayer: its class names the tray icon.
        find_window("--class", "^tray-icon tray app")
    })
    .await;
    wait_for("the icon's place", || geometry(&window)).await
}

/// The first window whose name or class (`--name`, `--class`) matches.
pub(crate) fn find_window(by: &str, pattern: &str) -> Option<String> {
    let out = run("xdotool", &["search", by, pattern])?;
    let text = String::from_utf8_lossy(&out);
    text.lines().next().map(str::to_string)
}

fn geometry(window: &str) -> Option<Area> {
    let out = run("xdotool", &["getwindowgeometry", "--shell", window])?;
    let text = String::from_utf8_lossy(&out);
    let field = |name: &str| -> Option<u32> {
        let line = text.lines().find(|l| l.starts_with(&format!("{name}=")))?;
        line.split_once('=')?.1.trim().parse().ok()
    };
    let area = Area {
        x: field("X")?,
        y: field("Y")?,
        w: field("WIDTH")?,
        h: field("HEIGHT")?,
    };
    // Embedded and mapped: a real size at a place on the screen.
    (area.w >= 16 && area.h >= 16 && area.x > 0).then_some(area)
}

pub(crate) async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..100 {
        if let Some(found) = probe() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not appear within 10 s");
}

pub(crate) fn two_accounts(fake: &FakeOpenAi) -> Vec<Value> {
    let records = vec![register(fake, &A), register(fake, &B)];
    fake.set_usage("acct-a", 30.0, 10.0);
    fake.set_usage("acct-b", 60.0, 20.0);
    records
}
