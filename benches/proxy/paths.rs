//! The three ways to the fake backend: straight, through Debian's nginx as a streaming
//! reverse proxy, and through `cma start`, each started here and stopped on drop.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

use crate::harness::{account, fake_vars, register, write_accounts};
use crate::measure::{client, Target};
use crate::support::FakeOpenAi;

pub const NGINX: &str = "/usr/sbin/nginx";
/// The account direct and nginx requests use; the router picks among both.
pub const ACCOUNTS: [&str; 2] = ["acct-a", "acct-b"];

/// A child process killed (by its own pid) and reaped when dropped.
pub struct Process(pub Child);

impl Process {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Registers both accounts in the fake and writes the router's accounts file in `dir`.
pub fn register_accounts(fake: &FakeOpenAi, dir: &Path) {
    let records: Vec<Value> = [
        ("a@example.com", ACCOUNTS[0]),
        ("b@example.com", ACCOUNTS[1]),
    ]
    .into_iter()
    .map(|(email, id)| register(fake, &account(email, id)))
    .collect();
    write_accounts(&dir.join("openai-accounts.json"), &records);
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("accept", HeaderValue::from_static("text/event-stream"));
    headers
}

/// What Codex's own client would send straight to the backend as account A.
fn upstream_headers(fake: &FakeOpenAi) -> HeaderMap {
    let mut headers = json_headers();
    let token = fake.current_tokens(ACCOUNTS[0]).access_token;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).expect("bearer header");
    headers.insert("authorization", bearer);
    headers.insert("chatgpt-account-id", HeaderValue::from_static(ACCOUNTS[0]));
    headers
}

pub fn direct(fake: &FakeOpenAi) -> Target {
    Target {
        name: "direct",
        url: format!("{}/responses", fake.upstream_url),
        headers: upstream_headers(fake),
        client: client(),
    }
}

/// `cma start` against the fake, on a free port: the release build of this bench, or
/// `CMA_BENCH_BIN`. `CMA_BENCH_LOG=<file>` keeps its stderr (with `RUST_LOG` passed on).
/// `history: false` runs it with `CODEX_PROXY_HISTORY=0`, to weigh what recording costs.
pub fn start_router(fake: &FakeOpenAi, dir: &Path, history: bool) -> (Process, Target) {
    let mut vars = fake_vars(fake, dir);
    if !history {
        vars.insert("CODEX_PROXY_HISTORY".to_string(), "0".to_string());
    }
    let bin = std::env::var("CMA_BENCH_BIN").unwrap_or(env!("CARGO_BIN_EXE_cma").to_string());
    let stderr = match std::env::var("CMA_BENCH_LOG") {
        Ok(path) => Stdio::from(std::fs::File::create(path).expect("CMA_BENCH_LOG file")),
        Err(_) => Stdio::null(),
    };
    let mut command = Command::new(bin);
    command
        .arg("start")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &vars["CODEX_HOME"])
        .env("NO_COLOR", "1")
        .envs(&vars);
    if let Ok(filter) = std::env::var("RUST_LOG") {
        command.env("RUST_LOG", filter);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn cma start");
    let mut stdout = BufReader::new(child.stdout.take().expect("cma stdout"));
    let process = Process(child);
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read cma's first line");
    // Keep draining so a later line never meets a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in cma's output {line:?}"))
        .trim_end_matches("/v1")
        .to_string();
    let target = Target {
        name: if history {
            "router"
        } else {
            "router, no history"
        },
        url: format!("{base}/v1/responses"),
        headers: json_headers(),
        client: client(),
    };
    (process, target)
}

/// nginx 1 worker, buffering off both ways, keep-alive to the fake: the reference a
/// streaming proxy should match. Single-process mode keeps the worker our direct child.
pub fn start_nginx(fake: &FakeOpenAi, dir: &Path) -> (Process, Target) {
    let upstream: SocketAddr = fake
        .upstream_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("fake address");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\n\
         error_log {d}/nginx-error.log warn;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           upstream u {{ server {upstream}; keepalive 64; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
               proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
               proxy_buffering off; proxy_request_buffering off; proxy_cache off;\n\
               client_max_body_size 0; proxy_read_timeout 300s;\n    }}\n  }}\n}}\n"
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let child = Command::new(NGINX)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {NGINX}: {e}"));
    let mut process = Process(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = process.0.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default();
            panic!("nginx did not start ({exited:?}): {log}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let path = fake
        .upstream_url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or(String::new(), |(_, p)| p.to_string());
    let target = Target {
        name: "nginx",
        url: format!("http://127.0.0.1:{port}/{path}/responses"),
        headers: upstream_headers(fake),
        client: client(),
    };
    (process, target)
}

pub fn nginx_version() -> String {
    Command::new(NGINX)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_else(|e| format!("nginx unavailable: {e}"))
}
