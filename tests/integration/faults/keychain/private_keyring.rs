//! A session bus and a gnome-keyring of one test's own, started as its children with their
//! files in its temp dir: killing the daemon or locking its collection touches no other test.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOGIN: &str = "/org/freedesktop/secrets/collection/login";

/// A session bus; `SERVICE_DIRS` is empty (nothing is activated, so a killed daemon stays
/// gone) or the standard ones (a locked keyring then activates `gcr-prompter`, which finds no
/// display, as on a headless server).
const BUS_CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=BUS_PATH</listen>
  SERVICE_DIRS
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#;

/// A `dbus-daemon` and a `gnome-keyring-daemon --unlock` (empty password) of this test's own,
/// their keyring files in its temp dir; both killed on drop.
pub(super) struct PrivateKeyring {
    dir: PathBuf,
    bus: Child,
    pub address: String,
    daemon: Option<Child>,
}

impl PrivateKeyring {
    /// `None`, with a note, where the tools are missing.
    pub fn start(dir: &Path, activation: bool) -> Option<PrivateKeyring> {
        let missing: Vec<_> = ["dbus-daemon", "dbus-send", "gnome-keyring-daemon"]
            .into_iter()
            .filter(|tool| !on_path(tool))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "skipped: {} not installed (apt-get install dbus gnome-keyring)",
                missing.join(", ")
            );
            return None;
        }
        let dir = dir.join("keyring");
        for sub in ["data", "run"] {
            std::fs::create_dir_all(dir.join(sub)).expect("keyring dirs");
        }
        // dbus-daemon and gnome-keyring exist on Linux only; the tests still build elsewhere.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let private = std::fs::Permissions::from_mode(0o700);
            std::fs::set_permissions(dir.join("run"), private).expect("runtime dir mode");
        }
        let config = dir.join("bus.conf");
        let socket = dir.join("bus");
        let dirs = if activation {
            "<standard_session_servicedirs/>"
        } else {
            ""
        };
        let text = BUS_CONFIG
            .replace("BUS_PATH", &socket.display().to_string())
            .replace("SERVICE_DIRS", dirs);
        std::fs::write(&config, text).expect("bus config");
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--print-address", "--nofork"])
            .env_clear()
            .envs(daemon_env(&dir))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon runs");
        let mut address = String::new();
        BufReader::new(bus.stdout.take().expect("stdout"))
            .read_line(&mut address)
            .expect("dbus-daemon prints its address");
        let address = address.trim().to_string();
        assert!(address.starts_with("unix:"), "dbus-daemon said {address:?}");
        let mut keyring = PrivateKeyring {
            dir,
            bus,
            address,
            daemon: None,
        };
        keyring.start_daemon();
        Some(keyring)
    }

    /// Starts gnome-keyring on this bus, unlocking (or creating) the login keyring with the
    /// empty password, and waits until it serves an unlocked login collection.
    pub fn start_daemon(&mut self) {
        self.kill_daemon();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ours = match self.daemon.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => self.daemon.as_ref().map(Child::id),
                _ => Some(self.spawn_daemon()),
            };
            // On a bus with activation, a call made meanwhile may have started another
            // daemon (locked) that holds the name: it goes, ours takes the name.
            if let Some(other) = self.owner_pid().filter(|pid| Some(*pid) != ours) {
                kill_9(other);
            }
            if self.login_locked() == Some(false) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gnome-keyring never served an unlocked login collection"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn_daemon(&mut self) -> u32 {
        let mut daemon = Command::new("gnome-keyring-daemon")
            .args([
                "--replace",
                "--foreground",
                "--unlock",
                "--components=secrets",
            ])
            .env_clear()
            .envs(daemon_env(&self.dir))
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gnome-keyring-daemon runs");
        // An empty line, not zero bytes: zero bytes create no login keyring.
        let mut stdin = daemon.stdin.take().expect("stdin");
        stdin.write_all(b"\n").expect("the password is written");
        drop(stdin);
        let pid = daemon.id();
        if let Some(mut old) = self.daemon.replace(daemon) {
            let _ = (old.kill(), old.wait());
        }
        pid
    }

    /// SIGKILL, as the OOM killer or a crash would; a daemon the bus activated goes too.
    pub fn kill_daemon(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(pid) = self.owner_pid() {
            kill_9(pid);
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process that owns `org.freedesktop.secrets` on this bus, if any.
    fn owner_pid(&self) -> Option<u32> {
        let out = Command::new("dbus-send")
            .arg(format!("--bus={}", self.address))
            .args(["--dest=org.freedesktop.DBus", "--print-reply"])
            .args([
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.GetConnectionUnixProcessID",
            ])
            .arg("string:org.freedesktop.secrets")
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let pid = text.split("uint32").nth(1)?;
        pid.trim().parse().ok()
    }

    /// Locks the login collection over D-Bus (`Secret.Service.Lock`), as a screen lock or
    /// `secret-tool lock` does. Headless there is no prompter to unlock it again.
    pub fn lock_login(&self) {
        let method = "org.freedesktop.Secret.Service.Lock";
        let out = self.send(
            &[&format!("array:objpath:{LOGIN}")],
            "/org/freedesktop/secrets",
            method,
        );
        assert!(out.is_some(), "the Lock call failed");
        assert_eq!(
            self.login_locked(),
            Some(true),
            "the login collection is locked"
        );
    }

    /// Whether the login collection is locked; `None` when nothing answers.
    fn login_locked(&self) -> Option<bool> {
        let args = ["string:org.freedesktop.Secret.Collection", "string:Locked"];
        let out = self.send(&args, LOGIN, "org.freedesktop.DBus.Properties.Get")?;
        Some(out.contains("boolean true"))
    }

    fn send(&self, args: &[&str], path: &str, method: &str) -> Option<String> {
        let out = Command::new("dbus-send")
            .arg(format!("--bus={}", self.address))
            .args([
                "--dest=org.freedesktop.secrets",
                "--print-reply",
                "--reply-timeout=2000",
            ])
            .args([path, method])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }
}

impl Drop for PrivateKeyring {
    fn drop(&mut self) {
        self.kill_daemon();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// Only what the daemons need, all in the test's dir: no `DISPLAY`, no shared runtime dir.
fn daemon_env(dir: &Path) -> [(&'static str, OsString); 4] {
    [
        ("PATH", std::env::var_os("PATH").unwrap_or_default()),
        ("HOME", dir.into()),
        ("XDG_DATA_HOME", dir.join("data").into()),
        ("XDG_RUNTIME_DIR", dir.join("run").into()),
    ]
}

/// Only for a daemon this test's bus started.
fn kill_9(pid: u32) {
    let _ = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}
