//! The soak's figures: one row per 10-second sample, the errors by kind, and a PASS/MISS
//! line per target.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::process::Reading;

/// Slack on the descriptor count: a few pooled connections may be open or closing at any
/// sample.
pub const FD_SLACK: usize = 16;
/// The last minute's mean RSS may differ from the second minute's by this share.
pub const RSS_TOLERANCE: f64 = 0.10;

/// One 10-second sample: the router's process and the client's counts so far.
pub struct Sample {
    pub at: Duration,
    /// `None` once the router is gone.
    pub router: Option<Reading>,
    pub open: usize,
    pub served: u64,
    pub fake_errors: u64,
    pub other_errors: u64,
    /// Upstream calls the fake counted and planned faults it served, so far.
    pub fake_calls: u64,
    pub faults: u64,
    /// Time to first byte of the streams served since the previous sample, ms: p50, p99.
    pub ttfb: (f64, f64),
}

/// What the run was.
pub struct Plan {
    pub duration: Duration,
    pub streams: usize,
    pub accounts: usize,
    pub fault_every: u64,
    pub faults: String,
    pub shape: String,
    pub machine: String,
}

/// Everything measured.
pub struct Soak {
    pub samples: Vec<Sample>,
    pub kinds: BTreeMap<String, u64>,
    /// The router after the streams ended and 3 s of quiet.
    pub drained: Option<Reading>,
    pub router_alive: bool,
    pub load_after: String,
}

/// The length of the two windows compared: a minute, or a third of a shorter run.
fn window(duration: Duration) -> Duration {
    (duration / 3).min(Duration::from_secs(60))
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn verdict(ok: bool, what: String) {
    println!("{} {what}", if ok { "PASS" } else { "MISS" });
}

fn print_rows(samples: &[Sample]) {
    println!(
        "{:>6} {:>9} {:>5} {:>7} {:>6} {:>8} {:>7} {:>7} {:>11} {:>9} {:>9}",
        "t (s)",
        "RSS (MB)",
        "fds",
        "threads",
        "open",
        "served",
        "faults",
        "calls",
        "fake errors",
        "other",
        "ttfb p50/p99 ms"
    );
    for s in samples {
        let r = s.router.unwrap_or_default();
        println!(
            "{:>6.0} {:>9.1} {:>5} {:>7} {:>6} {:>8} {:>7} {:>7} {:>11} {:>9} {:>9.1} / {:.1}",
            s.at.as_secs_f64(),
            r.rss_mb,
            r.fds,
            r.threads,
            s.open,
            s.served,
            s.faults,
            s.fake_calls,
            s.fake_errors,
            s.other_errors,
            s.ttfb.0,
            s.ttfb.1
        );
    }
}

pub fn print(plan: &Plan, soak: &Soak) {
    println!(
        "soak: {} concurrent streams for {} s through `cma start` (release), {} accounts in file \
         token mode; {}; every {}th upstream call a planned fault ({})",
        plan.streams,
        plan.duration.as_secs(),
        plan.accounts,
        plan.shape,
        plan.fault_every,
        plan.faults
    );
    println!("machine: {}; load after: {}", plan.machine, soak.load_after);
    print_rows(&soak.samples);
    let Some(last) = soak.samples.last() else {
        verdict(false, "no sample taken".to_string());
        return;
    };
    let requests = last.served + last.fake_errors + last.other_errors;
    println!(
        "requests {requests}: served {}, errors the fake caused {}, other errors {}; the fake \
         served {} planned faults in {} upstream calls",
        last.served, last.fake_errors, last.other_errors, last.faults, last.fake_calls
    );
    for (kind, n) in &soak.kinds {
        println!("  {n:>6}  {kind}");
    }
    // One fault rests an account for seconds; when every account rests, each session gets an
    // instant refusal and asks again at once, so these count refusals, not faults.
    println!(
        "(errors the fake caused are the router's answers while every account rested after \
         planned faults; a session asks again as soon as one ends, so they count refusals)"
    );

    let w = window(plan.duration);
    let in_second = |s: &&Sample| s.at >= w && s.at < 2 * w;
    let in_last = |s: &&Sample| s.at + w >= plan.duration;
    let rss = |pick: &dyn Fn(&&Sample) -> bool| {
        let values: Vec<f64> = soak
            .samples
            .iter()
            .filter(|s| pick(s))
            .filter_map(|s| s.router.map(|r| r.rss_mb))
            .collect();
        mean(&values)
    };
    let (rss_second, rss_last) = (rss(&in_second), rss(&in_last));
    let fds_second = soak
        .samples
        .iter()
        .filter(in_second)
        .filter_map(|s| s.router.map(|r| r.fds))
        .max();
    let fds_end = last.router.map(|r| r.fds);
    if let Some(d) = soak.drained {
        println!(
            "after the streams ended (3 s quiet): RSS {:.1} MB, {} fds, {} threads",
            d.rss_mb, d.fds, d.threads
        );
    }

    verdict(
        soak.router_alive,
        format!(
            "the router ran to the end ({})",
            if soak.router_alive { "alive" } else { "exited" }
        ),
    );
    verdict(
        last.other_errors == 0,
        format!(
            "errors not caused by the fake: {} (target 0)",
            last.other_errors
        ),
    );
    verdict(
        last.faults > 0,
        format!("failovers mixed in: {} planned faults served", last.faults),
    );
    let drift = rss_last / rss_second - 1.0;
    verdict(
        drift.abs() <= RSS_TOLERANCE,
        format!(
            "RSS flat: last {}s mean {rss_last:.1} MB vs second {}s {rss_second:.1} MB ({:+.1} %, \
             target within {:.0} %)",
            w.as_secs(),
            w.as_secs(),
            drift * 100.0,
            RSS_TOLERANCE * 100.0
        ),
    );
    let fds_ok = matches!((fds_second, fds_end), (Some(a), Some(b)) if b <= a + FD_SLACK);
    verdict(
        fds_ok,
        format!(
            "no fd growth: {} at the end vs at most {} in the second {}s (slack {FD_SLACK})",
            fds_end.map_or("-".to_string(), |n| n.to_string()),
            fds_second.map_or("-".to_string(), |n| n.to_string()),
            w.as_secs()
        ),
    );
}
