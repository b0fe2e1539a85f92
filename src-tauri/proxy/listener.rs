//! The listening socket, served connection by connection with hyper's HTTP/1 server for the
//! knobs `axum::serve` lacks: a deadline for request headers (which also ends an idle
//! keep-alive connection), a cap on open connections and one on idle keep-alive connections.
//! HTTP/1.1 only: Codex speaks nothing else to a provider, and h2c would bring requests
//! without a `Host` header.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::lanes::Lanes;

/// What one listener allows; `Default` is what the router runs with.
#[derive(Clone, Copy, Debug)]
pub struct ListenerLimits {
    /// A request's whole header must arrive within this; an idle keep-alive connection is
    /// closed after it too.
    pub header_read_timeout: Duration,
    /// Open connections (WebSockets included); past it the next waits to be accepted.
    pub max_connections: usize,
    /// Idle keep-alive connections: past it, a response says `Connection: close` and its
    /// connection closes after it (never under a client about to reuse it).
    pub max_idle: usize,
}

impl ListenerLimits {
    /// What the router runs with.
    pub const DEFAULT: ListenerLimits = ListenerLimits {
        // Codex sends a whole header at once; ten seconds covers a loaded machine.
        header_read_timeout: Duration::from_secs(10),
        // Well above the 256 concurrent streams the soak test runs, and within the 1024
        // descriptors many systems give a process (each stream also holds one upstream
        // connection).
        max_connections: 512,
        // Codex keeps a few pooled connections per process; many sessions stay below.
        max_idle: 64,
    };
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits::DEFAULT
    }
}

/// Held while a connection is open; a WebSocket upgraded from it keeps it (see
/// `websocket::responses_upgrade`), so upgraded sockets count against the cap too.
#[derive(Clone)]
pub struct ConnectionSlot(
    #[expect(dead_code, reason = "held for its Drop")] Arc<OwnedSemaphorePermit>,
);

/// Serves `app` on `listener`, each connection on one of `lanes`, until `shutdown`
/// resolves; then lets open requests finish and stops the lanes.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ListenerLimits,
    lanes: Lanes,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let idle = Arc::new(AtomicUsize::new(0));
    let (closing, closing_rx) = watch::channel(false);
    // Every connection task holds a receiver; `closed()` on the sender waits for them all.
    let (open, open_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // The slot is taken before the accept, so a client past the cap waits in the
        // kernel's backlog instead of costing a task and a buffer.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(e) => {
                pause_after_accept_error(e).await;
                continue;
            }
        };
        let connection = Connection {
            app: app.clone(),
            limits,
            slot: ConnectionSlot(Arc::new(permit)),
            idle: idle.clone(),
            closing: closing_rx.clone(),
            _open: open_rx.clone(),
        };
        lanes.spawn(tcp, move |tcp| connection.run(tcp));
    }
    drop(listener);
    drop(open_rx);
    let _ = closing.send(true);
    open.closed().await;
    drop(lanes);
}

/// Errors of one connection are retried at once; others (out of descriptors) after a pause,
/// so the loop does not spin.
async fn pause_after_accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!("accepting a connection failed: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

struct Connection {
    app: axum::Router,
    limits: ListenerLimits,
    slot: ConnectionSlot,
    idle: Arc<AtomicUsize>,
    closing: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
}

impl Connection {
    async fn run(mut self, tcp: TcpStream) {
        // Without TCP_NODELAY the last small writes of a stream wait for the client's delayed
        // ACK: measured, every turn ended about 40 ms late.
        let _ = tcp.set_nodelay(true);
        let activity = Arc::new(Activity {
            phase: Mutex::new(Phase::New),
            idle: self.idle.clone(),
            max_idle: self.limits.max_idle,
        });
        let (app, slot, requests) = (self.app.clone(), self.slot.clone(), activity.clone());
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let busy = Busy::begin(requests.clone());
            let activity = requests.clone();
            request.extensions_mut().insert(slot.clone());
            let mut app = app.clone();
            async move {
                let mut response =
                    tower_service::Service::call(&mut app, request.map(Body::new)).await?;
                // Past the idle cap this connection closes after the response: the response
                // says so, or the client may send its next request as the server closes
                // ("connection closed before message completed", seen in the soak).
                if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS
                    && activity.idle_full()
                {
                    let close = hyper::header::HeaderValue::from_static("close");
                    response
                        .headers_mut()
                        .insert(hyper::header::CONNECTION, close);
                }
                // The request counts as busy until hyper drops its body: sent, or cut.
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _ = &busy;
                        frame
                    }))
                }))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        let connection = builder
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let mut connection = std::pin::pin!(connection);
        let mut stopping = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!("connection ended: {e}");
                    }
                    break;
                }
                _ = self.closing.wait_for(|c| *c), if !stopping => {
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
        activity.close();
    }
}

/// Where a connection stands, for the idle count.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request yet (the header deadline bounds it).
    New,
    Busy,
    /// Between requests, counted in `idle`.
    Idle,
    Closed,
}

struct Activity {
    phase: Mutex<Phase>,
    idle: Arc<AtomicUsize>,
    max_idle: usize,
}

impl Activity {
    fn set(&self, next: Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if *phase == Phase::Closed {
            return;
        }
        if *phase == Phase::Idle {
            self.idle.fetch_sub(1, Ordering::Relaxed);
        }
        if next == Phase::Idle {
            self.idle.fetch_add(1, Ordering::Relaxed);
        }
        *phase = next;
    }

    fn close(&self) {
        self.set(Phase::Closed);
    }

    /// This connection going idle now would be past the cap.
    fn idle_full(&self) -> bool {
        self.idle.load(Ordering::Relaxed) >= self.max_idle
    }
}

/// One request in flight on a connection; the connection is idle again once it drops.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: Arc<Activity>) -> Busy {
        activity.set(Phase::Busy);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set(Phase::Idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(idle: &Arc<AtomicUsize>, max_idle: usize) -> Arc<Activity> {
        Arc::new(Activity {
            phase: Mutex::new(Phase::New),
            idle: idle.clone(),
            max_idle,
        })
    }

    #[test]
    fn a_response_past_the_idle_cap_closes_its_connection_and_counts_stay_exact() {
        let idle = Arc::new(AtomicUsize::new(0));
        let (first, second) = (activity(&idle, 1), activity(&idle, 1));
        assert!(!first.idle_full(), "under the cap the connection is kept");
        drop(Busy::begin(first.clone()));
        assert_eq!(idle.load(Ordering::Relaxed), 1);
        let busy = Busy::begin(second.clone());
        assert!(second.idle_full(), "the second one's response says close");
        drop(busy);
        second.close();
        assert_eq!(idle.load(Ordering::Relaxed), 1);
        // A new request on the idle connection takes it out of the count.
        let busy = Busy::begin(first.clone());
        assert_eq!(idle.load(Ordering::Relaxed), 0);
        first.close();
        // A request whose body outlives its connection (an upgrade) counts nothing after.
        drop(busy);
        assert_eq!(idle.load(Ordering::Relaxed), 0);
    }
}
