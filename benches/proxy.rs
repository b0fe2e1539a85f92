//! What the router adds to a Codex stream, against the same fake backend reached straight and
//! through Debian's nginx as a streaming reverse proxy, all measured in one run, round by
//! round in rotating order so drift and noise hit every path alike.
//!
//! Run: `cargo bench --no-default-features --bench proxy` (needs /usr/sbin/nginx).
//! `CMA_BENCH_ROUNDS=ttfb,events,streams,big` changes the rounds per phase (default
//! 200,20,6,10); `CMA_BENCH_BIN` measures another `cma` build; `CMA_BENCH_LOG=<file>` keeps
//! the router's stderr (`RUST_LOG` is passed on).
//!
//! The fake serves on its own one-worker runtime thread and the client on a current-thread
//! runtime on the main thread, so the fake's send stamps never wait behind the client's
//! parsing and the client never queues behind the fake; the router (`cma start`, 2 workers)
//! and nginx (1 worker) are separate processes.

#[path = "../tests/integration/support/mod.rs"]
mod support;

#[allow(
    dead_code,
    reason = "the bench uses the setup helpers, not the in-process harness"
)]
#[path = "../tests/integration/harness.rs"]
mod harness;

#[path = "proxy/measure.rs"]
mod measure;
#[path = "proxy/paths.rs"]
mod paths;
#[path = "proxy/report.rs"]
mod report;
#[path = "proxy/websocket.rs"]
mod websocket;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use serde_json::json;

use measure::{rss_mb, stream_once, RssSampler, Target};
use report::{Plan, Results, Samples, DIRECT, NGINX, QUIET, ROUTER};
use support::{Behaviour, FakeOpenAi};

const EVENT_DELTAS: usize = 100;
const EVENT_GAP: Duration = Duration::from_millis(2);
const STREAMS: usize = 64;
const LOAD_DELTAS: usize = 20;
const LOAD_GAP: Duration = Duration::from_millis(5);
const BIG_BYTES: usize = 20 * 1024 * 1024;
/// Quiet time before reading an idle RSS.
const SETTLE: Duration = Duration::from_millis(1500);

fn rounds_from_env() -> [usize; 4] {
    let mut rounds = [200, 20, 6, 10];
    let given = std::env::var("CMA_BENCH_ROUNDS").unwrap_or_default();
    for (slot, value) in rounds.iter_mut().zip(given.split(',')) {
        if let Ok(n) = value.trim().parse() {
            *slot = n;
        }
    }
    rounds
}

fn set_behaviour(fake: &FakeOpenAi, b: &Behaviour) {
    for id in paths::ACCOUNTS {
        fake.set_default_behaviour(id, b.clone());
    }
}

fn body(session: &str) -> Bytes {
    Bytes::from(harness::codex_body(session, "gpt-5.5").to_string())
}

/// The paths of round `round`, rotated so each goes first, second and last equally often.
fn order(round: usize, of: &[usize]) -> Vec<usize> {
    (0..of.len()).map(|i| of[(i + round) % of.len()]).collect()
}

/// `rounds` rounds of one request per path in `of`, one session throughout (as a Codex
/// conversation would be).
async fn single(targets: &[Target], of: &[usize], rounds: usize, b: &Bytes) -> Vec<Samples> {
    let mut samples = vec![Samples::default(); targets.len()];
    for round in 0..rounds {
        for i in order(round, of) {
            let from = samples[i].delays.len();
            samples[i].add(stream_once(&targets[i], b.clone(), "bench-single").await);
            samples[i].close_run(from);
        }
    }
    samples
}

/// `rounds` rounds of `STREAMS` concurrent streams (one session each) per path.
async fn load(targets: &[Target], rounds: usize) -> Vec<Samples> {
    let mut samples = vec![Samples::default(); targets.len()];
    let bodies: Vec<(String, Bytes)> = (0..STREAMS)
        .map(|i| format!("bench-load-{i}"))
        .map(|session| (session.clone(), body(&session)))
        .collect();
    for round in 0..rounds {
        for i in order(round, &[DIRECT, NGINX, ROUTER]) {
            let streams = bodies
                .iter()
                .map(|(session, b)| stream_once(&targets[i], b.clone(), session));
            let from = samples[i].delays.len();
            for outcome in join_all(streams).await {
                samples[i].add(outcome);
            }
            samples[i].close_run(from);
        }
    }
    samples
}

fn main() {
    // Debian's nginx is the reference, and memory is read from /proc.
    if !cfg!(target_os = "linux") {
        println!("MISS the proxy benchmark needs /usr/sbin/nginx and /proc: Linux only");
        return;
    }
    let rounds = rounds_from_env();
    let fake_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fake-backend")
        .enable_all()
        .build()
        .expect("fake runtime");
    let fake = fake_runtime.block_on(FakeOpenAi::start());
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    paths::register_accounts(&fake, dir.path());
    let (router_process, router) = paths::start_router(&fake, dir.path(), true);
    let (quiet_process, quiet) = paths::start_router(&fake, dir.path(), false);
    let (nginx_process, nginx) = paths::start_nginx(&fake, dir.path());
    let targets = [paths::direct(&fake), nginx, router, quiet];
    let pids = [router_process.pid(), nginx_process.pid()];
    let results = client_runtime.block_on(run(&fake, &targets, pids, rounds));
    let ws_results = client_runtime.block_on(run_websocket(&fake, &targets, rounds));
    drop((router_process, quiet_process, nginx_process));
    drop(fake);
    let plan = Plan {
        rounds,
        event_deltas: EVENT_DELTAS,
        event_gap: EVENT_GAP,
        streams: STREAMS,
        load_deltas: LOAD_DELTAS,
        load_gap: LOAD_GAP,
    };
    report::print(&results, &plan, &paths::nginx_version());
    websocket::print(&ws_results);
}

/// WebSocket next to HTTP, direct and through the router, in the same rounds: time to the
/// first frame (`Behaviour::ok()`) and per-event delay (`Behaviour::Timed`).
async fn run_websocket(
    fake: &FakeOpenAi,
    targets: &[Target],
    rounds: [usize; 4],
) -> websocket::WsResults {
    let [ttfb_rounds, event_rounds, _, _] = rounds;
    let router_ws = targets[ROUTER].url.replacen("http://", "ws://", 1);
    let mut ws = [
        websocket::WsTarget::open("ws direct", &fake.ws_url, &targets[DIRECT].headers).await,
        websocket::WsTarget::open("ws router", &router_ws, &targets[ROUTER].headers).await,
    ];
    let http = [&targets[DIRECT], &targets[ROUTER]];
    let small = body("bench-ws");
    let frame = support::response_create(&harness::codex_body("bench-ws", "gpt-5.5")).to_string();
    set_behaviour(fake, &Behaviour::ok());
    websocket::rounds(http, &mut ws, 30, &small, &frame).await; // warm-up
    let ttfb = websocket::rounds(http, &mut ws, ttfb_rounds, &small, &frame).await;
    let (deltas, gap) = (EVENT_DELTAS, EVENT_GAP);
    set_behaviour(fake, &Behaviour::Timed { deltas, gap });
    let events = websocket::rounds(http, &mut ws, event_rounds, &small, &frame).await;
    websocket::WsResults { ttfb, events }
}

async fn run(fake: &FakeOpenAi, targets: &[Target], pids: [u32; 2], rounds: [usize; 4]) -> Results {
    let [router_pid, nginx_pid] = pids;
    let [ttfb_rounds, event_rounds, load_rounds, big_rounds] = rounds;
    let all = [DIRECT, NGINX, ROUTER];
    fake.set_recording(false);
    let started = Instant::now();
    let rss_start = rss_mb(router_pid);
    set_behaviour(fake, &Behaviour::ok());
    let small = body("bench-single");
    for target in targets {
        for _ in 0..30 {
            let outcome = stream_once(target, small.clone(), "bench-single").await;
            if let Some(e) = outcome.error {
                panic!("warm-up through {} failed: {e}", target.name);
            }
        }
    }
    tokio::time::sleep(SETTLE).await;
    let idle = pids.map(rss_mb);

    let ttfb = single(targets, &all, ttfb_rounds, &small).await;

    let (deltas, gap) = (EVENT_DELTAS, EVENT_GAP);
    set_behaviour(fake, &Behaviour::Timed { deltas, gap });
    let events = single(targets, &all, event_rounds, &small).await;
    // The router with and without its history, in rounds of their own (a second router in the
    // rounds above would share the caches with the first and slow both).
    set_behaviour(fake, &Behaviour::ok());
    let history = single(targets, &[DIRECT, ROUTER, QUIET], ttfb_rounds, &small).await;

    let (deltas, gap) = (LOAD_DELTAS, LOAD_GAP);
    set_behaviour(fake, &Behaviour::Timed { deltas, gap });
    load(targets, 1).await; // opens every path's connections before measuring
    let sampler = RssSampler::start(vec![router_pid, nginx_pid]);
    let loaded = load(targets, load_rounds).await;
    let peaks = sampler.finish();
    tokio::time::sleep(SETTLE).await;
    let idle_after_load = rss_mb(router_pid);

    set_behaviour(fake, &Behaviour::ok());
    let mut big = harness::codex_body("bench-big", "gpt-5.5");
    big["input"][0]["content"][0]["text"] = json!("x".repeat(BIG_BYTES));
    let big = Bytes::from(big.to_string());
    let sampler = RssSampler::start(vec![router_pid]);
    let large = single(targets, &[DIRECT, ROUTER], big_rounds, &big).await;
    let big_peak = sampler.finish()[0];
    let seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    Results {
        ttfb,
        events,
        history,
        loaded,
        large,
        idle,
        peak: [peaks[0], peaks[1]],
        router_rss: [rss_start, idle_after_load, big_peak, rss_mb(router_pid)],
        seconds,
    }
}
