//! The listening socket against clients that misbehave on purpose: half a header and a stall,
//! more connections than the cap, idle keep-alive connections, a declared body far larger
//! than what comes, and requests without `Host` (HTTP/1.0, h2c).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use router::proxy::ListenerLimits;

use crate::harness::*;

const A: TestAccount = account("a@example.com", "acct-a");

/// What the router runs with; the header-read deadline also bounds an idle keep-alive
/// connection.
const LIMITS: ListenerLimits = ListenerLimits::DEFAULT;
const HEADER_READ_TIMEOUT: Duration = LIMITS.header_read_timeout;
const MAX_CONNECTIONS: usize = LIMITS.max_connections;
const MAX_IDLE: usize = LIMITS.max_idle;

fn address(h: &Harness) -> String {
    h.base.trim_start_matches("http://").to_string()
}

/// Reads until the peer closes; `Ok(bytes)` when it did within `wait`.
async fn read_to_close(stream: &mut TcpStream, wait: Duration) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return Err(()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(out),
            Ok(Ok(n)) => out.extend_from_slice(&buffer[..n]),
        }
    }
}

/// One whole response head and body of a `Connection: keep-alive` request, or `None`.
async fn health_keep_alive(stream: &mut TcpStream, host: &str) -> Option<String> {
    let request = format!("GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        out.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&out).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= length {
                return Some(text);
            }
        }
    }
}

#[tokio::test]
async fn a_client_that_sends_half_a_header_and_stalls_is_dropped() {
    let h = Harness::start(&[A]).await;
    let mut stream = TcpStream::connect(address(&h)).await.unwrap();
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let closed = read_to_close(&mut stream, HEADER_READ_TIMEOUT + Duration::from_secs(5)).await;
    assert!(
        closed.is_ok(),
        "still open {:?} after half a header",
        started.elapsed()
    );
    // The same deadline holds for a client that trickles its header a byte at a time.
    let mut trickle = TcpStream::connect(address(&h)).await.unwrap();
    let started = Instant::now();
    let header = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut dropped = false;
    for byte in header.iter().cycle() {
        if trickle.write_all(&[*byte]).await.is_err() {
            dropped = true;
            break;
        }
        if started.elapsed() > HEADER_READ_TIMEOUT + Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        dropped,
        "a header trickled for {:?} was still read",
        started.elapsed()
    );
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let h = Harness::start(&[A]).await;
    let address = address(&h);
    let mut held = Vec::with_capacity(MAX_CONNECTIONS);
    for _ in 0..MAX_CONNECTIONS {
        held.push(TcpStream::connect(&address).await.unwrap());
    }
    // Let the router take them all in before the next one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = TcpStream::connect(&address).await.unwrap();
    let waiting = tokio::time::timeout(
        Duration::from_secs(1),
        health_keep_alive(&mut extra, "127.0.0.1"),
    )
    .await;
    assert!(
        waiting.is_err(),
        "connection {} was served past the cap of {MAX_CONNECTIONS}",
        MAX_CONNECTIONS + 1
    );
    held.truncate(MAX_CONNECTIONS - 1);
    let answer = health_keep_alive(&mut extra, "127.0.0.1")
        .await
        .expect("served once a slot is free");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_capped() {
    let h = Harness::start(&[A]).await;
    let address = address(&h);
    let mut idle = Vec::new();
    for _ in 0..MAX_IDLE + 16 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let answer = health_keep_alive(&mut stream, "127.0.0.1")
            .await
            .expect("an answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        idle.push(stream);
    }
    let mut closed = 0;
    for stream in &mut idle {
        if read_to_close(stream, Duration::from_millis(200))
            .await
            .is_ok()
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 16,
        "{closed} of {} idle connections closed; at most {MAX_IDLE} may stay",
        MAX_IDLE + 16
    );
    // The rest go once idle for the header-read deadline.
    let mut open = 0;
    for stream in &mut idle {
        if read_to_close(stream, HEADER_READ_TIMEOUT + Duration::from_secs(3))
            .await
            .is_err()
        {
            open += 1;
        }
    }
    assert_eq!(open, 0, "idle connections outlived the deadline");
}

/// Address space the process has reserved (`VmSize`), in bytes.
#[cfg(target_os = "linux")]
fn reserved_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_declared_body_is_not_allocated_before_its_bytes_arrive() {
    let h = Harness::start(&[A]).await;
    let address = address(&h);
    let before = reserved_bytes();
    let mut streams = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"model\":",
            128 * 1024 * 1024
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        streams.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = reserved_bytes().saturating_sub(before);
    assert!(
        grown < 512 * 1024 * 1024,
        "16 requests of 10 bytes declaring 128 MB each reserved {} MB",
        grown / (1024 * 1024)
    );
}

#[tokio::test]
async fn a_request_without_host_is_refused() {
    let h = Harness::start(&[A]).await;
    let mut stream = TcpStream::connect(address(&h)).await.unwrap();
    stream
        .write_all(b"GET /status HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream, Duration::from_secs(5))
        .await
        .expect("an answer and a close");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 403"), "{answer}");
    // HTTP/2 without TLS carries no Host header: it is not served at all.
    let h2c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    if let Ok(response) = h2c.get(format!("{}/status", h.base)).send().await {
        assert_eq!(response.status(), 403, "h2c without Host was served");
    }
}
