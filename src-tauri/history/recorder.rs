//! The history's writer: entries go into a bounded queue that never blocks the sender, and a
//! thread of its own writes them once a second in one transaction. It does not wait on the
//! queue, so a request never wakes it: measured with `cargo bench --bench proxy`, a writer
//! woken by every entry cost the first byte about 0.03 ms. A failed write (a full disk, a file
//! made read-only) stops recording until a later try succeeds; serving never waits on it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Entry, History};

/// Entries waiting to be written at most (a second's worth at hundreds of requests a second);
/// past it new ones are dropped (and counted).
const QUEUE: usize = 16 * 1024;
/// How often the queue is written out.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// After a failed write, the next try waits this long (entries meanwhile are dropped).
const RETRY: Duration = Duration::from_secs(60);
/// Old rows are pruned this often.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// The sending side; clones share one writer.
#[derive(Clone)]
pub struct Recorder {
    queue: SyncSender<Entry>,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// Set while writes fail.
    stopped: AtomicBool,
    dropped: AtomicU64,
    written: AtomicU64,
}

impl Recorder {
    /// Starts the writer thread for `history`.
    pub fn start(history: History, now_ms: fn() -> i64) -> std::io::Result<Recorder> {
        let (queue, entries) = mpsc::sync_channel(QUEUE);
        let state = Arc::new(State::default());
        let writer = state.clone();
        std::thread::Builder::new()
            .name("history-writer".to_string())
            .spawn(move || write_until_closed(history, entries, &writer, now_ms))?;
        Ok(Recorder { queue, state })
    }

    /// Queues `entry`, never waiting: dropped when the queue is full. While writes fail the
    /// writer drops what comes, and tries again after `RETRY`.
    pub fn record(&self, entry: Entry) {
        match self.queue.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.state.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether writes are failing now (shown by the app).
    pub fn stopped(&self) -> bool {
        self.state.stopped.load(Ordering::Relaxed)
    }

    /// Entries written so far, and dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.state.written.load(Ordering::Relaxed),
            self.state.dropped.load(Ordering::Relaxed),
        )
    }
}

fn write_until_closed(
    mut history: History,
    entries: Receiver<Entry>,
    state: &State,
    now_ms: fn() -> i64,
) {
    let mut failed_at: Option<Instant> = None;
    let mut pruned_at: Option<Instant> = None;
    let mut batch = Vec::new();
    loop {
        if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) && failed_at.is_none() {
            if let Err(e) = history.prune(now_ms()) {
                tracing::warn!("{e}");
            }
            pruned_at = Some(Instant::now());
        }
        std::thread::sleep(FLUSH_EVERY);
        let closed = loop {
            match entries.try_recv() {
                Ok(entry) => batch.push(entry),
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if !batch.is_empty() {
            write(&mut history, &mut batch, state, &mut failed_at);
        }
        if closed {
            return;
        }
    }
}

/// Writes `batch` (and empties it), or counts it dropped while writes fail.
fn write(
    history: &mut History,
    batch: &mut Vec<Entry>,
    state: &State,
    failed_at: &mut Option<Instant>,
) {
    let n = batch.len() as u64;
    if failed_at.is_some_and(|at| at.elapsed() < RETRY) {
        state.dropped.fetch_add(n, Ordering::Relaxed);
        batch.clear();
        return;
    }
    match history.record(batch) {
        Ok(()) => {
            if failed_at.take().is_some() {
                tracing::info!("the usage history is written again");
            }
            state.stopped.store(false, Ordering::Relaxed);
            state.written.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => {
            if failed_at.is_none() {
                tracing::warn!(
                    "{e}; recording stops for now (routing goes on), trying again in {} s",
                    RETRY.as_secs()
                );
            }
            *failed_at = Some(Instant::now());
            state.stopped.store(true, Ordering::Relaxed);
            state.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
    batch.clear();
}
