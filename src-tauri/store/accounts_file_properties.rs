//! Properties of the accounts file, which other tools and other versions of the router also
//! write: a read and a write give back every field, known or not, at every level.

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn config() -> ProptestConfig {
    crate::properties::seeded(256)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // As serde_json reads the number back: without its `float_roundtrip` feature a
        // 17-digit float may come back one ulp off, whatever the file's fields are.
        (-1e12f64..1e12).prop_map(|f| serde_json::from_str(&f.to_string()).unwrap_or_default()),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Fields this version does not know at a level whose known ones are `known`: any name,
/// including a known one's snake_case or other case (`added_at`, `Email`).
fn unknown_fields(known: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    let name = prop_oneof!["[a-zA-Z_]{1,16}", "\\PC{1,8}"]
        .prop_filter("a known field", move |n| !known.contains(&n.as_str()));
    prop::collection::btree_map(name, json_value(), 0..4).prop_map(|m| m.into_iter().collect())
}

const FILE_FIELDS: &[&str] = &["version", "accounts", "preferredAccount"];
const ACCOUNT_FIELDS: &[&str] = &[
    "index",
    "email",
    "userId",
    "accountId",
    "planType",
    "label",
    "addedAt",
    "lastUsed",
    "parts",
    "access",
    "expires",
    "rateLimitResets",
    "enabled",
    "needsLogin",
    "tokenStore",
    "tokensUpdatedAt",
];
const PARTS_FIELDS: &[&str] = &["refreshToken"];

/// Puts `value` under `key` when there is one.
fn put(object: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        object.insert(key.to_string(), value);
    }
}

fn text() -> impl Strategy<Value = Option<Value>> {
    prop::option::of("\\PC{0,16}".prop_map(Value::from))
}

fn number() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(any::<i64>().prop_map(Value::from))
}

fn parts() -> impl Strategy<Value = Value> {
    (text(), unknown_fields(PARTS_FIELDS)).prop_map(|(refresh, mut object)| {
        put(&mut object, "refreshToken", refresh);
        Value::Object(object)
    })
}

/// An account as written with every field in its written form (absent or set), so that a
/// round trip must give back exactly the same JSON.
fn account() -> impl Strategy<Value = Value> {
    let ids = (text(), text(), text(), text(), text());
    let times = (any::<i64>(), number(), number(), number());
    let state = (
        prop::option::of(any::<u32>().prop_map(Value::from)),
        prop::option::of(parts()),
        text(),
        prop::collection::btree_map("\\PC{0,10}", any::<i64>(), 0..3),
        any::<bool>(),
        prop::option::of(("[a-z_]{1,24}", any::<i64>())),
        prop::option::of(prop_oneof![Just("keychain".to_string()), "[a-z]{0,8}"]),
    );
    (ids, times, state, unknown_fields(ACCOUNT_FIELDS)).prop_map(
        |(
            (email, user, account, plan, label),
            (added, last_used, expires, tokens_updated),
            (index, parts, access, resets, enabled, needs, store),
            mut object,
        )| {
            put(&mut object, "index", index);
            put(&mut object, "email", email);
            put(&mut object, "userId", user);
            put(&mut object, "accountId", account);
            put(&mut object, "planType", plan);
            put(&mut object, "label", label);
            object.insert("addedAt".into(), added.into());
            put(&mut object, "lastUsed", last_used);
            put(&mut object, "parts", parts);
            put(&mut object, "access", access);
            put(&mut object, "expires", expires);
            object.insert("rateLimitResets".into(), json!(resets));
            object.insert("enabled".into(), enabled.into());
            let needs = needs.map(|(code, since)| json!({"code": code, "since": since}));
            put(&mut object, "needsLogin", needs);
            put(&mut object, "tokenStore", store.map(Value::from));
            put(&mut object, "tokensUpdatedAt", tokens_updated);
            Value::Object(object)
        },
    )
}

fn accounts_file() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(account(), 0..4),
        text(),
        unknown_fields(FILE_FIELDS),
    )
        .prop_map(|(accounts, preferred, mut object)| {
            object.insert("version".into(), 1.into());
            object.insert("accounts".into(), accounts.into());
            put(&mut object, "preferredAccount", preferred);
            Value::Object(object)
        })
}

proptest! {
    #![proptest_config(config())]

    /// Read and written back (as the store does, through bytes): the same JSON, so every
    /// field this version does not know survives, in the file, each account and its parts.
    #[test]
    fn a_round_trip_keeps_every_field_at_every_level(file in accounts_file()) {
        let bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        let read: AccountsFile = match serde_json::from_slice(&bytes) {
            Ok(read) => read,
            Err(e) => return Err(TestCaseError::fail(format!("not read: {e}"))),
        };
        let written = serde_json::to_vec_pretty(&read).unwrap_or_default();
        let again: Value = serde_json::from_slice(&written).unwrap_or_default();
        prop_assert_eq!(&again, &file);
    }
}
