use super::*;
use proptest::prelude::*;
use serde_json::{Map, json};

fn canon(v: Value) -> CanonicalCall {
    CanonicalCall::build("send_email", &v, &CanonPolicy::default()).expect("object")
}

/// Canonicalises JSON text, as the server does (numbers exact).
fn canon_text(tool: &str, text: &str) -> CanonicalCall {
    CanonicalCall::from_json(tool, text, &CanonPolicy::default()).expect("object")
}

fn cv(v: Value) -> CanonValue {
    CanonValue::from(&v)
}

fn defaults(v: Value) -> BTreeMap<String, CanonValue> {
    v.as_object()
        .expect("defaults are an object")
        .iter()
        .map(|(k, v)| (k.clone(), normalize(v)))
        .collect()
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
        cv(json!("jane.doe@example.com"))
    );
    assert_eq!(
        normalize(&json!("HTTP://PLGA.CA/Path?Q=1")),
        cv(json!("http://plga.ca/Path?Q=1"))
    );
    assert_ne!(
        normalize(&json!("https://x.io/A")),
        normalize(&json!("https://x.io/a"))
    );
    assert_eq!(normalize(&json!("Alice")), cv(json!("Alice")));
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
    for s in [
        "007", "1e3", "1.", "-", "+1", "1.10", "2.0", "-0", "0.50", "1,000", "1_000",
    ] {
        assert_eq!(normalize(&json!(s)), cv(json!(s)), "{s}");
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
        defaults: defaults(json!({"priority": "normal", "retries": 3})),
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
        prop_assert_eq!(normalize_value(once.clone()), once.clone());
        // The serialised form round-trips to itself too.
        let text = once.to_string();
        let reparsed = parse(&text).unwrap();
        prop_assert_eq!(normalize_value(reparsed).to_string(), text);
    }

    #[test]
    fn canonical_call_is_a_fixed_point(m in prop::collection::btree_map("[a-z]{1,6}", arb_json(), 0..6)) {
        let v = Value::Object(m.into_iter().collect());
        let c1 = CanonicalCall::build("tool", &v, &CanonPolicy::default()).unwrap();
        let c2 = CanonicalCall::from_value("tool", c1.arguments.clone(), &CanonPolicy::default()).unwrap();
        let c3 = CanonicalCall::from_json("tool", &c1.canonical_json, &CanonPolicy::default()).unwrap();
        prop_assert_eq!(&c1, &c2);
        prop_assert_eq!(&c1, &c3);
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

// Issue 15: identity values compare exactly. The cases first filed, then the rules they follow.

fn differ(a: &CanonicalCall, b: &CanonicalCall) -> bool {
    a.canonical_json != b.canonical_json
        && a.exact_hash != b.exact_hash
        && a.identity_fingerprint != b.identity_fingerprint
}

fn same(a: &CanonicalCall, b: &CanonicalCall) -> bool {
    a.canonical_json == b.canonical_json
        && a.exact_hash == b.exact_hash
        && a.identity_fingerprint == b.identity_fingerprint
}

#[test]
fn version_1_10_is_not_version_1_1() {
    let a = canon_text("deploy", r#"{"service":"api","version":"1.10"}"#);
    let b = canon_text("deploy", r#"{"service":"api","version":"1.1"}"#);
    assert!(
        differ(&a, &b),
        "{} vs {}",
        a.canonical_json,
        b.canonical_json
    );
    assert_eq!(a.canonical_json, r#"{"service":"api","version":"1.10"}"#);
}

#[test]
fn version_2_0_is_not_version_2() {
    let a = canon_text("deploy", r#"{"service":"api","version":"2.0"}"#);
    let b = canon_text("deploy", r#"{"service":"api","version":"2"}"#);
    assert!(
        differ(&a, &b),
        "{} vs {}",
        a.canonical_json,
        b.canonical_json
    );
}

#[test]
fn amount_1e21_is_not_1e21_plus_one() {
    let a = canon_text("pay", r#"{"to":"a","amount":1e21}"#);
    let b = canon_text("pay", r#"{"to":"a","amount":1000000000000000000001}"#);
    assert!(
        differ(&a, &b),
        "{} vs {}",
        a.canonical_json,
        b.canonical_json
    );
    assert_eq!(
        b.canonical_json,
        r#"{"amount":1000000000000000000001,"to":"a"}"#
    );
    // The same amount spelt another way is the same call.
    let c = canon_text("pay", r#"{"to":"a","amount":1000000000000000000000.0}"#);
    assert!(same(&a, &c));
}

#[test]
fn amounts_differing_in_the_last_base_unit_differ() {
    let a = canon_text(
        "transfer",
        r#"{"wei":115792089237316195423570985008687907853269984665640564039457584007913129639935}"#,
    );
    let b = canon_text(
        "transfer",
        r#"{"wei":115792089237316195423570985008687907853269984665640564039457584007913129639934}"#,
    );
    assert!(differ(&a, &b));
}

#[test]
fn numbers_have_one_spelling() {
    let forms = ["1e3", "1000", "1000.0", "1E+3", "10000e-1", "1000.000"];
    let calls: Vec<CanonicalCall> = forms
        .iter()
        .map(|f| canon_text("t", &format!(r#"{{"n":{f}}}"#)))
        .collect();
    for c in &calls {
        assert!(same(c, &calls[0]), "{}", c.canonical_json);
    }
    assert_eq!(calls[0].canonical_json, r#"{"n":1000}"#);
}

#[test]
fn a_string_equals_a_number_only_as_its_canonical_text() {
    let pairs = [(r#""5""#, "5"), (r#""10""#, "10.0"), (r#""0.5""#, "5e-1")];
    for (s, n) in pairs {
        let a = canon_text("t", &format!(r#"{{"x":{s}}}"#));
        let b = canon_text("t", &format!(r#"{{"x":{n}}}"#));
        assert!(same(&a, &b), "{s} vs {n}");
    }
    for (s, n) in [
        (r#""1.10""#, "1.1"),
        (r#""2.0""#, "2"),
        (r#""007""#, "7"),
        (r#""1e3""#, "1000"),
    ] {
        let a = canon_text("t", &format!(r#"{{"x":{s}}}"#));
        let b = canon_text("t", &format!(r#"{{"x":{n}}}"#));
        assert!(differ(&a, &b), "{s} vs {n}");
    }
}

#[test]
fn cases_already_told_apart_stay_apart() {
    for (a, b) in [
        (r#"{"id":"007"}"#, r#"{"id":"7"}"#),
        (r#"{"x":0.30000000000000004}"#, r#"{"x":0.3}"#),
        (
            r#"{"id":"12345678901234567"}"#,
            r#"{"id":"12345678901234568"}"#,
        ),
        (r#"{"id":12345678901234567}"#, r#"{"id":12345678901234568}"#),
        (
            r#"{"id":"12345678901234567"}"#,
            r#"{"id":12345678901234568}"#,
        ),
    ] {
        assert!(
            differ(&canon_text("t", a), &canon_text("t", b)),
            "{a} vs {b}"
        );
    }
}

fn numeric_policy(paths: &[&str]) -> CanonPolicy {
    CanonPolicy {
        numeric_fields: paths.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn schema_typed_numeric_strings_read_as_numbers() {
    let p = numeric_policy(&["version", "legs[].price", "sizes[]"]);
    let build = |text: &str| CanonicalCall::from_json("t", text, &p).expect("object");
    let a =
        build(r#"{"version":"2.0","legs":[{"price":"10.50","city":"007"}],"sizes":["1e1", 3]}"#);
    let b = build(r#"{"version":2,"legs":[{"price":10.5,"city":"007"}],"sizes":[10, "3.0"]}"#);
    assert!(same(&a, &b), "{} vs {}", a.canonical_json, b.canonical_json);
    // Only where the schema says number: the id beside the price stays a string.
    let c = build(r#"{"version":2,"legs":[{"price":10.5,"city":"7"}],"sizes":[10, 3]}"#);
    assert!(differ(&a, &c));
    // And different numbers stay different.
    let d =
        build(r#"{"version":"2.01","legs":[{"price":"10.50","city":"007"}],"sizes":["1e1", 3]}"#);
    assert!(differ(&a, &d));
    // Without the schema, "2.0" is not 2.
    let e = canon_text("t", r#"{"version":"2.0"}"#);
    let f = canon_text("t", r#"{"version":2}"#);
    assert!(differ(&e, &f));
}

#[test]
fn schema_typed_defaults_match_any_spelling() {
    let p = CanonPolicy {
        defaults: defaults(json!({"retries": 3, "mode": "fast"})),
        ..numeric_policy(&["retries"])
    };
    let build = |text: &str| CanonicalCall::from_json("t", text, &p).expect("object");
    let plain = build(r#"{"id":"a"}"#);
    for text in [
        r#"{"id":"a","retries":3}"#,
        r#"{"id":"a","retries":"3.0"}"#,
        r#"{"id":"a","retries":3e0,"mode":"fast"}"#,
    ] {
        assert!(same(&plain, &build(text)), "{text}");
    }
    assert!(differ(&plain, &build(r#"{"id":"a","retries":"4"}"#)));
    assert!(same(&plain, &build(r#"{"id":"a","mode":" fast"}"#)));
    assert!(differ(&plain, &build(r#"{"id":"a","mode":"slow"}"#)));
}

#[test]
fn big_numbers_are_identity_and_prose_is_still_free_text() {
    let c = canon_text(
        "pay",
        r#"{"amount":1000000000000000000001,"memo":"rent for the flat in March, as agreed","version":"1.10"}"#,
    );
    assert_eq!(
        c.identity.keys().cloned().collect::<Vec<_>>(),
        vec!["amount", "version"]
    );
    assert_eq!(
        c.identity.get("amount").map(ToString::to_string),
        Some("1000000000000000000001".to_string())
    );
    assert_eq!(
        c.free_text.keys().cloned().collect::<Vec<_>>(),
        vec!["memo"]
    );
}

#[test]
fn bad_text_is_a_typed_error() {
    let p = CanonPolicy::default();
    assert!(matches!(
        CanonicalCall::from_json("t", "{", &p),
        Err(CanonError::InvalidJson(_))
    ));
    assert!(matches!(
        CanonicalCall::from_json("t", "[1]", &p),
        Err(CanonError::NotAnObject("an array"))
    ));
    assert!(matches!(
        CanonicalCall::from_json("t", r#"{"n":1e123456789012}"#, &p),
        Err(CanonError::NumberOutOfRange(_))
    ));
}

/// One identity value of a generated call, as JSON text, and how to change it.
#[derive(Debug, Clone)]
enum IdentityValue {
    /// A string of digits, maybe with a fraction ("0042", "3.140"): change one digit.
    NumericString(String),
    /// A version string ("1.1", "2"): add or drop a trailing ".0"/"0".
    Version(String),
    /// A big integer (19 to 40 digits), written plainly or as digits + exponent: add one.
    BigInteger { digits: String, zeros: usize },
    /// A decimal literal ("12.75"): change one digit.
    Decimal(String),
    /// An id ("ord_a81x"): change one character.
    Id(String),
}

impl IdentityValue {
    fn text(&self, respell: bool) -> String {
        match self {
            Self::NumericString(s) | Self::Version(s) | Self::Id(s) => {
                serde_json::to_string(s).expect("a string serialises")
            }
            Self::Decimal(s) => s.clone(),
            Self::BigInteger { digits, zeros } => {
                if respell && *zeros > 0 {
                    format!("{digits}e{zeros}")
                } else {
                    format!("{digits}{}", "0".repeat(*zeros))
                }
            }
        }
    }

    /// The changed value, its position picked by `at`.
    fn changed(&self, at: usize) -> Self {
        fn other_digit(c: char) -> char {
            // Never to '0', so a changed leading digit keeps the literal valid JSON.
            if c == '9' {
                '1'
            } else {
                char::from(c as u8 + 1)
            }
        }
        fn change_digit(s: &str, at: usize) -> String {
            let digits: Vec<usize> = s
                .char_indices()
                .filter(|(_, c)| c.is_ascii_digit())
                .map(|(i, _)| i)
                .collect();
            let i = digits[at % digits.len()];
            let mut out = s.to_string();
            let c = out[i..].chars().next().expect("a digit");
            out.replace_range(i..i + 1, &other_digit(c).to_string());
            out
        }
        match self {
            Self::NumericString(s) => Self::NumericString(change_digit(s, at)),
            Self::Decimal(s) => Self::Decimal(change_digit(s, at)),
            Self::Version(s) => Self::Version(match s.strip_suffix('0') {
                Some(rest)
                    if at.is_multiple_of(2) && rest.contains('.') && !rest.ends_with('.') =>
                {
                    rest.to_string()
                }
                _ if s.contains('.') => format!("{s}0"),
                _ => format!("{s}.0"),
            }),
            Self::BigInteger { digits, zeros } => {
                // Add one unit in the last place: digits x 10^zeros + 1.
                let mut plain = format!("{digits}{}", "0".repeat(*zeros)).into_bytes();
                let mut i = plain.len();
                loop {
                    i -= 1;
                    if plain[i] == b'9' {
                        plain[i] = b'0';
                        if i == 0 {
                            plain.insert(0, b'1');
                            break;
                        }
                    } else {
                        plain[i] += 1;
                        break;
                    }
                }
                Self::BigInteger {
                    digits: String::from_utf8(plain).expect("ascii digits"),
                    zeros: 0,
                }
            }
            Self::Id(s) => {
                let chars: Vec<char> = s.chars().collect();
                let i = at % chars.len();
                let c = chars[i];
                let replacement = match c {
                    '0'..='9' => other_digit(c),
                    'z' => 'a',
                    '_' => 'x',
                    c => char::from(c as u8 + 1),
                };
                Self::Id(
                    chars
                        .iter()
                        .enumerate()
                        .map(|(j, &c)| if j == i { replacement } else { c })
                        .collect(),
                )
            }
        }
    }
}

fn arb_identity_value() -> impl Strategy<Value = IdentityValue> {
    prop_oneof![
        "[0-9]{1,18}(\\.[0-9]{1,6})?".prop_map(IdentityValue::NumericString),
        "[0-9]{1,2}(\\.[0-9]{1,2}){0,3}".prop_map(IdentityValue::Version),
        ("[1-9][0-9]{18,39}", 0usize..30)
            .prop_map(|(digits, zeros)| IdentityValue::BigInteger { digits, zeros }),
        "-?(0|[1-9][0-9]{0,12})\\.[0-9]{1,12}".prop_map(IdentityValue::Decimal),
        "[a-z]{2,4}_[a-z0-9]{3,12}".prop_map(IdentityValue::Id),
    ]
}

fn call_text(values: &BTreeMap<String, IdentityValue>, respell: bool) -> String {
    let mut out = String::from(r#"{"note":"please run this again for the team today""#);
    for (k, v) in values {
        out.push_str(&format!(r#","{k}":{}"#, v.text(respell)));
    }
    out.push('}');
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Changing any identity value never leaves the canonical form, the exact hash or the
    /// identity fingerprint equal: the error idem must not make.
    #[test]
    fn changing_an_identity_value_changes_the_call(
        values in prop::collection::btree_map("[a-m]{1,6}", arb_identity_value(), 1..6),
        pick in any::<prop::sample::Index>(),
        at in 0usize..64,
        respell in any::<bool>(),
    ) {
        let key = pick.get(&values.keys().cloned().collect::<Vec<_>>()).clone();
        let mut changed = values.clone();
        let new = values[&key].changed(at);
        changed.insert(key.clone(), new);
        let a = canon_text("tool", &call_text(&values, respell));
        let b = canon_text("tool", &call_text(&changed, false));
        prop_assert!(
            differ(&a, &b),
            "{} changed at {}: {} vs {}", key, at, a.canonical_json, b.canonical_json
        );
        // The prose beside them is free text and does not hide the change.
        prop_assert!(a.free_text.contains_key("note"));
    }

    /// Respelling numbers (exponent, trailing fraction zeros) never changes the call.
    #[test]
    fn respelling_a_number_keeps_the_call(
        digits in "[1-9][0-9]{0,30}",
        exp in -40i64..40,
        pad in 0usize..4,
        negative in any::<bool>(),
    ) {
        let sign = if negative { "-" } else { "" };
        let sci = format!(r#"{{"n":{sign}{digits}e{exp}}}"#);
        // digits x 10^exp written as digits.digits x 10^(exp + len - 1) with padding zeros.
        let (first, rest) = digits.split_at(1);
        let zeros = "0".repeat(pad);
        let mantissa = if rest.is_empty() && pad == 0 {
            first.to_string()
        } else {
            format!("{first}.{rest}{zeros}")
        };
        let moved = format!(r#"{{"n":{sign}{mantissa}E{}}}"#, exp + digits.len() as i64 - 1);
        let a = canon_text("tool", &sci);
        let b = canon_text("tool", &moved);
        prop_assert!(same(&a, &b), "{} vs {}", a.canonical_json, b.canonical_json);
    }
}

proptest! {
    /// The exact reader and serde_json agree wherever serde_json is exact.
    #[test]
    fn exact_reader_agrees_with_serde_json(v in arb_json()) {
        prop_assert_eq!(parse(&v.to_string()).unwrap(), CanonValue::from(&v));
    }

    /// Any text: an answer or a typed error, never a panic.
    #[test]
    fn exact_reader_never_panics(text in "[\\[\\]{}\",:0-9eE+.\\-a-z\\\\ ]{0,40}") {
        let _ = parse(&text);
    }
}

#[test]
fn a_resource_fingerprint_is_the_pair_and_the_exact_field_values() {
    let call =
        |args: Value| CanonicalCall::build("enable_2fa", &args, &CanonPolicy::default()).unwrap();
    let fields = vec!["user_id".to_string(), "org.id".to_string()];
    let a = call(json!({"user_id": "u1", "org": {"id": 7}, "note": "x"}));
    let fp = a.resource_fingerprint(("enable_2fa", "disable_2fa"), &fields);
    assert!(fp.is_some());
    // Either order of the pair; other fields and number spelling do not matter.
    let b = call(json!({"org": {"id": 7.0}, "user_id": "u1", "note": "y"}));
    assert_eq!(
        b.resource_fingerprint(("disable_2fa", "enable_2fa"), &fields),
        fp
    );
    // Another value, or another pair, is another resource; a missing field, none.
    let c = call(json!({"user_id": "u2", "org": {"id": 7}}));
    assert_ne!(
        c.resource_fingerprint(("enable_2fa", "disable_2fa"), &fields),
        fp
    );
    assert_ne!(a.resource_fingerprint(("enable_2fa", "x"), &fields), fp);
    let d = call(json!({"user_id": "u1"}));
    assert_eq!(
        d.resource_fingerprint(("enable_2fa", "disable_2fa"), &fields),
        None
    );
}
