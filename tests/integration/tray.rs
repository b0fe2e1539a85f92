//! The tray icon and its menu end to end: the real app in a real tray host (trayer, an XEmbed
//! system tray) under the X server `scripts/test` starts, against the fake backend. The icon is
//! read back from the screen pixel by pixel, the menu is opened with a real click, and every
//! desktop notification is counted on the session bus with `dbus-monitor`. Screenshots of each
//! state (icon and open menu) go to `target/screenshots/tray-*.png`.

mod screen;

use std::time::Duration;

use serde_json::json;

use crate::harness::*;
use crate::support::{Behaviour, FakeOpenAi};
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
