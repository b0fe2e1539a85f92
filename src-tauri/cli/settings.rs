//! `cma settings`: every setting with its value and source, and `get`, `set`, `unset` on
//! `settings.toml`. Values on stdout; problems in the file as `warning:` on stderr.

use clap::Subcommand;

use crate::app::{self, AppError, SettingView, SettingsOverview};
use crate::paths::Paths;
use crate::settings::{Settings, Source};

#[derive(Subcommand)]
pub enum SettingsAction {
    /// Print the value in effect of one setting.
    Get { key: String },
    /// Check a value and write it to the settings file (comments are kept).
    Set { key: String, value: String },
    /// Take a setting out of the file, so the default applies again.
    Unset { key: String },
    /// Print where the settings file is.
    Path,
}

/// Runs `cma settings [ACTION]` against the environment `env`.
pub async fn run(
    action: Option<SettingsAction>,
    json: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), AppError> {
    let paths = Paths::resolve(env);
    match action {
        None => {
            let overview = app::settings_view(&paths, env, None);
            warn_about(&overview);
            if json {
                print_json(&overview);
            } else {
                println!("{}", table(&overview.settings));
                println!("file: {}", overview.file.display());
            }
            Ok(())
        }
        Some(SettingsAction::Get { key }) => {
            let wanted = crate::settings::known_key(&key)?;
            let overview = app::settings_view(&paths, env, None);
            warn_about(&overview);
            let view = overview.settings.into_iter().find(|s| s.key == wanted.name);
            let view = view.ok_or_else(|| AppError::Internal(format!("no view of {key}")))?;
            if json {
                print_json(&view);
            } else {
                println!("{}", view.value);
            }
            Ok(())
        }
        Some(SettingsAction::Set { key, value }) => {
            // The router as configured before the change is the one that may be running.
            let before = Settings::from_vars(env).ok();
            let outcome = app::set_setting(&paths, env, &key, &value)?;
            report(&outcome, before, json).await;
            Ok(())
        }
        Some(SettingsAction::Unset { key }) => {
            let before = Settings::from_vars(env).ok();
            let outcome = app::unset_setting(&paths, env, &key)?;
            report(&outcome, before, json).await;
            Ok(())
        }
        Some(SettingsAction::Path) => {
            println!("{}", paths.settings_file.display());
            Ok(())
        }
    }
}

async fn report(outcome: &app::SetOutcome, before: Option<Settings>, json: bool) {
    let running = match &before {
        Some(settings) if outcome.restart_needed => super::live_status(settings).await,
        _ => None,
    };
    if json {
        let value = serde_json::json!({
            "outcome": outcome,
            "runningRouter": running.as_ref().map(|r| &r.base_url),
        });
        print_json(&value);
        return;
    }
    println!("{}", outcome.message);
    if let Some(router) = running {
        eprintln!(
            "hint: the router running at {} still uses the old value: restart it (stop `cma start` and start it again, or quit and reopen the tray app)",
            router.base_url
        );
    }
}

fn warn_about(overview: &SettingsOverview) {
    for problem in &overview.problems {
        eprintln!("warning: {}", problem.message);
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// key, value and source, one line each; an override names the value the file has.
fn table(settings: &[SettingView]) -> String {
    let header = ["key", "value", "source"].map(String::from);
    let rows: Vec<[String; 3]> = std::iter::once(header)
        .chain(settings.iter().map(|s| {
            let source = match (s.source, &s.file_value) {
                (Source::Env, Some(file)) if *file != s.value => {
                    format!("env {} (the file says {file})", s.variable)
                }
                (Source::Env, _) => format!("env {}", s.variable),
                (source, _) => source.name().to_string(),
            };
            [s.key.to_string(), s.value.clone(), source]
        }))
        .collect();
    let width = |c: usize| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
    let (key_width, value_width) = (width(0), width(1));
    rows.iter()
        .map(|[key, value, source]| format!("{key:<key_width$}  {value:<value_width$}  {source}"))
        .collect::<Vec<_>>()
        .join("\n")
}
