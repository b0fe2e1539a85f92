//! The packages as a user gets them. The .deb is installed with apt on a clean Debian 12 system
//! (a root made by `tests/package/debian-root`, where the package's previous version is already
//! installed and its dependencies came from the mirror), then upgraded, started from its
//! launcher entry in a real tray (trayer, on the X server `scripts/test` starts), installed a
//! second time and removed, while the user's accounts and settings are watched. The .deb and
//! the .rpm are also read for what they declare. `scripts/test` builds both (`scripts/package`)
//! and makes the root; here the network is loopback only, so apt works from the local files.

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod contents;
mod root;

use crate::dashboard::{free_port, ONE_APP};
use crate::harness::*;
use crate::support::FakeOpenAi;
use crate::tray::{
    find_window, icon_of_app, screenshot, tools_present, two_accounts, wait_for, Tray, TrayHost,
    GREEN, RED,
};
use root::*;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const PACKAGE: &str = "codex-app-account-router";
const PROGRAMS: [&str; 3] = [
    "codex-app-account-router",
    "codex-app-account-router-dashboard",
    "cma",
];
const DESKTOP_ENTRY: &str = "usr/share/applications/Codex App Account Router.desktop";
/// The desktop user of the root (`tests/package/debian-root`).
const USER_HOME: &str = "/home/tester";

/// The built packages and the Debian root; `None` when the package tests are skipped.
struct Packages {
    deb: PathBuf,
    rpm: PathBuf,
    root: PathBuf,
}

fn packages() -> Option<Packages> {
    let dir = std::env::var_os("CMA_PACKAGE_DIR").map(PathBuf::from);
    let root = std::env::var_os("CMA_PACKAGE_ROOT").map(PathBuf::from);
    let (Some(dir), Some(root)) = (dir, root) else {
        if std::env::var("CMA_SKIP_PACKAGE_E2E").as_deref() == Ok("1") {
            eprintln!("package tests skipped (CMA_SKIP_PACKAGE_E2E=1)");
            return None;
        }
        panic!(
            "the package tests need CMA_PACKAGE_DIR (the packages scripts/package built, \
             target/packages) and CMA_PACKAGE_ROOT (a Debian root from \
             tests/package/debian-root with the previous version installed). Run \
             scripts/test, which makes both, or set CMA_SKIP_PACKAGE_E2E=1 to skip."
        );
    };
    let deb = dir.join(format!("{PACKAGE}_{VERSION}_amd64.deb"));
    let rpm = dir.join(format!("{PACKAGE}-{VERSION}-1.x86_64.rpm"));
    for file in [&deb, &rpm] {
        assert!(
            file.is_file(),
            "{} is missing: run scripts/package",
            file.display()
        );
    }
    Some(Packages { deb, rpm, root })
}

fn output(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output();
    out.unwrap_or_else(|e| panic!("{program} could not run: {e}"))
}

/// Stdout of a command that must succeed.
fn stdout(program: &str, args: &[&str]) -> String {
    let out = output(program, args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    let line = text.lines().find(|l| l.starts_with(&format!("{name}=")));
    line.and_then(|l| l.split_once('=')).map_or("", |(_, v)| v)
}

#[tokio::test]
async fn package_the_deb_upgrades_starts_from_its_launcher_and_is_removed_keeping_the_accounts() {
    let Some(packages) = packages() else {
        return;
    };
    tools_present().expect("an X display for the installed app");
    let root = packages.root.clone();
    let _turn = ONE_APP.lock().await;
    let older = installed_version(&root);
    let older = older.expect("the root has the previous version installed (debian-root)");
    assert_ne!(older, VERSION, "the root starts from an older version");

    // The user's accounts and settings, where the installed app looks by default.
    let fake = FakeOpenAi::start().await;
    let home = root.join(USER_HOME.trim_start_matches('/'));
    let user = UserFiles {
        accounts: home.join(".codex/multi-auth"),
        settings: home.join(".config/dev.codex-app-account-router"),
    };
    let _ = std::fs::remove_dir_all(home.join(".codex"));
    let _ = std::fs::remove_dir_all(home.join(".config"));
    std::fs::create_dir_all(&user.accounts).expect("accounts dir");
    std::fs::create_dir_all(&user.settings).expect("settings dir");
    write_accounts(
        &user.accounts.join("openai-accounts.json"),
        &two_accounts(&fake),
    );
    let router_port = free_port();
    let settings = format!(
        "# Mine: the router on its own port, tokens in the accounts file.\n\
         port = {router_port}\ntoken_store = \"file\"\n"
    );
    std::fs::write(user.settings.join("settings.toml"), settings).expect("settings");
    stdout("chown", &["-R", "1000:1000", &home.display().to_string()]);
    let router = format!("http://127.0.0.1:{router_port}");

    // The session a desktop gives the user, plus where the fake backend is.
    let mut env: Vec<(String, String)> = [
        ("HOME", USER_HOME),
        ("USER", "tester"),
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for name in ["DISPLAY", "RUST_LOG"] {
        if let Ok(value) = std::env::var(name) {
            env.push((name.to_string(), value));
        }
    }
    for (name, value) in [
        ("CODEX_PROXY_UPSTREAM_URL", fake.upstream_url.clone()),
        ("CODEX_PROXY_UPSTREAM_MODELS_URL", fake.models_url.clone()),
        ("CODEX_PROXY_USAGE_URL", fake.usage_url.clone()),
        ("CODEX_PROXY_OAUTH_ISSUER", fake.issuer_url.clone()),
        ("CODEX_PROXY_ALLOW_CUSTOM_UPSTREAM", "1".to_string()),
        ("CODEX_PROXY_LOGIN_PORT", free_port().to_string()),
    ] {
        env.push((name.to_string(), value));
    }
    let bus = SessionBus::start(&root, &env).await;
    env.push(("DBUS_SESSION_BUS_ADDRESS".to_string(), bus.address.clone()));
    let dir = tempfile::tempdir().expect("temp dir");
    let start = |args: &[&str]| {
        let log = std::fs::File::create(dir.path().join("app.log")).expect("log");
        let mut command = as_user(&root, &env, args);
        command.stdout(log.try_clone().expect("log")).stderr(log);
        command.spawn().expect("the installed app starts")
    };

    // 1. The previous version runs in the tray, as after a login.
    let trayer = TrayHost::start().await;
    let mut old = start(&["/usr/bin/codex-app-account-router", "--minimized"]);
    icon_of_app().await;
    wait_for_health(&router).await;
    let before = user.snapshot();

    // 2. The upgrade asks the running app to quit and keeps the accounts and settings.
    let said = apt_install(&root, &packages.deb);
    assert_eq!(installed_version(&root).as_deref(), Some(VERSION), "{said}");
    let pid = old.id();
    assert!(
        said.contains(&format!(
            "asked the running app (process {pid} of tester) to quit"
        )),
        "the upgrade tells the user the app was asked to quit: {said}"
    );
    let status = exited(&mut old, Duration::from_secs(10)).await;
    let status = status.expect("the old app quits when the upgrade asks");
    assert!(status.success(), "a clean exit: {status}");
    assert!(!health(&router).await, "its router stopped");
    assert_eq!(
        user.snapshot(),
        before,
        "the upgrade kept accounts and settings as they were"
    );
    drop(trayer);

    // 3. Started from its launcher entry the way a desktop does: Exec, found on PATH.
    let entry = std::fs::read_to_string(root.join(DESKTOP_ENTRY)).expect("desktop entry");
    let exec = field(&entry, "Exec").to_string();
    let words: Vec<&str> = exec
        .split_whitespace()
        .filter(|w| !w.starts_with('%'))
        .collect();
    assert!(!words.is_empty(), "an Exec line: {entry}");
    let trayer = TrayHost::start().await;
    let app = start(&words);
    let icon = icon_of_app().await;
    let dashboard = || find_window("--name", "^Codex App Account Router$");
    wait_for("the dashboard the launcher opens", dashboard).await;
    // A second click on the launcher hands over to the running app, which starts no second
    // router and no second window.
    let second = as_user(&root, &env, &words)
        .output()
        .expect("a second launch runs");
    assert!(
        second.status.success(),
        "the second launch hands over: {second:?}"
    );
    let windows = run_text(
        "xdotool",
        &["search", "--name", "^Codex App Account Router$"],
    );
    assert_eq!(
        windows.lines().count(),
        1,
        "one dashboard window: {windows}"
    );
    let close = [words[0], "--close-dashboard"];
    let closed = as_user(&root, &env, &close)
        .output()
        .expect("--close-dashboard runs");
    assert!(closed.status.success(), "{closed:?}");
    let gone = || dashboard().is_none().then_some(());
    wait_for("the dashboard to close", gone).await;
    let mut tray = Tray {
        _trayer: trayer,
        app,
        fake,
        dir,
        router: router.clone(),
        icon,
        notifications: crate::tray::Notifications::watch(),
        _turn,
    };
    wait_for_health(&router).await;
    tray.usage_known().await;
    tray.icon_shows("two healthy accounts", &[GREEN], &[RED])
        .await;
    screenshot(tray.menu_area(), "package-installed");

    // 4. The same version again changes nothing: apt says so, dpkg's reinstall leaves the
    // running app alone.
    let program = root.join("usr/bin/codex-app-account-router");
    let inode = std::fs::metadata(&program).expect("installed").ino();
    let said = apt_install(&root, &packages.deb);
    assert!(said.contains("is already the newest version"), "{said}");
    assert_eq!(
        std::fs::metadata(&program).expect("installed").ino(),
        inode,
        "{said}"
    );
    let deb_in_root = format!(
        "/tmp/{}",
        packages.deb.file_name().unwrap().to_string_lossy()
    );
    let again = root_output(&root, &["dpkg", "-i", &deb_in_root]);
    let said = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.status.success(), "dpkg -i the same version: {said}");
    assert!(!said.contains("asked the running app"), "{said}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        tray.app.try_wait().expect("wait").is_none(),
        "the app still runs"
    );
    assert!(health(&router).await, "and serves");

    // 5. Start at login, chosen in the installed app's menu, starts the installed program.
    tray.pick_from_menu(3).await;
    let autostart = home.join(".config/autostart/Codex App Account Router.desktop");
    let written = wait_for("the start-at-login entry", || {
        std::fs::read_to_string(&autostart).ok()
    })
    .await;
    assert_eq!(
        field(&written, "Exec"),
        "/usr/bin/codex-app-account-router --minimized",
        "{written}"
    );

    // 6. Both programs say their version; cma finds the user's accounts.
    for program in ["cma", "codex-app-account-router"] {
        let out = as_user(&root, &env, &[program, "--version"])
            .output()
            .expect("runs");
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            said.trim(),
            format!("{program} {VERSION}"),
            "{program} --version"
        );
    }
    let doctor = as_user(&root, &env, &["cma", "doctor"])
        .output()
        .expect("cma doctor runs");
    let said = String::from_utf8_lossy(&doctor.stdout).into_owned();
    for email in ["a@example.com", "b@example.com"] {
        assert!(
            said.contains(&format!("{email}: signed in")),
            "cma doctor: {said}"
        );
    }

    // 7. Removing the package stops nothing of the user's and leaves their files as they were.
    let before = user.snapshot();
    let out = root_output(
        &root,
        &[
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "remove",
            "-y",
            PACKAGE,
        ],
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "apt-get remove: {said}");
    assert_eq!(installed_version(&root), None, "removed");
    for program in PROGRAMS {
        assert!(
            !root.join("usr/bin").join(program).exists(),
            "{program} is gone"
        );
    }
    assert!(
        tray.app.try_wait().expect("wait").is_none(),
        "the app still runs"
    );
    assert!(health(&router).await, "and still serves Codex");
    assert_eq!(
        user.snapshot(),
        before,
        "the removal left the user's files as they were"
    );
    assert!(
        find_window("--class", "^tray-icon tray app").is_some(),
        "its icon stays"
    );

    // The user quits later: a clean exit.
    let pid = tray.app.id().to_string();
    stdout("kill", &["-TERM", &pid]);
    let status = exited(&mut tray.app, Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "a clean exit after SIGTERM: {status:?}"
    );
}
