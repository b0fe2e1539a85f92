//! The use cases every front end calls (`cma` now, the tray later): start the router,
//! read its status, list and remove accounts.

mod accounts;
mod doctor;
mod import;
mod login;
mod operator;
mod port;
mod settings;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

pub use accounts::{
    change_account, find_accounts, list_accounts, logout_all, remove_account, AccountChange,
    AccountSelector,
};
pub use doctor::{diagnose, Finding, Verdict};
pub use import::{import_accounts, ImportReport, ImportSource};
pub use login::{open_in_browser, save_login, LoginOutcome};
pub use operator::{
    activate_startup, configure_codex, exempt_loopback_in_codex_env, provider_settings,
    proxy_without_loopback_exemption, revert_codex, startup_entry, startup_environment,
};
pub use port::PortHolder;
pub use settings::{
    set_setting, settings_view, unset_setting, ProblemView, SetOutcome, SettingView,
    SettingsOverview,
};

use crate::accounts::{now_ms, Pool};
use crate::history;
use crate::proxy::{self, ProxyState, RouterStatus};
use crate::routing::{Bindings, Routing};
use crate::settings::{Settings, TokenStore};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Accounts(#[from] crate::accounts::AccountsError),
    #[error("a Codex App Account Router is already running on {addr}")]
    AlreadyRunning { addr: SocketAddr },
    #[error("port {port} on {host} is already in use{}; stop it or choose another port with CODEX_PROXY_PORT", holder.as_ref().map(|h| format!(" by {h}")).unwrap_or_default())]
    PortBusy {
        host: String,
        port: u16,
        holder: Option<String>,
    },
    #[error("cannot listen on {host}:{port}: {source}")]
    Listen {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    /// A failure already put in words for the user (a selector, the Codex config, startup).
    #[error("{0}")]
    Message(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Login(#[from] crate::oauth::LoginError),
}

/// A router serving in the background of this process.
pub struct RunningRouter {
    pub addr: SocketAddr,
    pub state: ProxyState,
    /// What the user should hear about the usage history at start (moved aside, not
    /// recorded); the log says it too.
    pub history_notice: Option<String>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningRouter {
    /// A status snapshot straight from memory.
    pub fn status(&self) -> RouterStatus {
        proxy::snapshot(&self.state)
    }

    /// Stops accepting, lets streams in flight finish, saves the bindings.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Resolves when the server ends on its own (it does not unless it fails).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

/// The HTTP client for the upstream and the issuer.
pub fn http_client() -> Result<reqwest::Client, AppError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .user_agent(concat!(
            "codex-app-account-router/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| AppError::Internal(e.to_string()))
}

/// The store of these settings, with every account's tokens moved to where
/// `CODEX_PROXY_TOKEN_STORE` says (after the user switched it), losing none.
pub async fn open_store(settings: &Settings) -> Result<Store, AppError> {
    let store = settings.store();
    let moving = store.clone();
    let moved = tokio::task::spawn_blocking(move || moving.move_tokens_to_current_store())
        .await
        .map_err(|e| AppError::Internal(e.to_string()))??;
    if moved > 0 {
        let place = match settings.token_store {
            TokenStore::File => "the accounts file",
            TokenStore::Keychain => "the OS keychain",
        };
        tracing::info!("moved the tokens of {moved} accounts to {place}");
    }
    Ok(store)
}

/// Loads the accounts (refusing a corrupt file), binds the listener and serves.
pub async fn start_router(settings: Settings) -> Result<RunningRouter, AppError> {
    settings.validate()?;
    let store = open_store(&settings).await?;
    let http = http_client()?;
    let pool = Pool::open(store.clone(), http.clone(), settings.token_url())?;
    let bindings = Bindings::load(&store, &pool.accounts(), settings.binding_ttl, now_ms());
    let pool_for_poll = pool.clone();
    let routing = Routing::new(pool, bindings.clone(), settings.strategy);
    let listener = bind(&settings).await?;
    let addr = listener.local_addr().map_err(|source| AppError::Listen {
        host: settings.host.clone(),
        port: settings.port,
        source,
    })?;
    let usage_url = settings.usage_url.clone();
    let (history, history_notice) = start_history(&settings, &pool_for_poll).await;
    let state = ProxyState::new(settings, addr, routing, http, history);
    let clients = (0..proxy::lanes_for_machine())
        .map(|_| http_client())
        .collect::<Result<Vec<_>, _>>()?;
    let lanes = proxy::Lanes::start(clients).map_err(|e| AppError::Internal(e.to_string()))?;
    // Usage is polled once at start and then rarely: the answers themselves keep it current.
    let announce = state.clone();
    let poller = tokio::spawn(pool_for_poll.poll_usage_forever(
        usage_url,
        Duration::from_secs(15 * 60),
        move || announce.announce_change(),
    ));
    let (shutdown, mut stop) = watch::channel(false);
    let app = proxy::router(state.clone());
    let saver_store = store.clone();
    let task = tokio::spawn(async move {
        let saver = tokio::spawn({
            let (bindings, store) = (bindings.clone(), saver_store.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let (b, s) = (bindings.clone(), store.clone());
                    let _ =
                        tokio::task::spawn_blocking(move || b.save_if_changed(&s, now_ms())).await;
                }
            }
        });
        let stopped = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        proxy::serve(
            listener,
            app,
            proxy::ListenerLimits::default(),
            lanes,
            stopped,
        )
        .await;
        saver.abort();
        poller.abort();
        let _ =
            tokio::task::spawn_blocking(move || bindings.save_if_changed(&saver_store, now_ms()))
                .await;
    });
    tracing::info!(address = %addr, "router listening; Codex base_url = http://{addr}/v1");
    Ok(RunningRouter {
        addr,
        state,
        shutdown,
        task,
        history_notice,
    })
}

/// How far back the pace of a 5-hour window can start.
const PACE_LOOKBACK_MS: i64 = 5 * 60 * 60 * 1000;

/// The usage history beside the accounts file, fed by every usage reading that changes an
/// account's figures, and what the user should hear about it. No recorder (with the reason)
/// when it cannot be opened: routing goes on.
async fn start_history(
    settings: &Settings,
    pool: &Pool,
) -> (Option<history::Recorder>, Option<String>) {
    if !settings.history {
        return (None, None);
    }
    let path = history::file(&settings.paths);
    let opening = path.clone();
    let accounts: Vec<(String, String)> = pool
        .accounts()
        .iter()
        .map(|a| (a.key.clone(), a.record.display_name()))
        .collect();
    let opened = tokio::task::spawn_blocking(move || {
        let (mut history, opened) = history::History::open(&opening, now_ms())?;
        // Rows from before keys were kept join their account's series.
        if let Err(e) = history.adopt_names(&accounts) {
            tracing::warn!("the usage history's older rows keep their names only: {e}");
        }
        // The 5-hour windows' readings so far, for the pace forecasts to go on from.
        let earlier = history
            .points(now_ms() - PACE_LOOKBACK_MS)
            .unwrap_or_default();
        let recorder = history::Recorder::start(history, now_ms)
            .map_err(|e| format!("cannot start its writer: {e}"));
        Ok::<_, history::HistoryError>((recorder, opened, earlier))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    let (recorder, notice) = match opened {
        Ok((Ok(recorder), history::Opened::MovedAside { reason, to }, _)) => {
            let notice = format!(
                "The usage history {} could not be used: {reason}. It was moved to {} and a new one started.",
                path.display(),
                to.display()
            );
            (recorder, Some(notice))
        }
        Ok((Ok(recorder), _, earlier)) => {
            // Readings from before keys were kept are not matched to an account.
            let keyed = earlier.iter().filter(|p| p.window == "primary");
            pool.restore_pace(keyed.filter_map(|p| {
                let window = crate::accounts::Window {
                    used_percent: p.used_percent,
                    window_minutes: None,
                    resets_at: p.resets_at,
                };
                Some((p.key.as_deref()?, p.at, window))
            }));
            (recorder, None)
        }
        Ok((Err(e), _, _)) | Err(e) => {
            let notice = format!("The usage history is not recorded: {e}.");
            tracing::warn!("{notice}");
            return (None, Some(notice));
        }
    };
    if let Some(notice) = &notice {
        tracing::warn!("{notice}");
    }
    let sink = recorder.clone();
    pool.observe_usage(std::sync::Arc::new(move |key, account, usage| {
        let windows = [("primary", &usage.primary), ("secondary", &usage.secondary)];
        for (window, reading) in windows {
            if let Some(w) = reading {
                sink.record(history::Entry::Usage(history::UsageReading {
                    at: usage.updated_at * 1000,
                    account: account.to_string(),
                    key: key.to_string(),
                    window,
                    used_percent: w.used_percent,
                    window_minutes: w.window_minutes,
                    resets_at: w.resets_at,
                }));
            }
        }
    }));
    (Some(recorder), notice)
}

async fn bind(settings: &Settings) -> Result<tokio::net::TcpListener, AppError> {
    let host = settings.host.trim_start_matches('[').trim_end_matches(']');
    let target = (host, settings.port);
    match tokio::net::TcpListener::bind(target).await {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let ip = if host == "localhost" {
                "127.0.0.1"
            } else {
                host
            };
            let probe = format!("{ip}:{}", settings.port)
                .parse::<SocketAddr>()
                .or_else(|_| format!("[{ip}]:{}", settings.port).parse());
            let holder = match probe {
                Ok(addr) => port::identify(addr).await,
                Err(_) => PortHolder::Program(None),
            };
            Err(match (holder, probe) {
                (PortHolder::OurRouter, Ok(addr)) => AppError::AlreadyRunning { addr },
                (PortHolder::Program(name), _) => AppError::PortBusy {
                    host: settings.host.clone(),
                    port: settings.port,
                    holder: name,
                },
                (PortHolder::OurRouter, Err(_)) => AppError::PortBusy {
                    host: settings.host.clone(),
                    port: settings.port,
                    holder: None,
                },
            })
        }
        Err(source) => Err(AppError::Listen {
            host: settings.host.clone(),
            port: settings.port,
            source,
        }),
    }
}
