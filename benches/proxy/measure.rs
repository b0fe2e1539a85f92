//! One streamed request as a client sees it (time to first event, per-event delay), the
//! percentiles of many, and the resident memory of a process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::HeaderMap;

use crate::support::clock_ns;

/// Where a client sends `POST /responses`: straight to the fake, through nginx or the router.
pub struct Target {
    pub name: &'static str,
    pub url: String,
    /// Sent on every request (the fake's bearer for direct and nginx, nothing for the router).
    pub headers: HeaderMap,
    /// One keep-alive client per path, reused for the whole run.
    pub client: reqwest::Client,
}

/// What one request gave.
#[derive(Default)]
pub struct Outcome {
    /// From sending to the first body chunk holding an SSE `data:` line.
    pub ttfb: Option<Duration>,
    /// From sending to the chunk that completed the `response.completed` event.
    pub completed: Option<Duration>,
    /// Receive time minus the fake's send stamp of each `Behaviour::Timed` delta, in ns.
    pub delays_ns: Vec<u64>,
    /// Why the request counts as an error: not 200, a broken body, no `response.completed`.
    pub error: Option<String>,
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .build()
        .expect("HTTP client")
}

/// Sends one request and reads its SSE answer to the end.
pub async fn stream_once(target: &Target, body: Bytes, session: &str) -> Outcome {
    let mut outcome = Outcome::default();
    let started = Instant::now();
    let sent = target
        .client
        .post(&target.url)
        .headers(target.headers.clone())
        .header("session-id", session)
        .body(body)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            outcome.error = Some(format!("send: {e}"));
            return outcome;
        }
    };
    let status = response.status();
    let mut chunks = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let now_ns = clock_ns();
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                outcome.error = Some(format!("body: {e}"));
                return outcome;
            }
        };
        if outcome.ttfb.is_none() && contains(&chunk, b"data:") {
            outcome.ttfb = Some(started.elapsed());
        }
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(end) = find(&pending[start..], b"\n\n") {
            let event = &pending[start..start + end];
            if let Some(sent_ns) = stamp(event) {
                outcome.delays_ns.push(now_ns.saturating_sub(sent_ns));
            }
            if outcome.completed.is_none() && contains(event, b"response.completed") {
                outcome.completed = Some(started.elapsed());
            }
            start += end + 2;
        }
        pending.drain(..start);
    }
    if !status.is_success() {
        outcome.error = Some(format!("status {status}"));
    } else if outcome.completed.is_none() {
        outcome.error = Some("no response.completed".to_string());
    }
    outcome
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// The `"t":<ns>` of a stamped event.
fn stamp(event: &[u8]) -> Option<u64> {
    let at = find(event, b"\"t\":")? + 4;
    let digits: Vec<u8> = event[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// The `p`-th percentile (0..=100, nearest rank) of unsorted samples, NaNs (failed
/// requests) left out; NaN when none is left.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(samples: &[f64]) -> f64 {
    percentile(samples, 50.0)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn rss_mb(pid: u32) -> f64 {
    status_kb(pid, "VmRSS:").map_or(f64::NAN, |kb| kb as f64 / 1024.0)
}

/// Samples the peak `VmRSS` of some processes every 10 ms on its own thread until stopped.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<f64>>,
}

impl RssSampler {
    pub fn start(pids: Vec<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = vec![0.0f64; pids.len()];
            while !flag.load(Ordering::Relaxed) {
                for (peak, &pid) in peaks.iter_mut().zip(&pids) {
                    *peak = peak.max(rss_mb(pid));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peaks
        });
        RssSampler { stop, thread }
    }

    /// The peak of each process, in MB, in the order given.
    pub fn finish(self) -> Vec<f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("RSS sampler")
    }
}
