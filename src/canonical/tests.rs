use super::*;
use proptest::prelude::*;
use serde_json::json;

fn canon(v: Value) -> CanonicalCall {
    CanonicalCall::build("send_email", &v, &CanonPolicy::default()).expect("object")
}

fn metadata_policy() -> CanonPolicy {
    CanonPolicy {
        ignored_names: ["request_id", "trace_id", "timestamp"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..Default::default()
    }
}

#[test]
fn key_order_does_not_matter() {
    let a = canon(json!({"to": "a@x.io", "subject": "Hi", "n": 1}));
    let b = canon(json!({"n": 1, "subject": "Hi", "to": "a@x.io"}));
    assert_eq!(a.canonical_json, b.canonical_json);
    assert_eq!(a.exact_hash, b.exact_hash);
    assert_eq!(a.canonical_json, r#"{"n":1,"subject":"Hi","to":"a@x.io"}"#);
}

#[test]
fn nested_key_order_does_not_matter() {
    let a = canon(json!({"x": {"b": 1, "a": [ {"d": 1, "c": 2} ]}}));
    let b = canon(json!({"x": {"a": [ {"c": 2, "d": 1} ], "b": 1}}));
    assert_eq!(a.exact_hash, b.exact_hash);
}

#[test]
fn whitespace_is_trimmed_and_collapsed() {
    let a = canon(json!({"body": "  hello   world \n again\t"}));
    assert_eq!(a.canonical_json, r#"{"body":"hello world again"}"#);
}

#[test]
fn unicode_is_nfc() {
    let decomposed = canon(json!({"name": "Cafe\u{301}"}));
    let composed = canon(json!({"name": "Caf\u{e9}"}));
    assert_eq!(decomposed.exact_hash, composed.exact_hash);
}

#[test]
fn number_forms_are_one() {
    let forms = [
        json!({"n": 1}),
        json!({"n": 1.0}),
        serde_json::from_str::<Value>(r#"{"n": 1e0}"#).unwrap(),
        json!({"n": "1"}),
    ];
    let hashes: HashSet<String> = forms.into_iter().map(|f| canon(f).exact_hash).collect();
    assert_eq!(hashes.len(), 1);
    assert_eq!(
        canon(json!({"a": 100.10})).canonical_json,
        canon(json!({"a": "100.1"})).canonical_json
    );
}

#[test]
fn emails_and_url_hosts_ignore_case_but_paths_do_not() {
    assert_eq!(
        normalize(&json!("Jane.Doe@Example.COM")),
        json!("jane.doe@example.com")
    );
    assert_eq!(
        normalize(&json!("HTTP://PLGA.CA/Path?Q=1")),
        json!("http://plga.ca/Path?Q=1")
    );
    assert_ne!(
        normalize(&json!("https://x.io/A")),
        normalize(&json!("https://x.io/a"))
    );
    assert_eq!(normalize(&json!("Alice")), json!("Alice"));
}

#[test]
fn different_numbers_stay_different() {
    assert_ne!(
        canon(json!({"n": 1})).exact_hash,
        canon(json!({"n": 1.5})).exact_hash
    );
    assert_ne!(
        canon(json!({"n": 100})).identity_fingerprint,
        canon(json!({"n": 1000})).identity_fingerprint
    );
}

#[test]
fn identifier_like_numeric_strings_stay_strings() {
    for s in ["007", "4111111111111111111", "1e3", "1.", "-", "+1"] {
        assert_eq!(normalize(&json!(s)), json!(s), "{s}");
    }
}

#[test]
fn ignorable_metadata_fields_are_dropped() {
    let p = metadata_policy();
    let a = CanonicalCall::build(
        "t",
        &json!({"to": "bob", "request_id": "r1", "timestamp": 1}),
        &p,
    )
    .unwrap();
    let b = CanonicalCall::build(
        "t",
        &json!({"to": "bob", "request_id": "r2", "trace_id": "x"}),
        &p,
    )
    .unwrap();
    assert_eq!(a.exact_hash, b.exact_hash);
    assert_eq!(a.canonical_json, r#"{"to":"bob"}"#);
}

#[test]
fn tool_policy_paths_and_defaults_are_dropped() {
    let p = CanonPolicy {
        ignored_paths: ["meta.nonce".to_string()].into(),
        defaults: json!({"priority": "normal", "retries": 3})
            .as_object()
            .cloned()
            .unwrap(),
        ..Default::default()
    };
    let a = CanonicalCall::build(
        "t",
        &json!({"id": 7, "meta": {"nonce": "n1", "k": 1}, "priority": "normal"}),
        &p,
    )
    .unwrap();
    let b = CanonicalCall::build(
        "t",
        &json!({"id": 7, "meta": {"nonce": "n2", "k": 1}, "retries": 3.0}),
        &p,
    )
    .unwrap();
    assert_eq!(a.canonical_json, b.canonical_json);
    let c = CanonicalCall::build(
        "t",
        &json!({"id": 7, "meta": {"k": 1}, "priority": "high"}),
        &p,
    )
    .unwrap();
    assert_ne!(a.exact_hash, c.exact_hash);
}

#[test]
fn tool_name_is_part_of_both_hashes() {
    let args = json!({"id": 1, "body": "please refund the order that arrived broken"});
    let a = CanonicalCall::build("refund", &args, &CanonPolicy::default()).unwrap();
    let b = CanonicalCall::build("cancel", &args, &CanonPolicy::default()).unwrap();
    assert_ne!(a.exact_hash, b.exact_hash);
    assert_ne!(a.identity_fingerprint, b.identity_fingerprint);
}

#[test]
fn identity_and_free_text_are_split_by_value() {
    let c = canon(json!({
        "to": "alice@example.com",
        "amount": 100,
        "subject": "Invoice",
        "body": "Hi Alice, please find the invoice for March attached."
    }));
    assert_eq!(
        c.identity.keys().cloned().collect::<Vec<_>>(),
        vec!["amount", "subject", "to"]
    );
    assert_eq!(
        c.free_text.keys().cloned().collect::<Vec<_>>(),
        vec!["body"]
    );
}

#[test]
fn fingerprint_ignores_prose_but_not_identity() {
    let a = canon(
        json!({"to": "alice@example.com", "body": "Please send me the quarterly numbers today"}),
    );
    let b = canon(
        json!({"to": "alice@example.com", "body": "Could you send the quarterly numbers over today"}),
    );
    let c = canon(
        json!({"to": "bob@example.com", "body": "Please send me the quarterly numbers today"}),
    );
    assert_eq!(a.identity_fingerprint, b.identity_fingerprint);
    assert_ne!(a.exact_hash, b.exact_hash);
    assert_ne!(a.identity_fingerprint, c.identity_fingerprint);
}

#[test]
fn a_missing_free_text_field_changes_the_fingerprint() {
    let a = canon(
        json!({"to": "alice@example.com", "body": "Please send me the quarterly numbers today"}),
    );
    let b = canon(json!({"to": "alice@example.com"}));
    assert_ne!(a.identity_fingerprint, b.identity_fingerprint);
}

#[test]
fn swapped_identity_values_change_the_fingerprint() {
    let a = canon(json!({"from": "NYC", "to": "LAX"}));
    let b = canon(json!({"from": "LAX", "to": "NYC"}));
    assert_ne!(a.identity_fingerprint, b.identity_fingerprint);
}

#[test]
fn policy_fields_override_inference() {
    let p = CanonPolicy {
        identity_fields: ["query".to_string()].into(),
        free_text_fields: ["note".to_string()].into(),
        ..Default::default()
    };
    let c = CanonicalCall::build("t", &json!({"query": "a long query with many words in it", "note": "ok", "other": "another long sentence with many words"}), &p).unwrap();
    assert!(c.identity.contains_key("query"));
    assert!(
        c.identity.contains_key("other"),
        "naming free-text fields makes the rest identity"
    );
    assert_eq!(c.free_text.get("note").map(String::as_str), Some("ok"));
}

#[test]
fn non_objects_are_rejected() {
    for v in [json!([1]), json!("x"), json!(1), json!(null)] {
        assert!(matches!(
            CanonicalCall::build("t", &v, &CanonPolicy::default()),
            Err(CanonError::NotAnObject(_))
        ));
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        (-1.0e12f64..1.0e12).prop_map(|f| json!(f)),
        "[ a-zA-Z0-9\u{e9}\u{301}\t.-]{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_ ]{1,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn reverse_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m
                .iter()
                .map(|(k, v)| (k.clone(), reverse_keys(v)))
                .collect();
            entries.reverse();
            let mut out = Map::new();
            for (k, v) in entries {
                out.insert(k, v);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(reverse_keys).collect()),
        other => other.clone(),
    }
}

proptest! {
    #[test]
    fn normalize_is_a_fixed_point(v in arb_json()) {
        let once = normalize(&v);
        prop_assert_eq!(normalize(&once), once.clone());
        // The serialised form round-trips to itself too.
        let text = once.to_string();
        let reparsed: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(normalize(&reparsed).to_string(), text);
    }

    #[test]
    fn canonical_call_is_a_fixed_point(m in prop::collection::btree_map("[a-z]{1,6}", arb_json(), 0..6)) {
        let v = Value::Object(m.into_iter().collect());
        let c1 = CanonicalCall::build("tool", &v, &CanonPolicy::default()).unwrap();
        let c2 = CanonicalCall::build("tool", &c1.arguments, &CanonPolicy::default()).unwrap();
        prop_assert_eq!(c1, c2);
    }

    #[test]
    fn key_order_never_changes_the_hash(m in prop::collection::btree_map("[a-z]{1,6}", arb_json(), 0..6)) {
        let v = Value::Object(m.into_iter().collect());
        let r = reverse_keys(&v);
        let a = CanonicalCall::build("tool", &v, &CanonPolicy::default()).unwrap();
        let b = CanonicalCall::build("tool", &r, &CanonPolicy::default()).unwrap();
        prop_assert_eq!(a.exact_hash, b.exact_hash);
        prop_assert_eq!(a.identity_fingerprint, b.identity_fingerprint);
    }
}
