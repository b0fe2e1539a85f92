//! One attempt against the upstream as one account: headers rewritten, the answer
//! classified, and a good stream turned into the client's response without buffering.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::Value;

use super::sse::{self, Opening, OpeningEvent};
use super::stream::{
    completed_tokens, names, record_event_limits, stream_body, Scanner, COMPLETED,
};
use crate::accounts::{deactivation_code, usage, Credentials, Pool};
use crate::history::{Entry, Recorder};

/// Headers that belong to one hop, or to the client's identity with us, never forwarded.
pub(super) const DROPPED_REQUEST_HEADERS: [&str; 15] = [
    "x-cma-account",
    "host",
    "authorization",
    "chatgpt-account-id",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "x-openai-fedramp",
    "accept-encoding",
    "cookie",
];
const DROPPED_RESPONSE_HEADERS: [&str; 6] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "set-cookie",
    "proxy-connection",
    "upgrade",
];
/// How much opening preamble to hold back while waiting for the first decisive event.
pub(super) const MAX_HELD_BYTES: usize = 1024 * 1024;
/// How long to hold the opening back at most, counted from its first bytes: a limit failure
/// comes at once, so a stream that has only said "created" for this long is queued upstream
/// and is passed on as it is rather than kept from Codex (or failed over, spending a second
/// account on the same request).
const MAX_HOLD: Duration = Duration::from_secs(5);

/// The request as it will be sent upstream, the same for every account tried.
pub struct Outgoing {
    pub method: Method,
    pub url: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Sniff the opening of an SSE answer for limit failures.
    pub streaming: bool,
}

/// An upstream answer kept to give to the client when no account does better.
pub struct Replay {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why this account did not serve the request.
pub enum Failure {
    /// 401 twice, even after a refresh.
    Unauthorized,
    /// A usage limit; the reset in epoch seconds when known.
    Limited { code: String, reset: Option<i64> },
    /// Worth a short rest: 5xx, burst 429, overload, connection trouble, stall.
    Transient {
        reason: String,
        cooldown: Duration,
        replay: Option<Replay>,
    },
    /// 400 `invalid_encrypted_content`: the input holds reasoning another account wrote.
    ForeignContent { replay: Replay },
    /// The backend says the account or its workspace is deactivated (the code as sent): no
    /// wait or refresh helps, the user must act.
    Deactivated { code: String },
}

/// What came back, before any byte went to the client.
pub enum Answer {
    Serve(Response),
    Fail(Failure),
}

pub async fn send(
    http: &reqwest::Client,
    out: &Outgoing,
    credentials: &Credentials,
    keep_turn_state: bool,
    timeout: Duration,
) -> Result<reqwest::Response, Failure> {
    let mut headers = HeaderMap::with_capacity(out.headers.len() + 2);
    for (name, value) in &out.headers {
        let dropped = DROPPED_REQUEST_HEADERS.contains(&name.as_str())
            || (!keep_turn_state && name == "x-codex-turn-state");
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    let bearer = format!("Bearer {}", credentials.access_token.expose());
    if let Ok(mut value) = HeaderValue::from_str(&bearer) {
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    if let Some(id) = credentials
        .account_id
        .as_deref()
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        headers.insert(HeaderName::from_static("chatgpt-account-id"), id);
    }
    let request = match parsed_url(&out.url) {
        Some(url) => http.request(out.method.clone(), url),
        None => http.request(out.method.clone(), &out.url),
    }
    .headers(headers)
    .body(out.body.clone())
    .send();
    match tokio::time::timeout(timeout, request).await {
        Err(_) => Err(Failure::Transient {
            reason: format!("no answer within {} ms", timeout.as_millis()),
            cooldown: Duration::from_secs(30),
            replay: None,
        }),
        Ok(Err(e)) => Err(Failure::Transient {
            reason: describe(&e),
            cooldown: Duration::from_secs(5),
            replay: None,
        }),
        Ok(Ok(response)) => Ok(response),
    }
}

thread_local! {
    /// The last upstream URL parsed on this thread, with its text.
    static LAST_URL: std::cell::RefCell<Option<(String, reqwest::Url)>> =
        const { std::cell::RefCell::new(None) };
}

/// `url` parsed; nearly every request goes to the same one, so it is parsed once per thread
/// and cloned after (a parse costs as much as the rest of building the request). `None` for
/// a URL that does not parse, which reqwest then reports.
fn parsed_url(url: &str) -> Option<reqwest::Url> {
    LAST_URL.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((text, parsed)) = last.as_ref() {
            if text == url {
                return Some(parsed.clone());
            }
        }
        let parsed = reqwest::Url::parse(url).ok()?;
        *last = Some((url.to_string(), parsed.clone()));
        Some(parsed)
    })
}

/// Reads a 401's body for a deactivation, which no token refresh can help: then none is
/// spent. `None` for a plain 401.
pub async fn deactivated_401(response: reqwest::Response, first_byte: Duration) -> Option<Failure> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = match tokio::time::timeout(first_byte, response.bytes()).await {
        Ok(Ok(body)) => body,
        _ => Bytes::new(),
    };
    let code = deactivation_code(status, &headers, &body)?;
    Some(Failure::Deactivated { code })
}

/// Classifies an answer other than 401 and, for a good one, builds the client response.
pub async fn classify(
    response: reqwest::Response,
    out: &Outgoing,
    pool: &Pool,
    account: &str,
    history: Option<&Recorder>,
    timeouts: (Duration, Duration),
    now_s: i64,
) -> Answer {
    let status = response.status();
    if let Some(u) = usage::from_headers(response.headers(), now_s) {
        pool.record_usage(account, u);
    }
    if status.is_success() {
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if out.streaming && is_sse {
            return open_stream(response, pool, account, history, timeouts, now_s).await;
        }
        return Answer::Serve(passthrough(response, timeouts.1));
    }
    let headers = response.headers().clone();
    let body = match tokio::time::timeout(timeouts.0, response.bytes()).await {
        Ok(Ok(body)) => body,
        _ => Bytes::new(),
    };
    if let Some(code) = deactivation_code(status.as_u16(), &headers, &body) {
        return Answer::Fail(Failure::Deactivated { code });
    }
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let error = json.get("error").unwrap_or(&Value::Null);
    let code = ["type", "code"]
        .iter()
        .find_map(|f| error.get(f).and_then(Value::as_str))
        .unwrap_or("")
        .to_ascii_lowercase();
    let replay = |headers: HeaderMap| {
        Some(Replay {
            status,
            headers,
            body: body.clone(),
        })
    };
    match status.as_u16() {
        429 if usage::is_limit_code(&code) && code != "rate_limit_exceeded" => {
            Answer::Fail(Failure::Limited {
                reset: usage::limit_reset(&json, Some(&headers), now_s),
                code,
            })
        }
        429 => {
            let wait = headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(10)
                .min(60);
            // Codex gives up at once on a 429 without Retry-After; with one it waits and
            // retries, which is right when every account is only briefly throttled.
            let mut headers = headers;
            headers
                .entry(reqwest::header::RETRY_AFTER)
                .or_insert(HeaderValue::from(wait.max(1)));
            Answer::Fail(Failure::Transient {
                reason: "429 rate limited".to_string(),
                cooldown: Duration::from_secs(wait),
                replay: replay(headers),
            })
        }
        403 | 408 | 500..=599 => Answer::Fail(Failure::Transient {
            reason: format!("upstream answered {}", status.as_u16()),
            cooldown: Duration::from_secs(if status == StatusCode::FORBIDDEN {
                60
            } else {
                5
            }),
            replay: replay(headers),
        }),
        400 if error.get("code").and_then(Value::as_str) == Some("invalid_encrypted_content") => {
            Answer::Fail(Failure::ForeignContent {
                replay: Replay {
                    status,
                    headers,
                    body,
                },
            })
        }
        // Anything else says the request itself is wrong: no other account will do better.
        _ => Answer::Serve(replayed(Replay {
            status,
            headers,
            body,
        })),
    }
}

/// Reads the opening events of a stream. Limit or overload failures become a `Failure`
/// (nothing has reached the client yet); anything else is served, held bytes first.
async fn open_stream(
    response: reqwest::Response,
    pool: &Pool,
    account: &str,
    history: Option<&Recorder>,
    (first_byte, idle): (Duration, Duration),
    now_s: i64,
) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let mut upstream = response.bytes_stream();
    let mut held = BytesMut::new();
    let mut scanned = 0;
    // Where the preamble's rate limits are in `held`: read after the first byte is sent, or
    // when the stream fails here.
    let mut limits = Vec::new();
    let record_limits = |held: &[u8], limits: &[std::ops::Range<usize>]| {
        for range in limits {
            record_event_limits(pool, account, &held[range.clone()], now_s);
        }
    };
    let transient = |reason: &str| {
        Answer::Fail(Failure::Transient {
            reason: reason.to_string(),
            cooldown: Duration::from_secs(5),
            replay: None,
        })
    };
    // Set by the first bytes: from then on the upstream is working on this request as this
    // account, so waiting past the hold and trying another account would spend both.
    let mut hold_ends: Option<tokio::time::Instant> = None;
    'read: loop {
        let next = upstream.next();
        let read = match hold_ends {
            None => tokio::time::timeout(first_byte, next).await,
            Some(end) => match tokio::time::timeout_at(end, next).await {
                Err(_) => break 'read,
                Ok(read) => Ok(read),
            },
        };
        let chunk = match read {
            Ok(Some(Ok(chunk))) => chunk,
            failed => {
                record_limits(&held, &limits);
                return transient(&match failed {
                    Err(_) => "the stream stalled before its first output".to_string(),
                    Ok(Some(Err(e))) => format!("the stream broke: {}", describe(&e)),
                    _ => "the stream ended before its first output".to_string(),
                });
            }
        };
        held.extend_from_slice(&chunk);
        if hold_ends.is_none() && !held.is_empty() {
            hold_ends = Some(tokio::time::Instant::now() + MAX_HOLD.min(first_byte));
        }
        while let Some(end) = sse::event_end(&held[scanned..]) {
            let event = scanned..scanned + end;
            scanned += end;
            let Some(read) = sse::read_opening(&held[event.clone()], now_s) else {
                continue;
            };
            match read {
                OpeningEvent::RateLimits => limits.push(event),
                OpeningEvent::Decided(Opening::Preamble) => {}
                OpeningEvent::Decided(Opening::Proceed) => {
                    // A stream that ends at once (a prewarm) completes here.
                    let event = &held[event];
                    if let Some(history) = history.filter(|_| names(event, COMPLETED)) {
                        if let Some(tokens) =
                            completed_tokens(event, account, &pool.display_name(account))
                        {
                            history.record(Entry::Tokens(tokens));
                        }
                    }
                    break 'read;
                }
                OpeningEvent::Decided(Opening::Limited { code, reset }) => {
                    record_limits(&held, &limits);
                    return Answer::Fail(Failure::Limited { code, reset });
                }
                OpeningEvent::Decided(Opening::Overloaded { code }) => {
                    record_limits(&held, &limits);
                    return transient(&format!("overloaded ({code})"));
                }
            }
        }
        if held.len() > MAX_HELD_BYTES {
            break;
        }
    }
    let events = sse::Splitter::with_pending(held[scanned..].to_vec());
    let held = held.freeze();
    let scanner = Scanner {
        pool: pool.clone(),
        account: account.to_string(),
        events,
        preamble_limits: limits.into_iter().map(|r| held.slice(r)).collect(),
        history: history.cloned(),
    };
    let body = stream_body(held, upstream, scanner, idle);
    Answer::Serve(build_response(status, &headers, body))
}

/// A non-streaming answer passed through as it arrives.
fn passthrough(response: reqwest::Response, idle: Duration) -> Response {
    let status = response.status();
    let headers = response.headers().clone();
    let stream = response
        .bytes_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let body = futures_util::stream::unfold(Box::pin(stream), move |mut s| async move {
        match tokio::time::timeout(idle, s.next()).await {
            Ok(Some(item)) => Some((item, s)),
            Ok(None) => None,
            Err(_) => Some((Err(std::io::Error::other("upstream stalled")), s)),
        }
    });
    build_response(status, &headers, Body::from_stream(body))
}

pub fn replayed(replay: Replay) -> Response {
    build_response(replay.status, &replay.headers, Body::from(replay.body))
}

fn build_response(status: StatusCode, headers: &HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let out = response.headers_mut();
    for (name, value) in headers {
        if !DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    response
}

/// A transport error in words, without the URL.
pub fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else if e.is_body() || e.is_decode() {
        "the connection broke mid-answer".to_string()
    } else {
        "request failed".to_string()
    }
}
