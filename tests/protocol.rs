//! The agent protocol past idempotency keys, through the real gRPC server: the action key for
//! the downstream API, fencing of taken-over attempts, the lease-expiry hold, the server-side
//! wait and saga compensations.

mod common;

use std::time::{Duration, Instant};

use common::*;
use idem::proto::{self, CallStatus, Verdict};
use tonic::Code;

const PAY: &str = r#"{"to": "acct-17", "amount": 250, "memo": "March rent"}"#;
/// Past the default lease of 300 s.
const PAST_LEASE_MS: i64 = 301_000;

fn complete_req(call_id: &str, attempt: Option<u32>) -> proto::CompleteRequest {
    proto::CompleteRequest {
        call_id: call_id.into(),
        outcome: CallStatus::Succeeded as i32,
        result_json: Some(r#"{"payment": "p-1"}"#.into()),
        attempt,
        ..Default::default()
    }
}

async fn get(
    c: &mut proto::idem_client::IdemClient<tonic::transport::Channel>,
    id: &str,
) -> proto::CallRecord {
    c.get_call(proto::GetCallRequest { call_id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_take_over_keeps_the_action_key_and_fences_off_the_attempt_it_replaced() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let first = run(&mut c, check("pay", PAY)).await;
    assert_eq!(verdict(&first), Verdict::New);
    assert_eq!(first.attempt, 1);
    assert!(!first.action_key.is_empty());
    let repeat = run(&mut c, check("pay", PAY)).await;
    assert_eq!(verdict(&repeat), Verdict::InFlight);
    assert_eq!(
        repeat.action_key, first.action_key,
        "a transient retry names the same action"
    );

    srv.clock.advance_ms(PAST_LEASE_MS);
    let second = run(&mut c, check("pay", PAY)).await;
    assert_eq!(verdict(&second), Verdict::New);
    assert!(second.previous_attempt_unknown);
    assert_ne!(second.call_id, first.call_id);
    assert_eq!(
        second.action_key, first.action_key,
        "the downstream key survives the take-over"
    );
    assert_eq!(second.attempt, 2);

    // The first attempt wakes up late and reports: refused, and nothing changes.
    let late = c
        .complete(complete_req(&first.call_id, Some(1)))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert!(
        late.message().contains(&second.call_id),
        "{}",
        late.message()
    );
    let old = get(&mut c, &first.call_id).await;
    assert_eq!(old.status, CallStatus::InProgress as i32);
    assert_eq!(old.superseded_by.as_deref(), Some(second.call_id.as_str()));
    assert_eq!(old.result_json, None);

    // A Complete naming another attempt is refused too; the right one lands.
    let wrong = c
        .complete(complete_req(&second.call_id, Some(1)))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::FailedPrecondition);
    c.complete(complete_req(&second.call_id, Some(2)))
        .await
        .unwrap();
    let dup = run(&mut c, check("pay", PAY)).await;
    assert_eq!(verdict(&dup), Verdict::Duplicate);
    assert_eq!(dup.call_id, second.call_id);
    assert_eq!(dup.action_key, first.action_key);

    // RESAMPLE is a new action: a new downstream key.
    let again = run(
        &mut c,
        proto::CheckRequest {
            retry: proto::RetryIntent::Resample as i32,
            retry_of: Some(second.call_id.clone()),
            ..check("pay", PAY)
        },
    )
    .await;
    assert_eq!(verdict(&again), Verdict::New);
    assert_eq!(again.attempt, 1);
    assert_ne!(again.action_key, first.action_key);
}

#[tokio::test]
async fn a_retry_after_a_failure_is_the_next_attempt_of_the_same_action() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let first = run(&mut c, check("pay", PAY)).await;
    fail(&mut c, &first.call_id, "gateway timeout").await;
    let retry = run(&mut c, check("pay", PAY)).await;
    assert_eq!(verdict(&retry), Verdict::New);
    assert_eq!(
        (retry.action_key.as_str(), retry.attempt),
        (first.action_key.as_str(), 2)
    );
    let other = run(&mut c, check("pay", r#"{"to": "acct-18", "amount": 250}"#)).await;
    assert_ne!(
        other.action_key, first.action_key,
        "another action, another key"
    );
}

#[tokio::test]
async fn with_on_lease_expiry_hold_a_repeat_waits_for_an_operator_instead_of_running_again() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let mut tools = std::collections::HashMap::new();
    tools.insert(
        "pay".to_string(),
        proto::ToolPolicy {
            mode: "exact".into(),
            on_lease_expiry: Some("hold".into()),
            ..Default::default()
        },
    );
    c.configure_session(proto::ConfigureSessionRequest {
        config: Some(proto::SessionConfig {
            tenant: "t".into(),
            session: "s".into(),
            tools,
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let first = run(&mut c, check("pay", PAY)).await;
    assert_eq!(verdict(&first), Verdict::New);
    srv.clock.advance_ms(PAST_LEASE_MS);
    for _ in 0..2 {
        let held = run(&mut c, check("pay", PAY)).await;
        assert_eq!(verdict(&held), Verdict::InFlight, "{}", held.reason);
        assert!(held.previous_attempt_unknown);
        assert_eq!(held.call_id, first.call_id);
        assert!(held.reason.contains("hold"), "{}", held.reason);
    }
    // The operator found the payment went through and completes the original.
    succeed(&mut c, &first.call_id, r#"{"payment": "p-1"}"#, None).await;
    let dup = run(&mut c, check("pay", PAY)).await;
    assert_eq!(verdict(&dup), Verdict::Duplicate);

    let bad = c
        .configure_session(proto::ConfigureSessionRequest {
            config: Some(proto::SessionConfig {
                tenant: "t".into(),
                session: "s2".into(),
                tools: [(
                    "pay".to_string(),
                    proto::ToolPolicy {
                        on_lease_expiry: Some("sometimes".into()),
                        ..Default::default()
                    },
                )]
                .into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("on_lease_expiry"),
        "{}",
        bad.message()
    );
}

#[tokio::test]
async fn wait_for_call_answers_as_soon_as_the_original_completes() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let first = run(&mut c, check("pay", PAY)).await;
    let mut waiter = c.clone();
    let id = first.call_id.clone();
    let started = Instant::now();
    let wait = tokio::spawn(async move {
        waiter
            .wait_for_call(proto::WaitForCallRequest {
                call_id: id,
                timeout_ms: 20_000,
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!wait.is_finished(), "still in progress");
    succeed(&mut c, &first.call_id, r#"{"payment": "p-1"}"#, None).await;
    let rec = wait.await.unwrap().unwrap().into_inner();
    assert_eq!(rec.status, CallStatus::Succeeded as i32);
    assert_eq!(rec.result_json.as_deref(), Some(r#"{"payment": "p-1"}"#));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken, not timed out"
    );

    // A call that stays in progress: the record as it is, at the timeout.
    let other = run(&mut c, check("pay", r#"{"to": "acct-9", "amount": 1}"#)).await;
    let started = Instant::now();
    let rec = c
        .wait_for_call(proto::WaitForCallRequest {
            call_id: other.call_id.clone(),
            timeout_ms: 300,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rec.status, CallStatus::InProgress as i32);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let missing = c
        .wait_for_call(proto::WaitForCallRequest {
            call_id: "no-such-call".into(),
            timeout_ms: 100,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn a_complete_can_carry_its_compensation() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let first = run(&mut c, check("pay", PAY)).await;
    let bad = c
        .complete(proto::CompleteRequest {
            compensation_json: Some("refund it".into()),
            ..complete_req(&first.call_id, None)
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        get(&mut c, &first.call_id).await.status,
        CallStatus::InProgress as i32
    );
    let undo = r#"{"tool": "refund", "args": {"payment": "p-1"}}"#;
    c.complete(proto::CompleteRequest {
        compensation_json: Some(undo.into()),
        ..complete_req(&first.call_id, None)
    })
    .await
    .unwrap();
    let rec = get(&mut c, &first.call_id).await;
    assert_eq!(rec.compensation_json.as_deref(), Some(undo));
    assert_eq!(rec.action_key, first.action_key);
    assert_eq!(rec.attempt, 1);
    // What an orchestrator rolling back the session reads: its succeeded calls, newest first.
    let page = c
        .list_calls(proto::ListCallsRequest {
            tenant: "t".into(),
            session: "s".into(),
            status: Some(CallStatus::Succeeded as i32),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.calls.len(), 1);
    assert_eq!(page.calls[0].compensation_json.as_deref(), Some(undo));
}

async fn configure(
    c: &mut proto::idem_client::IdemClient<tonic::transport::Channel>,
    config: proto::SessionConfig,
) {
    c.configure_session(proto::ConfigureSessionRequest {
        config: Some(proto::SessionConfig {
            tenant: "t".into(),
            session: "s".into(),
            ..config
        }),
    })
    .await
    .unwrap();
}

fn keyed(args: &str, key: &str) -> proto::CheckRequest {
    proto::CheckRequest {
        idempotency_key: Some(key.into()),
        ..check("pay", args)
    }
}

#[tokio::test]
async fn a_key_reused_for_another_call_is_refused_unless_the_session_replays_by_key() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let first = run(&mut c, keyed(PAY, "k-1")).await;
    let other = r#"{"to": "acct-99", "amount": 1}"#;
    let refused = c.check_and_record(keyed(other, "k-1")).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    configure(
        &mut c,
        proto::SessionConfig {
            key_mismatch: Some("replay".into()),
            ..Default::default()
        },
    )
    .await;
    succeed(&mut c, &first.call_id, r#"{"payment": "p-1"}"#, None).await;
    let replayed = run(&mut c, keyed(other, "k-1")).await;
    assert_eq!(verdict(&replayed), Verdict::Duplicate);
    assert_eq!(replayed.call_id, first.call_id);
    assert_eq!(
        replayed.result_json.as_deref(),
        Some(r#"{"payment": "p-1"}"#)
    );
}

#[tokio::test]
async fn a_key_minted_per_attempt_is_answered_by_the_funnel_with_a_warning() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let first = run(&mut c, keyed(PAY, "attempt-1")).await;
    assert!(first.warnings.is_empty());
    let second = run(&mut c, keyed(PAY, "attempt-2")).await;
    assert_eq!(
        verdict(&second),
        Verdict::InFlight,
        "the funnel decides: an exact repeat"
    );
    assert_eq!(second.call_id, first.call_id);
    assert_eq!(second.warnings, ["key_changes_per_attempt"]);
    let same_key = run(&mut c, keyed(PAY, "attempt-1")).await;
    assert!(same_key.warnings.is_empty(), "{:?}", same_key.warnings);
    let stats = c
        .get_stats(proto::GetStatsRequest {
            tenant: "t".into(),
            session: Some("s".into()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.warnings.get("key_changes_per_attempt"), Some(&1));
}

#[tokio::test]
async fn many_repeats_of_one_tool_in_the_window_carry_a_loop_warning_with_the_count() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    configure(
        &mut c,
        proto::SessionConfig {
            loop_threshold: Some(3),
            loop_window_seconds: Some(60),
            ..Default::default()
        },
    )
    .await;
    let search = r#"{"query": "flights to Lisbon in May"}"#;
    run(&mut c, check("search", search)).await;
    // Distinct calls are not repeats.
    for q in ["hotels in Porto", "trains to Faro"] {
        let r = run(&mut c, check("search", &format!(r#"{{"query": "{q}"}}"#))).await;
        assert!(r.warnings.is_empty());
    }
    let mut warnings = Vec::new();
    for _ in 0..4 {
        warnings.push(run(&mut c, check("search", search)).await.warnings);
    }
    assert!(warnings[0].is_empty() && warnings[1].is_empty());
    assert_eq!(warnings[2], ["loop_suspected:3"]);
    assert_eq!(warnings[3], ["loop_suspected:4"]);
    // Outside the window the count starts again.
    srv.clock.advance_ms(61_000);
    assert!(
        run(&mut c, check("search", search))
            .await
            .warnings
            .is_empty()
    );
}

/// The pair of the state-following window: `disable_2fa` undoes `enable_2fa` on `user_id`.
fn two_factor_pair() -> proto::SessionConfig {
    proto::SessionConfig {
        tools: [(
            "disable_2fa".to_string(),
            proto::ToolPolicy {
                resource_fields: vec!["user_id".into()],
                inverse_of: Some("enable_2fa".into()),
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    }
}

/// Checks `tool` for `user`; a NEW is completed as succeeded. The verdict's name.
async fn toggle(
    c: &mut proto::idem_client::IdemClient<tonic::transport::Channel>,
    tool: &str,
    user: &str,
) -> &'static str {
    let r = run(c, check(tool, &format!(r#"{{"user_id": "{user}"}}"#))).await;
    if verdict(&r) == Verdict::New {
        succeed(c, &r.call_id, r#"{"ok": true}"#, None).await;
    }
    verdict(&r).as_str_name()
}

async fn windows_follow_the_resource_state(srv: TestServer) {
    let mut c = srv.client().await;
    configure(&mut c, two_factor_pair()).await;
    let mut seen = Vec::new();
    for tool in ["enable_2fa", "disable_2fa", "enable_2fa"] {
        seen.push(toggle(&mut c, tool, "u-1").await);
    }
    assert_eq!(seen, ["NEW", "NEW", "NEW"], "enable, disable, enable");
    assert_eq!(toggle(&mut c, "enable_2fa", "u-1").await, "DUPLICATE");
    // Without an inverse call in between, a repeat is a repeat; other resources are apart.
    assert_eq!(toggle(&mut c, "enable_2fa", "u-2").await, "NEW");
    assert_eq!(toggle(&mut c, "enable_2fa", "u-2").await, "DUPLICATE");
    assert_eq!(toggle(&mut c, "disable_2fa", "u-3").await, "NEW");
    assert_eq!(toggle(&mut c, "enable_2fa", "u-2").await, "DUPLICATE");
    // The window of the inverse follows the state too.
    assert_eq!(toggle(&mut c, "disable_2fa", "u-1").await, "NEW");
    assert_eq!(toggle(&mut c, "disable_2fa", "u-1").await, "DUPLICATE");
    assert_eq!(toggle(&mut c, "enable_2fa", "u-1").await, "NEW");
}

#[tokio::test]
async fn a_call_of_the_inverse_tool_ends_the_window_of_earlier_calls_on_its_resource() {
    windows_follow_the_resource_state(TestServer::start().await).await;
}

#[tokio::test]
async fn windows_follow_the_resource_state_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(idem::store::EmbeddedStore::open(dir.path()).unwrap());
    let srv = TestServer::start_with(store, idem::config::ServerConfig::default()).await;
    windows_follow_the_resource_state(srv).await;
}

#[tokio::test]
async fn an_inverse_pair_is_validated_when_configured() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let bad = |p: proto::ToolPolicy| proto::ConfigureSessionRequest {
        config: Some(proto::SessionConfig {
            tenant: "t".into(),
            session: "s".into(),
            tools: [("disable_2fa".to_string(), p)].into(),
            ..Default::default()
        }),
    };
    let itself = c
        .configure_session(bad(proto::ToolPolicy {
            resource_fields: vec!["user_id".into()],
            inverse_of: Some("disable_2fa".into()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(itself.code(), Code::InvalidArgument);
    assert!(itself.message().contains("itself"), "{}", itself.message());
    let no_fields = c
        .configure_session(bad(proto::ToolPolicy {
            inverse_of: Some("enable_2fa".into()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(no_fields.code(), Code::InvalidArgument);
    assert!(
        no_fields.message().contains("resource_fields"),
        "{}",
        no_fields.message()
    );
    // What was set reads back.
    configure(&mut c, two_factor_pair()).await;
    let s = c
        .get_session(proto::GetSessionRequest {
            tenant: "t".into(),
            session: "s".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let p = &s.tools["disable_2fa"];
    assert_eq!(p.inverse_of.as_deref(), Some("enable_2fa"));
    assert_eq!(p.resource_fields, ["user_id"]);
}
