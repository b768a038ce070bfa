//! N concurrent identical checks produce exactly one NEW, on both backends.

mod common;

use std::sync::Arc;

use common::*;
use idem::config::ServerConfig;
use idem::proto::Verdict;
use idem::store::{EmbeddedStore, MemoryStore, Store};

async fn race(store: Arc<dyn Store>) {
    let srv = TestServer::start_with(store, ServerConfig::default()).await;
    let base = srv.client().await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let mut c = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut req = check("transfer", r#"{"to": "bob", "amount": 100}"#);
            req.deadline_ms = Some(30_000);
            run(&mut c, req).await
        }));
    }
    let mut new = 0;
    let mut in_flight = 0;
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        ids.insert(r.call_id.clone());
        match verdict(&r) {
            Verdict::New => new += 1,
            Verdict::InFlight => in_flight += 1,
            v => panic!("unexpected {v:?}"),
        }
    }
    assert_eq!(new, 1);
    assert_eq!(in_flight, 199);
    assert_eq!(ids.len(), 1, "every answer names the one original");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_identical_checks_memory() {
    race(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_identical_checks_embedded() {
    let dir = tempfile::tempdir().unwrap();
    race(Arc::new(EmbeddedStore::open(dir.path()).unwrap())).await;
}

/// The same with the semantic funnel on and the default 50 ms budget: a burst of identical calls
/// with free text needs one embedding (the others wait for it), so none is shed and still
/// exactly one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_identical_calls_with_free_text_is_one_new_and_never_shed() {
    let srv = start_semantic(semantic_config()).await;
    let base = srv.client().await;
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut c = base.clone();
        tasks.push(tokio::spawn(async move {
            let args = r#"{"to": "bob@example.com", "body": "Please send the signed lease for the Lisbon office."}"#;
            c.check_and_record(check("send_email", args)).await
        }));
    }
    let mut verdicts = Vec::new();
    for t in tasks {
        let r = t.await.unwrap().expect("no check is shed or fails");
        verdicts.push(verdict(&r.into_inner()));
    }
    assert_eq!(verdicts.iter().filter(|v| **v == Verdict::New).count(), 1);
    assert!(
        verdicts
            .iter()
            .all(|v| matches!(v, Verdict::New | Verdict::InFlight)),
        "{verdicts:?}"
    );
}
