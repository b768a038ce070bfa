//! Record lifecycle through the real gRPC server.

mod common;

use common::*;
use idem::proto::{self, CallStatus, Verdict};

const EMAIL: &str = r#"{"to": "alice@example.com", "subject": "Invoice", "body": "Hi Alice, please find the March invoice attached."}"#;

#[tokio::test]
async fn new_in_flight_complete_duplicate_with_replay() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let first = run(&mut c, check("send_email", EMAIL)).await;
    assert_eq!(verdict(&first), Verdict::New);
    assert!(!first.call_id.is_empty());

    // Same call, other key order, whitespace and a framework request id: still a repeat.
    let reordered = r#"{"body": "Hi Alice,  please find the March invoice attached. ", "subject": "Invoice", "to": "alice@example.com", "request_id": "r-2"}"#;
    let second = run(&mut c, check("send_email", reordered)).await;
    assert_eq!(verdict(&second), Verdict::InFlight);
    assert_eq!(second.call_id, first.call_id);
    assert_eq!(
        second.matched.as_ref().unwrap().stage,
        proto::Stage::Exact as i32
    );

    succeed(
        &mut c,
        &first.call_id,
        r#"{"message_id": "m-1"}"#,
        Some(0.25),
    )
    .await;
    let third = run(&mut c, check("send_email", EMAIL)).await;
    assert_eq!(verdict(&third), Verdict::Duplicate);
    assert!(third.replayed);
    assert_eq!(third.call_id, first.call_id);
    assert_eq!(third.status, CallStatus::Succeeded as i32);
    assert_eq!(
        third.result_json.as_deref(),
        Some(r#"{"message_id": "m-1"}"#)
    );
    assert!(
        third
            .stages
            .iter()
            .any(|s| s.name == "exact" && s.outcome == "match")
    );
}

#[tokio::test]
async fn failed_call_is_new_again() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let first = run(
        &mut c,
        check("charge", r#"{"card": "tok_1", "amount": 100}"#),
    )
    .await;
    fail(&mut c, &first.call_id, "card declined").await;
    let again = run(
        &mut c,
        check("charge", r#"{"card": "tok_1", "amount": 100.0}"#),
    )
    .await;
    assert_eq!(verdict(&again), Verdict::New);
    assert_ne!(again.call_id, first.call_id);
    assert!(!again.previous_attempt_unknown);
}

#[tokio::test]
async fn expired_lease_lets_a_repeat_take_over() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let first = run(
        &mut c,
        check("charge", r#"{"card": "tok_1", "amount": 100}"#),
    )
    .await;
    srv.clock.advance_ms(299_000);
    let during = run(
        &mut c,
        check("charge", r#"{"card": "tok_1", "amount": 100}"#),
    )
    .await;
    assert_eq!(verdict(&during), Verdict::InFlight);
    srv.clock.advance_ms(2_000); // past the default 5 min lease
    let after = run(
        &mut c,
        check("charge", r#"{"card": "tok_1", "amount": 100}"#),
    )
    .await;
    assert_eq!(verdict(&after), Verdict::New);
    assert!(after.previous_attempt_unknown);
    assert_ne!(after.call_id, first.call_id);
    // The take-over holds the lease now.
    let next = run(
        &mut c,
        check("charge", r#"{"card": "tok_1", "amount": 100}"#),
    )
    .await;
    assert_eq!(verdict(&next), Verdict::InFlight);
    assert_eq!(next.call_id, after.call_id);
}

#[tokio::test]
async fn records_expire_after_the_ttl_and_are_swept() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let first = run(&mut c, check("search", r#"{"q": "x"}"#)).await;
    succeed(&mut c, &first.call_id, "[]", None).await;
    srv.clock.advance_ms(24 * 3600 * 1000 - 1);
    assert_eq!(
        verdict(&run(&mut c, check("search", r#"{"q": "x"}"#)).await),
        Verdict::Duplicate
    );
    srv.clock.advance_ms(2);
    let after = run(&mut c, check("search", r#"{"q": "x"}"#)).await;
    assert_eq!(verdict(&after), Verdict::New);
    assert_eq!(
        srv.engine.sweep().await.unwrap(),
        1,
        "the first record is swept"
    );
    let gone = c
        .get_call(proto::GetCallRequest {
            call_id: first.call_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_tool_policy_sets_its_own_ttl() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let mut cfg = proto::SessionConfig {
        tenant: "t".into(),
        session: "s".into(),
        ..Default::default()
    };
    cfg.tools.insert(
        "search".into(),
        proto::ToolPolicy {
            mode: "exact".into(),
            ttl_seconds: Some(3600),
            ..Default::default()
        },
    );
    c.configure_session(proto::ConfigureSessionRequest { config: Some(cfg) })
        .await
        .unwrap();
    let first = run(&mut c, check("search", r#"{"q": "x"}"#)).await;
    succeed(&mut c, &first.call_id, "[]", None).await;
    srv.clock.advance_ms(3_600_001);
    assert_eq!(
        verdict(&run(&mut c, check("search", r#"{"q": "x"}"#)).await),
        Verdict::New
    );
}

#[tokio::test]
async fn idempotency_key_matches_and_rejects_a_different_payload() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let mut req = check("transfer", r#"{"to": "bob", "amount": 100}"#);
    req.idempotency_key = Some("k-1".into());
    let first = run(&mut c, req.clone()).await;
    assert_eq!(verdict(&first), Verdict::New);
    let again = run(&mut c, req.clone()).await;
    assert_eq!(verdict(&again), Verdict::InFlight);
    assert_eq!(again.matched.unwrap().stage, proto::Stage::Key as i32);

    let mut other = check("transfer", r#"{"to": "bob", "amount": 200}"#);
    other.idempotency_key = Some("k-1".into());
    let err = c.check_and_record(other).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("k-1") && err.message().contains(&first.call_id),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn complete_is_idempotent_for_the_same_outcome_only() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let first = run(&mut c, check("charge", r#"{"amount": 1}"#)).await;
    succeed(&mut c, &first.call_id, "1", Some(2.0)).await;
    succeed(&mut c, &first.call_id, "1", Some(5.0)).await; // same outcome: fine, cost kept once
    let rec = c
        .get_call(proto::GetCallRequest {
            call_id: first.call_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rec.cost, Some(2.0));
    let err = c
        .complete(proto::CompleteRequest {
            call_id: first.call_id.clone(),
            outcome: CallStatus::Failed as i32,
            error: Some("x".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn resample_after_success_is_new_and_linked() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let first = run(&mut c, check("summarise", r#"{"doc": 7}"#)).await;
    succeed(&mut c, &first.call_id, r#""bad summary""#, None).await;
    let mut req = check("summarise", r#"{"doc": 7}"#);
    req.retry = proto::RetryIntent::Resample as i32;
    req.retry_of = Some(first.call_id.clone());
    let re = run(&mut c, req).await;
    assert_eq!(verdict(&re), Verdict::New);
    assert!(!re.replayed);
    assert_eq!(re.supersedes.as_deref(), Some(first.call_id.as_str()));
    let rec = c
        .get_call(proto::GetCallRequest {
            call_id: re.call_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rec.supersedes.as_deref(), Some(first.call_id.as_str()));
    // A transient repeat now waits on the resample, not the stale original.
    let t = run(&mut c, check("summarise", r#"{"doc": 7}"#)).await;
    assert_eq!(verdict(&t), Verdict::InFlight);
    assert_eq!(t.call_id, re.call_id);
}

#[tokio::test]
async fn stats_count_replays_and_cost_avoided() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let first = run(&mut c, check("charge", r#"{"amount": 1}"#)).await;
    run(&mut c, check("charge", r#"{"amount": 1}"#)).await; // in flight
    succeed(&mut c, &first.call_id, "{}", Some(1.5)).await;
    run(&mut c, check("charge", r#"{"amount": 1}"#)).await; // replay
    run(&mut c, check("charge", r#"{"amount": 1}"#)).await; // replay
    run(&mut c, check("charge", r#"{"amount": 2}"#)).await; // new
    let s = c
        .get_stats(proto::GetStatsRequest {
            tenant: "t".into(),
            session: Some("s".into()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.checks, 5);
    assert_eq!(s.by_verdict.get("NEW"), Some(&2));
    assert_eq!(s.by_verdict.get("DUPLICATE"), Some(&2));
    assert_eq!(s.by_verdict.get("IN_FLIGHT"), Some(&1));
    assert_eq!(s.by_stage.get("exact"), Some(&3));
    assert_eq!(s.replays_served, 2);
    assert_eq!(s.duplicates_prevented, 3);
    assert!((s.cost_avoided - 3.0).abs() < 1e-9);
    let tenant = c
        .get_stats(proto::GetStatsRequest {
            tenant: "t".into(),
            session: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tenant.checks, 5);
}

#[tokio::test]
async fn list_calls_pages_the_intent_log() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            run(&mut c, check("step", &format!(r#"{{"n": {n}}}"#)))
                .await
                .call_id,
        );
    }
    succeed(&mut c, &ids[1], "{}", None).await;
    let unfinished = c
        .list_calls(proto::ListCallsRequest {
            tenant: "t".into(),
            session: "s".into(),
            status: Some(CallStatus::InProgress as i32),
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        unfinished
            .calls
            .iter()
            .map(|c| c.call_id.clone())
            .collect::<Vec<_>>(),
        vec![ids[4].clone(), ids[3].clone()]
    );
    let next = c
        .list_calls(proto::ListCallsRequest {
            tenant: "t".into(),
            session: "s".into(),
            status: Some(CallStatus::InProgress as i32),
            page_size: 2,
            page_token: unfinished.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next.calls
            .iter()
            .map(|c| c.call_id.clone())
            .collect::<Vec<_>>(),
        vec![ids[2].clone(), ids[0].clone()]
    );
    assert!(next.next_page_token.is_empty());
}

#[tokio::test]
async fn tenants_and_sessions_are_isolated() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let a = run(&mut c, check("x", r#"{"n": 1}"#)).await;
    let mut other_session = check("x", r#"{"n": 1}"#);
    other_session.session = "s2".into();
    assert_eq!(verdict(&run(&mut c, other_session).await), Verdict::New);
    let mut other_tenant = check("x", r#"{"n": 1}"#);
    other_tenant.tenant = "t2".into();
    assert_eq!(verdict(&run(&mut c, other_tenant).await), Verdict::New);
    assert_eq!(
        run(&mut c, check("x", r#"{"n": 1}"#)).await.call_id,
        a.call_id
    );
}
