//! Two `idem serve` processes on one Redis (standalone, then a three-master cluster): many
//! concurrent clients send exact, reformatted and reworded repeats of 20 logical actions to
//! both instances at once, and exactly one check per action is NEW.

mod idem_process;
mod redis_server;

use std::collections::HashMap;
use std::time::Duration;

use idem::proto::{self, Verdict, idem_client::IdemClient};
use idem_process::IdemProcess;
use redis_server::{RedisCluster, RedisServer};
use tonic::transport::Channel;

/// The tests of this file run one at a time: each starts two servers with the model.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ACTIONS: usize = 20;
const CLIENTS: usize = 200;
/// The actions are spread over this many sessions (scopes): each instance decides the
/// checks of one scope one at a time, of different scopes in parallel.
const SESSIONS: usize = 4;

/// Bodies of one action as different attempts word them: the original, a rewording the
/// judge calls the same action whichever comes first (tests/semantic.rs checks both ways).
const WORDINGS: [(&str, &str); 2] = [
    (
        "Nightly backup job failed on the billing database",
        "The billing database nightly backup job has failed",
    ),
    (
        "Please send me the final report for the Q3 audit by Friday",
        "Please send me the Q3 audit final report by Friday",
    ),
];

/// Attempt `k` of action `a`: the call as first sent, the same with keys reordered and a
/// fresh request id (an exact repeat after canonicalisation), or reworded.
fn attempt(a: usize, k: usize) -> String {
    let to = format!("user{a}@example.com");
    let (original, reworded) = WORDINGS[a % WORDINGS.len()];
    match k % 3 {
        0 => serde_json::json!({"to": to, "body": original}).to_string(),
        1 => format!(r#"{{"request_id": "r-{k}", "body": "{original}",   "to": "{to}"}}"#),
        _ => serde_json::json!({"to": to, "body": reworded}).to_string(),
    }
}

fn session(action: usize) -> String {
    format!("scale-{}", action % SESSIONS)
}

fn request(action: usize, args: String) -> proto::CheckRequest {
    proto::CheckRequest {
        tenant: "t".into(),
        session: session(action),
        tool: "send_email".into(),
        arguments_json: args,
        ..Default::default()
    }
}

/// Checks until answered: a shed (RESOURCE_EXHAUSTED) or a missed deadline is retried with
/// backoff, as the client guard does.
async fn answer(mut c: IdemClient<Channel>, req: proto::CheckRequest) -> proto::CheckResponse {
    let mut backoff = Duration::from_millis(20);
    for _ in 0..60 {
        match c.check_and_record(req.clone()).await {
            Ok(r) => return r.into_inner(),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::ResourceExhausted | tonic::Code::DeadlineExceeded
                ) =>
            {
                eprintln!("retrying: {s}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Err(s) => panic!("check failed: {s}"),
        }
    }
    panic!("no answer after 60 attempts");
}

async fn one_new_per_action(url: &str) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let args = [
        "--store",
        "redis",
        "--redis-url",
        url,
        "--embedder",
        "local",
        "--models-dir",
        models,
        // The count is what this test checks; a busy machine's disk can stall the
        // `appendfsync always` server past the 250 ms default (tests/redis_faults.rs covers
        // the deadline behaviour).
        "--redis-timeout-ms",
        "3000",
    ];
    let instances = [IdemProcess::start(&args), IdemProcess::start(&args)];
    let mut first = instances[0].client().await;
    // A generous deadline (CI machines are busy); a borderline rewording counts as the
    // same action, so the count tests the reservation, not the judge's calibration.
    for s in 0..SESSIONS {
        first
            .configure_session(proto::ConfigureSessionRequest {
                config: Some(proto::SessionConfig {
                    tenant: "t".into(),
                    session: session(s),
                    deadline_ms: Some(10_000),
                    borderline_policy: Some("block".into()),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    let clients = [instances[0].client().await, instances[1].client().await];
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|j| {
            // Every action gets every kind of attempt on both instances, and its first two
            // attempts reach the two instances at the same moment.
            let (action, k) = (j % ACTIONS, j / ACTIONS);
            let c = clients[k % 2].clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                (action, answer(c, request(action, attempt(action, k))).await)
            })
        })
        .collect();
    let mut by_action: HashMap<usize, Vec<proto::CheckResponse>> = HashMap::new();
    for t in tasks {
        let (action, r) = t.await.unwrap();
        by_action.entry(action).or_default().push(r);
    }
    let news: usize = by_action
        .values()
        .flatten()
        .filter(|r| r.verdict == Verdict::New as i32)
        .count();
    let describe = |rs: &[proto::CheckResponse]| -> Vec<String> {
        rs.iter()
            .map(|r| format!("{:?} {} {}", r.verdict(), r.call_id, r.reason))
            .collect()
    };
    for (action, rs) in &by_action {
        let new: Vec<&proto::CheckResponse> = rs
            .iter()
            .filter(|r| r.verdict == Verdict::New as i32)
            .collect();
        assert_eq!(new.len(), 1, "action {action}: {:#?}", describe(rs));
        // Every other attempt names that NEW as its original.
        assert!(
            rs.iter().all(|r| r.call_id == new[0].call_id),
            "action {action}: {:#?}",
            describe(rs)
        );
    }
    assert_eq!(news, ACTIONS);
    // Both instances see the 20 reservations in the shared intent log.
    for inst in &instances {
        let mut c = inst.client().await;
        let mut listed = 0;
        for s in 0..SESSIONS {
            let page = c
                .list_calls(proto::ListCallsRequest {
                    tenant: "t".into(),
                    session: session(s),
                    page_size: 100,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            listed += page.calls.len();
        }
        assert_eq!(listed, ACTIONS, "{}", inst.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_answer_one_new_per_action() {
    let redis = RedisServer::start();
    one_new_per_action(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_redis_cluster_answer_one_new_per_action() {
    let cluster = RedisCluster::start();
    one_new_per_action(&cluster.url()).await;
}
