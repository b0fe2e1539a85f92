//! Soak: 256 concurrent Codex streams through `cma start` for ten minutes, against a fake
//! upstream on loopback that answers a fixed share of calls with a planned fault (429
//! `usage_limit_reached`, 503, or a connection closed before any byte), so the router fails
//! over to another account all along. Samples the router's resident memory and open file
//! descriptors every 10 s and prints them with PASS/MISS lines: no error the fake did not
//! cause, memory flat (last minute within 10 % of the second), no descriptor growth.
//!
//! Run: `cargo bench --no-default-features --bench soak`; `SOAK_SECS=120` shortens it.
//! `CMA_BENCH_BIN` soaks another `cma` build; `CMA_BENCH_LOG=<file>` keeps the router's
//! stderr (`RUST_LOG` is passed on). Linux only (/proc).

#[path = "../tests/integration/support/mod.rs"]
mod support;

#[allow(
    dead_code,
    reason = "the bench uses the setup helpers, not the in-process harness"
)]
#[path = "../tests/integration/harness.rs"]
mod harness;

#[expect(dead_code, reason = "shared with the proxy bench, which uses the rest")]
#[path = "proxy/measure.rs"]
mod measure;
#[allow(
    dead_code,
    reason = "shared with the proxy bench, which also starts nginx"
)]
#[path = "proxy/paths.rs"]
mod paths;

#[path = "soak/load.rs"]
mod load;
#[path = "soak/process.rs"]
mod process;
#[path = "soak/report.rs"]
mod report;

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use harness::{account, register, write_accounts, TestAccount};
use load::{lock, SharedTally};
use measure::Target;
use report::{Plan, Sample, Soak};
use support::{Behaviour, FakeOpenAi, FaultPlan};

const STREAMS: usize = 256;
const DEFAULT_SECS: u64 = 600;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// One upstream call in 20 (5 %) is a planned fault.
const FAULT_EVERY: u64 = 20;
/// A limit the fake reports resets this soon, so limited accounts come back during the run.
const LIMIT_RESETS_IN_S: u64 = 3;
/// Each account streams `DELTAS` deltas `150 + 50 * i` ms apart: 9 to 30 s a stream.
const DELTAS: usize = 60;
const ACCOUNTS: [TestAccount; 8] = [
    account("soak1@example.com", "soak-1"),
    account("soak2@example.com", "soak-2"),
    account("soak3@example.com", "soak-3"),
    account("soak4@example.com", "soak-4"),
    account("soak5@example.com", "soak-5"),
    account("soak6@example.com", "soak-6"),
    account("soak7@example.com", "soak-7"),
    account("soak8@example.com", "soak-8"),
];

fn gap(i: usize) -> Duration {
    Duration::from_millis(150 + 50 * i as u64)
}

fn faults() -> Vec<Behaviour> {
    vec![
        Behaviour::UsageLimit {
            resets_in_seconds: LIMIT_RESETS_IN_S,
        },
        Behaviour::Overloaded,
        Behaviour::Reset,
    ]
}

fn duration_from_env() -> Duration {
    let secs = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_SECS);
    // Three 10-second samples at least, so the two windows compared are not empty.
    Duration::from_secs(secs.max(30))
}

fn register_accounts(fake: &FakeOpenAi, dir: &Path) {
    let records: Vec<_> = ACCOUNTS.iter().map(|a| register(fake, a)).collect();
    write_accounts(&dir.join("openai-accounts.json"), &records);
    for (i, a) in ACCOUNTS.iter().enumerate() {
        fake.set_default_behaviour(a.id, Behaviour::events(DELTAS, gap(i)));
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            let line = c.lines().find(|l| l.starts_with("model name"))?.to_string();
            Some(line.split_once(':')?.1.trim().to_string())
        })
        .unwrap_or_default();
    format!("nproc {cpus} ({model}), load before: {}", load_average())
}

fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    if !cfg!(target_os = "linux") {
        println!("MISS the soak reads the router's memory and descriptors from /proc: Linux only");
        return;
    }
    let duration = duration_from_env();
    let fake_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fake-backend")
        .enable_all()
        .build()
        .expect("fake runtime");
    let fake = fake_runtime.block_on(FakeOpenAi::start());
    fake.set_recording(false);
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    register_accounts(&fake, dir.path());
    let (mut router_process, router) = paths::start_router(&fake, dir.path(), true);
    let plan = Plan {
        duration,
        streams: STREAMS,
        accounts: ACCOUNTS.len(),
        fault_every: FAULT_EVERY,
        faults: format!(
            "429 usage_limit_reached resetting in {LIMIT_RESETS_IN_S} s, 503 \
             server_is_overloaded, connection closed before any byte, in turn"
        ),
        shape: format!(
            "each stream {DELTAS} deltas 150-500 ms apart by account (9-30 s), the next request \
             of a session as soon as one ends"
        ),
        machine: machine(),
    };
    let pid = router_process.pid();
    let soak = client_runtime.block_on(run(&fake, &router, pid, duration));
    let router_alive = matches!(router_process.0.try_wait(), Ok(None));
    let soak = Soak {
        router_alive,
        ..soak
    };
    drop(router_process);
    drop(fake);
    report::print(&plan, &soak);
}

async fn run(fake: &FakeOpenAi, router: &Target, pid: u32, duration: Duration) -> Soak {
    // One plain request first, so a router that cannot serve at all fails loudly here; a
    // short answer queued on every account, as the router picks one (the rest go to the
    // soak's first requests).
    for a in &ACCOUNTS {
        fake.push_behaviour(a.id, Behaviour::ok());
    }
    let body = bytes::Bytes::from(harness::codex_body("soak-probe", "gpt-5.5").to_string());
    if let load::Outcome::Other(e) | load::Outcome::FakeFault(e) =
        load::stream(router, body, "soak-probe").await
    {
        panic!("the router did not serve the first request: {e}");
    }
    fake.set_fault_plan(FaultPlan::new(FAULT_EVERY, faults()));

    let tally = SharedTally::default();
    let started = Instant::now();
    let until = started + duration;
    let slots =
        (0..STREAMS).map(|i| load::run_slot(router, format!("soak-{i}"), until, tally.clone()));
    let sampler = sample(fake, pid, &tally, started, duration);
    let (samples, _) = tokio::join!(sampler, join_all(slots));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kinds = std::mem::take(&mut lock(&tally).kinds);
    Soak {
        samples,
        kinds,
        drained: process::read(pid),
        router_alive: true,
        load_after: load_average(),
    }
}

/// A sample every 10 s from `started`, the last at `started + duration`.
async fn sample(
    fake: &FakeOpenAi,
    pid: u32,
    tally: &SharedTally,
    started: Instant,
    duration: Duration,
) -> Vec<Sample> {
    let mut ticks = tokio::time::interval_at(started.into(), SAMPLE_EVERY);
    let count = duration.as_secs() / SAMPLE_EVERY.as_secs() + 1;
    let mut samples = Vec::new();
    for _ in 0..count {
        ticks.tick().await;
        let router = process::read(pid);
        let (fake_calls, faults) = fake.fault_counts();
        let mut t = lock(tally);
        let mut ttfb = std::mem::take(&mut t.ttfb_ms);
        samples.push(Sample {
            at: started.elapsed(),
            router,
            open: t.open,
            served: t.served,
            fake_errors: t.fake_faults,
            other_errors: t.other,
            fake_calls,
            faults,
            ttfb: (
                report::percentile(&mut ttfb, 50.0),
                report::percentile(&mut ttfb, 99.0),
            ),
        });
    }
    samples
}
