//! The tray app's side of the dashboard: starts the dashboard process when the dashboard
//! opens, answers its calls (`commands.rs`) and tells it when the status changed. The two talk
//! in JSON lines over the child's stdin and stdout, which nothing else can reach.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{commands, Shell};

/// The dashboard's binary, beside the tray app's own.
const WINDOW_BINARY: &str = "codex-app-account-router-dashboard";
/// WebKitGTK's switch for accelerated compositing (Linux only; other systems ignore it).
const COMPOSITING: &str = "WEBKIT_DISABLE_COMPOSITING_MODE";
/// The dashboard window's label (the capability in `capabilities/default.json` names it).
pub const WINDOW_LABEL: &str = "dashboard";
/// The event the page listens to for a fresh status.
pub const STATUS_CHANGED: &str = "status-changed";

/// A call from the page, forwarded by the dashboard process.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub call: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub args: Value,
}

/// What the tray app sends the dashboard process.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Message {
    Answer { id: u64, result: Outcome },
    StatusChanged,
    Focus,
    Close,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok(Value),
    Err(CommandError),
}

impl From<Outcome> for Result<Value, CommandError> {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Ok(v) => Ok(v),
            Outcome::Err(e) => Err(e),
        }
    }
}

/// An error as the page sees it: a `code` it has a message for, and the detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandError {
    pub code: String,
    pub message: String,
}

impl CommandError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        CommandError {
            code: code.to_string(),
            message: message.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        CommandError::new("internal", e.to_string())
    }

    /// The tray app went away while the page waited.
    pub fn gone() -> Self {
        CommandError::new("internal", "the tray app is not running")
    }
}

/// The running dashboard process: messages for it go through `tx`.
pub struct Handle {
    tx: mpsc::Sender<Message>,
    generation: u64,
}

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Brings the dashboard to the front, starting its process if none runs.
pub fn open(app: &Shell) {
    let desktop = app.desktop.clone();
    let mut slot = desktop.dashboard.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(handle) = &*slot {
        if handle.tx.send(Message::Focus).is_ok() {
            return;
        }
    }
    match spawn(app) {
        Ok(handle) => *slot = Some(handle),
        Err(e) => {
            drop(slot);
            tracing::error!("the dashboard could not open: {e}");
            desktop.set_notice(Some(format!("The dashboard could not open: {e}")));
            app.send(super::UserEvent::Refresh);
        }
    }
}

/// Closes the dashboard; its process ends and takes WebKit's memory with it.
pub fn close(app: &Shell) {
    let handle = app
        .desktop
        .dashboard
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(handle) = handle {
        let _ = handle.tx.send(Message::Close);
    }
}

/// Tells an open dashboard to fetch the status again.
pub fn notify_changed(app: &Shell) {
    let slot = app
        .desktop
        .dashboard
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(handle) = &*slot {
        let _ = handle.tx.send(Message::StatusChanged);
    }
}

fn spawn(app: &Shell) -> std::io::Result<Handle> {
    let exe = std::env::current_exe()?.with_file_name(WINDOW_BINARY);
    let exe = exe.with_extension(std::env::consts::EXE_EXTENSION);
    let mut command = Command::new(&exe);
    // A page of text and bars needs no GPU compositing; without it WebKit's web process
    // holds about 70 MB less (measured under Xvfb: 90 MB PSS instead of 161). A user's own
    // setting wins.
    if std::env::var_os(COMPOSITING).is_none() {
        command.env(COMPOSITING, "1");
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
    let (Some(mut stdin), Some(stdout)) = (stdin, stdout) else {
        let _ = child.kill();
        return Err(std::io::Error::other("no pipe to the dashboard process"));
    };
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Message>();
    // One writer, so that answers and events never interleave within a line.
    std::thread::spawn(move || {
        for message in rx {
            let Ok(line) = serde_json::to_string(&message) else {
                continue;
            };
            if writeln!(stdin, "{line}")
                .and_then(|()| stdin.flush())
                .is_err()
            {
                break;
            }
        }
    });
    let answers = tx.clone();
    let app = app.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // WebKit or GTK may print to stdout too: only our requests are JSON objects.
            let Ok(request) = serde_json::from_str::<Request>(&line) else {
                continue;
            };
            let (app, answers) = (app.clone(), answers.clone());
            app.runtime.clone().spawn(async move {
                let result = match commands::dispatch(&app, &request.call, request.args).await {
                    Ok(v) => Outcome::Ok(v),
                    Err(e) => Outcome::Err(e),
                };
                let _ = answers.send(Message::Answer {
                    id: request.id,
                    result,
                });
            });
        }
        // The window closed (or the process died): reap it and forget it, unless a newer
        // dashboard took its place meanwhile.
        let _ = child.wait();
        let mut slot = app
            .desktop
            .dashboard
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|h| h.generation == generation) {
            *slot = None;
        }
    });
    Ok(Handle { tx, generation })
}
