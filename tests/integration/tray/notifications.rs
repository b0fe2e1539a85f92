//! Every desktop notification the app sends, read on the session bus with `dbus-monitor`.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every `Notify` call on the session bus: summary and body.
pub(crate) struct Notifications {
    pub(crate) monitor: Child,
    pub(crate) seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Notifications {
    pub fn watch() -> Notifications {
        let rule = "type='method_call',interface='org.freedesktop.Notifications',member='Notify'";
        let mut monitor = Command::new("dbus-monitor")
            .args(["--session", rule])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-monitor starts");
        let out = BufReader::new(monitor.stdout.take().expect("monitor output"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let into = seen.clone();
        std::thread::spawn(move || {
            // Notify(app_name, replaces_id, app_icon, summary, body, actions, hints, timeout):
            // the strings after a call line, in order.
            let mut strings: Option<Vec<String>> = None;
            for line in out.lines().map_while(Result::ok) {
                let _ = ready_tx.send(());
                if line.starts_with("method call") {
                    strings = Some(Vec::new());
                } else if let (Some(s), Some(text)) =
                    (&mut strings, line.trim().strip_prefix("string \""))
                {
                    s.push(text.trim_end_matches('"').to_string());
                    if s.len() == 4 {
                        let (summary, body) = (s[2].clone(), s[3].clone());
                        into.lock().unwrap().push((summary, body));
                        strings = None;
                    }
                }
            }
        });
        // dbus-monitor prints its own NameAcquired first: from then on it sees every call.
        let _ = ready.recv_timeout(Duration::from_secs(5));
        Notifications { monitor, seen }
    }

    pub fn titled(&self, summary: &str) -> Vec<(String, String)> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|(s, _)| s == summary).cloned().collect()
    }

    pub fn all(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        let _ = self.monitor.kill();
        let _ = self.monitor.wait();
    }
}
