//! A retry storm as it happens: 200 identical `idem check` processes, 64 at a time, against a
//! server on the embedded store with the whole funnel and the default 50 ms budget. Every
//! one is answered, exactly one is NEW, none is refused, with and without free text.

mod common;

use std::sync::Arc;

use common::*;
use idem::store::EmbeddedStore;
use tokio::sync::Semaphore;

/// Runs `n` `idem check --json` processes, at most `parallel` at once; their exit codes and
/// outputs.
async fn storm(
    server: &str,
    tool: &str,
    args: &str,
    n: usize,
    parallel: usize,
) -> Vec<(bool, String)> {
    let gate = Arc::new(Semaphore::new(parallel));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let gate = gate.clone();
        let (server, tool, args) = (server.to_string(), tool.to_string(), args.to_string());
        tasks.push(tokio::spawn(async move {
            let _slot = gate.acquire_owned().await.unwrap();
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_idem"))
                .args([
                    "check",
                    "--server",
                    &server,
                    "--tenant",
                    "t",
                    "--session",
                    "storm",
                ])
                .args(["--tool", &tool, "--args", &args, "--json"])
                .output()
                .await
                .expect("idem check runs");
            let text = if out.status.success() {
                String::from_utf8_lossy(&out.stdout).into_owned()
            } else {
                String::from_utf8_lossy(&out.stderr).into_owned()
            };
            (out.status.success(), text)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results
}

async fn one_new_no_error(tool: &str, args: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let (engine, clock) = semantic_engine(store, semantic_config());
    let srv = TestServer::start_engine(engine, clock).await;
    let server = format!("http://{}", srv.addr);
    let results = storm(&server, tool, args, 200, 64).await;
    let errors: Vec<&String> = results
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, t)| t)
        .collect();
    assert!(
        errors.is_empty(),
        "{} of 200 failed, first: {:?}",
        errors.len(),
        errors.first()
    );
    let verdicts: Vec<String> = results
        .iter()
        .map(|(_, out)| {
            let v: serde_json::Value = serde_json::from_str(out).expect("--json prints JSON");
            v["verdict"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(verdicts.len(), 200);
    assert_eq!(
        verdicts.iter().filter(|v| *v == "NEW").count(),
        1,
        "{verdicts:?}"
    );
    assert!(
        verdicts.iter().all(|v| v == "NEW" || v == "IN_FLIGHT"),
        "{verdicts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_identical_processes_without_free_text_get_one_new_and_no_error() {
    one_new_no_error(
        "transfer",
        r#"{"to": "bob", "amount": 100, "currency": "EUR"}"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_identical_processes_with_free_text_get_one_new_and_no_error() {
    one_new_no_error(
        "send_email",
        r#"{"to": "bob@example.com", "body": "Hi Bob, here is the signed lease for the Lisbon office, as promised on Monday."}"#,
    )
    .await;
}
