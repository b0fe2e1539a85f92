//! The Debian root of the package tests: commands in it (`tests/package/in-root`), as its
//! desktop user, apt, a session bus, and what is checked of the user's files.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{output, PACKAGE};
use crate::tray::wait_for;

/// Runs a command inside the Debian root (`tests/package/in-root`).
pub(super) fn in_root(root: &Path) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/package/in-root");
    let mut command = Command::new(script);
    command.arg(root).stdin(Stdio::null());
    command
}

pub(super) fn root_output(root: &Path, args: &[&str]) -> Output {
    let out = in_root(root).args(args).output();
    out.unwrap_or_else(|e| panic!("{args:?} in the root could not run: {e}"))
}

/// The same, as the desktop user with `env` as the whole environment.
pub(super) fn as_user(root: &Path, env: &[(String, String)], args: &[&str]) -> Command {
    let mut command = in_root(root);
    command.args(["setpriv", "--reuid=1000", "--regid=1000", "--init-groups"]);
    command.args(["env", "-i"]);
    command.args(env.iter().map(|(k, v)| format!("{k}={v}")));
    command.args(args);
    command
}

pub(super) fn installed_version(root: &Path) -> Option<String> {
    let query = ["dpkg-query", "-W", "-f=${Status} ${Version}", PACKAGE];
    let out = root_output(root, &query);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text.strip_prefix("install ok installed ")?;
    Some(version.to_string())
}

/// Installs a package file with apt inside the root; returns what apt and the package's
/// scripts said.
pub(super) fn apt_install(root: &Path, deb: &Path) -> String {
    let name = deb
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    std::fs::copy(deb, root.join("tmp").join(&name)).expect("copy the package into the root");
    let path = format!("/tmp/{name}");
    let args = [
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        &path,
    ];
    let out = root_output(root, &args);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "apt-get install {name}: {said}");
    said
}

/// Every file under `dir` with its bytes and mode: what "left as it was" is checked against.
pub(super) fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).expect("read dir").flatten() {
            let path = entry.path();
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                files.insert(path, (bytes, meta.mode() & 0o7777));
            }
        }
    }
    files
}

/// The user's files, as the test sees them from outside the root.
pub(super) struct UserFiles {
    pub(super) accounts: PathBuf,
    pub(super) settings: PathBuf,
}

impl UserFiles {
    /// The usage history is a log the running app appends to: it must stay, with its mode,
    /// but its bytes (and SQLite's passing journal) are not compared.
    pub(super) fn snapshot(&self) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
        let mut all = snapshot(&self.accounts);
        all.extend(snapshot(&self.settings));
        all.retain(|path, _| !path.to_string_lossy().ends_with("-journal"));
        for (path, (bytes, _)) in all.iter_mut() {
            if path.file_name().is_some_and(|n| n == "history.sqlite") {
                bytes.clear();
            }
        }
        all
    }
}

pub(super) async fn health(router: &str) -> bool {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let answer = http.get(format!("{router}/health")).send().await;
    answer.is_ok_and(|r| r.status().is_success())
}

pub(super) async fn exited(
    app: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let tries = within.as_millis() / 100;
    for _ in 0..tries {
        if let Ok(Some(status)) = app.try_wait() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A session bus for the desktop user inside the root, as a desktop session has: the app's
/// single instance and notifications go through it.
pub(super) struct SessionBus {
    daemon: std::process::Child,
    pub(super) address: String,
}

impl SessionBus {
    pub(super) async fn start(root: &Path, env: &[(String, String)]) -> SessionBus {
        let socket = format!("/tmp/cma-package-test-bus-{}", std::process::id());
        let _ = std::fs::remove_file(root.join(&socket[1..]));
        let address = format!("unix:path={socket}");
        let daemon = as_user(
            root,
            env,
            &["dbus-daemon", "--session", "--nofork", "--nosyslog"],
        )
        .arg(format!("--address={address}"))
        .stdout(Stdio::null())
        .spawn()
        .expect("dbus-daemon starts in the root");
        let bus = SessionBus { daemon, address };
        wait_for("the session bus", || {
            root.join(&socket[1..]).exists().then_some(())
        })
        .await;
        bus
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

pub(super) fn run_text(program: &str, args: &[&str]) -> String {
    let out = output(program, args);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(super) async fn wait_for_health(router: &str) {
    for _ in 0..100 {
        if health(router).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the installed app's router did not answer /health at {router} within 10 s");
}
