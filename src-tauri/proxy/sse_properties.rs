//! Properties of the SSE splitter over untrusted upstream bytes: however the stream is cut
//! into chunks, the same events come out, and no input makes it panic.

use proptest::prelude::*;
use serde_json::Value;

use super::*;

/// Splits a stream fed chunk by chunk with the `Splitter` the stream's watcher uses. Returns
/// the events and what is left over.
fn split_in_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut splitter = Splitter::default();
    let mut events = Vec::new();
    for chunk in chunks {
        splitter.feed(chunk, |event| events.push(event.to_vec()));
    }
    (events, splitter.pending().to_vec())
}

/// Cuts `bytes` at the given offsets (taken modulo its length, in any order).
fn cut_at(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut offsets: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    offsets.push(0);
    offsets.push(bytes.len());
    offsets.sort_unstable();
    offsets
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_.]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One event as an upstream would send it, and the JSON its `data:` lines carry.
#[derive(Debug, Clone)]
struct Event {
    bytes: Vec<u8>,
    json: Option<Value>,
}

fn event() -> impl Strategy<Value = Event> {
    let line_end = prop_oneof![Just("\n"), Just("\r\n")];
    (
        prop::option::of("[a-z_.]{1,24}"),
        prop::option::of(json_value()),
        any::<bool>(),
        prop::option::of("[^\r\n]{0,20}"),
        line_end.clone(),
        line_end,
    )
        .prop_map(|(name, json, pretty, comment, end, blank)| {
            let mut text = String::new();
            if let Some(comment) = &comment {
                text.push_str(&format!(":{comment}{end}"));
            }
            if let Some(name) = &name {
                text.push_str(&format!("event: {name}{end}"));
            }
            if let Some(json) = &json {
                // Pretty JSON spreads over several `data:` lines, cut only between tokens.
                let data = if pretty {
                    serde_json::to_string_pretty(json)
                } else {
                    serde_json::to_string(json)
                }
                .unwrap_or_default();
                for line in data.lines() {
                    text.push_str(&format!("data: {line}{end}"));
                }
            }
            if text.is_empty() {
                text.push_str(&format!(": keepalive{end}"));
            }
            text.push_str(blank);
            Event {
                bytes: text.into_bytes(),
                json,
            }
        })
}

/// Events, then an unfinished one (no blank line yet) that must stay pending.
fn stream() -> impl Strategy<Value = (Vec<Event>, Vec<u8>)> {
    let tail = prop_oneof![
        Just(String::new()),
        "data: [^\r\n]{0,16}",
        "data: [^\r\n]{0,16}\n",
        "data: [^\r\n]{0,16}\r\n",
        "data: [^\r\n]{0,16}\r\n\r",
    ];
    (prop::collection::vec(event(), 0..6), tail).prop_map(|(e, t)| (e, t.into_bytes()))
}

/// Bytes where line ends are common, so blank lines of every kind occur.
fn line_heavy_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'd'), any::<u8>()];
    prop::collection::vec(byte, 0..160)
}

fn config() -> ProptestConfig {
    crate::properties::seeded(256)
}

proptest! {
    #![proptest_config(config())]

    /// Cut once at every byte boundary, and at random boundaries: the events and the
    /// unfinished rest are those that were sent, and each event reads as the same JSON.
    #[test]
    fn events_cut_at_every_byte_boundary_come_out_the_same(
        (events, tail) in stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut bytes: Vec<u8> = events.iter().flat_map(|e| e.bytes.clone()).collect();
        bytes.extend_from_slice(&tail);
        let sent: Vec<Vec<u8>> = events.iter().map(|e| e.bytes.clone()).collect();
        for at in 0..=bytes.len() {
            let (got, rest) = split_in_chunks([&bytes[..at], &bytes[at..]]);
            prop_assert_eq!(&got, &sent, "cut at {}", at);
            prop_assert_eq!(&rest, &tail, "cut at {}", at);
        }
        let chunks = cut_at(&bytes, &cuts);
        let (got, rest) = split_in_chunks(chunks.iter().map(Vec::as_slice));
        prop_assert_eq!(&got, &sent);
        prop_assert_eq!(&rest, &tail);
        for (event, bytes) in events.iter().zip(&got) {
            prop_assert_eq!(&event_json(bytes), &event.json);
        }
    }

    /// Any bytes at all: no panic, chunking changes nothing, every event ends with a blank
    /// line and the events and the rest put together are the input.
    #[test]
    fn arbitrary_bytes_split_the_same_whatever_the_chunks(
        bytes in line_heavy_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let (whole, rest) = split_in_chunks([bytes.as_slice()]);
        for at in 0..=bytes.len() {
            let (got, got_rest) = split_in_chunks([&bytes[..at], &bytes[at..]]);
            prop_assert_eq!(&got, &whole, "cut at {}", at);
            prop_assert_eq!(&got_rest, &rest, "cut at {}", at);
        }
        let one_by_one = split_in_chunks(bytes.chunks(1));
        prop_assert_eq!(&one_by_one, &(whole.clone(), rest.clone()));
        let chunks = cut_at(&bytes, &cuts);
        prop_assert_eq!(split_in_chunks(chunks.iter().map(Vec::as_slice)), (whole.clone(), rest.clone()));
        let mut joined: Vec<u8> = whole.concat();
        joined.extend_from_slice(&rest);
        prop_assert_eq!(&joined, &bytes);
        for event in &whole {
            prop_assert!(event.ends_with(b"\n\n") || event.ends_with(b"\n\r\n"), "{:?}", event);
            let _ = event_json(event);
        }
    }

    /// Whatever JSON an upstream sends as its first event, classifying it does not panic,
    /// even with a reset time no clock can add.
    #[test]
    fn any_opening_event_is_classified_without_panicking(
        kind in prop_oneof![
            Just("response.failed"), Just("error"), Just("response.incomplete"),
            Just("response.created"), Just("other"),
        ],
        code in prop_oneof![
            Just("usage_limit_reached".to_string()),
            Just("server_is_overloaded".to_string()),
            "[a-z_]{0,12}",
        ],
        reset in reset_value(),
        extra in json_value(),
        nested in any::<bool>(),
        now_s in 0i64..4_102_444_800,
    ) {
        let error = serde_json::json!({"code": code, "resets_in_seconds": reset, "extra": extra});
        let event = if nested {
            serde_json::json!({"type": kind, "response": {"error": error}})
        } else {
            serde_json::json!({"type": kind, "error": error})
        };
        let _ = classify_opening(&event, now_s);
    }

    /// Reading only the type of an opening event decides as reading all of it does, for any
    /// type (known, unknown, missing, not a string), any body, in one `data:` line or several.
    #[test]
    fn reading_an_opening_events_type_decides_as_reading_all_of_it(
        kind in prop_oneof![
            Just(Value::from("response.failed")), Just(Value::from("error")),
            Just(Value::from("response.created")), Just(Value::from("codex.rate_limits")),
            Just(Value::from("response.output_text.delta")), Just(Value::Null),
            json_value(),
        ],
        code in prop_oneof![Just("usage_limit_reached"), Just("server_is_overloaded"), Just("x")],
        extra in json_value(),
        split in any::<bool>(),
        not_an_object in any::<bool>(),
        type_first in any::<bool>(),
        now_s in 0i64..4_102_444_800,
    ) {
        let error = serde_json::json!({"code": code});
        let json = if not_an_object {
            serde_json::json!([kind, extra])
        } else {
            serde_json::json!({"extra": extra, "type": kind, "error": error})
        };
        let text = serde_json::to_string_pretty(&json).unwrap();
        let data = if split {
            text.lines().map(|l| format!("data: {l}\n")).collect::<String>()
        } else if type_first && !not_an_object {
            // The backend's shape, which is read from its start: the type leads.
            let fields = format!(
                r#"{{"type":{},"extra":{},"error":{}}}"#,
                serde_json::to_string(&json["type"]).unwrap(),
                serde_json::to_string(&json["extra"]).unwrap(),
                serde_json::to_string(&json["error"]).unwrap(),
            );
            format!("data: {fields}\n")
        } else {
            format!("data: {}\n", serde_json::to_string(&json).unwrap())
        };
        let event = format!("event: x\n{data}\n");
        let full = event_json(event.as_bytes()).map(|json| {
            let opening = classify_opening(&json, now_s);
            if json.get("type").and_then(Value::as_str) == Some("codex.rate_limits") {
                OpeningEvent::RateLimits
            } else {
                OpeningEvent::Decided(opening)
            }
        });
        prop_assert_eq!(read_opening(event.as_bytes(), now_s), full);
    }

    /// A `codex.rate_limits` event (read from the stream's preamble) with any reset figure:
    /// read without panicking.
    #[test]
    fn any_rate_limits_event_is_read_without_panicking(
        used in reset_value(),
        reset in reset_value(),
        now_s in 0i64..4_102_444_800,
    ) {
        let event = serde_json::json!({
            "type": "codex.rate_limits",
            "rate_limits": {"primary": {"used_percent": used, "reset_after_seconds": reset}},
        });
        let _ = usage::from_rate_limits_event(&event, now_s);
    }
}

/// Numbers an upstream may put where seconds are expected, extremes included.
fn reset_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![Just(f64::MAX), Just(f64::MIN), Just(1e300), Just(-1e300)]
            .prop_map(Value::from),
    ]
}
