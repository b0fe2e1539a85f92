//! The packages as a user gets them. The .deb is installed with apt on a clean Debian 12 system
//! (a root made by `tests/package/debian-root`, where the package's previous version is already
//! installed and its dependencies came from the mirror), then upgraded, started from its
//! launcher entry in a real tray (trayer, on the X server `scripts/test` starts), installed a
//! second time and removed, while the user's accounts and settings are watched. The .deb and
//! the .rpm are also read for what they declare. `scripts/test` builds both (`scripts/package`)
//! and makes the root; here the network is loopback only, so apt works from the local files.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::dashboard::{free_port, ONE_APP};
use crate::harness::*;
use crate::support::FakeOpenAi;
use crate::tray::{
    find_window, icon_of_app, screenshot, tools_present, two_accounts, wait_for, Tray, TrayHost,
    GREEN, RED,
};

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

/// The package's files, unpacked into a temp folder.
fn unpack_deb(deb: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let to = dir.path().display().to_string();
    stdout("dpkg-deb", &["-x", &deb.display().to_string(), &to]);
    dir
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    let line = text.lines().find(|l| l.starts_with(&format!("{name}=")));
    line.and_then(|l| l.split_once('=')).map_or("", |(_, v)| v)
}

/// Package names of a Depends line, without versions or alternatives' separators.
fn names(depends: &str) -> Vec<String> {
    let items = depends.split([',', '|']);
    let first_word = |d: &str| d.split_whitespace().next().unwrap_or("").to_string();
    items.map(first_word).filter(|n| !n.is_empty()).collect()
}

#[test]
fn package_the_deb_and_rpm_hold_all_three_programs_and_declare_every_library_they_use() {
    let Some(packages) = packages() else {
        return;
    };
    let deb = packages.deb.display().to_string();
    let files = unpack_deb(&packages.deb);
    for program in PROGRAMS {
        let path = files.path().join("usr/bin").join(program);
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode());
        let mode = mode.unwrap_or_else(|_| panic!("/usr/bin/{program} is in the .deb"));
        assert_eq!(mode & 0o755, 0o755, "/usr/bin/{program} is executable");
    }

    // The launcher entry: found by name, in Development, with an icon that exists.
    let entry = std::fs::read_to_string(files.path().join(DESKTOP_ENTRY));
    let entry = entry.expect("the .deb has a desktop entry");
    assert_eq!(field(&entry, "Name"), "Codex App Account Router");
    assert_eq!(field(&entry, "Exec"), "codex-app-account-router", "{entry}");
    assert!(
        field(&entry, "Categories").contains("Development"),
        "{entry}"
    );
    let icon = field(&entry, "Icon");
    let icon_file = files
        .path()
        .join(format!("usr/share/icons/hicolor/128x128/apps/{icon}.png"));
    assert!(
        icon_file.is_file(),
        "the entry's icon {icon} is in the package"
    );

    // Version and dependencies: every library the programs link comes from a declared package
    // (dpkg-shlibdeps reads them off the binaries), and the tray library the app opens at run
    // time is declared too.
    let control = stdout("dpkg-deb", &["-f", &deb, "Package", "Version", "Depends"]);
    assert!(
        control.contains(&format!("Package: {PACKAGE}\n")),
        "{control}"
    );
    assert!(
        control.contains(&format!("Version: {VERSION}\n")),
        "{control}"
    );
    let depends = control.lines().find_map(|l| l.strip_prefix("Depends: "));
    let declared = names(depends.unwrap_or(""));
    let shlibs = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(shlibs.path().join("debian")).expect("debian dir");
    let source = "Source: x\n\nPackage: x\nArchitecture: any\n";
    std::fs::write(shlibs.path().join("debian/control"), source).expect("control");
    let binaries: Vec<String> = PROGRAMS
        .iter()
        .map(|p| files.path().join("usr/bin").join(p).display().to_string())
        .collect();
    let shlibdeps = Command::new("dpkg-shlibdeps")
        .arg("-O")
        .args(&binaries)
        .current_dir(shlibs.path())
        .output()
        .expect("dpkg-shlibdeps runs");
    let needed = String::from_utf8_lossy(&shlibdeps.stdout).into_owned();
    assert!(shlibdeps.status.success(), "dpkg-shlibdeps: {needed}");
    let needed = names(needed.trim().trim_start_matches("shlibs:Depends="));
    assert!(
        needed.len() >= 5,
        "dpkg-shlibdeps found the libraries: {needed:?}"
    );
    for package in needed
        .iter()
        .map(String::as_str)
        .chain(["libayatana-appindicator3-1"])
    {
        assert!(
            declared.iter().any(|d| d == package),
            "{package} is used but not in Depends: {declared:?}"
        );
    }

    // lintian: nothing but the tags the package's own overrides file explains.
    let lint = output("lintian", &["--tag-display-limit", "0", &deb]);
    let said = String::from_utf8_lossy(&lint.stdout);
    let findings: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    assert!(findings.is_empty(), "lintian: {findings:#?}");

    // The .rpm: same programs and version, and every shared library of each program required
    // by its soname, which any RPM distribution resolves to its own package.
    let rpm = packages.rpm.display().to_string();
    let listed = stdout("rpm", &["-qpl", &rpm]);
    for program in PROGRAMS {
        assert!(
            listed.lines().any(|l| l == format!("/usr/bin/{program}")),
            "{listed}"
        );
    }
    assert!(
        listed.lines().any(|l| l == format!("/{DESKTOP_ENTRY}")),
        "{listed}"
    );
    let version = stdout("rpm", &["-qp", "--queryformat", "%{VERSION}", &rpm]);
    assert_eq!(version, VERSION);
    let requires = stdout("rpm", &["-qpR", &rpm]);
    for binary in &binaries {
        let dynamic = stdout("readelf", &["-d", binary]);
        for soname in dynamic
            .lines()
            .filter_map(|l| l.split_once("Shared library: ["))
        {
            let soname = soname.1.trim_end_matches(']');
            if soname.starts_with("ld-linux") {
                continue;
            }
            let wanted = format!("{soname}()(64bit)");
            assert!(
                requires.lines().any(|r| r.trim() == wanted),
                "{binary} links {soname}, which the .rpm does not require: {requires}"
            );
        }
    }
}

/// Runs a command inside the Debian root (`tests/package/in-root`).
fn in_root(root: &Path) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/package/in-root");
    let mut command = Command::new(script);
    command.arg(root).stdin(Stdio::null());
    command
}

fn root_output(root: &Path, args: &[&str]) -> Output {
    let out = in_root(root).args(args).output();
    out.unwrap_or_else(|e| panic!("{args:?} in the root could not run: {e}"))
}

/// The same, as the desktop user with `env` as the whole environment.
fn as_user(root: &Path, env: &[(String, String)], args: &[&str]) -> Command {
    let mut command = in_root(root);
    command.args(["setpriv", "--reuid=1000", "--regid=1000", "--init-groups"]);
    command.args(["env", "-i"]);
    command.args(env.iter().map(|(k, v)| format!("{k}={v}")));
    command.args(args);
    command
}

fn installed_version(root: &Path) -> Option<String> {
    let query = ["dpkg-query", "-W", "-f=${Status} ${Version}", PACKAGE];
    let out = root_output(root, &query);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text.strip_prefix("install ok installed ")?;
    Some(version.to_string())
}

/// Installs a package file with apt inside the root; returns what apt and the package's
/// scripts said.
fn apt_install(root: &Path, deb: &Path, extra: &[&str]) -> String {
    let name = deb
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    std::fs::copy(deb, root.join("tmp").join(&name)).expect("copy the package into the root");
    let path = format!("/tmp/{name}");
    let mut args = vec![
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
    ];
    args.extend(["--no-install-recommends"]);
    args.extend(extra);
    args.push(&path);
    let out = root_output(root, &args);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "apt-get install {name}: {said}");
    said
}

/// Every file under `dir` with its bytes and mode: what "left as it was" is checked against.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).expect("read dir").flatten() {
            let path = entry.path();
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                files.insert(path, (bytes, meta.mode() & 0o7777));
            }
        }
    }
    files
}

/// The user's files, as the test sees them from outside the root.
struct UserFiles {
    accounts: PathBuf,
    settings: PathBuf,
}

impl UserFiles {
    fn snapshot(&self) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
        let mut all = snapshot(&self.accounts);
        all.extend(snapshot(&self.settings));
        all
    }
}

async fn health(router: &str) -> bool {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let answer = http.get(format!("{router}/health")).send().await;
    answer.is_ok_and(|r| r.status().is_success())
}

async fn exited(
    app: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let tries = within.as_millis() / 100;
    for _ in 0..tries {
        if let Ok(Some(status)) = app.try_wait() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
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
    let said = apt_install(&root, &packages.deb, &[]);
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
    let said = apt_install(&root, &packages.deb, &[]);
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
    run_ok("kill", &["-TERM", &pid]);
    let status = exited(&mut tray.app, Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "a clean exit after SIGTERM: {status:?}"
    );
}

/// A session bus for the desktop user inside the root, as a desktop session has: the app's
/// single instance and notifications go through it.
struct SessionBus {
    daemon: std::process::Child,
    address: String,
}

impl SessionBus {
    async fn start(root: &Path, env: &[(String, String)]) -> SessionBus {
        let socket = format!("/tmp/cma-package-test-bus-{}", std::process::id());
        let _ = std::fs::remove_file(root.join(&socket[1..]));
        let address = format!("unix:path={socket}");
        let daemon = as_user(
            root,
            env,
            &["dbus-daemon", "--session", "--nofork", "--nosyslog"],
        )
        .arg(format!("--address={address}"))
        .stdout(Stdio::null())
        .spawn()
        .expect("dbus-daemon starts in the root");
        let bus = SessionBus { daemon, address };
        wait_for("the session bus", || {
            root.join(&socket[1..]).exists().then_some(())
        })
        .await;
        bus
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn run_text(program: &str, args: &[&str]) -> String {
    let out = output(program, args);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn wait_for_health(router: &str) {
    for _ in 0..100 {
        if health(router).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the installed app's router did not answer /health at {router} within 10 s");
}

fn run_ok(program: &str, args: &[&str]) {
    stdout(program, args);
}
