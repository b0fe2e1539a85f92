//! The history's writer: entries go into a bounded queue that never blocks the sender, and a
//! thread of its own writes them in batches. A failed write (a full disk, a file made
//! read-only) stops recording until a later try succeeds; serving never waits on it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Entry, History};

/// Entries waiting to be written at most; past it new ones are dropped (and counted).
const QUEUE: usize = 4096;
/// Entries written in one transaction at most.
const BATCH: usize = 512;
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
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) && failed_at.is_none() {
            if let Err(e) = history.prune(now_ms()) {
                tracing::warn!("{e}");
            }
            pruned_at = Some(Instant::now());
        }
        match entries.recv_timeout(PRUNE_EVERY) {
            Ok(entry) => batch.push(entry),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < BATCH {
            match entries.try_recv() {
                Ok(entry) => batch.push(entry),
                Err(_) => break,
            }
        }
        if failed_at.is_some_and(|at| at.elapsed() < RETRY) {
            state
                .dropped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
            continue;
        }
        match history.record(&batch) {
            Ok(()) => {
                if failed_at.take().is_some() {
                    tracing::info!("the usage history is written again");
                }
                state.stopped.store(false, Ordering::Relaxed);
                state
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                if failed_at.is_none() {
                    tracing::warn!(
                        "{e}; recording stops for now (routing goes on), trying again in {} s",
                        RETRY.as_secs()
                    );
                }
                failed_at = Some(Instant::now());
                state.stopped.store(true, Ordering::Relaxed);
                state
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        }
        batch.clear();
    }
}
