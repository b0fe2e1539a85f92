//! The dashboard window end to end: the real app driven through WebKitWebDriver under an X
//! server (`scripts/test` starts Xvfb), against the fake backend and issuer. Each test runs its
//! own app in a temp HOME with its own router and login ports; the app is single-instance per
//! session bus, so the tests take turns. Screenshots go to `target/screenshots/dashboard-*.png`.

mod driver;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;
use crate::support::{AccountSpec, Behaviour, FakeOpenAi, SeenRequest};
pub(crate) use driver::*;

/// The issuer knows a third account, C, and the next browser login signs it in.
fn c_signs_in_next(fake: &FakeOpenAi) {
    fake.add_account(AccountSpec::new("c@example.com", "acct-c", "user-acct-c"));
    fake.set_next_login("acct-c");
}

#[tokio::test]
async fn dashboard_lists_the_accounts_with_their_usage_and_the_router_address() {
    let Some(d) = Dashboard::open(|fake| {
        fake.set_usage("acct-a", 42.0, 10.0);
        fake.set_usage("acct-b", 73.0, 55.0);
    })
    .await
    else {
        return;
    };
    let address = format!("{}/v1", d.router);
    let has_address = |s: &Value| s["address"].as_str()?.contains(&address).then_some(());
    d.until("the router address", 10, has_address).await;
    let element = d.find("#router-address").await.unwrap();
    let text = d.get(&element, "text").await.expect("text");
    assert!(text.as_str().unwrap_or("").contains(&address), "{text}");
    let usage = |a: &Value| (percent(a, "primary"), percent(a, "secondary"));
    let shown = d
        .until("A at 42 %/10 % and B at 73 %/55 %", 10, |s| {
            let (a, b) = (row(s, KEY_A)?, row(s, KEY_B)?);
            let expected = [(Some(42.0), Some(10.0)), (Some(73.0), Some(55.0))];
            ([usage(a), usage(b)] == expected).then(|| s.clone())
        })
        .await;
    for (key, email) in [(KEY_A, "a@example.com"), (KEY_B, "b@example.com")] {
        let a = row(&shown, key).expect("listed");
        let seen = (a["email"].as_str(), a["plan"].as_str(), a["state"].as_str());
        assert_eq!(seen, (Some(email), Some("plus"), Some("ok")), "{a}");
    }
    let first = d.find("#accounts .account").await.expect(".account");
    let key = d.get(&first, "attribute/data-key").await.unwrap();
    assert_eq!(key, KEY_A, "accounts in file order");
    d.finish("1-accounts").await;
}

#[tokio::test]
async fn dashboard_add_account_signs_in_through_the_issuer_and_lists_the_new_account() {
    let Some(d) = Dashboard::open(c_signs_in_next).await else {
        return;
    };
    d.both_listed().await;
    let started = Instant::now();
    d.click("#add-account", 20).await.unwrap();
    let c = d.until("account C", 10, |s| row(s, KEY_C).cloned()).await;
    let took = started.elapsed();
    eprintln!("dashboard: C listed {took:.1?} after the click");
    assert_eq!(c["email"], "c@example.com", "{c}");
    let seen = d.fake.issuer_requests();
    let authorize = seen.iter().find(|r| r.path == "/oauth/authorize");
    let redirect = authorize.expect("an authorize request").body["redirect_uri"].to_string();
    let callback = format!(":{}/auth/callback", d.login_port);
    assert!(redirect.contains(&callback), "{redirect}");
    assert_eq!(d.accounts_in_file(), ["acct-a", "acct-b", "acct-c"]);
    d.finish("2-added").await;
}

#[tokio::test]
async fn dashboard_remove_asks_first_then_drops_the_account_from_the_list_and_the_file() {
    let Some(d) = Dashboard::open(|_| {}).await else {
        return;
    };
    d.both_listed().await;
    let remove = format!(".account[data-key=\"{KEY_B}\"] button[data-action=\"remove\"]");
    let confirm = remove.replace("\"remove\"", "\"confirm-remove\"");
    d.click(&remove, 20).await.unwrap();
    let asked = d.until("the confirmation", 2, |s| Some(s.clone())).await;
    assert!(row(&asked, KEY_B).is_some(), "only asks first: {asked:#}");
    assert_eq!(d.accounts_in_file(), ["acct-a", "acct-b"], "B kept");
    d.find(&confirm).await.expect("the confirm button");
    d.screenshot("3-confirm").await;
    // A refresh (every 5 s) may have redrawn the list meanwhile and dropped the confirm button.
    if d.click(&confirm, 1).await.is_err() {
        eprintln!("dashboard: the confirm button was gone after a refresh; asking again");
        d.click(&remove, 20).await.unwrap();
        d.click(&confirm, 4).await.unwrap();
    }
    let gone = |s: &Value| (row(s, KEY_B).is_none() && row(s, KEY_A).is_some()).then_some(());
    d.until("the list without B", 10, gone).await;
    assert_eq!(d.accounts_in_file(), ["acct-a"], "B removed from the file");
    d.finish("3-removed").await;
}

#[tokio::test]
async fn dashboard_shows_a_usage_limit_within_seconds() {
    let Some(d) = Dashboard::open(|_| {}).await else {
        return;
    };
    let shown = d.both_listed().await;
    assert_eq!(row(&shown, KEY_A).unwrap()["state"], "ok", "{shown:#}");
    let limit = Behaviour::UsageLimit {
        resets_in_seconds: 3600,
    };
    d.fake.push_behaviour("acct-a", limit);
    let notifications = crate::tray::Notifications::watch();
    let started = Instant::now();
    // Sticky in file order: A answers 429 usage_limit_reached and B takes the request over.
    let body = codex_body("dash-limit", "gpt-5.5").to_string();
    let request = d.http.post(format!("{}/v1/responses", d.router));
    let request = request.header("content-type", "application/json");
    let request = request.header("session-id", "dash-limit").body(body);
    let response = request.send().await.expect("the router answers");
    assert_eq!(response.status(), 200, "B takes over");
    assert_eq!(served_by(&response), "acct-b");
    let _ = response.bytes().await;
    let asked_a = |r: &SeenRequest| r.account_id.as_deref() == Some("acct-a");
    assert!(d.fake.requests().iter().any(asked_a), "A was asked first");
    let limited = |s: &Value| (row(s, KEY_A)?["state"] == "limited").then(|| s.clone());
    let shown = d.until("A limited", 10, limited).await;
    let took = started.elapsed();
    eprintln!("dashboard: A shown limited {took:.1?} after the request");
    assert_eq!(row(&shown, KEY_B).unwrap()["state"], "ok", "{shown:#}");
    let reset = row(&shown, KEY_A).unwrap()["reset"].to_string();
    assert!(reset.contains(|c: char| c.is_ascii_digit()), "{reset}");
    d.until("the request in #recent", 10, |s| {
        let rows = s["recent"].as_array()?;
        let seen = |r: &Value| r.as_str().is_some_and(|r| r.contains("gpt-5.5"));
        rows.iter().any(seen).then_some(())
    })
    .await;
    let told = notifications.titled("a@example.com reached its usage limit");
    assert_eq!(told.len(), 1, "one notification: {:?}", notifications.all());
    d.finish("4-limited").await;
}

#[tokio::test]
async fn dashboard_usage_link_opens_in_the_system_browser_once() {
    let Some(d) = Dashboard::open(|_| {}).await else {
        return;
    };
    d.both_listed().await;
    d.click("#usage-link", 20).await.unwrap();
    for _ in 0..40 {
        if !d.opened().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        d.opened(),
        ["https://chatgpt.com/codex/settings/usage"],
        "opened once"
    );
    let title = d.cmd(Method::GET, "/title", None).await;
    assert_eq!(
        title,
        Ok(json!("Codex App Account Router")),
        "the window stays on the dashboard"
    );
    d.finish("5-link").await;
}

#[tokio::test]
async fn dashboard_relogin_says_so_when_the_browser_signed_in_someone_else() {
    let Some(d) = Dashboard::open(c_signs_in_next).await else {
        return;
    };
    d.both_listed().await;
    let relogin = format!(".account[data-key=\"{KEY_B}\"] button[data-action=\"relogin\"]");
    d.click(&relogin, 20).await.unwrap();
    let notice = d
        .until("a notice naming both accounts", 10, |s| {
            let n = s["notice"].as_str()?;
            (n.contains("c@example.com") && n.contains("not b@example.com")).then(|| n.to_string())
        })
        .await;
    assert!(notice.contains("sign out"), "says how to fix it: {notice}");
    assert_eq!(
        d.accounts_in_file(),
        ["acct-a", "acct-b", "acct-c"],
        "C kept, B kept"
    );
    d.finish("6-relogin-other").await;
}

#[tokio::test]
async fn dashboard_closed_during_a_login_the_login_still_completes() {
    let Some(mut d) = Dashboard::open(c_signs_in_next).await else {
        return;
    };
    d.both_listed().await;
    let hold = d.dir.path().join("hold");
    std::fs::write(&hold, "").expect("hold the browser");
    d.click("#add-account", 20).await.unwrap();
    d.until("the sign-in notice", 10, |s| s["notice"].as_str().map(drop))
        .await;
    d.launch_again(&["--close-dashboard"]);
    // The window is gone: the session has nothing to talk to any more.
    let mut closed = false;
    for _ in 0..40 {
        if d.cmd(Method::GET, "/title", None).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(closed, "--close-dashboard closes the window");
    std::fs::remove_file(&hold).expect("let the browser go on");
    let mut added = Vec::new();
    for _ in 0..60 {
        added = d.accounts_in_file();
        if added.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(added, ["acct-a", "acct-b", "acct-c"], "the login completed");
    // The router inside the tray app serves on.
    let health = d.http.get(format!("{}/health", d.router)).send().await;
    assert_eq!(health.map(|r| r.status().as_u16()).ok(), Some(200));
    let _ = d.cmd(Method::DELETE, "", None).await;
    d.session = None;
}

/// The settings section as shown: each row's value and note, the message and the error.
const SETTINGS: &str = r#"
const rows = {};
for (const row of document.querySelectorAll('#settings-form .setting[data-key]')) {
  const input = row.querySelector('input, select');
  rows[row.dataset.key] = { value: input.value, note: row.querySelector('.note').textContent,
    refused: row.dataset.refused === 'true' };
}
const e = document.querySelector('#error'), m = document.querySelector('#settings-message');
return { rows, startAtLogin: document.querySelector('#start-at-login').checked,
  file: document.querySelector('#settings-file').textContent,
  message: m.hidden ? null : m.textContent,
  error: e.hidden ? null : { code: e.getAttribute('data-code'), text: e.textContent } };"#;

/// Polls the settings section every 250 ms, up to 10 s, until `check` accepts it.
async fn settings_until<T>(d: &Dashboard, what: &str, check: impl Fn(&Value) -> Option<T>) -> T {
    let mut last = Value::Null;
    for _ in 0..40 {
        last = d.script(SETTINGS, true).await.unwrap_or_default();
        if let Some(found) = check(&last) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    d.screenshot("failed").await;
    panic!("the settings section did not show {what} within 10 s; it shows {last:#}");
}

#[tokio::test]
async fn dashboard_settings_are_saved_to_the_file_and_bad_values_are_refused() {
    let Some(d) = Dashboard::open(|_| {}).await else {
        return;
    };
    let file = d.dir.path().join("settings.toml");
    let shown = settings_until(&d, "its rows", |s| {
        s["rows"]["binding_ttl_secs"].is_object().then(|| s.clone())
    })
    .await;
    // The port comes from the environment here, and the section says so.
    let port = &shown["rows"]["port"];
    assert_eq!(
        port["value"],
        d.router.rsplit(':').next().unwrap(),
        "{shown:#}"
    );
    let note = port["note"].as_str().unwrap_or("");
    assert!(note.contains("CODEX_PROXY_PORT"), "{shown:#}");
    assert_eq!(shown["file"], file.display().to_string());

    // Out of range: refused with the allowed values, and nothing is written.
    let rules = [
        ("port", "0", "from 1 to 65535"),
        ("binding_ttl_secs", "soon", "number"),
        ("alert_thresholds", "80,120", "from 1 to 100"),
    ];
    for (field, bad, allowed) in rules {
        d.type_into(&format!("#setting-{field}"), bad)
            .await
            .unwrap();
        let error = settings_until(&d, &format!("{field} = {bad} refused"), |s| {
            let refused = s["rows"][field]["refused"] == true;
            (refused && s["error"]["code"] == "setting").then(|| s["error"]["text"].clone())
        })
        .await;
        let text = error.as_str().unwrap_or("").to_lowercase();
        let named = text.contains(&format!("\"{bad}\"")) && text.contains(allowed);
        assert!(named, "names the value and the rule: {error}");
    }
    assert!(!file.exists(), "a refused value writes nothing");

    // A good value goes to the file and waits for a restart, which the row says.
    d.type_into("#setting-binding_ttl_secs", "7200")
        .await
        .unwrap();
    settings_until(&d, "7200 saved", |s| {
        let row = &s["rows"]["binding_ttl_secs"];
        let restart = row["note"].as_str()?.contains("restart");
        (row["value"] == "7200" && restart && s["error"].is_null()).then_some(())
    })
    .await;
    let written = std::fs::read_to_string(&file).expect("settings.toml written");
    assert!(written.contains("binding_ttl_secs = 7200"), "{written}");

    // The alert thresholds apply at once (the tray reads them at every redraw): no restart.
    d.type_into("#setting-alert_thresholds", "90, 70")
        .await
        .unwrap();
    let message = settings_until(&d, "thresholds in use", |s| {
        let row = &s["rows"]["alert_thresholds"];
        let restart = row["note"].as_str()?.contains("restart");
        let applied = row["value"] == "70,90" && !restart && s["error"].is_null();
        applied.then(|| s["message"].clone())
    })
    .await;
    assert!(
        message.as_str().unwrap_or("").contains("in use now: 70,90"),
        "the page says it applies now: {message}"
    );
    let written = std::fs::read_to_string(&file).expect("settings.toml");
    assert!(written.contains("alert_thresholds"), "{written}");

    // Start at login: the XDG entry appears under the app's HOME.
    d.click("#start-at-login", 20).await.unwrap();
    let entry = d
        .dir
        .path()
        .join("home/.config/autostart/Codex App Account Router.desktop");
    settings_until(&d, "start at login on", |s| {
        (s["startAtLogin"] == true && entry.exists()).then_some(())
    })
    .await;
    d.finish("7-settings").await;
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
    let labels_js = "return [...document.querySelectorAll('#charts svg')]\
        .map(s => s.getAttribute('aria-label'))";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = d.script(labels_js, true).await.unwrap_or(Value::Null);
        let tokens = found
            .as_array()
            .and_then(|a| a.last())
            .and_then(Value::as_str);
        if tokens.is_some_and(|t| t.contains("a@example.com 1238")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new history charts the run: {found}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
    let labels_js = "return [...document.querySelectorAll('#charts svg')]\
        .map(s => s.getAttribute('aria-label'))";
    let deadline = Instant::now() + Duration::from_secs(20);
    let labels: Vec<String> = loop {
        let found = d.script(labels_js, true).await.unwrap_or(Value::Null);
        let labels: Vec<String> = found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let ready = labels
            .iter()
            .any(|l| l.contains("a@example.com: 5-hour") && l.contains("now 55 %"))
            && labels
                .iter()
                .any(|l| l.starts_with("Tokens served") && l.contains(RUN_AND_SEEDED_A));
        if ready {
            break labels;
        }
        assert!(
            Instant::now() < deadline,
            "the charts did not show the run: {labels:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
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
