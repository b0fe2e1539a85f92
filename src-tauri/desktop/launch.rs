//! The command line of the two desktop programs. `--version` and `--help` are answered before
//! anything starts: a script, a package check or a user in a terminal must get an answer
//! without a display, without a tray, and without the running instance being handed the call.

/// What a launch asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Launch {
    /// Start (or hand over to the running instance).
    Run,
    /// Print this and exit.
    Answer(String),
}

/// Reads the arguments after the program name.
pub fn read(program: &str, usage: &str, args: &[String]) -> Launch {
    for arg in args {
        match arg.as_str() {
            "--version" | "-V" => {
                return Launch::Answer(format!("{program} {}", env!("CARGO_PKG_VERSION")))
            }
            "--help" | "-h" => return Launch::Answer(usage.trim_end().to_string()),
            _ => {}
        }
    }
    Launch::Run
}

/// The tray app's usage.
pub const TRAY_USAGE: &str = "\
Codex App Account Router: a tray app and local proxy that routes Codex across several ChatGPT
accounts you own. Started by hand it shows the dashboard; a second launch opens the dashboard of
the running app.

Usage: codex-app-account-router [--minimized]

Options:
  --minimized   start in the tray only (how start at login launches it)
  -V, --version print the version
  -h, --help    print this help

Headless (servers, scripts): `cma --help`. Settings: README, or `cma settings`.
";

/// The dashboard program's usage: the tray app starts it.
pub const DASHBOARD_USAGE: &str = "\
The dashboard window of Codex App Account Router. The tray app starts it when the dashboard
opens; to open it yourself, start codex-app-account-router.

Usage: codex-app-account-router-dashboard

Options:
  -V, --version print the version
  -h, --help    print this help
";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn version_and_help_are_answered_and_anything_else_starts_the_app() {
        let version = format!("codex-app-account-router {}", env!("CARGO_PKG_VERSION"));
        let read = |list: &[&str]| read("codex-app-account-router", TRAY_USAGE, &args(list));
        assert_eq!(read(&["--version"]), Launch::Answer(version.clone()));
        assert_eq!(read(&["--minimized", "-V"]), Launch::Answer(version));
        match read(&["-h"]) {
            Launch::Answer(text) => assert!(text.contains("--minimized"), "{text}"),
            Launch::Run => panic!("-h prints the usage"),
        }
        assert_eq!(read(&[]), Launch::Run);
        assert_eq!(read(&["--minimized"]), Launch::Run);
        assert_eq!(read(&["--close-dashboard"]), Launch::Run);
    }
}
