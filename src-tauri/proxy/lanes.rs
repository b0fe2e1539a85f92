//! Lanes: the threads the router's connections are served on, each a one-thread runtime with
//! an upstream client of its own, so one request is read, sent upstream, answered and
//! streamed back on one thread, as nginx's workers do.
//!
//! Why not the process's multi-thread runtime: there the connection task, the upstream
//! client's connection task and the I/O driver land on different workers, and every hand-over
//! between them is a cross-thread wake-up (a futex and an eventfd write). Measured with
//! `cargo bench --bench proxy` on 2 cores: about eight of them per request, most of what the
//! router added to the first byte beyond nginx. A single one-thread runtime removes them but
//! leaves one core for 64 streams; one lane per core keeps both.

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Lanes on a machine of many cores: the router's work per request is small, and each lane
/// keeps its own idle upstream connections.
const MAX_LANES: usize = 4;
/// How long a stopping lane waits for its blocking work (a file save) before it lets go.
const STOP_WAIT: Duration = Duration::from_secs(2);

thread_local! {
    /// The upstream client of the lane this thread runs, if it runs one.
    static CLIENT: RefCell<Option<reqwest::Client>> = const { RefCell::new(None) };
}

/// The upstream client of the lane the caller runs on; `None` off the lanes. Connections
/// pooled by it were opened on this thread, so their tasks run here too.
pub fn client() -> Option<reqwest::Client> {
    CLIENT.with(|c| c.borrow().clone())
}

/// One lane per core, at most `MAX_LANES`.
pub fn count_for_machine() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_LANES)
}

/// The running lanes; dropping them stops every lane (and what still runs on it).
pub struct Lanes {
    lanes: Vec<Lane>,
    next: AtomicUsize,
}

struct Lane {
    handle: Handle,
    /// Connections this lane serves now.
    load: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    #[error("cannot start the router's lane threads: {0}")]
    Start(std::io::Error),
    #[error("the router needs at least one lane")]
    NoClient,
}

impl Lanes {
    /// Starts one lane per client in `clients` (at least one is needed), each sending
    /// upstream with its own.
    pub fn start(clients: Vec<reqwest::Client>) -> Result<Lanes, LaneError> {
        if clients.is_empty() {
            return Err(LaneError::NoClient);
        }
        let lanes = clients
            .into_iter()
            .enumerate()
            .map(|(i, client)| Lane::start(i, client))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Lanes {
            lanes,
            next: AtomicUsize::new(0),
        })
    }

    /// Serves `tcp` with `serve` on the lane with the fewest connections.
    pub fn spawn<F, Fut>(&self, tcp: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let lane = self.pick();
        // A socket belongs to the runtime that registered it: it moves as a plain socket.
        let socket = match tcp.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("a new connection could not be handed to a lane: {e}");
                return;
            }
        };
        let load = Load::take(lane.load.clone());
        lane.handle.spawn(async move {
            let _load = load;
            match TcpStream::from_std(socket) {
                Ok(tcp) => serve(tcp).await,
                Err(e) => tracing::debug!("a lane could not take a connection: {e}"),
            }
        });
    }

    /// The least loaded lane; ties go round, so idle lanes share new connections.
    fn pick(&self) -> &Lane {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.lanes.len();
        (0..n)
            .map(|i| &self.lanes[(start + i) % n])
            .min_by_key(|lane| lane.load.load(Ordering::Relaxed))
            .unwrap_or(&self.lanes[0])
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        for lane in &mut self.lanes {
            if let Some(stop) = lane.stop.take() {
                let _ = stop.send(());
            }
        }
    }
}

impl Lane {
    fn start(index: usize, client: reqwest::Client) -> Result<Lane, LaneError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(LaneError::Start)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("router-lane-{index}"))
            .spawn(move || {
                CLIENT.with(|c| *c.borrow_mut() = Some(client));
                // A dropped sender (the `Lanes` gone) stops the lane as a sent stop does.
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(STOP_WAIT);
            })
            .map_err(LaneError::Start)?;
        Ok(Lane {
            handle,
            load: Arc::new(AtomicUsize::new(0)),
            stop: Some(stop),
        })
    }
}

/// One connection counted against its lane while it lives.
struct Load(Arc<AtomicUsize>);

impl Load {
    fn take(load: Arc<AtomicUsize>) -> Load {
        load.fetch_add(1, Ordering::Relaxed);
        Load(load)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_least_loaded_lane_and_are_served_there_with_its_client() {
        let lanes = Lanes::start(vec![reqwest::Client::new(), reqwest::Client::new()]).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let (release, _) = tokio::sync::broadcast::channel::<()>(1);
        for _ in 0..4 {
            let _client = std::net::TcpStream::connect(addr).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let (seen, mut release) = (seen.clone(), release.subscribe());
            lanes.spawn(tcp, move |_tcp| async move {
                let name = std::thread::current().name().map(str::to_string);
                let _ = seen.send((name, super::client().is_some()));
                let _ = release.recv().await;
            });
            // Wait until it runs, so its load counts for the next pick.
            let (name, has_client) = seen_rx.recv().await.unwrap();
            assert!(has_client, "a lane serves with its own upstream client");
            assert!(name.unwrap().starts_with("router-lane-"));
        }
        let loads: Vec<usize> = lanes
            .lanes
            .iter()
            .map(|l| l.load.load(Ordering::Relaxed))
            .collect();
        assert_eq!(loads, vec![2, 2], "four connections spread over two lanes");
        assert!(
            super::client().is_none(),
            "off the lanes there is no lane client"
        );
        let _ = release.send(());
    }
}
