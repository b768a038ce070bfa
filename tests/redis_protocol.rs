//! The agent protocol across two `idem serve` processes on one real redis-server: a
//! WaitForCall on one instance answers when the other completes the call, and the windows
//! of an inverse pair follow the resource's state whichever instance records each call.

mod idem_process;
mod redis_server;

use std::time::{Duration, Instant};

use idem::proto::{self, CallStatus, Verdict, idem_client::IdemClient};
use idem_process::IdemProcess;
use redis_server::RedisServer;
use tonic::transport::Channel;

/// Two instances on `redis`, without the model (these tests need no embeddings).
fn two_instances(redis: &RedisServer) -> [IdemProcess; 2] {
    let url = redis.url();
    let args = [
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--embedder",
        "none",
        // What these tests check is the protocol; a busy machine's disk can stall the
        // `appendfsync always` server past the 250 ms default.
        "--redis-timeout-ms",
        "3000",
    ];
    [IdemProcess::start(&args), IdemProcess::start(&args)]
}

fn check(tool: &str, args: &str) -> proto::CheckRequest {
    proto::CheckRequest {
        tenant: "t".into(),
        session: "s".into(),
        tool: tool.into(),
        arguments_json: args.into(),
        ..Default::default()
    }
}

async fn run(c: &mut IdemClient<Channel>, req: proto::CheckRequest) -> proto::CheckResponse {
    c.check_and_record(req).await.expect("check").into_inner()
}

async fn succeed(c: &mut IdemClient<Channel>, call_id: &str) {
    c.complete(proto::CompleteRequest {
        call_id: call_id.into(),
        outcome: CallStatus::Succeeded as i32,
        result_json: Some(r#"{"ok": true}"#.into()),
        ..Default::default()
    })
    .await
    .expect("complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_one_instance_answers_when_another_instance_completes_the_call() {
    let redis = RedisServer::start();
    let [a, b] = two_instances(&redis);
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let original = run(&mut ca, check("pay", r#"{"to": "acct-17", "amount": 250}"#)).await;
    assert_eq!(original.verdict, Verdict::New as i32);
    let id = original.call_id.clone();
    let timeout_ms = 20_000;
    let waiting = tokio::spawn(async move {
        let r = cb
            .wait_for_call(proto::WaitForCallRequest {
                call_id: id,
                timeout_ms,
            })
            .await
            .expect("wait")
            .into_inner();
        (r, Instant::now())
    });
    // The wait is under way on B (the completion would otherwise be read at once).
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!waiting.is_finished(), "the call is still in progress");
    succeed(&mut ca, &original.call_id).await;
    let completed = Instant::now();
    let (record, answered) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered before the timeout")
        .unwrap();
    assert_eq!(record.status, CallStatus::Succeeded as i32);
    assert_eq!(record.result_json.as_deref(), Some(r#"{"ok": true}"#));
    // B re-reads the record every 250 ms: it answers within that (plus a busy machine's
    // slack), far inside the 20 s timeout.
    let lag = answered.saturating_duration_since(completed);
    eprintln!("WaitForCall on B answered {lag:?} after the Complete on A");
    assert!(
        lag < Duration::from_millis(1500),
        "answered {lag:?} after the Complete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_of_an_inverse_pair_follow_the_resource_across_instances() {
    let redis = RedisServer::start();
    let [a, b] = two_instances(&redis);
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    ca.configure_session(proto::ConfigureSessionRequest {
        config: Some(proto::SessionConfig {
            tenant: "t".into(),
            session: "s".into(),
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
        }),
    })
    .await
    .unwrap();
    // Each step on the instance named: a NEW is completed there.
    let steps = [
        ("a", "enable_2fa", "u-1", Verdict::New),
        ("b", "disable_2fa", "u-1", Verdict::New),
        ("a", "enable_2fa", "u-1", Verdict::New),
        ("b", "enable_2fa", "u-1", Verdict::Duplicate),
        ("b", "enable_2fa", "u-2", Verdict::New),
        ("a", "disable_2fa", "u-3", Verdict::New),
        ("a", "enable_2fa", "u-2", Verdict::Duplicate),
        ("a", "disable_2fa", "u-1", Verdict::New),
        ("b", "enable_2fa", "u-1", Verdict::New),
    ];
    for (i, (on, tool, user, want)) in steps.into_iter().enumerate() {
        let c = if on == "a" { &mut ca } else { &mut cb };
        let r = run(c, check(tool, &format!(r#"{{"user_id": "{user}"}}"#))).await;
        assert_eq!(
            r.verdict, want as i32,
            "step {i}: {tool} {user} on {on}: {}",
            r.reason
        );
        if r.verdict == Verdict::New as i32 {
            succeed(c, &r.call_id).await;
        }
    }
}
