//! The dashboard window end to end: the real app driven through WebKitWebDriver under an X
//! server (`scripts/test` starts Xvfb), against the fake backend and issuer. Each test runs its
//! own app in a temp HOME with its own router and login ports; the app is single-instance per
//! session bus, so the tests take turns. Screenshots go to `target/screenshots/dashboard-*.png`.

mod charts;
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
        message
            .as_str()
            .is_some_and(|m| m.ends_with("; in use now: 70,90") && !m.contains("restart")),
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
