//! Graceful shutdown of a real `idem serve` process: SIGTERM while clients keep checks in
//! flight. Health turns NOT_SERVING while it drains, every check it accepted is answered, it
//! exits 0, and the embedded store reopens with every answered NEW recorded and the counters
//! of every answered check flushed.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use idem::proto;
use idem::proto::idem_client::IdemClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A server process, killed on drop if it is still running.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn serve(data: &std::path::Path, drain_ms: u64) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "embedded"])
        .args([
            "--embedder",
            "none",
            "--shutdown-drain-ms",
            &drain_ms.to_string(),
        ])
        .arg("--data-dir")
        .arg(data)
        .env_remove("IDEM_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("idem serve starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let banner = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("banner in time")
        .unwrap()
        .unwrap_or_default();
    let addr = banner
        .strip_prefix("idem listening on ")
        .unwrap_or_else(|| panic!("unexpected banner {banner:?}"))
        .to_string();
    // Keep reading stdout so the server never blocks on a full pipe; keep the last line.
    child.stdout = None;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server { child, addr }
}

/// Check `i` of client `w`: each client has its own session (scope), so checks queue on the
/// store's commits, not on each other's scope lock.
fn req(w: usize, i: usize) -> proto::CheckRequest {
    proto::CheckRequest {
        tenant: "t".into(),
        session: format!("drain-{w}"),
        deadline_ms: Some(5000),
        tool: "create_ticket".into(),
        arguments_json: format!(r#"{{"id": {i}, "title": "ticket {i}"}}"#),
        ..Default::default()
    }
}

#[tokio::test]
async fn sigterm_answers_checks_in_flight_flushes_counters_and_closes_the_store() {
    let data = tempfile::tempdir().unwrap();
    let mut server = serve(data.path(), 1500).await;
    let url = format!("http://{}", server.addr);
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let status = |r: proto_health::R| r.map(|r| r.into_inner().status).map_err(|e| e.code());
    assert_eq!(
        status(health.check(HealthCheckRequest::default()).await),
        Ok(ServingStatus::Serving as i32)
    );

    // Eight clients check distinct calls back to back until the server stops answering.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for w in 0..8 {
        let (channel, stop) = (channel.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut c = IdemClient::new(channel);
            let (mut new_ids, mut refused) = (Vec::new(), 0usize);
            let mut i = w * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match c.check_and_record(req(w, i)).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        assert_eq!(r.verdict, proto::Verdict::New as i32);
                        new_ids.push(r.call_id);
                    }
                    Err(e) => {
                        // After the listener closes: refused (or not sent: Cancelled when the
                        // connection closed first). That none of these was recorded is checked
                        // below: the store holds exactly the answered calls.
                        assert!(
                            matches!(
                                e.code(),
                                tonic::Code::Unavailable
                                    | tonic::Code::Unknown
                                    | tonic::Code::Cancelled
                            ),
                            "{e:?}"
                        );
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        if refused > 20 {
                            break;
                        }
                    }
                }
            }
            (w, new_ids)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.child.id().expect("running") as libc::pid_t;
    // SAFETY: sending SIGTERM to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // While draining, health says NOT_SERVING and checks are still answered.
    let mut not_serving = false;
    for _ in 0..50 {
        let s = status(health.check(HealthCheckRequest::default()).await);
        if s == Ok(ServingStatus::NotServing as i32) {
            not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        not_serving,
        "health never reported NOT_SERVING while draining"
    );
    let exit = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("the server stops within its grace period")
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(exit.success(), "{exit:?}");
    let mut answered = Vec::new();
    for c in clients {
        let (w, ids) = c.await.unwrap();
        answered.extend(ids.into_iter().map(|id| (w, id)));
    }
    assert!(
        answered.len() > 8,
        "only {} checks answered",
        answered.len()
    );

    // The store reopens cleanly: every answered NEW is there, every answered check counted.
    let server = serve(data.path(), 0).await;
    let mut c = IdemClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let stats = c
        .get_stats(proto::GetStatsRequest {
            tenant: "t".into(),
            session: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stats.checks,
        answered.len() as u64,
        "counters flushed at shutdown"
    );
    for (_, id) in answered.iter().step_by((answered.len() / 50).max(1)) {
        let rec = c
            .get_call(proto::GetCallRequest {
                call_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("answered NEW {id} lost: {e:?}"))
            .into_inner();
        assert_eq!(rec.status, proto::CallStatus::InProgress as i32);
    }
    for w in 0..8 {
        let listed = c
            .list_calls(proto::ListCallsRequest {
                tenant: "t".into(),
                session: format!("drain-{w}"),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mine = answered.iter().filter(|(x, _)| *x == w).count();
        assert_eq!(
            listed.calls.len().min(1000),
            mine.min(1000),
            "client {w}: no call recorded that was not answered"
        );
    }
}

mod proto_health {
    /// A health check's answer.
    pub type R = Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status>;
}

/// `--log-format json`: every line on stderr is one JSON object, from start to stop, and the
/// arguments of a check appear in none of them.
#[tokio::test]
async fn json_logs_are_one_object_a_line_without_argument_values() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory"])
        .args(["--embedder", "none", "--log-format", "json"])
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_LOG", "idem=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = out.next_line().await.unwrap().unwrap_or_default();
    let addr = banner
        .strip_prefix("idem listening on ")
        .unwrap()
        .to_string();
    let mut c = IdemClient::connect(format!("http://{addr}")).await.unwrap();
    let mut r = req(0, 7);
    r.arguments_json = r#"{"title": "s3cr3t-value"}"#.into();
    c.check_and_record(r).await.unwrap();
    let pid = child.id().unwrap() as libc::pid_t;
    // SAFETY: sending SIGTERM to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut messages = Vec::new();
    while let Some(line) = err.next_line().await.unwrap() {
        assert!(
            !line.contains("s3cr3t-value"),
            "argument value logged: {line}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        messages.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(child.wait().await.unwrap().success());
    assert!(
        messages.iter().any(|m| m == "idem listening"),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m == "check"),
        "the debug line of the check: {messages:?}"
    );
    assert_eq!(messages.last().map(String::as_str), Some("idem stopped"));
}
