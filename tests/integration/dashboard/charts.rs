//! The usage charts end to end: a run against the fake over six seeded days, drawn in the
//! light and the dark theme with their contrast and layout measured, and a history file that
//! could not be read, moved aside and started anew.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::driver::*;
use super::{c_signs_in_next, row};
use crate::harness::*;
use crate::support::FakeOpenAi;

/// Polls what the charts say (each chart's aria-label, in order) every 500 ms, up to 20 s,
/// until `check` accepts it.
async fn labels_until<T>(d: &Dashboard, what: &str, check: impl Fn(&[String]) -> Option<T>) -> T {
    let js = "return [...document.querySelectorAll('#charts svg')]\
        .map(s => s.getAttribute('aria-label'))";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = d.script(js, true).await.unwrap_or(Value::Null);
        let labels: Vec<String> = found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(seen) = check(&labels) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "the charts did not show {what}: {labels:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Six days of earlier history in the app's file (the app has it open, as another `cma` would),
/// so the charts have a week to draw: each account's 5-hour window fills and resets every 5
/// hours, its weekly one climbs, and it serves some tokens a day.
fn seed_last_week(d: &Dashboard) {
    use router::history::{Entry, History, Tokens, UsageReading, FILE_NAME};
    let path = d.dir.path().join(FILE_NAME);
    let now = router::accounts::now_ms();
    let (mut history, _) = History::open(&path, now).expect("the app's history");
    let hour = 3_600_000;
    let mut entries = Vec::new();
    // A was labelled "personal" until today: its week is still A's.
    for (key, account, pace) in [(KEY_A, "personal", 14.0), (KEY_B, "b@example.com", 9.0)] {
        for h in (12..=6 * 24).rev() {
            let at = now - h * hour;
            let in_window = (6 * 24 - h) % 5;
            let window_end = at + (5 - in_window) * hour;
            let usage = |window, used_percent: f64, resets_at: i64| {
                Entry::Usage(UsageReading {
                    at,
                    account: account.to_string(),
                    key: key.to_string(),
                    window,
                    used_percent: used_percent.min(100.0),
                    window_minutes: None,
                    resets_at: Some(resets_at / 1000),
                })
            };
            entries.push(usage("primary", pace * (in_window + 1) as f64, window_end));
            let week = (6 * 24 - h) as f64 * pace / 40.0;
            entries.push(usage("secondary", week, now + 2 * 24 * hour));
            if h % 24 == 0 {
                entries.push(Entry::Tokens(Tokens {
                    at,
                    account: account.to_string(),
                    key: key.to_string(),
                    input: (pace * 20_000.0) as i64,
                    output: (pace * 900.0) as i64,
                    cached: (pace * 12_000.0) as i64,
                }));
            }
        }
    }
    history.record(&entries).expect("seeded");
}

/// A's tokens in the chart: six seeded days of 14 × 20,900 and two responses of 1,238.
const RUN_AND_SEEDED_A: &str = "a@example.com 1758076";

/// Sends one Codex request through the app's router, pinned to `key` when given, and reads
/// the whole stream.
async fn served(d: &Dashboard, session: &str, key: Option<&str>) {
    let body = codex_body(session, "gpt-5.5").to_string();
    let mut request = d.http.post(format!("{}/v1/responses", d.router));
    request = request.header("content-type", "application/json");
    request = request.header("session-id", session);
    if let Some(key) = key {
        request = request.header("x-cma-account", key);
    }
    let response = request.body(body).send().await.expect("the router answers");
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await;
}

#[tokio::test]
async fn dashboard_charts_a_runs_usage_with_resets_forecast_pool_and_tokens() {
    charts_of_a_run(None, "5-charts").await;
}

/// The same charts with GTK in its dark theme: the page follows it, and every line, bar and
/// label keeps its contrast against the dark card.
#[tokio::test]
async fn dashboard_charts_are_readable_in_the_dark_theme() {
    charts_of_a_run(Some("Adwaita:dark"), "5-charts-dark").await;
}

/// A history file that is not a database: the page says it was moved aside, the run is
/// recorded in a new one and charted.
#[tokio::test]
async fn dashboard_says_an_unreadable_history_was_moved_aside_and_records_anew() {
    let junk = |dir: &std::path::Path| {
        std::fs::write(dir.join("history.sqlite"), b"not a database, ".repeat(512))
            .expect("junk history");
    };
    let Some(d) = Dashboard::open_as(c_signs_in_next, None, junk).await else {
        return;
    };
    let notice = d
        .until("the history notice", 10, |s| {
            s["notice"].as_str().map(str::to_string)
        })
        .await;
    assert!(
        notice.contains("could not be used") && notice.contains("history.sqlite.corrupt-"),
        "says what happened and where the file went: {notice}"
    );
    let moved: Vec<_> = std::fs::read_dir(d.dir.path())
        .expect("the folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("history.sqlite.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "moved aside once: {moved:?}");
    let kept = std::fs::read(d.dir.path().join(&moved[0])).expect("the old file");
    assert_eq!(kept, b"not a database, ".repeat(512), "moved untouched");
    // A login's notices come and go; the history's is said again after them.
    d.click("#add-account", 20).await.unwrap();
    d.until("account C", 10, |s| row(s, KEY_C).map(drop)).await;
    let after = d
        .until("the history notice again", 10, |s| {
            let n = s["notice"].as_str()?;
            n.contains("could not be used").then(|| n.to_string())
        })
        .await;
    assert_eq!(after, notice, "the same notice");
    served(&d, "after-junk", None).await;
    labels_until(&d, "the run in the new history", |labels| {
        let tokens = labels.last()?;
        tokens.contains("a@example.com 1238").then_some(())
    })
    .await;
    d.finish("8-history-moved-aside").await;
}

/// Minimum contrast (WCAG 2.1) of each kind of chart mark against the chart's card, and
/// whether the page is in its dark scheme.
const CONTRAST: &str = r#"
const rgb = (s) => (s.match(/[\d.]+/g) || []).slice(0, 3).map(Number);
const lum = (c) => c.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
  .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
const card = rgb(getComputedStyle(document.querySelector('#charts .chart-box')).backgroundColor);
const worst = {};
for (const [css, prop] of [['path.line', 'stroke'], ['path.forecast', 'stroke'], ['rect.day-bar', 'fill'],
    ['text.axis', 'fill'], ['line.reset', 'stroke'], ['line.now', 'stroke'], ['figcaption', 'color']]) {
  for (const el of document.querySelectorAll('#charts ' + css)) {
    const c = ratio(rgb(getComputedStyle(el)[prop]), card);
    worst[css] = Math.min(worst[css] ?? 99, Math.round(c * 100) / 100);
  }
}
return { dark: matchMedia('(prefers-color-scheme: dark)').matches, cardLuminance: lum(card), worst };"#;

/// How the charts came out: the tallest token bar's height (the plot is 122 units high) and
/// the axis labels that stick out of their chart (640 units wide).
const LAYOUT: &str = r#"
const bars = [...document.querySelectorAll('#charts rect.day-bar')].map((r) => r.getBBox().height);
const cut = [...document.querySelectorAll('#charts text.axis')].filter((t) => {
  const b = t.getBBox(); return b.x < 0 || b.x + b.width > 640; }).map((t) => t.textContent);
return { tallestBar: Math.max(0, ...bars), cut };"#;

/// A run against the fake over six seeded days, charted, in `gtk_theme` (the default when
/// `None`); the screenshot is `target/screenshots/dashboard-<shot>.png`.
async fn charts_of_a_run(gtk_theme: Option<&str>, shot: &str) {
    let prepare = |fake: &FakeOpenAi| {
        fake.set_usage("acct-a", 35.0, 12.0);
        fake.set_usage("acct-b", 70.0, 40.0);
    };
    let Some(d) = Dashboard::open_as(prepare, gtk_theme, |_| {}).await else {
        return;
    };
    d.both_listed().await;
    seed_last_week(&d);
    served(&d, "chart-1", None).await;
    served(&d, "chart-2", Some(KEY_B)).await;
    // A's usage climbs as it serves: the chart gets a second reading and a pace.
    d.fake.set_usage("acct-a", 55.0, 14.0);
    served(&d, "chart-3", None).await;
    let labels = labels_until(&d, "the run", |labels| {
        let ready = labels
            .iter()
            .any(|l| l.contains("a@example.com: 5-hour") && l.contains("now 55 %"))
            && labels
                .iter()
                .any(|l| l.starts_with("Tokens served") && l.contains(RUN_AND_SEEDED_A));
        ready.then(|| labels.to_vec())
    })
    .await;
    eprintln!("dashboard: charts say {labels:#?}");
    assert_eq!(
        labels.len(),
        4,
        "A, B, the pool and the tokens: {labels:#?}"
    );
    let a = &labels[0];
    assert!(a.contains("and 14 %"), "A's weekly figure: {a}");
    assert!(
        a.contains("resets marked"),
        "the seeded week has resets: {a}"
    );
    let b = &labels[1];
    assert!(
        b.starts_with("b@example.com: 5-hour") && b.contains("now 70 %"),
        "{b}"
    );
    assert!(
        labels[2].contains("summed over 2 accounts: now 75"),
        "(100-55)+(100-70): {}",
        labels[2]
    );
    // Tokens: the seeded days plus the run's responses, 1234 input and 4 output tokens each
    // as the fake says (A served two, B one).
    let tokens = &labels[3];
    assert!(tokens.contains(RUN_AND_SEEDED_A), "{tokens}");
    assert!(tokens.contains("b@example.com 1129838"), "{tokens}");
    // Drawn: lines for both windows, resets, and the forecast ahead of now.
    let count = |css: &str| format!("return document.querySelectorAll('{css}').length");
    for (css, at_least) in [
        ("#charts svg path.line.primary", 2),
        ("#charts svg path.line.secondary", 2),
        ("#charts svg line.reset", 2),
        ("#charts svg path.forecast", 2),
        ("#charts svg rect.day-bar", 2),
        ("#charts figure p.sr-only", 4),
    ] {
        let n = d.script(&count(css), true).await.unwrap_or(Value::Null);
        assert!(n.as_u64().unwrap_or(0) >= at_least, "{css}: {n}");
    }
    // Readable: text at least 4.5:1 against its card, lines and bars at least 3:1 (WCAG 2.1
    // AA, 1.4.3 and 1.4.11), in the theme asked for.
    let drawn = d.script(LAYOUT, true).await.unwrap_or(Value::Null);
    let tallest = drawn["tallestBar"].as_f64().unwrap_or(0.0);
    assert!(
        tallest > 100.0,
        "the busiest day's bar stands {tallest} of 122 high: {drawn}"
    );
    assert_eq!(
        drawn["cut"],
        json!([]),
        "every label inside its chart: {drawn}"
    );
    let seen = d.script(CONTRAST, true).await.unwrap_or(Value::Null);
    eprintln!("dashboard: chart contrast {seen}");
    let dark = gtk_theme.is_some_and(|t| t.ends_with(":dark"));
    assert_eq!(seen["dark"], dark, "the page follows the theme: {seen}");
    let card = seen["cardLuminance"].as_f64().unwrap_or(-1.0);
    assert!(
        if dark { card < 0.1 } else { card > 0.8 },
        "the card is {} as the theme: {seen}",
        if dark { "dark" } else { "light" }
    );
    for (css, least) in [
        ("text.axis", 4.5),
        ("figcaption", 4.5),
        ("path.line", 3.0),
        ("path.forecast", 3.0),
        ("rect.day-bar", 3.0),
        ("line.reset", 3.0),
        ("line.now", 3.0),
    ] {
        let ratio = seen["worst"][css].as_f64().unwrap_or(0.0);
        assert!(
            ratio >= least,
            "{css} at {ratio}:1, at least {least}:1: {seen}"
        );
    }
    // The light shot shows the accounts' charts, the dark one the pool's and the tokens'.
    let scroll = if dark {
        "document.querySelector('#charts figure:last-child').scrollIntoView({block: 'end'})"
    } else {
        "document.querySelector('#history').scrollIntoView()"
    };
    d.script(scroll, true).await.ok();
    d.finish(shot).await;
}
