//! The Responses WebSocket measured like the HTTP stream: one socket per path kept for the
//! whole phase (as Codex keeps one per session), a `response.create` per request, time to
//! its first frame and each stamped frame's delay; HTTP direct and through the router are
//! measured in the same rounds, so "what WebSocket adds" and "what HTTP adds" share the noise.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use reqwest::header::HeaderMap;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::measure::{median, stream_once, Outcome, Target};
use crate::report::Samples;

/// A frame waits this long at most before a request counts as failed.
const FRAME_WAIT: Duration = Duration::from_secs(10);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One open socket to the fake, straight or through the router.
pub struct WsTarget {
    socket: Socket,
}

impl WsTarget {
    /// Opens `url` with these headers (the account's bearer straight, none for the router).
    pub async fn open(name: &'static str, url: &str, headers: &HeaderMap) -> WsTarget {
        let mut request = url.into_client_request().expect("a ws:// URL");
        for (k, v) in headers {
            if k != "content-type" && k != "accept" {
                request.headers_mut().insert(k.clone(), v.clone());
            }
        }
        request.headers_mut().insert(
            "openai-beta",
            "responses_websockets=2026-02-06".parse().expect("header"),
        );
        request
            .headers_mut()
            .insert("session-id", "bench-ws".parse().expect("header"));
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .unwrap_or_else(|e| panic!("WebSocket to {name} failed: {e}"));
        WsTarget { socket }
    }

    /// Sends one `response.create` and reads its frames up to the terminal one.
    pub async fn once(&mut self, frame: &str) -> Outcome {
        let mut outcome = Outcome::default();
        let started = Instant::now();
        if let Err(e) = self.socket.send(Message::text(frame)).await {
            outcome.error = Some(format!("send: {e}"));
            return outcome;
        }
        loop {
            let next = tokio::time::timeout(FRAME_WAIT, self.socket.next()).await;
            let now_ns = crate::support::clock_ns();
            let text = match next {
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => continue,
                Ok(other) => {
                    outcome.error = Some(format!("socket ended: {other:?}"));
                    return outcome;
                }
                Err(_) => {
                    outcome.error = Some("no frame in time".to_string());
                    return outcome;
                }
            };
            outcome.ttfb.get_or_insert_with(|| started.elapsed());
            if let Some(sent_ns) = stamp(&text) {
                outcome.delays_ns.push(now_ns.saturating_sub(sent_ns));
            }
            // serde_json may put `type` anywhere in the object: look at the whole frame.
            if text.contains("\"type\":\"response.completed\"") {
                outcome.completed = Some(started.elapsed());
                return outcome;
            }
            if text.contains("\"type\":\"error\"") || text.contains("\"type\":\"response.failed\"")
            {
                outcome.error = Some(format!("error frame: {text}"));
                return outcome;
            }
        }
    }
}

/// The `"t":<ns>` of a stamped frame.
fn stamp(text: &str) -> Option<u64> {
    let at = text.find("\"t\":")? + 4;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Per path: HTTP direct, HTTP through the router, WebSocket direct, WebSocket through it.
pub const PATHS: [&str; 4] = ["http direct", "http router", "ws direct", "ws router"];

/// `rounds` rounds of one request per path, in rotating order.
pub async fn rounds(
    http: [&Target; 2],
    ws: &mut [WsTarget; 2],
    rounds: usize,
    body: &Bytes,
    frame: &str,
) -> [Samples; 4] {
    let mut samples: [Samples; 4] = Default::default();
    for round in 0..rounds {
        for k in 0..4 {
            let i = (k + round) % 4;
            let from = samples[i].delays.len();
            let outcome = match i {
                0 | 1 => stream_once(http[i], body.clone(), "bench-ws").await,
                _ => ws[i - 2].once(frame).await,
            };
            samples[i].add(outcome);
            samples[i].close_run(from);
        }
    }
    samples
}

/// What the run measured for WebSocket next to HTTP.
pub struct WsResults {
    pub ttfb: [Samples; 4],
    pub events: [Samples; 4],
}

fn f(x: f64) -> String {
    if x.is_nan() {
        "-".to_string()
    } else {
        format!("{x:.3}")
    }
}

/// Median over paired rounds of (path − direct).
fn added(direct: &[f64], path: &[f64]) -> f64 {
    let diffs: Vec<f64> = path.iter().zip(direct).map(|(p, d)| p - d).collect();
    median(&diffs)
}

pub fn print(r: &WsResults) {
    println!();
    println!("WebSocket vs HTTP (same fake, same rounds, one socket per path):");
    println!(
        "{:<36}{:>14}{:>14}{:>14}{:>14}",
        "", PATHS[0], PATHS[1], PATHS[2], PATHS[3]
    );
    let ttfb = r.ttfb.each_ref().map(|s| f(median(&s.ttfb)));
    println!(
        "{:<36}{:>14}{:>14}{:>14}{:>14}",
        "first frame p50 (ms)", ttfb[0], ttfb[1], ttfb[2], ttfb[3]
    );
    let p = |s: &Samples, q: f64| crate::measure::percentile(&s.delays, q);
    let delay = r
        .events
        .each_ref()
        .map(|s| format!("{} / {}", f(p(s, 50.0)), f(p(s, 99.0))));
    println!(
        "{:<36}{:>14}{:>14}{:>14}{:>14}",
        "event delay p50 / p99 (ms)", delay[0], delay[1], delay[2], delay[3]
    );
    let errors: [String; 4] =
        std::array::from_fn(|i| (r.ttfb[i].errors + r.events[i].errors).to_string());
    println!(
        "{:<36}{:>14}{:>14}{:>14}{:>14}",
        "errors", errors[0], errors[1], errors[2], errors[3]
    );
    for (name, s) in PATHS.iter().zip(r.ttfb.iter().chain(r.events.iter())) {
        if let Some(e) = &s.first_error {
            println!("note: {name}: first error: {e}");
        }
    }
    let http_ttfb = added(&r.ttfb[0].ttfb, &r.ttfb[1].ttfb);
    let ws_ttfb = added(&r.ttfb[2].ttfb, &r.ttfb[3].ttfb);
    let run_p99 = |s: &Samples| median(&s.run_p99);
    let http_delay = run_p99(&r.events[1]) - run_p99(&r.events[0]);
    let ws_delay = run_p99(&r.events[3]) - run_p99(&r.events[2]);
    let http_p50 = p(&r.events[1], 50.0) - p(&r.events[0], 50.0);
    let ws_p50 = p(&r.events[3], 50.0) - p(&r.events[2], 50.0);
    println!(
        "added by the router: first frame {} ms over WS vs {} ms over HTTP; event delay p50 {} \
         vs {} ms, p99 (median of runs) {} vs {} ms",
        f(ws_ttfb),
        f(http_ttfb),
        f(ws_p50),
        f(http_p50),
        f(ws_delay),
        f(http_delay)
    );
    println!(
        "ratios WS/HTTP added: first frame {:.2}, event delay p50 {:.2}, p99 {:.2}",
        ws_ttfb / http_ttfb,
        ws_p50 / http_p50,
        ws_delay / http_delay
    );
    // Equal within 0.05 ms counts as "no more": both sit at the noise floor.
    let slack = 0.05;
    let verdict = |ok: bool, what: String| {
        println!("{} {what}", if ok { "PASS" } else { "MISS" });
    };
    verdict(
        ws_p50 <= http_p50 + slack,
        format!(
            "WS adds no more per-event delay (p50) than HTTP: {} <= {} ms (+{slack})",
            f(ws_p50),
            f(http_p50)
        ),
    );
    verdict(
        ws_delay <= http_delay + slack,
        format!(
            "WS adds no more per-event delay (p99) than HTTP: {} <= {} ms (+{slack})",
            f(ws_delay),
            f(http_delay)
        ),
    );
    verdict(
        ws_ttfb <= http_ttfb + slack,
        format!(
            "WS adds no more to the first frame than HTTP: {} <= {} ms (+{slack})",
            f(ws_ttfb),
            f(http_ttfb)
        ),
    );
    let errors: usize = r.ttfb.iter().chain(r.events.iter()).map(|s| s.errors).sum();
    verdict(
        errors == 0,
        format!("{errors} errors on the WebSocket phases"),
    );
}
