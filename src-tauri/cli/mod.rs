//! `cma` commands: parse, call `app`, print. Data on stdout, `error:`/`hint:` on stderr,
//! `--json` for scripts, a non-zero exit code on failure.

mod doctor;
mod history;
mod login;
mod operator;
mod output;
mod settings;
mod setup;
mod smoke;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::accounts::{now_ms, Account};
use crate::app::{self, AccountChange, AccountSelector, AppError};
use crate::proxy::{AccountStatus, RouterStatus};
use crate::settings::{Settings, SettingsError};

#[derive(Parser)]
#[command(
    name = "cma",
    version,
    about = "Codex App Account Router: one Codex, several ChatGPT accounts"
)]
struct Cli {
    /// Use this settings file instead of the app's (also CODEX_PROXY_SETTINGS_FILE).
    #[arg(long, global = true, value_name = "PATH")]
    settings_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router in the foreground (Ctrl-C stops it).
    Start,
    /// Show the router and every account with its usage and resets.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List the accounts.
    Accounts {
        #[arg(long)]
        json: bool,
    },
    /// Remove one account: by index, email, account id or user id.
    Remove { account: String },
    /// Add a ChatGPT account (or renew one) by signing in.
    Login {
        /// Sign in with a code on another device (no browser here).
        #[arg(long)]
        device: bool,
        /// Print the sign-in URL instead of opening the browser.
        #[arg(long)]
        no_browser: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Import accounts from other tools' files (multi-auth, version-3 pools, Codex's auth.json).
    SyncAccounts {
        /// Import only this file; without it, every usual place that exists.
        #[arg(long)]
        from: Option<std::path::PathBuf>,
    },
    /// Use an account again.
    Enable { account: String },
    /// Keep an account but send nothing to it.
    Disable { account: String },
    /// Name an account (an empty label removes it).
    Label { account: String, label: String },
    /// Start new sessions on this account (sticky strategy).
    Use { account: String },
    /// Point Codex at the router (edits $CODEX_HOME/config.toml, keeping a backup).
    Configure {
        /// Show the change without making it.
        #[arg(long)]
        dry_run: bool,
        /// Put the original config back.
        #[arg(long)]
        revert: bool,
        /// Do not add NO_PROXY for loopback to $CODEX_HOME/.env when a proxy is set.
        #[arg(long)]
        no_env: bool,
    },
    /// Start the router at every login (systemd user unit, LaunchAgent, Scheduled Task).
    InstallStartup {
        /// Only write the definition; do not register or start it now.
        #[arg(long)]
        no_activate: bool,
    },
    /// Stop starting the router at login.
    UninstallStartup {
        #[arg(long)]
        no_activate: bool,
    },
    /// Check everything and say how to fix what is wrong.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Log in (when there is no account), configure Codex, start at login, show status.
    Setup {
        #[arg(long)]
        skip_login: bool,
        #[arg(long)]
        skip_configure: bool,
        #[arg(long)]
        skip_startup: bool,
        /// Write the startup entry but do not start it now.
        #[arg(long)]
        no_activate: bool,
        /// Sign in with a device code.
        #[arg(long)]
        device: bool,
        /// Print the sign-in URL instead of opening the browser.
        #[arg(long)]
        no_browser: bool,
    },
    /// Send one minimal request through the router and report how it went.
    Smoke {
        /// Check each account once.
        #[arg(long)]
        all_accounts: bool,
        #[arg(long, default_value = "gpt-5.5")]
        model: String,
        #[arg(long)]
        json: bool,
    },
    /// List every setting with its value and where it comes from (env, file, default), or
    /// get, set or unset one in settings.toml.
    Settings {
        #[command(subcommand)]
        action: Option<settings::SettingsAction>,
        #[arg(long, global = true)]
        json: bool,
    },
    /// The usage history: each account's requests, tokens and highest usage per day.
    History {
        /// Only this account: its key, its email, or any name it was shown by.
        #[arg(long)]
        account: Option<String>,
        /// How many days back, today included (1 to 90).
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=90))]
        days: u32,
        #[arg(long)]
        json: bool,
    },
    /// Forget every account on this machine.
    Logout {
        /// Confirm; without it nothing is removed.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs `cma` with the process's arguments and environment.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}"), None),
    };
    let settings_file = cli.settings_file.map(|p| p.display().to_string());
    let env = move |name: &str| match (&settings_file, name) {
        (Some(path), crate::paths::SETTINGS_FILE_VAR) => Some(path.clone()),
        _ => std::env::var(name).ok(),
    };
    match runtime.block_on(run(cli.command, &env)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string(), hint(&e)),
    }
}

fn fail(message: &str, hint: Option<String>) -> ExitCode {
    eprintln!("error: {message}");
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
    ExitCode::FAILURE
}

fn hint(e: &AppError) -> Option<String> {
    match e {
        AppError::AlreadyRunning { .. } => Some("`cma status` shows it".to_string()),
        AppError::Settings(SettingsError::UnknownKey { .. }) => {
            Some("`cma settings` lists every setting with its value".to_string())
        }
        AppError::Settings(SettingsError::BrokenFile { path, .. }) => Some(format!(
            "open {} and fix that line; until then the router runs on the defaults and the environment",
            path.display()
        )),
        AppError::Store(crate::store::StoreError::Corrupt { .. }) => Some(
            "the router will not start on a file it cannot read, so that nothing in it is lost"
                .to_string(),
        ),
        _ => None,
    }
}

async fn run(command: Command, env: &dyn Fn(&str) -> Option<String>) -> Result<(), AppError> {
    // `cma settings` works whatever the environment holds: it is how a bad value gets fixed.
    if let Command::Settings { action, json } = command {
        return settings::run(action, json, env).await;
    }
    let settings = Settings::from_vars(env)?;
    // `cma doctor` lists them among its findings.
    if !matches!(command, Command::Doctor { .. }) {
        for problem in &settings.file_problems {
            eprintln!("warning: {problem}");
        }
    }
    match command {
        Command::Start => start(settings).await,
        Command::Status { json } => status(&settings, json).await,
        Command::History {
            account,
            days,
            json,
        } => history::run(&settings, account, days, json).await,
        Command::Accounts { json } => accounts(&settings, json).await,
        Command::Remove { account } => {
            let store = app::open_store(&settings).await?;
            let removed =
                blocking(move || app::remove_account(&store, &AccountSelector(account))).await?;
            println!("removed {}", removed.display_name());
            Ok(())
        }
        Command::Logout { yes } => logout(&settings, yes).await,
        Command::Login {
            device,
            no_browser,
            timeout,
        } => login::run(&settings, device, no_browser, Duration::from_secs(timeout)).await,
        Command::SyncAccounts { from } => login::sync(&settings, from).await,
        Command::Configure {
            dry_run,
            revert,
            no_env,
        } => operator::configure(&settings, dry_run, revert, !no_env),
        Command::Setup {
            skip_login,
            skip_configure,
            skip_startup,
            no_activate,
            device,
            no_browser,
        } => {
            let steps = setup::SetupSteps {
                login: !skip_login,
                device,
                no_browser,
                configure: !skip_configure,
                startup: !skip_startup,
                activate: !no_activate,
            };
            setup::run(&settings, steps).await
        }
        Command::Smoke {
            all_accounts,
            model,
            json,
        } => {
            if smoke::run(&settings, all_accounts, &model, json).await? {
                Ok(())
            } else {
                Err(AppError::Message("the smoke test failed".to_string()))
            }
        }
        Command::Doctor { json } => {
            if doctor::run(&settings, json).await? {
                Ok(())
            } else {
                Err(AppError::Message(
                    "something is broken; see the fixes above".to_string(),
                ))
            }
        }
        Command::InstallStartup { no_activate } => operator::install_startup(!no_activate),
        Command::UninstallStartup { no_activate } => operator::uninstall_startup(!no_activate),
        Command::Enable { account } => {
            change(&settings, account, AccountChange::Enable, "enabled").await
        }
        Command::Disable { account } => {
            change(&settings, account, AccountChange::Disable, "disabled").await
        }
        Command::Label { account, label } => {
            let label = AccountChange::Label(Some(label));
            change(&settings, account, label, "labelled").await
        }
        Command::Use { account } => {
            let verb = "new sessions start on";
            change(&settings, account, AccountChange::UseForNewSessions, verb).await
        }
        // Handled before the settings are read, above.
        Command::Settings { .. } => Ok(()),
    }
}

async fn start(settings: Settings) -> Result<(), AppError> {
    let filter = if settings.debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,router={filter}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .try_init();
    let mut router = app::start_router(settings).await?;
    let status = router.status();
    println!(
        "listening on {} ({} accounts, strategy {})",
        status.base_url,
        status.accounts.len(),
        status.strategy
    );
    if status.accounts.is_empty() {
        eprintln!("hint: no account yet; run `cma login` to add one");
    }
    tokio::select! {
        _ = shutdown_signal() => {
            eprintln!("stopping");
            router.stop().await;
        }
        _ = router.wait() => {}
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The running router's `/status`, or `None` when none answers.
pub(crate) async fn live_status(settings: &Settings) -> Option<RouterStatus> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .ok()?;
    let host = if settings.host == "0.0.0.0" {
        "127.0.0.1"
    } else if settings.host == "::" {
        "::1"
    } else {
        &settings.host
    };
    let base = settings
        .base_url()
        .replace(&format!("//{}:", settings.host), &format!("//{host}:"));
    let url = base.trim_end_matches("/v1").to_string() + "/status";
    let mut request = client.get(url);
    if let Some(token) = &settings.client_token {
        request = request.bearer_auth(token.expose());
    }
    let status: RouterStatus = request.send().await.ok()?.json().await.ok()?;
    (status.service == crate::proxy::SERVICE_NAME).then_some(status)
}

/// Accounts as the file has them, for when no router is running.
fn offline_accounts(settings: &Settings) -> Result<Vec<AccountStatus>, AppError> {
    let file = settings.store().load_accounts()?;
    let now = now_ms();
    Ok(file
        .accounts
        .into_iter()
        .enumerate()
        .map(|(i, record)| {
            let account = Account::from_record(record);
            AccountStatus::from_account(i, &account, file.preferred_account.as_deref(), now)
        })
        .collect())
}

pub(crate) async fn status(settings: &Settings, json: bool) -> Result<(), AppError> {
    let live = live_status(settings).await;
    if json {
        let value = match &live {
            Some(status) => serde_json::json!({"running": true, "router": status}),
            None => {
                serde_json::json!({"running": false, "baseUrl": settings.base_url(), "accounts": offline_accounts(settings)?})
            }
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(());
    }
    let accounts = match &live {
        Some(status) => {
            println!(
                "router: running at {} (strategy {}, {} sessions bound)",
                status.base_url, status.strategy, status.bindings
            );
            if let Some(error) = &status.accounts_file_error {
                eprintln!("warning: {error}");
            }
            status.accounts.clone()
        }
        None => {
            println!(
                "router: not running at {} (start it with `cma start`)",
                settings.base_url()
            );
            offline_accounts(settings)?
        }
    };
    print_accounts(&accounts);
    Ok(())
}

async fn accounts(settings: &Settings, json: bool) -> Result<(), AppError> {
    let accounts = match live_status(settings).await {
        Some(status) => status.accounts,
        None => offline_accounts(settings)?,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&accounts).unwrap_or_default()
        );
    } else {
        print_accounts(&accounts);
    }
    Ok(())
}

fn print_accounts(accounts: &[AccountStatus]) {
    if accounts.is_empty() {
        println!("no accounts; add one with `cma login`");
        return;
    }
    println!("{}", output::accounts_table(accounts, now_ms()));
    for line in output::attention_lines(accounts) {
        println!("{line}");
    }
}

/// Runs blocking store work (it may wait on the keychain) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
}

async fn change(
    settings: &Settings,
    account: String,
    change: AccountChange,
    verb: &str,
) -> Result<(), AppError> {
    let store = settings.store();
    let name =
        blocking(move || app::change_account(&store, &AccountSelector(account), change)).await?;
    println!("{verb} {name}");
    Ok(())
}

async fn logout(settings: &Settings, yes: bool) -> Result<(), AppError> {
    let store = app::open_store(settings).await?;
    if !yes {
        let accounts = app::list_accounts(&store)?;
        for a in &accounts {
            println!("would remove {}", a.display_name());
        }
        eprintln!(
            "hint: run `cma logout --yes` to remove these {} accounts from this machine",
            accounts.len()
        );
        return Ok(());
    }
    let removed = blocking(move || app::logout_all(&store)).await?;
    println!("removed {} accounts", removed.len());
    Ok(())
}
