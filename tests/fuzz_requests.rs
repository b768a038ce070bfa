//! Request decoding at volume (proptest): arbitrary bytes as a protobuf `CheckRequest`, and
//! arbitrary text and JSON as a call's arguments, through the engine a server runs. Decoding
//! fails cleanly or yields a request; every request gets a verdict or a typed refusal
//! (INVALID_ARGUMENT / RESOURCE_EXHAUSTED), never a panic, a store or embedder error, and a
//! recorded call repeated is found again. `IDEM_FUZZ_CASES` sets the cases per property
//! (default 2,000: seconds, so CI runs it bounded).

use std::sync::Arc;

use idem::config::ServerConfig;
use idem::engine::{CheckRequest, Engine};
use idem::error::IdemError;
use idem::proto;
use idem::store::MemoryStore;
use proptest::prelude::*;
use prost::Message;
use serde_json::Value;

fn cases() -> u32 {
    std::env::var("IDEM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        "[ \t\u{300}\u{e9}a-zA-Z0-9@.$-]{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn engine() -> (tokio::runtime::Runtime, Arc<Engine>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = Arc::new(Engine::new(
        Arc::new(MemoryStore::new()),
        ServerConfig::default(),
    ));
    (rt, e)
}

/// A verdict, or a refusal that is the request's fault; anything else fails the property.
fn assert_clean(r: Result<idem::engine::CheckOutcome, IdemError>) -> Result<(), TestCaseError> {
    match r {
        Ok(out) => {
            prop_assert!(!out.check_id.is_empty() || out.call_id.is_empty());
            Ok(())
        }
        Err(IdemError::InvalidArgument(m) | IdemError::ResourceExhausted(m)) => {
            prop_assert!(!m.is_empty(), "a refusal says why");
            Ok(())
        }
        Err(e) => Err(TestCaseError::fail(format!("unexpected error: {e:?}"))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_bytes_decode_or_fail_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(r) = proto::CheckRequest::decode(bytes.as_slice()) {
            // What decodes re-encodes to something that decodes to the same request.
            let again = proto::CheckRequest::decode(r.encode_to_vec().as_slice()).unwrap();
            prop_assert_eq!(again, r);
        }
    }

    #[test]
    fn arbitrary_argument_text_gets_a_verdict_or_a_typed_refusal(text in "\\PC{0,64}", tool in "\\PC{0,6}") {
        let (rt, e) = engine();
        let r = rt.block_on(e.check(CheckRequest {
            tenant: "t".into(),
            session: "s".into(),
            tool,
            arguments_json: text,
            ..Default::default()
        }));
        assert_clean(r)?;
    }

    #[test]
    fn arbitrary_json_arguments_get_a_verdict_and_repeat_exactly(v in arb_json()) {
        let (rt, e) = engine();
        let req = CheckRequest {
            tenant: "t".into(),
            session: "s".into(),
            tool: "tool".into(),
            arguments_json: v.to_string(),
            ..Default::default()
        };
        let first = rt.block_on(e.check(req.clone()));
        let recorded = matches!(&first, Ok(o) if !o.call_id.is_empty());
        prop_assert!(v.is_object() || first.is_err(), "only an object is a call");
        assert_clean(first)?;
        if recorded {
            // The same call again is a repeat of it (IN_FLIGHT), however odd its arguments.
            let again = rt.block_on(e.check(req)).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(again.verdict, idem::engine::Verdict::InFlight);
        }
    }
}
