//! The token endpoint down or slow, and an upstream that resets before its headers, cuts a
//! stream in the middle or trickles one byte a second: the router fails over or answers a
//! clear error within its timeouts, and no account is lost.

use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;
use crate::support::Behaviour;

const A: TestAccount = account("a@example.com", "acct-a");
const A_EXPIRED: TestAccount = expired_account("a@example.com", "acct-a");
const B: TestAccount = account("b@example.com", "acct-b");

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address").port()
}

async fn answer(h: &Harness, session: &str) -> (u16, String, String, Duration) {
    let started = Instant::now();
    let response = h.respond(session).await;
    let status = response.status().as_u16();
    let served = served_by(&response);
    let body = response.text().await.unwrap_or_default();
    (status, served, body, started.elapsed())
}

#[tokio::test]
async fn a_token_endpoint_that_is_down_fails_over_and_loses_no_account() {
    let port = closed_port().await;
    let issuer = format!("http://127.0.0.1:{port}");
    let h = Harness::start_with(&[A_EXPIRED, B], &[("CODEX_PROXY_OAUTH_ISSUER", &issuer)]).await;
    let (status, served, body, took) = answer(&h, "s1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served, "acct-b", "failed over");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let a = h.account_status("acct-a").await;
    assert_ne!(
        a["state"], "needs-login",
        "a network error is no reason to log in: {a}"
    );
    println!("token endpoint down: failed over in {took:?}");
}

#[tokio::test]
async fn a_slow_token_endpoint_is_waited_for_and_a_hanging_one_times_out() {
    let h = Harness::start(&[A_EXPIRED, B]).await;
    h.fake.set_refresh_delay(Duration::from_secs(3));
    let (status, served, body, took) = answer(&h, "s1").await;
    assert_eq!((status, served.as_str()), (200, "acct-a"), "{body}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "took {took:?}"
    );
    println!("token endpoint answering in 3 s: served by a@ in {took:?}");

    // Expired again, and now the issuer never answers (it has not rotated: nothing is spent).
    h.fake.expire_access_token("acct-a");
    h.fake.set_refresh_delay(Duration::from_secs(600));
    let (status, served, body, took) = answer(&h, "s2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served, "acct-b", "failed over after the refresh timed out");
    assert!(took < Duration::from_secs(40), "took {took:?}");
    println!("token endpoint hanging: failed over in {took:?}");
    let a = h.account_status("acct-a").await;
    assert_ne!(a["state"], "needs-login", "{a}");

    // The issuer is back: a@ refreshes with the token it still holds.
    h.fake.set_refresh_delay(Duration::ZERO);
    h.fake.expire_access_token("acct-a");
    let (status, _, body, _) = answer(&h, "s3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(crate::faults::replayed_refresh_tokens(&h.fake), 0);
}

#[tokio::test]
async fn an_upstream_reset_before_headers_fails_over() {
    let h = Harness::start(&[A, B]).await;
    h.fake.push_behaviour("acct-a", Behaviour::Reset);
    let (status, served, body, took) = answer(&h, "s1").await;
    assert_eq!((status, served.as_str()), (200, "acct-b"), "{body}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    println!("reset before headers: failed over in {took:?}");
    let (status, served, body, _) = answer(&h, "s2").await;
    assert_eq!(status, 200, "{body}");
    println!("next new session served by {served}");
    assert_ne!(h.account_status("acct-a").await["state"], "needs-login");
}

#[tokio::test]
async fn an_upstream_cut_mid_stream_cuts_the_client_stream_at_once() {
    let h = Harness::start(&[A, B]).await;
    h.fake.push_behaviour(
        "acct-a",
        Behaviour::CutAfter {
            deltas_before_cut: 2,
        },
    );
    let started = Instant::now();
    let response = h.respond("s1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "acct-a", "output had started on a@");
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("the stream ends, it does not hang")
        .unwrap_or_else(|e| format!("<the body ended with an error: {e}>"));
    let took = started.elapsed();
    println!("cut mid-stream: stream ended after {took:?}:\n{text}");
    assert!(!text.contains("response.completed"), "{text}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let (status, served, body, _) = answer(&h, "s1").await;
    assert_eq!((status, served.as_str()), (200, "acct-a"), "{body}");
}

/// An SSE answer that would take minutes at one byte a second.
const TRICKLED: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n\
event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_trickle\",\"status\":\"in_progress\"}}\n\n";

/// A backend that answers every request one byte a second, from the status line on or only
/// after its headers; it notes when the router closed the connection under it.
struct Trickler {
    upstream_url: String,
    closed: Arc<Mutex<Vec<Instant>>>,
}

impl Trickler {
    async fn start(headers_too: bool) -> Trickler {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let closed = Arc::new(Mutex::new(Vec::new()));
        let noted = closed.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(trickle(socket, headers_too, noted.clone()));
            }
        });
        Trickler {
            upstream_url: format!("http://{addr}/backend-api/codex"),
            closed,
        }
    }

    fn closed(&self) -> usize {
        self.closed.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

async fn trickle(socket: TcpStream, headers_too: bool, closed: Arc<Mutex<Vec<Instant>>>) {
    let (mut read, mut write) = socket.into_split();
    // The request's head is read before the answer starts, as a server does (an answer that
    // overtook the request made the client give up at once, about one run in six); the rest
    // is read and dropped as it comes.
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match read.read(&mut buffer).await {
            Ok(n) if n > 0 => seen.extend_from_slice(&buffer[..n]),
            _ => return,
        }
    }
    tokio::spawn(async move { while matches!(read.read(&mut buffer).await, Ok(n) if n > 0) {} });
    let head_end = TRICKLED.find("\r\n\r\n").map_or(0, |i| i + 4);
    let (head, body) = TRICKLED.split_at(if headers_too { 0 } else { head_end });
    let mut alive = write.write_all(head.as_bytes()).await.is_ok();
    // At most 120 bytes (two minutes): a test never waits that long.
    for byte in body.bytes().take(120) {
        if !alive {
            break;
        }
        alive = write.write_all(&[byte]).await.is_ok() && write.flush().await.is_ok();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !alive {
        closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
    }
}

#[tokio::test]
async fn an_upstream_trickling_its_headers_is_given_up_at_the_first_byte_timeout() {
    let trickler = Trickler::start(true).await;
    let upstream = trickler.upstream_url.clone();
    let h = Harness::start_with(&[A], &[("CODEX_PROXY_UPSTREAM_URL", &upstream)]).await;
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(10), h.respond("s1"))
        .await
        .expect("the router answers within its timeouts");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let took = started.elapsed();
    println!("headers trickled: {status} after {took:?}: {body}");
    assert!(status >= 500, "{status} {body}");
    assert!(body.contains("\"error\""), "{body}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        crate::faults::until(Duration::from_secs(5), || trickler.closed() > 0).await,
        "the router let go of the upstream connection"
    );
    assert_ne!(h.account_status("acct-a").await["state"], "needs-login");
}

#[tokio::test]
async fn an_upstream_trickling_its_stream_is_passed_on_and_let_go_when_the_client_leaves() {
    let trickler = Trickler::start(false).await;
    let upstream = trickler.upstream_url.clone();
    let h = Harness::start_with(&[A], &[("CODEX_PROXY_UPSTREAM_URL", &upstream)]).await;
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(10), h.respond("s1"))
        .await
        .expect("the router answers within its timeouts");
    let headers_after = started.elapsed();
    let status = response.status().as_u16();
    let mut stream = response.bytes_stream();
    let mut received = 0;
    let mut first_byte_after = None;
    let reading = async {
        use futures_util::StreamExt as _;
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            received += chunk.len();
            first_byte_after.get_or_insert(started.elapsed());
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(9), reading).await;
    println!(
        "stream trickled: {status} after {headers_after:?}, first body byte after {first_byte_after:?}, {received} bytes in 9 s"
    );
    assert_eq!(status, 200);
    assert!(headers_after < Duration::from_secs(7), "{headers_after:?}");
    assert!(
        received > 0,
        "the bytes are passed on as they come, not held back"
    );
    drop(stream);
    let left = Instant::now();
    assert!(
        crate::faults::until(Duration::from_secs(5), || trickler.closed() > 0).await,
        "the router let go of the upstream connection after the client left"
    );
    println!("upstream let go {:?} after the client left", left.elapsed());
    assert_ne!(h.account_status("acct-a").await["state"], "needs-login");
}
