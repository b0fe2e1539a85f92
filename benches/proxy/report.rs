//! Samples per path, and the printed table: medians, ratios, a PASS/MISS line per target.

use std::time::Duration;

use crate::measure::{median, ms, percentile, Outcome};

/// Indices into the targets and every per-path vector: direct, nginx, router.
pub const DIRECT: usize = 0;
pub const NGINX: usize = 1;
pub const ROUTER: usize = 2;
/// The same router build with `CODEX_PROXY_HISTORY=0`, in a first-byte phase of its own.
pub const QUIET: usize = 3;
const NAMES: [&str; 3] = ["direct", "nginx", "router"];

/// One path's results in one phase, in ms.
#[derive(Default, Clone)]
pub struct Samples {
    /// Per request in order; NaN for a failed one, so rounds stay paired across paths.
    pub ttfb: Vec<f64>,
    /// Time to `response.completed`, per request like `ttfb`.
    pub done: Vec<f64>,
    /// Every stamped event's forwarding delay, pooled.
    pub delays: Vec<f64>,
    /// The p99 delay of each run (one stream, or one burst of concurrent streams).
    pub run_p99: Vec<f64>,
    pub errors: usize,
    pub requests: usize,
    pub first_error: Option<String>,
}

impl Samples {
    pub fn add(&mut self, outcome: Outcome) {
        self.requests += 1;
        if let Some(e) = &outcome.error {
            self.errors += 1;
            self.first_error.get_or_insert_with(|| e.clone());
        }
        let ok = outcome.error.is_none();
        self.ttfb
            .push(outcome.ttfb.filter(|_| ok).map_or(f64::NAN, ms));
        self.done
            .push(outcome.completed.filter(|_| ok).map_or(f64::NAN, ms));
        let delays = outcome.delays_ns.iter().map(|&ns| ns as f64 / 1e6);
        self.delays.extend(delays);
    }

    /// Closes a run whose delays start at index `from`.
    pub fn close_run(&mut self, from: usize) {
        if self.delays.len() > from {
            self.run_p99.push(percentile(&self.delays[from..], 99.0));
        }
    }

    fn p(&self, q: f64) -> f64 {
        percentile(&self.delays, q)
    }
}

/// Median over paired rounds of (path − direct), for TTFB or time to completion.
fn added(direct: &[f64], path: &[f64]) -> f64 {
    let diffs: Vec<f64> = path.iter().zip(direct).map(|(p, d)| p - d).collect();
    median(&diffs)
}

/// Everything one run measured.
pub struct Results {
    pub ttfb: Vec<Samples>,
    pub events: Vec<Samples>,
    /// Direct, the router and the router without history (`QUIET`), first byte only.
    pub history: Vec<Samples>,
    pub loaded: Vec<Samples>,
    pub large: Vec<Samples>,
    /// Router, nginx: RSS idle after warm-up, peak during the concurrent streams.
    pub idle: [f64; 2],
    pub peak: [f64; 2],
    /// Router RSS: at start, idle after the load, peak with 20 MB bodies, idle at the end.
    pub router_rss: [f64; 4],
    pub seconds: f64,
}

/// What the run did, for the header line.
pub struct Plan {
    pub rounds: [usize; 4],
    pub event_deltas: usize,
    pub event_gap: Duration,
    pub streams: usize,
    pub load_deltas: usize,
    pub load_gap: Duration,
}

fn f(x: f64) -> String {
    if x.is_nan() {
        "-".to_string()
    } else {
        format!("{x:.3}")
    }
}

fn pair(a: f64, b: f64) -> String {
    format!("{} / {}", f(a), f(b))
}

fn row(label: &str, cells: [String; 3]) {
    println!(
        "{label:<36}{:>16}{:>16}{:>16}",
        cells[0], cells[1], cells[2]
    );
}

fn verdict(ok: bool, what: String) {
    println!("{} {what}", if ok { "PASS" } else { "MISS" });
}

fn machine(nginx: &str) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            let line = c.lines().find(|l| l.starts_with("model name"))?.to_string();
            Some(line.split_once(':')?.1.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_string();
    format!(
        "nproc {cpus} ({model}), Linux {}, {nginx}, load {load}",
        kernel.trim()
    )
}

pub fn print(r: &Results, plan: &Plan, nginx: &str) {
    let all = [DIRECT, NGINX, ROUTER];
    let (ttfb, events, loaded, large) = (&r.ttfb, &r.events, &r.loaded, &r.large);
    let add_ttfb = all.map(|i| added(&ttfb[DIRECT].ttfb, &ttfb[i].ttfb));
    let add_done = all.map(|i| added(&ttfb[DIRECT].done, &ttfb[i].done));
    let run_p99 = all.map(|i| median(&events[i].run_p99));
    let big_added = added(&large[DIRECT].ttfb, &large[ROUTER].ttfb);
    let not_direct = |v: [f64; 3]| all.map(|i| f(if i == DIRECT { f64::NAN } else { v[i] }));
    let [rounds_ttfb, rounds_events, rounds_load, rounds_big] = plan.rounds;

    println!();
    println!("cma proxy benchmark: {}", machine(nginx));
    println!(
        "rounds: {rounds_ttfb} TTFB, {rounds_events} x {} events {} ms apart, {rounds_load} x {} \
         streams of {} events {} ms apart, {rounds_big} x 20 MB body; {:.1} s",
        plan.event_deltas,
        plan.event_gap.as_millis(),
        plan.streams,
        plan.load_deltas,
        plan.load_gap.as_millis(),
        r.seconds
    );
    row("", NAMES.map(String::from));
    let ttfb_p = |i: usize| pair(median(&ttfb[i].ttfb), percentile(&ttfb[i].ttfb, 90.0));
    row("TTFB p50 / p90 (ms)", all.map(ttfb_p));
    row("added TTFB vs direct (ms)", not_direct(add_ttfb));
    row(
        "to response.completed p50 (ms)",
        all.map(|i| f(median(&ttfb[i].done))),
    );
    row("added to response.completed (ms)", not_direct(add_done));
    let delay_p = |s: &Samples| pair(s.p(50.0), s.p(99.0));
    row(
        "event delay p50 / p99 pooled (ms)",
        all.map(|i| delay_p(&events[i])),
    );
    row(
        "event delay p99, median of runs (ms)",
        all.map(|i| f(run_p99[i])),
    );
    let added_p99 = all.map(|i| run_p99[i] - run_p99[DIRECT]);
    row("added event delay p99 (ms)", not_direct(added_p99));
    let streams = plan.streams;
    let errors = |s: &Samples| format!("{} / {}", s.errors, s.requests);
    row(
        &format!("{streams} streams: errors / streams"),
        all.map(|i| errors(&loaded[i])),
    );
    let load_ttfb = |i: usize| pair(median(&loaded[i].ttfb), percentile(&loaded[i].ttfb, 99.0));
    row(
        &format!("{streams} streams: TTFB p50 / p99 (ms)"),
        all.map(load_ttfb),
    );
    row(
        &format!("{streams} streams: delay p50 / p99 (ms)"),
        all.map(|i| delay_p(&loaded[i])),
    );
    let rss = [
        "-".to_string(),
        pair(r.idle[1], r.peak[1]),
        pair(r.idle[0], r.peak[0]),
    ];
    row(&format!("RSS idle / peak {streams} streams (MB)"), rss);
    let big = |i: usize| f(median(&large[i].ttfb));
    row(
        "20 MB body: TTFB p50 (ms)",
        [big(DIRECT), "-".into(), big(ROUTER)],
    );
    let [start, after_load, big_peak, end] = r.router_rss;
    println!(
        "router RSS (MB): {} at start, {} idle after the streams, {} peak with 20 MB bodies, \
         {} idle after them",
        f(start),
        f(after_load),
        f(big_peak),
        f(end)
    );
    println!(
        "ratios: router/nginx added TTFB = {:.2}; router/direct TTFB = {:.2}; \
         router/nginx event delay p99 = {:.2}",
        add_ttfb[ROUTER] / add_ttfb[NGINX],
        median(&ttfb[ROUTER].ttfb) / median(&ttfb[DIRECT].ttfb),
        run_p99[ROUTER] / run_p99[NGINX],
    );
    if add_done[ROUTER] > 1.0 {
        println!(
            "note: the router delays the end of a stream by {} ms; ~40 ms is the signature of \
             Nagle's algorithm meeting delayed ACKs (a socket without TCP_NODELAY)",
            f(add_done[ROUTER])
        );
    }
    let phases = [
        ("TTFB", ttfb),
        ("events", events),
        ("streams", loaded),
        ("20 MB", large),
    ];
    for (phase, samples) in phases {
        for (name, s) in NAMES.iter().zip(samples) {
            if let Some(e) = &s.first_error {
                println!("note: {phase}: {name} had {} errors, first: {e}", s.errors);
            }
        }
    }

    // What recording the history costs: the same build with and without it, same rounds.
    let h = &r.history;
    let (with, without) = (
        added(&h[DIRECT].ttfb, &h[ROUTER].ttfb),
        added(&h[DIRECT].ttfb, &h[QUIET].ttfb),
    );
    println!(
        "history recording (rounds of its own): added TTFB {} ms with it, {} ms without",
        f(with),
        f(without)
    );

    let (router, nginx) = (add_ttfb[ROUTER], add_ttfb[NGINX]);
    verdict(
        with - without <= 0.02,
        format!(
            "recording the history adds {} ms to the first byte (<= 0.02 ms)",
            f(with - without)
        ),
    );
    verdict(
        router <= nginx,
        format!("added TTFB {} ms <= nginx's {} ms", f(router), f(nginx)),
    );
    verdict(
        router < 0.3,
        format!("added TTFB {} ms < 0.3 ms", f(router)),
    );
    verdict(
        run_p99[ROUTER] < 1.0,
        format!(
            "per-event delay p99 through the router {} ms < 1 ms",
            f(run_p99[ROUTER])
        ),
    );
    let (errors, requests) = (loaded[ROUTER].errors, loaded[ROUTER].requests);
    verdict(
        errors == 0 && requests > 0,
        format!("{errors} errors in {requests} router streams, {streams} at a time"),
    );
    verdict(
        r.idle[0] < 15.0,
        format!("router RSS idle {} MB < 15 MB", f(r.idle[0])),
    );
    verdict(
        r.peak[0] < 40.0,
        format!(
            "router RSS with {streams} streams {} MB < 40 MB",
            f(r.peak[0])
        ),
    );
    verdict(
        big_added < 20.0,
        format!("a 20 MB request body adds {} ms < 20 ms", f(big_added)),
    );
}
