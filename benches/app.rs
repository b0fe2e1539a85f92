//! Start-up time and memory of the tray app (release build), every process of it counted
//! (WebKit's included): launch to `/health`, resident memory with the dashboard never opened,
//! opened, and closed again, and CPU used while idle. Needs a display (Xvfb) and a session bus:
//! `Xvfb :99 & DISPLAY=:99 dbus-run-session -- cargo bench --bench app`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;

fn main() {
    // Memory, CPU and the process tree are read from /proc.
    if !cfg!(target_os = "linux") {
        println!("MISS the app benchmark reads /proc and runs on Linux only");
        return;
    }
    if std::env::var_os("DISPLAY").is_none() {
        println!(
            "MISS the app benchmark needs a display: run it under Xvfb (see the file's header)"
        );
        return;
    }
    let bin = env!("CARGO_BIN_EXE_codex-app-account-router");
    let (mut starts, mut never, mut opened, mut closed, mut idle_cpu) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let home = tempfile::tempdir().expect("temp home");
        let port = free_port();
        let started = Instant::now();
        let app = App(launch(bin, home.path(), port, &["--minimized"]));
        let startup = wait_for_health(port).expect("the router answers /health");
        starts.push(startup.as_secs_f64() * 1000.0);
        let _ = started;
        std::thread::sleep(Duration::from_secs(2));
        never.push(memory(app.0.id()));
        idle_cpu.push(cpu_ms_per_s(app.0.id(), Duration::from_secs(5)));
        let _ = launch(bin, home.path(), port, &[]).wait();
        std::thread::sleep(Duration::from_secs(3));
        opened.push(memory(app.0.id()));
        let _ = launch(bin, home.path(), port, &["--close-dashboard"]).wait();
        std::thread::sleep(Duration::from_secs(3));
        closed.push(memory(app.0.id()));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let rss = |v: &[Memory]| v.iter().map(|m| m.rss).collect::<Vec<f64>>();
    let pss = |v: &[Memory]| v.iter().map(|m| m.pss).collect::<Vec<f64>>();
    let (s, cpu) = (median(&mut starts), median(&mut idle_cpu));
    let (n, o, c) = (
        median(&mut pss(&never)),
        median(&mut pss(&opened)),
        median(&mut pss(&closed)),
    );
    let (n_rss, o_rss, c_rss) = (
        median(&mut rss(&never)),
        median(&mut rss(&opened)),
        median(&mut rss(&closed)),
    );
    println!("tray app, release build, {ROUNDS} launches (medians), all processes counted");
    println!("launch to /health           {s:8.1} ms");
    println!("                              PSS sum   RSS sum");
    println!("dashboard never opened      {n:8.1} MB {n_rss:6.1} MB");
    println!("dashboard open              {o:8.1} MB {o_rss:6.1} MB");
    println!("dashboard closed again      {c:8.1} MB {c_rss:6.1} MB");
    println!("CPU while idle              {cpu:8.2} ms per s");
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!(
        "{} launch to /health {s:.1} ms < 300 ms",
        verdict(s < 300.0)
    );
    // The targets are judged on the PSS sum, the memory the app takes from the machine; the
    // RSS sum counts the shared libraries once per process and is printed beside it.
    println!(
        "{} memory never opened {n:.1} MB < 80 MB",
        verdict(n < 80.0)
    );
    println!(
        "{} memory dashboard open {o:.1} MB < 300 MB",
        verdict(o < 300.0)
    );
    println!(
        "{} memory after open and close {c:.1} MB < 100 MB",
        verdict(c < 100.0)
    );
    println!(
        "{} idle CPU {cpu:.2} ms/s < 1 ms/s (no busy polling)",
        verdict(cpu < 1.0)
    );
}

struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn launch(bin: &str, home: &Path, port: u16, args: &[&str]) -> Child {
    Command::new(bin)
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("CODEX_PROXY_PORT", port.to_string())
        .env("CODEX_PROXY_TOKEN_STORE", "file")
        .env("CODEX_PROXY_ACCOUNTS_FILE", home.join("accounts.json"))
        .env("CODEX_PROXY_BINDINGS_FILE", home.join("bindings.json"))
        .env("CODEX_HOME", home.join("codex"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the app starts")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Time until `/health` answers, polled every millisecond for at most 10 s.
fn wait_for_health(port: u16) -> Option<Duration> {
    use std::io::{Read, Write};
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s
                .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// The process and all its descendants.
fn tree(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found
}

/// Resident memory of the process tree, summed two ways: RSS counts every shared page (the
/// WebKit and GTK libraries are mapped by up to four processes) once per process; PSS splits
/// each shared page between the processes that map it, so its sum is what the app takes from
/// the machine.
#[derive(Clone, Copy)]
struct Memory {
    rss: f64,
    pss: f64,
}

fn memory(root: u32) -> Memory {
    let field = |text: &str, name: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(name));
        line.and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let rollups: Vec<String> = tree(root)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .collect();
    Memory {
        rss: rollups.iter().map(|r| field(r, "Rss:")).sum::<f64>() / 1024.0,
        pss: rollups.iter().map(|r| field(r, "Pss:")).sum::<f64>() / 1024.0,
    }
}

fn cpu_ticks(root: u32) -> u64 {
    tree(root)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            fields
                .get(11)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + fields
                    .get(12)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
        })
        .sum()
}

/// CPU milliseconds used per second over `window` (clock ticks are 10 ms on Linux).
fn cpu_ms_per_s(root: u32, window: Duration) -> f64 {
    let before = cpu_ticks(root);
    std::thread::sleep(window);
    (cpu_ticks(root) - before) as f64 * 10.0 / window.as_secs_f64()
}
