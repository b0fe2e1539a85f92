//! The dashboard window: a second process of the same Tauri app
//! (`codex-app-account-router-dashboard`, same identifier and `ui/`), which the tray app starts
//! when the dashboard opens and which ends when the window closes. WebKit keeps its web and
//! network processes and much of its memory until the process that used it exits, so a webview
//! in the tray process would cost ~150 MB for as long as the tray runs; here it costs nothing
//! once the window is closed.
//!
//! The page calls the app's Tauri commands by name (`ui/api.js`); this process hands each one
//! to the tray app as a JSON line on stdout, and answers and events come back on stdin (see
//! `dashboard.rs` for the other end). When stdin closes, the tray app is gone and so is this
//! process.

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tauri::ipc::{Invoke, InvokeBody, InvokeError};
use tauri::{Emitter, Manager};
use tokio::sync::oneshot;

use super::commands::Call;
use super::dashboard::{CommandError, Message, Request, STATUS_CHANGED, WINDOW_LABEL};

/// Calls waiting for the tray process to answer, by id.
#[derive(Default)]
struct Pending {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<Value, CommandError>>>>,
}

/// Hands a call of the page to the tray app and waits for its answer.
async fn forward(pending: Arc<Pending>, name: String, args: Value) -> Result<Value, CommandError> {
    let id = pending.next.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    lock(&pending.waiting).insert(id, tx);
    let request = Request {
        id,
        call: name,
        args,
    };
    let line = serde_json::to_string(&request).map_err(CommandError::internal)?;
    let written = {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush())
    };
    if written.is_err() {
        lock(&pending.waiting).remove(&id);
        return Err(CommandError::gone());
    }
    rx.await.map_err(|_| CommandError::gone())?
}

/// The app's commands (`commands::Call`): each is answered by the tray app. A name that is
/// not one of them is left to Tauri, which refuses it.
fn invoke(invoke: Invoke, pending: &Arc<Pending>) -> bool {
    let name = invoke.message.command().to_string();
    if !Call::names().contains(&name.as_str()) {
        return false;
    }
    let args = match invoke.message.payload() {
        InvokeBody::Json(args) => args.clone(),
        InvokeBody::Raw(_) => Value::Null,
    };
    let pending = pending.clone();
    invoke.resolver.respond_async(async move {
        forward(pending, name, args)
            .await
            .map_err(InvokeError::from)
    });
    true
}

pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let program = "codex-app-account-router-dashboard";
    let usage = super::launch::DASHBOARD_USAGE;
    if let super::launch::Launch::Answer(text) = super::launch::read(program, usage, &args) {
        println!("{text}");
        return ExitCode::SUCCESS;
    }
    let pending = Arc::new(Pending::default());
    let result = tauri::Builder::default()
        .plugin(tauri_plugin_opener::init())
        .invoke_handler({
            let pending = pending.clone();
            move |call| invoke(call, &pending)
        })
        .setup(move |app| {
            // The bundle's Info.plist makes the tray app an agent; the window is a normal app
            // while it is open (Dock, Cmd-Tab, an Edit menu for copy and paste).
            #[cfg(target_os = "macos")]
            app.set_activation_policy(tauri::ActivationPolicy::Regular);
            tauri::WebviewWindowBuilder::new(
                app,
                WINDOW_LABEL,
                tauri::WebviewUrl::App("index.html".into()),
            )
            .title("Codex App Account Router")
            .inner_size(920.0, 680.0)
            .build()?;
            let handle = app.handle().clone();
            std::thread::spawn(move || listen(&handle, &pending));
            Ok(())
        })
        .build(super::context());
    match result {
        Ok(app) => {
            app.run(|_, _| {});
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: the dashboard window could not open: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the tray process's answers and events until it goes away, then ends this process.
fn listen(app: &tauri::AppHandle, pending: &Pending) {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<Message>(&line) {
            Ok(Message::Answer { id, result }) => {
                if let Some(tx) = lock(&pending.waiting).remove(&id) {
                    let _ = tx.send(result.into());
                }
            }
            Ok(Message::StatusChanged) => {
                let _ = app.emit(STATUS_CHANGED, ());
            }
            Ok(Message::Focus) => {
                if let Some(window) = app.get_webview_window(WINDOW_LABEL) {
                    let _ = window.unminimize();
                    let _ = window.show();
                    let _ = window.set_focus();
                }
            }
            Ok(Message::Close) => break,
            Err(e) => tracing::warn!("the dashboard ignored a line from the tray app: {e}"),
        }
    }
    app.exit(0);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
