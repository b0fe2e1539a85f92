//! The tray icon and its menu end to end: the real app in a real tray host (trayer, an XEmbed
//! system tray) under the X server `scripts/test` starts, against the fake backend. The icon is
//! read back from the screen pixel by pixel, the menu is opened with a real click, and every
//! desktop notification is counted on the session bus with `dbus-monitor`. Screenshots of each
//! state (icon and open menu) go to `target/screenshots/tray-*.png`.

mod notifications;
mod screen;

use std::time::Duration;

use serde_json::json;

use crate::harness::*;
use crate::support::{Behaviour, FakeOpenAi};
pub(crate) use notifications::*;
pub(crate) use screen::*;

#[tokio::test]
async fn tray_icon_follows_the_pool_from_healthy_to_one_limited_to_all_limited() {
    let Some(tray) = Tray::start(two_accounts, None).await else {
        return;
    };
    tray.usage_known().await;
    tray.icon_shows("two healthy accounts", &[GREEN], &[RED])
        .await;
    // The bars' heights are the headroom: A (70 % left) stands taller than B (40 % left),
    // redrawn as soon as the router read the usage.
    let w = tray.icon.w as usize;
    let mut heights = (0, 0);
    for _ in 0..20 {
        let shot = pixels(tray.icon);
        let green = |left: bool| {
            let half = |i: &usize| (i % w < w / 2) == left;
            (0..shot.len())
                .filter(half)
                .filter(|i| near(shot[*i], GREEN))
                .count()
        };
        heights = (green(true), green(false));
        if heights.0 * 10 > heights.1 * 14 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        heights.0 * 10 > heights.1 * 14,
        "A's bar is taller than B's (green pixels {heights:?})"
    );
    tray.screenshot_menu("1-healthy").await;

    // A reaches its limit: B takes the request over, A's bar turns red, one notification.
    let limit = Behaviour::UsageLimit {
        resets_in_seconds: 3600,
    };
    tray.fake.push_behaviour("acct-a", limit.clone());
    let response = tray.request("tray-1").await;
    assert_eq!(served_by(&response), "acct-b", "B takes over");
    let _ = response.bytes().await;
    tray.icon_shows("A limited and B healthy", &[RED, GREEN], &[])
        .await;
    tray.screenshot_menu("2-some-limited").await;
    // More traffic redraws the tray again; the same limit is not told twice.
    let response = tray.request("tray-2").await;
    assert_eq!(served_by(&response), "acct-b");
    let _ = response.bytes().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let told = tray
        .notifications
        .titled("a@example.com reached its usage limit");
    assert_eq!(
        told.len(),
        1,
        "one notification: {:?}",
        tray.notifications.all()
    );
    assert!(
        told[0].1.contains("b@example.com"),
        "names who took over: {told:?}"
    );

    // B is limited too: the icon has no green left, and "every account is limited" is told.
    tray.fake.push_behaviour("acct-b", limit);
    let response = tray.request("tray-3").await;
    assert_eq!(response.status(), 429, "every account is limited");
    tray.icon_shows("every account limited", &[RED], &[GREEN])
        .await;
    tray.screenshot_menu("3-all-limited").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let every = tray.notifications.titled("Every account is limited");
    assert_eq!(every.len(), 1, "told once: {:?}", tray.notifications.all());

    // Quit in the menu stops the router and ends the app.
    let mut tray = tray;
    let status = tray.quit_from_menu().await;
    assert!(status.success(), "a clean exit: {status}");
    let port = tray.router.rsplit(':').next().unwrap_or("0").to_string();
    let refused = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap()));
    assert!(refused.is_err(), "the router's port is closed");
}

#[tokio::test]
async fn tray_icon_shows_an_account_that_needs_a_new_login() {
    let records = |fake: &FakeOpenAi| {
        let mut records = two_accounts(fake);
        let since = router::accounts::now_ms();
        records[1]["needsLogin"] = json!({"code": "refresh_token_reused", "since": since});
        records
    };
    let Some(tray) = Tray::start(records, None).await else {
        return;
    };
    tray.icon_shows(
        "A healthy and B waiting for a login",
        &[GREEN, PURPLE],
        &[RED],
    )
    .await;
    // B's usage cannot be read without a login; A's can.
    tokio::time::sleep(Duration::from_secs(1)).await;
    tray.screenshot_menu("4-needs-login").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let told = tray.notifications.titled("b@example.com needs a new login");
    assert_eq!(told.len(), 1, "told once: {:?}", tray.notifications.all());
}

/// Alerts come before the limit, on the desktop's notification bus: the pool on pace to run
/// out before its reset (the pace carried over a restart by the usage history), then each
/// threshold an account crosses, once.
#[tokio::test]
async fn tray_alerts_warn_before_the_limit_and_when_every_account_will_run_out() {
    let resets = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let records = |fake: &FakeOpenAi| {
        let records = two_accounts(fake);
        // An hour ago A stood at 10 % and B at 20 % of the same 5-hour windows (as the
        // history below says); now 60 % and 70 %: A's 40 % left lasts 48 minutes at that
        // pace and B's 30 % 36, both before their resets in 2 hours.
        fake.set_usage("acct-a", 60.0, 10.0);
        fake.set_usage("acct-b", 70.0, 20.0);
        *resets.lock().unwrap() = vec![
            ("acct-a/user-acct-a", 10.0, fake.primary_reset_at("acct-a")),
            ("acct-b/user-acct-b", 20.0, fake.primary_reset_at("acct-b")),
        ];
        records
    };
    let earlier = |home: &std::path::Path| {
        use router::history::{Entry, History, UsageReading, FILE_NAME};
        let now = router::accounts::now_ms();
        let path = home.parent().expect("the accounts' folder").join(FILE_NAME);
        let (mut history, _) = History::open(&path, now).expect("a history");
        let entries: Vec<Entry> = (resets.lock().unwrap().iter())
            .map(|(key, used, reset)| {
                Entry::Usage(UsageReading {
                    at: now - 3_600_000,
                    // Labelled otherwise then: the pace is the account's, by its key.
                    account: "earlier label".to_string(),
                    key: key.to_string(),
                    window: "primary",
                    used_percent: *used,
                    window_minutes: Some(300),
                    resets_at: Some(*reset),
                })
            })
            .collect();
        history.record(&entries).expect("seeded");
    };
    let Some(tray) = Tray::start_in(records, None, earlier).await else {
        return;
    };
    tray.usage_known().await;
    let pool = "Every account will run out before its reset at this pace";
    let told = wait_for("the pool alert", || {
        let told = tray.notifications.titled(pool);
        (!told.is_empty()).then_some(told)
    })
    .await;
    // The last one out is A, in 48 minutes (a minute less by the time it is read).
    let body = &told[0].1;
    assert!(
        body.contains("runs out in 47m") || body.contains("runs out in 48m"),
        "says when: {body}"
    );
    assert!(
        tray.notifications
            .all()
            .iter()
            .all(|(t, _)| !t.contains(" used ")),
        "no threshold is crossed at 60 % and 70 %: {:?}",
        tray.notifications.all()
    );

    // Both pass 80 %: the account that serves reads it and is told once, at 80 %.
    tray.fake.set_usage("acct-a", 85.0, 10.0);
    tray.fake.set_usage("acct-b", 86.0, 20.0);
    let response = tray.request("alerts-1").await;
    let served = served_by(&response);
    let _ = response.bytes().await;
    let name = if served == "acct-a" {
        "a@example.com"
    } else {
        "b@example.com"
    };
    let eighty = format!("{name} used 80 % of its 5-hour limit");
    let told = wait_for("the 80 % alert", || {
        let told = tray.notifications.titled(&eighty);
        (!told.is_empty()).then_some(told)
    })
    .await;
    assert!(told[0].1.starts_with("Now at 8"), "says how far: {told:?}");
    // Served again at the same figures: not told again. Then 96 %: told at 95 % only.
    let account = if served == "acct-a" {
        "acct-a"
    } else {
        "acct-b"
    };
    let _ = tray.request("alerts-1").await.bytes().await;
    tray.fake.set_usage(account, 96.0, 30.0);
    let _ = tray.request("alerts-1").await.bytes().await;
    let ninety_five = format!("{name} used 95 % of its 5-hour limit");
    wait_for("the 95 % alert", || {
        (!tray.notifications.titled(&ninety_five).is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = tray.notifications.all();
    let count = |title: &str| all.iter().filter(|(t, _)| t == title).count();
    assert_eq!(
        (count(pool), count(&eighty), count(&ninety_five)),
        (1, 1, 1),
        "each told once: {all:?}"
    );
}

#[tokio::test]
async fn tray_icon_says_when_another_program_holds_the_router_port() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = squatter.local_addr().expect("address").port();
    let Some(tray) = Tray::start(two_accounts, Some(port)).await else {
        return;
    };
    // One full-height red bar instead of the accounts' bars.
    tray.icon_shows("the port taken", &[RED], &[GREEN]).await;
    tray.screenshot_menu("5-port-taken").await;
    drop(squatter);
}

#[tokio::test]
async fn tray_menu_left_open_stays_open_and_shows_a_new_limit_in_place() {
    let Some(tray) = Tray::start(two_accounts, None).await else {
        return;
    };
    tray.usage_known().await;
    tray.icon_shows("two healthy accounts", &[GREEN], &[RED])
        .await;
    let area = tray.menu_area();
    let closed = tray.open_menu().await;
    let open = pixels(area);
    // The icon redraws too; only the menu's own pixels count.
    let icon = tray.icon;
    let in_icon = |i: usize| {
        let (x, y) = (area.x + (i as u32 % area.w), area.y + (i as u32 / area.w));
        (icon.x..icon.x + icon.w).contains(&x) && (icon.y..icon.y + icon.h).contains(&y)
    };
    let differ = |a: &[[u8; 3]], b: &[[u8; 3]]| {
        let pairs = a.iter().zip(b).enumerate();
        pairs.filter(|(i, (p, q))| p != q && !in_icon(*i)).count()
    };

    // A reaches its limit while the menu is open: B serves, and A's line says "limited".
    tray.fake.push_behaviour(
        "acct-a",
        Behaviour::UsageLimit {
            resets_in_seconds: 3600,
        },
    );
    let response = tray.request("open-menu-1").await;
    assert_eq!(served_by(&response), "acct-b", "B takes over");
    let _ = response.bytes().await;
    let mut seen = (0, 0);
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = pixels(area);
        seen = (differ(&now, &closed), differ(&now, &open));
        // Still open (far from the closed screen) and redrawn (a line of text changed).
        if seen.0 > 10_000 && seen.1 > 100 {
            break;
        }
    }
    screenshot(area, "menu-6-updated-while-open");
    run("xdotool", &["key", "Escape"]).expect("xdotool presses Escape");
    assert!(
        seen.0 > 10_000,
        "the open menu stayed open while the status changed ({} pixels from the closed \
         screen); log:\n{}",
        seen.0,
        tray.log()
    );
    assert!(
        seen.1 > 100,
        "the open menu shows the change in place ({} pixels changed)",
        seen.1
    );
}

/// Where the app's start-at-login entry lives under the test's HOME (XDG autostart).
fn autostart_dir(tray: &Tray) -> std::path::PathBuf {
    tray.dir.path().join("home/.config/autostart")
}

#[tokio::test]
async fn tray_start_at_login_recognises_an_older_entry_and_writes_one_entry() {
    // The entry version 0.1 (the `auto-launch` crate) wrote, under the same name.
    let entry = "Codex App Account Router.desktop";
    let older = |home: &std::path::Path| {
        let dir = home.join(".config/autostart");
        std::fs::create_dir_all(&dir).expect("autostart dir");
        let text = "[Desktop Entry]\nType=Application\nVersion=1.0\n\
                    Name=Codex App Account Router\nExec=/opt/old/codex-app-account-router \
                    --minimized\nStartupNotify=false\nTerminal=false\n";
        std::fs::write(dir.join(entry), text).expect("older entry");
    };
    let Some(tray) = Tray::start_in(two_accounts, None, older).await else {
        return;
    };
    tray.usage_known().await;
    let dir = autostart_dir(&tray);
    let entries = || -> Vec<String> {
        let list = std::fs::read_dir(&dir).map(|d| d.flatten().collect::<Vec<_>>());
        let names = list.unwrap_or_default().into_iter();
        names
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    // "Start at login" is third from the end (above Configure Codex and Quit). The older entry
    // counts as on, so choosing it turns starting at login off.
    tray.pick_from_menu(3).await;
    wait_for("the older entry to be removed", || {
        entries().is_empty().then_some(())
    })
    .await;
    // Chosen again: one entry, for this app, started tray-only.
    tray.pick_from_menu(3).await;
    let written = wait_for("the new entry", || {
        std::fs::read_to_string(dir.join(entry)).ok()
    })
    .await;
    assert_eq!(entries(), [entry], "one entry, not two");
    let exec = written
        .lines()
        .find(|l| l.starts_with("Exec="))
        .unwrap_or("");
    assert!(
        exec.contains(APP) && exec.ends_with("--minimized"),
        "starts this app, tray only: {exec:?}"
    );

    // A logout sends SIGTERM: the router stops and the app exits cleanly.
    let mut tray = tray;
    let pid = tray.app.id().to_string();
    run("kill", &["-TERM", &pid]).expect("kill sends SIGTERM");
    let status = wait_for("the app to exit after SIGTERM", || {
        tray.app.try_wait().ok().flatten()
    })
    .await;
    assert!(status.success(), "a clean exit: {status}");
    let port = tray.router.rsplit(':').next().unwrap_or("0").parse::<u16>();
    let refused = std::net::TcpStream::connect(("127.0.0.1", port.unwrap()));
    assert!(refused.is_err(), "the router's port is closed");
}
