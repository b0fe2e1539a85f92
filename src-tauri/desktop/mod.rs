//! The desktop front end: a tray app that runs the router inside it, and a dashboard window
//! in a process of its own. This is the only module that knows about windows and trays.
//!
//! The tray process is built on tao, tray-icon and muda (the crates Tauri's tray is made of)
//! without Tauri itself: any Tauri process loads WebKit, which costs 30 MB and more before a
//! single webview exists. Only the dashboard's binary (`window.rs`) is a Tauri app.

mod autostart;
mod commands;
mod dashboard;
pub mod icon;
mod instance;
pub mod notices;
mod tray;
pub mod tray_model;
pub mod window;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tao::event::{Event, StartCause};
use tao::event_loop::{ControlFlow, EventLoopBuilder, EventLoopProxy};

use crate::app::{self, AppError};
use crate::settings::Settings;
use tray_model::{MenuId, RouterState};

/// Countdowns in the menu move by the minute; nothing else needs a timer.
const TICK: Duration = Duration::from_secs(30);

/// What the event loop (the main thread, which owns the tray) is asked to do.
#[derive(Debug)]
pub enum UserEvent {
    /// The status changed: redraw icon, tooltip and menu, tell what needs telling.
    Refresh,
    Menu(MenuId),
    OpenDashboard,
    CloseDashboard,
    /// The router has stopped: leave.
    Exit,
}

/// A handle on the running app, for any thread: the shared state, the tokio runtime the
/// router runs on, and the way to the main thread.
#[derive(Clone)]
pub struct Shell {
    pub desktop: Arc<tray::Desktop>,
    pub runtime: tokio::runtime::Handle,
    events: EventLoopProxy<UserEvent>,
}

impl Shell {
    pub fn send(&self, event: UserEvent) {
        let _ = self.events.send_event(event);
    }
}

/// Starts the tray app: the router runs on a tokio runtime beside the event loop, and the
/// app keeps running with no window open.
pub fn main() -> ExitCode {
    if cfg!(target_os = "linux")
        && std::env::var_os("DISPLAY").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
    {
        eprintln!("error: no display found, so the tray app cannot start");
        eprintln!("hint: on a headless machine run the router with `cma start`");
        return ExitCode::FAILURE;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A second launch hands its arguments to the first and leaves.
    let requests = match instance::claim(&settings.paths, &args) {
        Ok(instance::Claim::HandedOver) => return ExitCode::SUCCESS,
        Ok(instance::Claim::First(requests)) => Some(requests),
        Err(e) => {
            eprintln!("warning: {e}; a second launch will not find this one");
            None
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("router")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the router's runtime could not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let event_loop = EventLoopBuilder::<UserEvent>::with_user_event().build();
    let shell = Shell {
        desktop: Arc::new(tray::Desktop {
            settings: settings.clone(),
            router: Mutex::new(tray::RouterSlot::Starting),
            notice: Mutex::new(None),
            notifier: Mutex::new(notices::Notifier::default()),
            dashboard: Mutex::new(None),
        }),
        runtime: runtime.handle().clone(),
        events: event_loop.create_proxy(),
    };
    let menu_events = shell.clone();
    tray_icon::menu::MenuEvent::set_event_handler(Some(move |e: tray_icon::menu::MenuEvent| {
        if let Some(id) = MenuId::from_id(e.id().as_ref()) {
            menu_events.send(UserEvent::Menu(id));
        }
    }));
    if let Some(requests) = requests {
        let shell = shell.clone();
        std::thread::spawn(move || {
            for args in requests {
                shell.send(match args.iter().any(|a| a == "--close-dashboard") {
                    true => UserEvent::CloseDashboard,
                    false => UserEvent::OpenDashboard,
                });
            }
        });
    }
    runtime.spawn(run_router(shell.clone(), settings));
    let ticker = shell.clone();
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(TICK).await;
            ticker.send(UserEvent::Refresh);
        }
    });
    // At login the app starts with --minimized: tray only. Started by hand, it shows the
    // dashboard.
    let show_dashboard = !args.iter().any(|a| a == "--minimized");
    let mut tray: Option<tray::Tray> = None;
    event_loop.run(move |event, _, control_flow| {
        *control_flow = ControlFlow::Wait;
        // The runtime lives as long as the loop (which never returns).
        let _ = &runtime;
        match event {
            Event::NewEvents(StartCause::Init) => {
                match tray::Tray::create(&shell) {
                    Ok(t) => tray = Some(t),
                    Err(e) => eprintln!("error: the tray icon could not be created: {e}"),
                }
                if show_dashboard {
                    dashboard::open(&shell);
                }
            }
            Event::UserEvent(UserEvent::Refresh) => {
                if let Some(tray) = &tray {
                    tray.refresh(&shell);
                }
            }
            Event::UserEvent(UserEvent::Menu(id)) => tray::on_menu(&shell, id),
            Event::UserEvent(UserEvent::OpenDashboard) => dashboard::open(&shell),
            Event::UserEvent(UserEvent::CloseDashboard) => dashboard::close(&shell),
            Event::UserEvent(UserEvent::Exit) => {
                dashboard::close(&shell);
                tray = None;
                *control_flow = ControlFlow::Exit;
            }
            _ => {}
        }
    })
}

/// Starts the router (or attaches to one already serving the port), then redraws the tray
/// after every change of its status, at most twice a second.
async fn run_router(shell: Shell, settings: Settings) {
    let slot = start_or_attach(settings).await;
    let changes = match &slot {
        tray::RouterSlot::Running(router) => Some(router.state.subscribe()),
        _ => None,
    };
    *shell
        .desktop
        .router
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = slot;
    commands::changed(&shell);
    if let Some(mut changes) = changes {
        while changes.changed().await.is_ok() {
            commands::changed(&shell);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Starts the router inside the app, or attaches to one already serving the port.
async fn start_or_attach(settings: Settings) -> tray::RouterSlot {
    let port = settings.port;
    match app::start_router(settings).await {
        Ok(router) => tray::RouterSlot::Running(router),
        Err(AppError::AlreadyRunning { addr }) => {
            tray::RouterSlot::Attached(format!("http://{addr}/v1"))
        }
        Err(AppError::PortBusy { holder, .. }) => {
            tray::RouterSlot::Failed(RouterState::PortTaken { port, holder })
        }
        Err(e) => {
            tracing::error!("the router could not start: {e}");
            tray::RouterSlot::Failed(RouterState::Stopped)
        }
    }
}
