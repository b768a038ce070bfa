//! The semantic funnel end to end: paraphrases caught, different actions never merged.

mod common;

use common::*;
use idem::proto::{self, Verdict};

fn describe(r: &proto::CheckResponse) -> String {
    format!(
        "{:?} {:?} stages={:?} reason={}",
        verdict(r),
        r.matched,
        r.stages,
        r.reason
    )
}

async fn configure(
    c: &mut idem::proto::idem_client::IdemClient<tonic::transport::Channel>,
    cfg: proto::SessionConfig,
) {
    c.configure_session(proto::ConfigureSessionRequest { config: Some(cfg) })
        .await
        .unwrap();
}

fn session(deadline_ms: u32) -> proto::SessionConfig {
    proto::SessionConfig {
        tenant: "t".into(),
        session: "s".into(),
        deadline_ms: Some(deadline_ms),
        ..Default::default()
    }
}

/// Records `first`, completes it, then checks `second` (generous deadline: CI machines are busy).
async fn pair(tool: &str, first: &str, second: &str) -> proto::CheckResponse {
    let srv = start_semantic(semantic_config()).await;
    let mut c = srv.client().await;
    configure(&mut c, session(5_000)).await;
    let a = run(&mut c, check(tool, first)).await;
    assert_eq!(verdict(&a), Verdict::New, "{}", describe(&a));
    succeed(&mut c, &a.call_id, r#"{"ok": true}"#, None).await;
    run(&mut c, check(tool, second)).await
}

#[tokio::test]
async fn paraphrased_email_body_to_the_same_recipient_is_a_duplicate() {
    let r = pair(
        "send_email",
        r#"{"to": "alice@example.com", "body": "Please send me the signed contract for the Berlin office lease by Friday."}"#,
        r#"{"to": "alice@example.com", "body": "Could you send me the signed contract for the Berlin office lease by Friday?"}"#,
    )
    .await;
    assert_eq!(verdict(&r), Verdict::Duplicate, "{}", describe(&r));
    let stage = r.matched.unwrap().stage;
    assert!(stage == proto::Stage::Fuzzy as i32 || stage == proto::Stage::Semantic as i32);
    assert!(r.replayed);
}

#[tokio::test]
async fn reworded_email_body_is_caught_by_the_semantic_stage() {
    let r = pair(
        "send_email",
        r#"{"to": "bob@example.com", "body": "Please send me the final report for the Q3 audit by Friday."}"#,
        r#"{"to": "bob@example.com", "body": "Please send me the Q3 audit final report by Friday."}"#,
    )
    .await;
    assert_eq!(verdict(&r), Verdict::Duplicate, "{}", describe(&r));
    assert_eq!(r.matched.unwrap().stage, proto::Stage::Semantic as i32);
}

#[tokio::test]
async fn a_looser_rewording_is_at_least_borderline_and_block_makes_it_a_duplicate() {
    // The judge puts this pair just under the calibrated duplicate threshold (a longer
    // rewording): borderline, so the session's policy decides.
    let srv = start_semantic(semantic_config()).await;
    let mut c = srv.client().await;
    configure(
        &mut c,
        proto::SessionConfig {
            borderline_policy: Some("block".into()),
            ..session(5_000)
        },
    )
    .await;
    let a = run(
        &mut c,
        check(
            "send_email",
            r#"{"to": "bob@example.com", "body": "Reminder: the quarterly budget review meeting is tomorrow at the main office."}"#,
        ),
    )
    .await;
    succeed(&mut c, &a.call_id, "{}", None).await;
    let r = run(
        &mut c,
        check(
            "send_email",
            r#"{"to": "bob@example.com", "body": "Just a reminder that the quarterly budget review meeting takes place tomorrow at the main office."}"#,
        ),
    )
    .await;
    assert_eq!(verdict(&r), Verdict::Duplicate, "{}", describe(&r));
}

#[tokio::test]
async fn same_body_to_another_recipient_is_new() {
    let r = pair(
        "send_email",
        r#"{"to": "alice@example.com", "body": "Please send me the signed contract for the Berlin office lease by Friday."}"#,
        r#"{"to": "carol@example.com", "body": "Please send me the signed contract for the Berlin office lease by Friday."}"#,
    )
    .await;
    assert_eq!(verdict(&r), Verdict::New, "{}", describe(&r));
}

#[tokio::test]
async fn transfer_to_alice_and_to_bob_are_different_actions() {
    let r = pair(
        "transfer",
        r#"{"to": "Alice", "amount": 100, "currency": "USD"}"#,
        r#"{"to": "Bob", "amount": 100, "currency": "USD"}"#,
    )
    .await;
    assert_eq!(verdict(&r), Verdict::New, "{}", describe(&r));
    // The same intent written as prose.
    let r = pair(
        "run_instruction",
        r#"{"instruction": "Transfer $100 from my checking account to Alice right away"}"#,
        r#"{"instruction": "Transfer $100 from my checking account to Bob right away"}"#,
    )
    .await;
    assert_eq!(verdict(&r), Verdict::New, "{}", describe(&r));
}

#[tokio::test]
async fn swapped_direction_in_free_text_is_not_a_duplicate() {
    let r = pair(
        "search_flights",
        r#"{"query": "find me the cheapest flights from NYC to LA next week"}"#,
        r#"{"query": "find me the cheapest flights from LA to NYC next week"}"#,
    )
    .await;
    assert_ne!(verdict(&r), Verdict::Duplicate, "{}", describe(&r));
    let r = pair(
        "search_flights",
        r#"{"query": "find me the cheapest flights from nyc to la next week"}"#,
        r#"{"query": "find me the cheapest flights from la to nyc next week"}"#,
    )
    .await;
    assert_ne!(verdict(&r), Verdict::Duplicate, "{}", describe(&r));
}

#[tokio::test]
async fn a_tool_with_mode_off_is_never_recorded() {
    let srv = start_semantic(semantic_config()).await;
    let mut c = srv.client().await;
    let mut cfg = session(5_000);
    cfg.tools.insert(
        "web_search".into(),
        proto::ToolPolicy {
            mode: "off".into(),
            ..Default::default()
        },
    );
    configure(&mut c, cfg).await;
    for _ in 0..3 {
        let r = run(&mut c, check("web_search", r#"{"q": "weather in Paris"}"#)).await;
        assert_eq!(verdict(&r), Verdict::New);
        assert!(r.call_id.is_empty());
    }
    let list = c
        .list_calls(proto::ListCallsRequest {
            tenant: "t".into(),
            session: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(list.calls.is_empty());
}

#[tokio::test]
async fn a_one_millisecond_deadline_returns_quickly_and_says_so() {
    let srv = start_semantic(semantic_config()).await;
    let mut c = srv.client().await;
    configure(&mut c, session(5_000)).await;
    let body = r#"{"to": "x@example.com", "body": "Please prepare a detailed summary of the findings from the audit last month."}"#;
    run(&mut c, check("send_email", body)).await;
    let other = r#"{"to": "x@example.com", "body": "Please prepare a detailed overview of what the audit found last month."}"#;
    let mut req = check("send_email", other);
    req.deadline_ms = Some(1);
    let t = std::time::Instant::now();
    let r = run(&mut c, req).await;
    let took = t.elapsed();
    assert!(
        took < std::time::Duration::from_millis(500),
        "took {took:?}"
    );
    assert_eq!(
        r.stop_reason,
        proto::StopReason::Deadline as i32,
        "{}",
        describe(&r)
    );
    assert!(
        r.stages.iter().any(|s| s.outcome == "deadline"),
        "{}",
        describe(&r)
    );
    // The certain stages still ran.
    assert!(
        r.stages
            .iter()
            .any(|s| s.name == "exact" && s.outcome != "deadline"),
        "{}",
        describe(&r)
    );
}

#[tokio::test]
async fn semantic_duplicates_are_found_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let body1 = r#"{"to": "bob@example.com", "body": "Nightly backup job failed on the billing database."}"#;
    let body2 = r#"{"to": "bob@example.com", "body": "The billing database nightly backup job has failed."}"#;
    let first_id = {
        let store = std::sync::Arc::new(idem::store::EmbeddedStore::open(dir.path()).unwrap());
        let (engine, clock) = semantic_engine(store, semantic_config());
        let srv = TestServer::start_engine(engine, clock).await;
        let mut c = srv.client().await;
        configure(&mut c, session(5_000)).await;
        let a = run(&mut c, check("send_email", body1)).await;
        succeed(&mut c, &a.call_id, "{}", None).await;
        drop(c);
        srv.stop().await;
        a.call_id
    };
    // Background tasks may hold the file a moment longer.
    let mut store = None;
    for _ in 0..100 {
        match idem::store::EmbeddedStore::open(dir.path()) {
            Ok(s) => {
                store = Some(std::sync::Arc::new(s));
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    let store = store.expect("store reopened");
    let (engine, clock) = semantic_engine(store, semantic_config());
    assert!(engine.rebuild_indexes().await.unwrap() >= 1);
    let srv = TestServer::start_engine(engine, clock).await;
    let mut c = srv.client().await;
    let r = run(&mut c, check("send_email", body2)).await;
    assert_eq!(verdict(&r), Verdict::Duplicate, "{}", describe(&r));
    assert_eq!(r.call_id, first_id);
    assert_eq!(r.matched.unwrap().stage, proto::Stage::Semantic as i32);
}

#[tokio::test]
async fn new_verdicts_carry_the_nearest_score() {
    // No value or name tells these apart, so only the embedding can: the semantic stage runs
    // and reports how near the nearest call was.
    let r = pair(
        "send_email",
        r#"{"to": "a@example.com", "body": "Please book a table for us at the usual place this evening."}"#,
        r#"{"to": "a@example.com", "body": "Cancel the gym membership renewal that is due at the end of the month."}"#,
    )
    .await;
    assert_eq!(verdict(&r), Verdict::New, "{}", describe(&r));
    let sem = r
        .stages
        .iter()
        .find(|s| s.name == "semantic")
        .expect("semantic stage ran");
    assert!(sem.best_score.is_some_and(|s| s < 0.9), "{}", describe(&r));
}

#[test]
fn missing_model_files_fail_at_start_with_a_clear_message() {
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_idem"))
        .args([
            "serve",
            "--store",
            "memory",
            "--listen",
            "127.0.0.1:0",
            "--models-dir",
        ])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("model.onnx") || err.contains("libonnxruntime"),
        "{err}"
    );
    assert!(
        err.contains("make models") || err.contains("fetch-models"),
        "{err}"
    );
}

/// Concurrent rewordings of one new call: the candidates each check reads while its embedding
/// is computed are stale once the first is recorded, and must not let a second NEW through.
#[tokio::test]
async fn concurrent_rewordings_of_a_new_call_record_it_once() {
    // Twelve embeddings at once: the 10 s deadline admits them all, however slow the machine.
    let srv = start_semantic(semantic_config()).await;
    let mut c = srv.client().await;
    configure(&mut c, session(10_000)).await;
    let words = [
        "please",
        "archive",
        "the",
        "quarterly",
        "budget",
        "review",
        "thread",
        "today",
    ];
    // Twelve spellings of one request: other capitals and punctuation, so no exact match.
    let variants: Vec<String> = (0..12)
        .map(|i| {
            let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
            w[i % words.len()] = w[i % words.len()].to_uppercase();
            let end = if i < words.len() { "." } else { "!" };
            format!("{}{end}", w.join(" "))
        })
        .collect();
    let calls = variants.iter().map(|text| {
        let mut c = c.clone();
        let args = serde_json::json!({"folder": "finance", "instruction": text}).to_string();
        async move { run(&mut c, check("archive_thread", &args)).await }
    });
    let answers = futures::future::join_all(calls).await;
    let new: Vec<_> = answers
        .iter()
        .filter(|r| verdict(r) == Verdict::New)
        .collect();
    assert_eq!(
        new.len(),
        1,
        "{:#?}",
        answers.iter().map(describe).collect::<Vec<_>>()
    );
    for r in &answers {
        assert!(
            matches!(verdict(r), Verdict::New | Verdict::InFlight),
            "{}",
            describe(r)
        );
    }
}

/// Records `a`, checks `b`, and the same the other way round (fresh servers).
async fn both_ways(tool: &str, field: &str, a: &str, b: &str) -> [proto::CheckResponse; 2] {
    let args = |t: &str| serde_json::json!({"to": "ops@example.com", field: t}).to_string();
    [
        pair(tool, &args(a), &args(b)).await,
        pair(tool, &args(b), &args(a)).await,
    ]
}

#[tokio::test]
async fn a_moved_phrase_is_a_repeat_both_ways() {
    for (a, b) in [
        (
            "Nightly backup job failed on the billing database",
            "The billing database nightly backup job has failed",
        ),
        (
            "Please send me the final report for the Q3 audit by Friday",
            "Please send me the Q3 audit final report by Friday",
        ),
    ] {
        for r in both_ways("send_email", "body", a, b).await {
            assert_eq!(verdict(&r), Verdict::Duplicate, "{}", describe(&r));
        }
    }
}

#[tokio::test]
async fn a_negated_request_is_never_a_repeat_both_ways() {
    for r in both_ways(
        "send_email",
        "body",
        "Please cancel my subscription at the end of this month",
        "Please do not cancel my subscription at the end of this month",
    )
    .await
    {
        assert_eq!(verdict(&r), Verdict::New, "{}", describe(&r));
        let sem = r.stages.iter().find(|s| s.name == "semantic");
        assert!(
            sem.and_then(|s| s.explain.as_deref())
                .is_some_and(|e| e.contains("negation_mismatch")),
            "{}",
            describe(&r)
        );
    }
}

#[tokio::test]
async fn a_changed_search_term_is_not_a_repeat_both_ways() {
    for r in both_ways(
        "web_search",
        "query",
        "best libraries and patterns for go connection pooling in production services",
        "best libraries and patterns for onnx connection pooling in production services",
    )
    .await
    {
        assert_eq!(verdict(&r), Verdict::New, "{}", describe(&r));
    }
}

#[tokio::test]
async fn a_near_copy_with_one_phrase_reworded_is_judged_a_repeat_both_ways() {
    for (a, b) in [
        (
            "Summarise the best practices for rotating database credentials in our cluster",
            "Summarise the recommended practices for rotating database credentials in our cluster",
        ),
        (
            "The nightly export to the warehouse stopped without an error. Please investigate.",
            "The nightly export to the warehouse stopped without an error. Please look into it.",
        ),
    ] {
        for r in both_ways("send_email", "body", a, b).await {
            assert_eq!(verdict(&r), Verdict::Duplicate, "{}", describe(&r));
        }
    }
}

#[tokio::test]
async fn a_rewording_after_a_call_of_the_inverse_is_new_and_the_next_one_repeats_it() {
    let srv = start_semantic(semantic_config()).await;
    let mut c = srv.client().await;
    let mut cfg = session(5_000);
    cfg.tools.insert(
        "disable_2fa".into(),
        proto::ToolPolicy {
            resource_fields: vec!["user_id".into()],
            inverse_of: Some("enable_2fa".into()),
            ..Default::default()
        },
    );
    configure(&mut c, cfg).await;
    let enable = |note: &str| {
        check(
            "enable_2fa",
            &serde_json::json!({"user_id": "u-1", "note": note}).to_string(),
        )
    };
    let (a, b) = (
        "Please send me the final report for the Q3 audit by Friday.",
        "Please send me the Q3 audit final report by Friday.",
    );
    // Calls a millisecond apart, as real ones are (a generation starts at its first call's
    // millisecond; see docs/DESIGN.md).
    let tick = || srv.clock.advance_ms(1);
    let first = run(&mut c, enable(a)).await;
    assert_eq!(verdict(&first), Verdict::New, "{}", describe(&first));
    succeed(&mut c, &first.call_id, r#"{"ok": true}"#, None).await;
    // Before the inverse the rewording is a semantic repeat.
    tick();
    let reworded = run(&mut c, enable(b)).await;
    assert_eq!(
        verdict(&reworded),
        Verdict::Duplicate,
        "{}",
        describe(&reworded)
    );
    tick();
    let off = run(&mut c, check("disable_2fa", r#"{"user_id": "u-1"}"#)).await;
    assert_eq!(verdict(&off), Verdict::New);
    succeed(&mut c, &off.call_id, r#"{"ok": true}"#, None).await;
    // After it, the same rewording is a new action ...
    tick();
    let again = run(&mut c, enable(b)).await;
    assert_eq!(verdict(&again), Verdict::New, "{}", describe(&again));
    succeed(&mut c, &again.call_id, r#"{"ok": true}"#, None).await;
    // ... and the original wording now repeats that one, not the first.
    tick();
    let back = run(&mut c, enable(a)).await;
    assert_eq!(verdict(&back), Verdict::Duplicate, "{}", describe(&back));
    assert_eq!(back.call_id, again.call_id);
}
