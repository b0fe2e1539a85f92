//! The pace of an account's 5-hour window: the first reading of the window kept as a baseline,
//! and when the window runs out at the rate used since. The baseline is followed through live
//! readings and, at start, through the usage history, so a restart keeps the forecast.

use super::usage::Window;

/// A reset time may be read a few seconds apart from one answer to the next; a window whose
/// reset moved by less than this is the same window.
const SAME_RESET_SECONDS: i64 = 60;
/// Less than this observed says nothing about a pace.
const MIN_OBSERVED_MS: i64 = 5 * 60_000;

/// The first reading of the current window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    /// Epoch ms of that reading.
    pub since_ms: i64,
    pub used_percent: f64,
    /// Epoch seconds.
    pub resets_at: Option<i64>,
}

impl Pace {
    /// The baseline after a reading of `window` at `at_ms`: kept while the window is the same
    /// and its usage did not drop, started again otherwise (a new window, or a reset).
    pub fn follow(baseline: Option<Pace>, at_ms: i64, window: &Window) -> Pace {
        let same_window = baseline.is_some_and(|b| {
            same_reset(b.resets_at, window.resets_at) && b.used_percent <= window.used_percent
        });
        match baseline {
            Some(b) if same_window => b,
            _ => Pace {
                since_ms: at_ms,
                used_percent: window.used_percent,
                resets_at: window.resets_at,
            },
        }
    }

    /// When `now` (the window as last read) runs out at the pace seen since the baseline (at
    /// least five minutes of it); `None` when it resets first or nothing was used.
    pub fn empty_at(&self, now: &Window, now_ms: i64) -> Option<i64> {
        let elapsed = now_ms - self.since_ms;
        let used = now.used_percent - self.used_percent;
        if elapsed < MIN_OBSERVED_MS || used <= 0.0 {
            return None;
        }
        let empty_at =
            now_ms + ((100.0 - now.used_percent).max(0.0) * elapsed as f64 / used) as i64;
        match now.resets_at {
            Some(reset) if reset * 1000 <= empty_at => None,
            _ => Some(empty_at),
        }
    }
}

fn same_reset(a: Option<i64>, b: Option<i64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < SAME_RESET_SECONDS,
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(used: f64, resets_at: i64) -> Window {
        Window {
            used_percent: used,
            window_minutes: Some(300),
            resets_at: Some(resets_at),
        }
    }

    #[test]
    fn the_pace_forecasts_when_the_window_runs_out() {
        let t0 = 1_000_000;
        let reset = t0 + 5 * 3600;
        let pace = Pace::follow(None, t0 * 1000, &window(20.0, reset));
        // 10 points in 30 minutes: the 70 left last 3.5 hours, before the reset in 4.5 hours.
        let now = (t0 + 1800) * 1000;
        let empty = pace.empty_at(&window(30.0, reset), now).expect("runs out");
        assert_eq!((empty - now) / 60_000, 210);
        // At that pace but with the reset an hour away, it resets first.
        assert_eq!(pace.empty_at(&window(30.0, t0 + 3600), now), None);
        // Too little observed: no forecast.
        assert_eq!(
            pace.empty_at(&window(30.0, reset), t0 * 1000 + 60_000),
            None
        );
    }

    #[test]
    fn the_baseline_is_kept_through_its_window_and_restarts_with_the_next() {
        let reset = 2_000_000;
        let first = Pace::follow(None, 1_000, &window(10.0, reset));
        // Later readings of the same window, its reset read a few seconds apart: kept.
        let kept = Pace::follow(Some(first), 2_000, &window(25.0, reset + 2));
        assert_eq!(kept, first);
        // A drop in usage is a reset the reading did not announce: a new baseline.
        let dropped = Pace::follow(Some(kept), 3_000, &window(5.0, reset));
        assert_eq!((dropped.since_ms, dropped.used_percent), (3_000, 5.0));
        // The next window (its reset hours later): a new baseline.
        let next = Pace::follow(Some(kept), 4_000, &window(30.0, reset + 5 * 3600));
        assert_eq!(next.since_ms, 4_000);
    }
}
