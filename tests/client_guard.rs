//! The Rust client's guard against a real in-process server: the tool runs once per distinct
//! call, failures are recorded and retried, in-flight repeats wait and replay, and the failure
//! policy decides when idem is down.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::TestServer;
use idem::proto;
use idem_client::{
    CallStatus, Execution, FailurePolicy, Guard, GuardError, IdemClient, InFlightWait, Verdict,
};
use serde_json::{Value, json};

async fn guard(server: &TestServer) -> Guard {
    let client = IdemClient::connect(&format!("http://{}", server.addr))
        .await
        .expect("connect");
    Guard::new(client, "t", "s").in_flight_wait(InFlightWait {
        max_wait: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    })
}

/// A tool that counts its executions and answers with the count.
async fn counted(counter: &AtomicUsize) -> Result<Value, std::io::Error> {
    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(json!({"sent": n}))
}

/// A closed local port: bound, then released.
fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

#[tokio::test]
async fn retried_call_runs_once_and_distinct_calls_run_each() {
    let server = TestServer::start().await;
    let g = guard(&server).await;
    let runs = AtomicUsize::new(0);
    let alice = json!({"to": "alice@example.com", "body": "The March invoice is attached."});
    let bob = json!({"to": "bob@example.com", "body": "The March invoice is attached."});

    let first = g
        .run("send_email", &alice, |_| counted(&runs))
        .await
        .unwrap();
    assert!(matches!(first.execution, Execution::Ran { .. }));
    let retry = g
        .run("send_email", &alice, |_| counted(&runs))
        .await
        .unwrap();
    assert_eq!(retry.value, first.value, "the retry gets the first result");
    assert!(matches!(
        retry.execution,
        Execution::Replayed { waited: false, .. }
    ));
    let other = g.run("send_email", &bob, |_| counted(&runs)).await.unwrap();
    assert_eq!(other.value, json!({"sent": 2}));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn failing_tool_is_recorded_failed_and_a_retry_runs_again() {
    let server = TestServer::start().await;
    let g = guard(&server).await;
    let runs = AtomicUsize::new(0);
    let args = json!({"order": 7, "amount": 10});

    let err = g
        .run("charge", &args, |_| async {
            runs.fetch_add(1, Ordering::SeqCst);
            Err::<Value, _>(std::io::Error::other("card declined"))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, GuardError::Tool(_)), "{err}");

    let retry = g.run("charge", &args, |_| counted(&runs)).await.unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "a failed call may run again"
    );
    let Execution::Ran { call_id } = retry.execution else {
        panic!("expected a fresh run, got {:?}", retry.execution);
    };
    let call = g.client().get_call(&call_id).await.unwrap();
    assert_eq!(call.status, CallStatus::Succeeded);
    assert_eq!(call.result, Some(json!({"sent": 2})));

    // The first attempt is on record as FAILED with its error.
    let mut raw = server.client().await;
    let list = raw
        .list_calls(proto::ListCallsRequest {
            tenant: "t".into(),
            session: "s".into(),
            status: Some(proto::CallStatus::Failed as i32),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.calls.len(), 1);
    assert_eq!(list.calls[0].error.as_deref(), Some("card declined"));
}

#[tokio::test]
async fn in_flight_repeat_waits_for_the_original_and_replays_its_result() {
    let server = TestServer::start().await;
    let g1 = guard(&server).await;
    let g2 = guard(&server).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let args = json!({"ticket": "T-1", "title": "Printer on fire"});

    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let first = {
        let (runs, args) = (runs.clone(), args.clone());
        tokio::spawn(async move {
            g1.run("create_ticket", &args, |_| async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let _ = started_tx.send(());
                let _ = release_rx.await;
                Ok::<_, std::io::Error>(json!({"id": "T-1"}))
            })
            .await
        })
    };
    started_rx.await.unwrap();

    let second = {
        let (runs, args) = (runs.clone(), args.clone());
        tokio::spawn(async move {
            g2.run("create_ticket", &args, |_| async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(json!({"id": "T-2"}))
            })
            .await
        })
    };
    // Release the original only once the second caller has been told IN_FLIGHT.
    let mut raw = server.client().await;
    loop {
        let stats = raw
            .get_stats(proto::GetStatsRequest {
                tenant: "t".into(),
                session: Some("s".into()),
            })
            .await
            .unwrap()
            .into_inner();
        let in_flight = stats
            .by_verdict
            .iter()
            .any(|(k, n)| k.eq_ignore_ascii_case("in_flight") && *n > 0);
        if in_flight {
            break;
        }
        tokio::task::yield_now().await;
    }
    release_tx.send(()).unwrap();

    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!(first.value, json!({"id": "T-1"}));
    assert_eq!(second.value, json!({"id": "T-1"}));
    assert!(
        matches!(second.execution, Execution::Replayed { waited: true, .. }),
        "{:?}",
        second.execution
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn in_flight_wait_is_bounded() {
    let server = TestServer::start().await;
    let g = guard(&server).await;
    let args = json!({"order": 1});
    let Verdict::New {
        call_id: Some(_), ..
    } = g
        .client()
        .check("t", "s", "charge", &args, &Default::default())
        .await
        .unwrap()
        .verdict
    else {
        panic!("expected NEW");
    };
    let g = g.in_flight_wait(InFlightWait {
        max_wait: Duration::from_millis(60),
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
    });
    let ran = AtomicUsize::new(0);
    let err = g.run("charge", &args, |_| counted(&ran)).await.unwrap_err();
    assert!(matches!(err, GuardError::StillInFlight { .. }), "{err}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn tool_in_mode_off_runs_every_time_and_is_not_recorded() {
    let server = TestServer::start().await;
    let mut raw = server.client().await;
    let mut tools = std::collections::HashMap::new();
    tools.insert(
        "read_file".to_string(),
        proto::ToolPolicy {
            mode: "off".into(),
            ..Default::default()
        },
    );
    raw.configure_session(proto::ConfigureSessionRequest {
        config: Some(proto::SessionConfig {
            tenant: "t".into(),
            session: "s".into(),
            tools,
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let g = guard(&server).await;
    let runs = AtomicUsize::new(0);
    let args = json!({"path": "/etc/hosts"});
    for _ in 0..3 {
        let out = g.run("read_file", &args, |_| counted(&runs)).await.unwrap();
        assert_eq!(out.execution, Execution::Untracked);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn fail_open_runs_the_tool_when_idem_is_down() {
    let client = IdemClient::connect_lazy(&closed_port_url()).unwrap();
    let g = Guard::new(client, "t", "s").on_unavailable(FailurePolicy::FailOpen);
    let runs = AtomicUsize::new(0);
    let out = g
        .run("send_email", &json!({"to": "a@b.c"}), |_| counted(&runs))
        .await
        .unwrap();
    assert_eq!(out.execution, Execution::FailedOpen);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn fail_closed_refuses_to_run_when_idem_is_down() {
    let client = IdemClient::connect_lazy(&closed_port_url()).unwrap();
    let g = Guard::new(client, "t", "s"); // fail-closed is the default
    let runs = AtomicUsize::new(0);
    let err = g
        .run("send_email", &json!({"to": "a@b.c"}), |_| counted(&runs))
        .await
        .unwrap_err();
    assert!(matches!(err, GuardError::Unavailable(_)), "{err}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn eager_connect_to_a_closed_port_is_unavailable() {
    let err = IdemClient::connect(&closed_port_url()).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}

#[tokio::test]
async fn invalid_arguments_are_an_idem_error_not_a_policy_case() {
    let server = TestServer::start().await;
    let g = guard(&server).await.on_unavailable(FailurePolicy::FailOpen);
    let runs = AtomicUsize::new(0);
    let err = g
        .run("send_email", &json!(["not", "an", "object"]), |_| {
            counted(&runs)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, GuardError::Idem(_)), "{err}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_tool_gets_the_action_key_and_keeps_it_when_a_crashed_attempt_is_taken_over() {
    let server = TestServer::start().await;
    let g = guard(&server).await;
    let args = json!({"to": "acct-17", "amount": 250});
    // The first attempt "crashes": its run is dropped while the tool runs.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let first = {
        let seen = seen.clone();
        g.run("pay", &args, move |action| async move {
            seen.lock().unwrap().push(action);
            std::future::pending::<Result<Value, std::io::Error>>().await
        })
    };
    assert!(
        tokio::time::timeout(Duration::from_millis(200), first)
            .await
            .is_err()
    );
    server.clock.advance_ms(301_000);
    let out = {
        let seen = seen.clone();
        g.run("pay", &args, move |action| async move {
            seen.lock().unwrap().push(action);
            Ok::<_, std::io::Error>(json!({"payment": "p-1"}))
        })
        .await
        .unwrap()
    };
    assert!(matches!(out.execution, Execution::Ran { .. }));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].key.is_some());
    assert_eq!(
        seen[1].key, seen[0].key,
        "the downstream key survives the take-over"
    );
    assert_eq!((seen[0].attempt, seen[1].attempt), (1, 2));
}

#[tokio::test]
async fn an_in_flight_repeat_is_answered_by_the_server_side_wait() {
    let server = TestServer::start().await;
    let g = guard(&server).await.in_flight_wait(InFlightWait {
        max_wait: Duration::from_secs(10),
        // Polling this slowly would take seconds; the server-side wait answers at once.
        initial_backoff: Duration::from_secs(5),
        max_backoff: Duration::from_secs(5),
    });
    let args = json!({"to": "acct-17", "amount": 250});
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let first = {
        let g = g.clone();
        let args = args.clone();
        tokio::spawn(async move {
            g.run("pay", &args, |_| async move {
                let _ = released.await;
                Ok::<_, std::io::Error>(json!({"payment": "p-1"}))
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = {
        let g = g.clone();
        let args = args.clone();
        tokio::spawn(async move {
            g.run("pay", &args, |_| async {
                Ok::<_, std::io::Error>(json!("ran twice"))
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let _ = release.send(());
    assert!(matches!(
        first.await.unwrap().unwrap().execution,
        Execution::Ran { .. }
    ));
    let second = second.await.unwrap().unwrap();
    assert_eq!(second.value, json!({"payment": "p-1"}));
    assert!(matches!(
        second.execution,
        Execution::Replayed { waited: true, .. }
    ));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered when the original completed, not at the next poll"
    );
}

/// A `MakeWriter` that keeps what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn the_guard_logs_the_servers_advisories_as_warnings() {
    let server = TestServer::start().await;
    let g = guard(&server).await;
    let mut raw = server.client().await;
    raw.configure_session(proto::ConfigureSessionRequest {
        config: Some(proto::SessionConfig {
            tenant: "t".into(),
            session: "s".into(),
            loop_threshold: Some(2),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let runs = AtomicUsize::new(0);
    let args = json!({"to": "acct-17", "amount": 250});
    let keyed = |k: &str| idem_client::CheckOptions {
        idempotency_key: Some(k.into()),
        ..Default::default()
    };
    // A key minted per attempt, then the agent looping on the call.
    for k in ["attempt-1", "attempt-2", "attempt-2"] {
        g.run_with("pay", &args, keyed(k), |_| counted(&runs))
            .await
            .unwrap();
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let advisories: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("idem advisory"))
        .collect();
    assert!(
        advisories.iter().all(|l| l.contains("WARN")),
        "{advisories:?}"
    );
    assert!(
        advisories
            .iter()
            .any(|l| l.contains("key_changes_per_attempt")),
        "{text}"
    );
    assert!(
        advisories.iter().any(|l| l.contains("loop_suspected:2")),
        "{text}"
    );
}
