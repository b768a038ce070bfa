//! Identity values compare exactly, through the real gRPC server (issue 15): record a call,
//! complete it, check another in the same session. A different version, id or amount is NEW;
//! the same value spelt another way is a DUPLICATE.

mod common;

use common::*;
use idem::config::{ServerConfig, ToolPolicy};
use idem::proto::Verdict;

/// Records `a` in a fresh session, completes it, then checks `b` there.
async fn verdict_after(srv: &TestServer, session: &str, tool: &str, a: &str, b: &str) -> Verdict {
    let mut c = srv.client().await;
    let req = |args: &str| {
        let mut r = check(tool, args);
        r.session = session.into();
        r
    };
    let first = run(&mut c, req(a)).await;
    assert_eq!(verdict(&first), Verdict::New, "{a}");
    succeed(&mut c, &first.call_id, r#"{"ok": true}"#, None).await;
    let second = run(&mut c, req(b)).await;
    verdict(&second)
}

/// The cases of the issue: each second call is a different action.
const DIFFERENT: [(&str, &str, &str); 3] = [
    (
        "deploy",
        r#"{"service":"api","version":"1.10"}"#,
        r#"{"service":"api","version":"1.1"}"#,
    ),
    (
        "deploy",
        r#"{"service":"api","version":"2.0"}"#,
        r#"{"service":"api","version":"2"}"#,
    ),
    (
        "pay",
        r#"{"to":"a","amount":1e21}"#,
        r#"{"to":"a","amount":1000000000000000000001}"#,
    ),
];

#[tokio::test]
async fn different_versions_and_amounts_are_new() {
    let srv = TestServer::start().await;
    for (i, (tool, a, b)) in DIFFERENT.iter().enumerate() {
        let v = verdict_after(&srv, &format!("s{i}"), tool, a, b).await;
        assert_eq!(v, Verdict::New, "{tool} {a} then {b}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn the_same_value_spelt_otherwise_is_a_duplicate() {
    let srv = TestServer::start().await;
    for (i, (tool, a, b)) in [
        (
            "pay",
            r#"{"to":"a","amount":1000000000000000000001}"#,
            r#"{"amount":1.000000000000000000001e21,"to":"a"}"#,
        ),
        (
            "pay",
            r#"{"to":"a","amount":1e3}"#,
            r#"{"to":"a","amount":1000.0}"#,
        ),
        ("close_ticket", r#"{"ticket_id":"5"}"#, r#"{"ticket_id":5}"#),
        (
            "deploy",
            r#"{"service":"api","version":"1.10"}"#,
            r#"{"version":"1.10","service":" api"}"#,
        ),
    ]
    .iter()
    .enumerate()
    {
        let v = verdict_after(&srv, &format!("s{i}"), tool, a, b).await;
        assert_eq!(v, Verdict::Duplicate, "{tool} {a} then {b}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_schema_typed_number_field_reads_number_strings() {
    let mut config = ServerConfig::default();
    config.defaults.tools.insert(
        "scale".into(),
        ToolPolicy {
            numeric_fields: vec!["replicas".into()],
            ..ToolPolicy::default()
        },
    );
    let srv =
        TestServer::start_with(std::sync::Arc::new(idem::store::MemoryStore::new()), config).await;
    let typed = r#"{"service":"api","replicas":"2.0"}"#;
    let v = verdict_after(
        &srv,
        "s1",
        "scale",
        typed,
        r#"{"service":"api","replicas":2}"#,
    )
    .await;
    assert_eq!(v, Verdict::Duplicate);
    let v = verdict_after(
        &srv,
        "s2",
        "scale",
        typed,
        r#"{"service":"api","replicas":"2.5"}"#,
    )
    .await;
    assert_eq!(v, Verdict::New);
    // Another tool, no schema: "2.0" is a string, not 2.
    let v = verdict_after(
        &srv,
        "s3",
        "deploy",
        typed,
        r#"{"service":"api","replicas":2}"#,
    )
    .await;
    assert_eq!(v, Verdict::New);
    srv.stop().await;
}

#[tokio::test]
async fn the_whole_funnel_keeps_different_amounts_apart() {
    // Same prose, amounts one base unit apart: the semantic stage must never see them as one.
    let srv = start_semantic(semantic_config()).await;
    let memo = "monthly payout to the treasury wallet as agreed with finance";
    let a = format!(r#"{{"to":"0xabc","wei":1000000000000000000000000,"memo":"{memo}"}}"#);
    let b = format!(r#"{{"to":"0xabc","wei":1000000000000000000000001,"memo":"{memo}"}}"#);
    assert_eq!(
        verdict_after(&srv, "s1", "transfer", &a, &b).await,
        Verdict::New
    );
    let respelt = format!(r#"{{"memo":"{memo}","to":"0xabc","wei":1e24}}"#);
    assert_eq!(
        verdict_after(&srv, "s2", "transfer", &a, &respelt).await,
        Verdict::Duplicate
    );
    srv.stop().await;
}
