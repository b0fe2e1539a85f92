//! The real Codex TUI (not `codex exec`) under tmux through `cma start`, with `chatgpt_base_url`
//! on the router: a turn, then `/status`. What Codex 0.171 shows about limits comes from the
//! answers' `x-codex-*` headers, which carry the pool's figures: the pane is saved to
//! `target/screenshots/codex-tui-status.txt` for the README.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::codex_cli::{cma_router, codex_bin, codex_root};
use crate::support::{FakeOpenAi, OK_TEXT};

const PASTE_BURST: Duration = Duration::from_millis(300);

/// A Codex TUI in a detached tmux session of its own (a private socket), 120x40; the tmux
/// server, and Codex with it, is killed on drop.
struct Tui {
    socket: PathBuf,
    stderr: PathBuf,
}

impl Tui {
    fn start(bin: &Path, root: &Path) -> Tui {
        let socket = root.join("tmux.sock");
        let stderr = root.join("codex.stderr");
        // `--no-daemon`: the TUI runs its app server in-process instead of installing and
        // starting a background one in CODEX_HOME that would outlive the test; what it shows
        // and asks was the same both ways (0.171).
        let codex = format!(
            "exec env -i PATH=\"$PATH\" HOME={home} CODEX_HOME={codex_home} \
             TERM=xterm-256color NO_PROXY=127.0.0.1,localhost {bin} --no-daemon 2>{stderr}",
            home = root.join("home").display(),
            codex_home = root.join("codex-home").display(),
            bin = bin.display(),
            stderr = stderr.display(),
        );
        let tui = Tui { socket, stderr };
        let work = root.join("work");
        let started = tui
            .tmux(&["new-session", "-d", "-s", "codex", "-x", "120", "-y", "40"])
            .args(["-c", &work.display().to_string(), "sh", "-c", &codex])
            .status()
            .expect("tmux runs (scripts/setup --test installs it)");
        assert!(started.success(), "tmux new-session failed");
        tui
    }

    fn tmux(&self, args: &[&str]) -> Command {
        let mut command = Command::new("tmux");
        command
            .args(["-f", "/dev/null", "-S"])
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn pane(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", "codex"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Literal text, then Enter as a key press of its own once the composer shows the text.
    async fn type_line(&self, text: &str) {
        self.send(&["-l", text]);
        let typed = format!("› {text}");
        self.wait_for(&typed, |p| p.contains(&typed)).await;
        // Keys that arrive together are a paste to Codex, whose Enter is a newline: let its
        // paste-burst window pass first.
        tokio::time::sleep(PASTE_BURST).await;
        self.send(&["Enter"]);
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "codex"];
        args.extend(keys);
        let sent = self.tmux(&args).status().expect("tmux send-keys");
        assert!(sent.success(), "send-keys {keys:?}\n{}", self.pane());
    }

    /// Polls the pane until `done` holds; panics with the pane and Codex's stderr after 30 s.
    async fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pane = self.pane();
            if done(&pane) {
                return pane;
            }
            if Instant::now() > deadline {
                let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
                panic!("the TUI never showed {what}\npane:\n{pane}\nstderr:\n{stderr}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]).status();
    }
}

/// The custom provider `cma configure` writes, Codex's quiet settings (codex-capture §9), the
/// first-start prompts answered ahead, the work folder trusted, and `chatgpt_base_url` on the
/// router.
fn write_codex_config(root: &Path, port: u16) {
    let config = format!(
        r#"model = "gpt-5.5"
model_provider = "router"
check_for_update_on_startup = false
chatgpt_base_url = "http://127.0.0.1:{port}/backend-api/"
[model_providers.router]
name = "Codex App Account Router"
base_url = "http://127.0.0.1:{port}/v1"
wire_api = "responses"
supports_websockets = false
stream_max_retries = 0
request_max_retries = 0
[analytics]
enabled = false
[features]
plugins = false
[tui]
screen_reader_detection_done = true
[notice.model_migrations]
"gpt-5.5" = "gpt-6-sol"
[projects."{work}"]
trust_level = "trusted"
"#,
        work = root.join("work").display()
    );
    std::fs::write(root.join("codex-home/config.toml"), config).expect("codex config");
}

/// `target/screenshots/codex-tui-status.txt`, beside the dashboard's screenshots.
fn save_pane(pane: &str) {
    let target = Path::new(env!("CARGO_BIN_EXE_cma"))
        .parent()
        .and_then(Path::parent);
    let dir = target.expect("target dir").join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    let path = dir.join("codex-tui-status.txt");
    std::fs::write(&path, pane).expect("write pane");
    eprintln!("codex tui: saved {}", path.display());
}

/// The 5-hour window's headroom Codex renders, e.g. `5h limit: 10% left` -> 10.
fn five_hour_left(pane: &str) -> Option<u32> {
    let rest = pane.split("5h limit: ").nth(1)?;
    rest.split('%').next()?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_tui_shows_the_pools_headroom_not_the_serving_accounts() {
    let Some(bin) = codex_bin() else { return };
    let fake = FakeOpenAi::start().await;
    let root = codex_root(&fake);
    let root = root.path();
    // A nearly spent, B nearly fresh: the pool has half its 5-hour window left.
    fake.set_usage("acct-a", 90.0, 45.0);
    fake.set_usage("acct-b", 10.0, 5.0);
    let router = cma_router(&fake, root);
    write_codex_config(root, router.port);

    // What the router answers at `chatgpt_base_url` (it polled both accounts at start).
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{}/backend-api/wham/usage", router.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    let pool = loop {
        let pool: Value = http
            .get(&url)
            .send()
            .await
            .expect("usage")
            .json()
            .await
            .expect("json");
        if pool["rate_limit"]["primary_window"]["used_percent"] == 50.0 || Instant::now() > deadline
        {
            break pool;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        pool["rate_limit"]["primary_window"]["used_percent"], 50.0,
        "{pool}"
    );

    let tui = Tui::start(&bin, root);
    tui.wait_for("its composer", |p| p.contains("for shortcuts"))
        .await;
    tui.type_line("say hi").await;
    // The turn goes to A (the first account), whose own headers say 90 % used; the router
    // passes the pool's 50 % instead, so Codex 0.171 neither warns ("less than 10 % of your 5h
    // limit left") nor offers a cheaper model, as it did with A's figures.
    let turn = tui.wait_for("the answer", |p| p.contains(OK_TEXT)).await;
    tui.send(&["-l", "/status"]);
    tui.wait_for("/status typed", |p| p.contains("› /status"))
        .await;
    tui.send(&["Enter"]);
    let status = tui
        .wait_for("the /status card", |p| p.contains("Limits:"))
        .await;
    save_pane(&status);
    for pane in [&turn, &status] {
        assert!(
            !pane.contains("Keep current model"),
            "no model nudge:\n{pane}"
        );
        assert!(
            !pane.contains("less than 10%"),
            "no low-limit warning:\n{pane}"
        );
    }
    // `/status` (0.171, custom provider) lists no limits itself: it asks nothing at
    // `chatgpt_base_url`. Where a 5-hour figure shows, it is the pool's.
    let limits = status.lines().find(|l| l.contains("Limits:"));
    assert!(
        limits.is_some_and(|l| l.contains("data not available yet")),
        "{status}"
    );
    assert!(
        five_hour_left(&status).is_none_or(|left| left == 50),
        "the pool's headroom or none: {status}"
    );
    let served: Vec<Option<String>> = crate::codex_cli::responses(&fake)
        .into_iter()
        .map(|r| r.account_id)
        .collect();
    assert!(
        served.iter().all(|a| a.as_deref() == Some("acct-a")),
        "every turn on A: {served:?}"
    );
}
