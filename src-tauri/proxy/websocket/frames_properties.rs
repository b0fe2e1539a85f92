//! Properties of what is read from WebSocket text frames, which come from the client and
//! the upstream: any text is read without panicking, and a frame reads the same however
//! its JSON is laid out.

use proptest::prelude::*;

use super::*;

fn config() -> ProptestConfig {
    crate::properties::seeded(256)
}

/// What routing and the stream loop read from a frame.
#[derive(Debug, PartialEq)]
struct Reading {
    kind: Option<String>,
    probe: Option<(Option<String>, Option<String>, Option<String>)>,
    generates: bool,
}

fn read(text: &str) -> Reading {
    Reading {
        kind: frame_type(text).map(Cow::into_owned),
        probe: serde_json::from_str::<FrameProbe>(text).ok().map(|p| {
            (
                p.kind.map(Cow::into_owned),
                p.model.map(Cow::into_owned),
                p.prompt_cache_key.map(Cow::into_owned),
            )
        }),
        generates: generates(text.as_bytes()),
    }
}

/// Text made of JSON-ish pieces, so the `"type":` fast path meets quotes, escapes and
/// multi-byte characters around its 64-byte head.
fn json_ish_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("\"type\":".to_string()),
        Just("\"type\": \"".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just(",".to_string()),
        Just(" ".to_string()),
        Just("é".to_string()),
        Just("\u{1F600}".to_string()),
        "\\PC{0,10}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
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
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A frame as the backend or Codex sends it: `type` first, then fields whose objects may
/// have a `type` of their own (`error`, `item`, `response`).
fn known_frame() -> impl Strategy<Value = (String, Vec<(String, Value)>)> {
    let kind = prop_oneof![
        Just("response.create".to_string()),
        Just("response.created".to_string()),
        Just("response.output_text.delta".to_string()),
        Just("response.completed".to_string()),
        Just("codex.rate_limits".to_string()),
        Just("error".to_string()),
        "\\PC{0,70}",
    ];
    let field = prop_oneof![
        json_value().prop_map(|v| ("model".to_string(), v)),
        "\\PC{0,20}".prop_map(|s| ("model".to_string(), Value::from(s))),
        "\\PC{0,20}".prop_map(|s| ("prompt_cache_key".to_string(), Value::from(s))),
        any::<bool>().prop_map(|b| ("generate".to_string(), Value::from(b))),
        "\\PC{0,40}".prop_map(|s| ("delta".to_string(), Value::from(s))),
        ("[a-z_.]{1,24}", json_value()).prop_map(|(t, v)| {
            (
                "error".to_string(),
                serde_json::json!({"type": t, "message": v}),
            )
        }),
        "[a-z_.]{1,24}".prop_map(|t| ("item".to_string(), serde_json::json!({"type": t}))),
        ("[a-z_]{1,8}", json_value()).prop_map(|(k, v)| (format!("x_{k}"), v)),
    ];
    (kind, prop::collection::vec(field, 0..5)).prop_map(|(kind, fields)| {
        // One value per key, as a JSON object has.
        let mut seen = std::collections::BTreeSet::new();
        let fields = fields
            .into_iter()
            .filter(|(key, _)| seen.insert(key.clone()))
            .collect();
        (kind, fields)
    })
}

/// `{"type":..,` then the fields in the order given, compact.
fn as_sent(kind: &str, fields: &[(String, Value)]) -> String {
    let mut text = format!("{{\"type\":{}", Value::from(kind));
    for (key, value) in fields {
        text.push_str(&format!(",{}:{}", Value::from(key.as_str()), value));
    }
    text.push('}');
    text
}

proptest! {
    #![proptest_config(config())]

    /// Any text at all, from either side: read without panicking.
    #[test]
    fn arbitrary_text_never_panics(text in prop_oneof![any::<String>(), json_ish_text()]) {
        let _ = read(&text);
    }

    /// A frame written as the backend sends it, then laid out again (keys sorted, compact
    /// and pretty): every reading is the same, and its type is the frame's own.
    #[test]
    fn known_frames_read_the_same_after_reserialisation((kind, fields) in known_frame()) {
        let sent = as_sent(&kind, &fields);
        let first = read(&sent);
        prop_assert_eq!(first.kind.as_deref(), Some(kind.as_str()), "{}", sent);
        let json: Value = serde_json::from_str(&sent).unwrap_or_default();
        let compact = json.to_string();
        let pretty = serde_json::to_string_pretty(&json).unwrap_or_default();
        prop_assert_eq!(&read(&compact), &first, "{}", compact);
        prop_assert_eq!(&read(&pretty), &first, "{}", pretty);
        let generate = fields.iter().find(|(k, _)| k == "generate").map(|(_, v)| v.as_bool());
        prop_assert_eq!(first.generates, generate != Some(Some(false)));
    }

    /// A close reason is the longest start of the text that fits in 123 bytes.
    #[test]
    fn close_reasons_are_cut_on_a_character_boundary(code in any::<u16>(), reason in "\\PC{0,140}") {
        let Message::Close(Some(frame)) = close_frame(code, &reason) else {
            panic!("not a close frame");
        };
        let cut = frame.reason.as_str();
        prop_assert_eq!(frame.code, code);
        prop_assert!(cut.len() <= 123 && reason.starts_with(cut));
        let next = reason[cut.len()..].chars().next().map_or(0, char::len_utf8);
        prop_assert!(cut.len() == reason.len() || cut.len() + next > 123);
    }
}

/// Found by the property above: a nested object's `type` ahead of the frame's own was taken
/// for it, so an error frame laid out with sorted keys did not end the stream.
#[test]
fn a_nested_type_before_the_frames_own_is_not_taken_for_it() {
    let text = r#"{"error":{"type":"usage_limit_reached"},"status":429,"type":"error"}"#;
    assert_eq!(frame_type(text).as_deref(), Some("error"));
    let text = r#"{"error":{"message":null,"type":"a"},"type":"response.create"}"#;
    assert_eq!(frame_type(text).as_deref(), Some("response.create"));
}
