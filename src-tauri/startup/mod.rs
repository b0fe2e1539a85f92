//! Start at login for the headless router: a systemd user unit on Linux, a LaunchAgent on
//! macOS, a Scheduled Task on Windows, each running `cma start` from where it is installed
//! and restarting it when it fails.

use std::path::{Path, PathBuf};

use crate::store::write_atomic;

/// The name every platform's entry goes by.
pub const SERVICE_NAME: &str = "codex-app-account-router";
const LAUNCH_AGENT_LABEL: &str = "dev.codex-app-account-router";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0} looks like a temporary or build location; install cma first (`cargo install --path . --no-default-features --bin cma`, or copy it to ~/.local/bin) and run this from there")]
    TemporaryBinary(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Linux,
    MacOs,
    Windows,
}

impl Platform {
    pub fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::MacOs
        } else if cfg!(windows) {
            Platform::Windows
        } else {
            Platform::Linux
        }
    }
}

/// The startup entry for one user.
pub struct StartupEntry {
    pub platform: Platform,
    pub home: PathBuf,
    /// `%LOCALAPPDATA%` on Windows, where the task definition is kept.
    pub local_app_data: Option<PathBuf>,
}

impl StartupEntry {
    /// The file that defines the entry.
    pub fn path(&self) -> PathBuf {
        match self.platform {
            Platform::Linux => self
                .home
                .join(".config/systemd/user")
                .join(format!("{SERVICE_NAME}.service")),
            Platform::MacOs => self
                .home
                .join("Library/LaunchAgents")
                .join(format!("{LAUNCH_AGENT_LABEL}.plist")),
            Platform::Windows => self
                .local_app_data
                .clone()
                .unwrap_or_else(|| self.home.join("AppData/Local"))
                .join(SERVICE_NAME)
                .join("startup-task.xml"),
        }
    }

    /// Where the router's logs go when started this way.
    pub fn log_location(&self) -> String {
        match self.platform {
            Platform::Linux => format!("journalctl --user -u {SERVICE_NAME}"),
            Platform::MacOs => self
                .home
                .join("Library/Logs")
                .join(format!("{SERVICE_NAME}.log"))
                .display()
                .to_string(),
            Platform::Windows => self
                .path()
                .with_file_name("router.log")
                .display()
                .to_string(),
        }
    }

    /// The definition for `binary` with these environment variables.
    pub fn render(&self, binary: &Path, env: &[(String, String)]) -> String {
        let bin = binary.display().to_string();
        match self.platform {
            Platform::Linux => {
                let mut unit = format!(
                    "[Unit]\nDescription=Codex App Account Router (cma start)\nAfter=network-online.target\n\n\
                     [Service]\nType=simple\nExecStart={} start\nRestart=on-failure\nRestartSec=5\n",
                    systemd_command(&bin)
                );
                for (k, v) in env {
                    unit.push_str(&format!("Environment={}\n", systemd_quote(&format!("{k}={v}"))));
                }
                unit.push_str("\n[Install]\nWantedBy=default.target\n");
                unit
            }
            Platform::MacOs => {
                let log = xml_escape(&self.log_location());
                let vars: String = env
                    .iter()
                    .map(|(k, v)| format!("      <key>{}</key><string>{}</string>\n", xml_escape(k), xml_escape(v)))
                    .collect();
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                     <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
                     <plist version=\"1.0\">\n<dict>\n  <key>Label</key><string>{LAUNCH_AGENT_LABEL}</string>\n\
                     \x20 <key>ProgramArguments</key>\n  <array><string>{}</string><string>start</string></array>\n\
                     \x20 <key>RunAtLoad</key><true/>\n  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>\n\
                     \x20 <key>StandardOutPath</key><string>{log}</string>\n  <key>StandardErrorPath</key><string>{log}</string>\n\
                     \x20 <key>EnvironmentVariables</key>\n    <dict>\n{vars}    </dict>\n</dict>\n</plist>\n",
                    xml_escape(&bin)
                )
            }
            Platform::Windows => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n\
                 <Task version=\"1.2\" xmlns=\"http://schemas.microsoft.com/windows/2004/02/mit/task\">\n\
                 \x20 <Triggers><LogonTrigger><Enabled>true</Enabled></LogonTrigger></Triggers>\n\
                 \x20 <Settings>\n    <RestartOnFailure><Interval>PT1M</Interval><Count>999</Count></RestartOnFailure>\n\
                 \x20   <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>\n    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>\n\
                 \x20   <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>\n  </Settings>\n\
                 \x20 <Actions><Exec><Command>{}</Command><Arguments>start</Arguments></Exec></Actions>\n</Task>\n",
                xml_escape(&bin)
            ),
        }
    }

    /// Writes the definition (replacing an older one: never a duplicate).
    pub fn install(
        &self,
        binary: &Path,
        env: &[(String, String)],
    ) -> Result<PathBuf, StartupError> {
        if looks_temporary(binary, &self.home) {
            return Err(StartupError::TemporaryBinary(binary.to_path_buf()));
        }
        let path = self.path();
        write_atomic(&path, self.render(binary, env).as_bytes()).map_err(|source| {
            StartupError::Write {
                path: path.clone(),
                source,
            }
        })?;
        Ok(path)
    }

    /// Removes the definition; not installed is not an error.
    pub fn uninstall(&self) -> Result<bool, StartupError> {
        let path = self.path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StartupError::Remove { path, source }),
        }
    }

    pub fn is_installed(&self) -> bool {
        self.path().exists()
    }
}

/// A binary in a cargo build dir, or in the temp dir outside the user's home, would vanish
/// or change under the entry.
fn looks_temporary(binary: &Path, home: &Path) -> bool {
    let text = binary.display().to_string();
    let build_dir = [
        "/target/debug/",
        "/target/release/",
        "\\target\\debug\\",
        "\\target\\release\\",
    ]
    .iter()
    .any(|d| text.contains(d));
    build_dir || (binary.starts_with(std::env::temp_dir()) && !binary.starts_with(home))
}

/// One word of a unit line, read back by systemd as exactly `value`: quoted when it holds a
/// space, a quote or a backslash, and every `%` doubled, since systemd expands `%h`, `%u`...
/// (specifiers) in `ExecStart=` and `Environment=` alike, even inside quotes.
fn systemd_quote(value: &str) -> String {
    let value = value.replace('%', "%%");
    if value
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        value
    }
}

/// The program of `ExecStart=`: also `$` doubled, which systemd would take there (and only
/// there) for a variable of the unit's environment.
fn systemd_command(path: &str) -> String {
    systemd_quote(&path.replace('$', "$$"))
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(platform: Platform, home: &Path) -> StartupEntry {
        StartupEntry {
            platform,
            home: home.to_path_buf(),
            local_app_data: None,
        }
    }

    #[test]
    fn each_platform_gets_its_definition_in_its_place() {
        let home = tempfile::tempdir().unwrap();
        let linux = entry(Platform::Linux, home.path());
        let unit = linux.render(
            Path::new("/home/u/.local/bin/cma"),
            &[("CODEX_PROXY_PORT".into(), "8788".into())],
        );
        assert!(unit.contains("ExecStart=/home/u/.local/bin/cma start"));
        assert!(unit.contains("Restart=on-failure"));
        assert!(unit.contains("Environment=CODEX_PROXY_PORT=8788"));
        assert!(linux
            .path()
            .ends_with(".config/systemd/user/codex-app-account-router.service"));
        let mac = entry(Platform::MacOs, home.path()).render(Path::new("/Applications/cma"), &[]);
        assert!(mac.contains("<string>/Applications/cma</string><string>start</string>"));
        assert!(mac.contains("<key>KeepAlive</key>"));
        let win = entry(Platform::Windows, home.path())
            .render(Path::new("C:\\Program Files\\cma.exe"), &[]);
        assert!(win.contains("<LogonTrigger>") && win.contains("<RestartOnFailure>"));
    }

    #[test]
    fn a_percent_in_a_path_reaches_systemd_as_a_literal_percent() {
        let home = tempfile::tempdir().unwrap();
        let unit = entry(Platform::Linux, home.path()).render(
            Path::new("/home/50%h off/$HOME/cma"),
            &[("CODEX_HOME".into(), "/home/%u/.codex".into())],
        );
        let lines: Vec<&str> = unit.lines().collect();
        assert!(
            lines.contains(&"ExecStart=\"/home/50%%h off/$$HOME/cma\" start"),
            "{unit}"
        );
        assert!(
            lines.contains(&"Environment=CODEX_HOME=/home/%%u/.codex"),
            "{unit}"
        );
    }

    #[test]
    fn installing_twice_leaves_one_entry_and_temp_binaries_are_refused() {
        let home = tempfile::tempdir().unwrap();
        let linux = entry(Platform::Linux, home.path());
        let bin = Path::new("/opt/cma/bin/cma");
        linux.install(bin, &[]).unwrap();
        linux.install(bin, &[]).unwrap();
        let dir = linux.path().parent().unwrap().to_path_buf();
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
        assert!(matches!(
            linux.install(Path::new("/work/x/target/debug/cma"), &[]),
            Err(StartupError::TemporaryBinary(_))
        ));
        assert!(linux.uninstall().unwrap());
        assert!(!linux.uninstall().unwrap());
    }
}
