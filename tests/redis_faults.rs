//! Redis faults under an idem instance: killed during load (append-only file, fsync always),
//! then restarted; frozen (SIGSTOP) as a network stall. Checks fail fast with UNAVAILABLE
//! naming Redis, never hang past their deadline, resume by themselves, and every NEW
//! acknowledged before the fault is still there afterwards.

mod idem_process;
mod redis_server;

use std::time::{Duration, Instant};

use idem::proto::{self, Verdict, idem_client::IdemClient};
use idem_process::IdemProcess;
use redis_server::RedisServer;
use tonic::transport::Channel;

/// The check budget the faults must be answered inside (ms), and the slack allowed for the
/// answer to travel back on a busy machine.
const DEADLINE_MS: u32 = 400;
const SLACK: Duration = Duration::from_millis(600);

fn start_idem(redis: &RedisServer) -> IdemProcess {
    IdemProcess::start(&[
        "--store",
        "redis",
        "--redis-url",
        &redis.url(),
        // Longer than the budget: the check's deadline, not this, must bound a stall.
        "--redis-timeout-ms",
        "3000",
        "--embedder",
        "none",
        "--deadline-ms",
        &DEADLINE_MS.to_string(),
    ])
}

fn request(session: &str, n: usize) -> proto::CheckRequest {
    proto::CheckRequest {
        tenant: "t".into(),
        session: session.into(),
        tool: "charge".into(),
        arguments_json: format!(r#"{{"order": {n}, "amount": 10}}"#),
        ..Default::default()
    }
}

/// One check, timed.
async fn timed_check(
    c: &mut IdemClient<Channel>,
    req: proto::CheckRequest,
) -> (Result<proto::CheckResponse, tonic::Status>, Duration) {
    let t = Instant::now();
    let r = c.check_and_record(req).await.map(|r| r.into_inner());
    (r, t.elapsed())
}

/// Asserts a failed check is UNAVAILABLE (or, for a stall, DEADLINE_EXCEEDED) naming Redis,
/// answered inside the budget.
fn assert_fast_failure(e: &tonic::Status, took: Duration) {
    assert!(
        matches!(
            e.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        ),
        "{e:?}"
    );
    if e.code() == tonic::Code::Unavailable {
        assert!(e.message().to_lowercase().contains("redis"), "{e:?}");
    }
    assert!(
        took < Duration::from_millis(u64::from(DEADLINE_MS)) + SLACK,
        "answered after {took:?}: {e:?}"
    );
    eprintln!("failed in {took:?}: {}", e.message());
}

/// Every acknowledged NEW is stored and a repeat of it is not NEW again.
async fn assert_all_kept(c: &mut IdemClient<Channel>, session: &str, acked: &[(usize, String)]) {
    for (n, id) in acked {
        let got = c
            .get_call(proto::GetCallRequest {
                call_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged call {id} lost: {e}"))
            .into_inner();
        assert_eq!(&got.call_id, id);
        let repeat = c
            .check_and_record(request(session, *n))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(repeat.verdict, Verdict::InFlight as i32, "{repeat:?}");
        assert_eq!(&repeat.call_id, id);
    }
}

/// Checks until one is answered (the service resumed by itself), at most `within`.
async fn until_answered(c: &mut IdemClient<Channel>, session: &str, n: usize, within: Duration) {
    let t = Instant::now();
    loop {
        if c.check_and_record(request(session, n)).await.is_ok() {
            return;
        }
        assert!(
            t.elapsed() < within,
            "service did not resume within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_killed_during_load_fails_fast_resumes_and_loses_nothing_acknowledged() {
    let mut redis = RedisServer::start();
    let idem = start_idem(&redis);
    let mut c = idem.client().await;
    let mut acked = Vec::new();
    let mut failures = 0;
    for n in 0..400 {
        if n == 150 {
            redis.kill();
        }
        if n == 300 {
            redis.restart();
            until_answered(&mut c, "load", 10_000, Duration::from_secs(10)).await;
        }
        let (r, took) = timed_check(&mut c, request("load", n)).await;
        match r {
            Ok(r) => {
                assert_eq!(r.verdict, Verdict::New as i32, "{r:?}");
                acked.push((n, r.call_id));
            }
            Err(e) => {
                assert!(
                    (150..300).contains(&n),
                    "check {n} failed with Redis up: {e:?}"
                );
                assert_fast_failure(&e, took);
                failures += 1;
            }
        }
    }
    assert_eq!(failures, 150, "every check while Redis was down failed");
    assert_eq!(acked.len(), 250);
    assert_all_kept(&mut c, "load", &acked).await;
    // And after one more crash, replayed from the append-only file alone.
    redis.restart();
    until_answered(&mut c, "load", 10_001, Duration::from_secs(10)).await;
    assert_all_kept(&mut c, "load", &acked).await;
}

#[tokio::test]
async fn a_stalled_redis_is_a_timeout_inside_the_check_budget() {
    let redis = RedisServer::start();
    let idem = start_idem(&redis);
    let mut c = idem.client().await;
    let mut acked = Vec::new();
    for n in 0..20 {
        let r = c
            .check_and_record(request("stall", n))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.verdict, Verdict::New as i32);
        acked.push((n, r.call_id));
    }
    redis.pause();
    for n in 20..25 {
        let (r, took) = timed_check(&mut c, request("stall", n)).await;
        let Err(e) = r else {
            redis.resume();
            panic!("check {n} answered by a frozen Redis: {r:?}");
        };
        assert_fast_failure(&e, took);
    }
    redis.resume();
    until_answered(&mut c, "stall", 100, Duration::from_secs(10)).await;
    assert_all_kept(&mut c, "stall", &acked).await;
}
