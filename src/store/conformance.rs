//! One conformance suite, run against every backend.

use std::sync::Arc;

use super::*;
use crate::record::{CallStatus, Record, match_scope};

pub(crate) fn rec(session: &str, n: u32, created: Millis) -> Record {
    Record {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: "t".into(),
        session: session.into(),
        match_scope: match_scope("t", session, false),
        tool: "send".into(),
        arguments_json: format!("{{\"n\":{n}}}"),
        canonical_json: format!("{{\"n\":{n}}}"),
        exact_hash: format!("hash{n}"),
        identity_fingerprint: "fp".into(),
        free_text: String::new(),
        idempotency_key: Some(format!("key{n}")),
        status: CallStatus::InProgress,
        result_json: None,
        error: None,
        cost: None,
        supersedes: None,
        previous_attempt_unknown: false,
        created_at_ms: created,
        updated_at_ms: created,
        lease_until_ms: created + 1000,
        expires_at_ms: created + 10_000,
        nearest_call_id: None,
        embedding: None,
        action_key: "action".into(),
        attempt: 1,
        superseded_by: None,
        compensation_json: None,
        resource: None,
    }
}

async fn insert_get_update(s: Arc<dyn Store>) {
    let mut r = rec("s1", 1, 1000);
    s.insert(&r, &Quota::UNLIMITED).await.unwrap();
    assert_eq!(s.get(&r.id).await.unwrap().as_ref(), Some(&r));
    assert!(s.get("missing").await.unwrap().is_none());
    r.status = CallStatus::Succeeded;
    r.result_json = Some("{\"ok\":true}".into());
    s.update(&r).await.unwrap();
    assert_eq!(
        s.get(&r.id).await.unwrap().unwrap().status,
        CallStatus::Succeeded
    );
    let ghost = rec("s1", 2, 1000);
    assert!(matches!(
        s.update(&ghost).await,
        Err(StoreError::Missing(_))
    ));
}

async fn lookups_by_key_and_exact_return_the_newest(s: Arc<dyn Store>) {
    let a = rec("s1", 1, 1000);
    let mut b = rec("s1", 1, 2000);
    b.id = uuid::Uuid::now_v7().to_string();
    s.insert(&a, &Quota::UNLIMITED).await.unwrap();
    s.insert(&b, &Quota::UNLIMITED).await.unwrap();
    let scope = &a.match_scope;
    assert_eq!(
        s.latest_by_key(scope, "key1").await.unwrap().unwrap().id,
        b.id
    );
    assert_eq!(
        s.latest_by_exact(scope, "hash1").await.unwrap().unwrap().id,
        b.id
    );
    assert!(s.latest_by_key(scope, "key9").await.unwrap().is_none());
    // Other scopes never see it.
    let other = match_scope("t", "s2", false);
    assert!(s.latest_by_exact(&other, "hash1").await.unwrap().is_none());
    let other_tenant = match_scope("u", "s1", false);
    assert!(
        s.latest_by_key(&other_tenant, "key1")
            .await
            .unwrap()
            .is_none()
    );
}

async fn candidates_are_windowed_and_newest_first(s: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for n in 0..5 {
        let r = rec("s1", n, 1000 + i64::from(n) * 100);
        ids.push(r.id.clone());
        s.insert(&r, &Quota::UNLIMITED).await.unwrap();
    }
    let scope = match_scope("t", "s1", false);
    let c = s.candidates(&scope, "send", "fp", 0, 10).await.unwrap();
    assert_eq!(
        c.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        ids.iter().rev().cloned().collect::<Vec<_>>()
    );
    assert_eq!(
        s.candidates(&scope, "send", "fp", 0, 2)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.candidates(&scope, "send", "fp", 1250, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        s.candidates(&scope, "send", "other", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.candidates(&scope, "other_tool", "fp", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn list_pages_newest_first_with_status_filter(s: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for n in 0..7 {
        let mut r = rec("s1", n, 1000);
        if n % 2 == 0 {
            r.status = CallStatus::Succeeded;
        }
        ids.push(r.id.clone());
        s.insert(&r, &Quota::UNLIMITED).await.unwrap();
    }
    s.insert(&rec("s2", 99, 1000), &Quota::UNLIMITED)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let q = ListQuery {
            tenant: "t".into(),
            session: "s1".into(),
            status: None,
            page_size: 3,
            page_token: token,
        };
        let p = s.list(&q).await.unwrap();
        assert!(p.records.len() <= 3);
        seen.extend(p.records.iter().map(|r| r.id.clone()));
        token = p.next;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, ids.iter().rev().cloned().collect::<Vec<_>>());
    let q = ListQuery {
        tenant: "t".into(),
        session: "s1".into(),
        status: Some(CallStatus::InProgress),
        page_size: 100,
        page_token: None,
    };
    let p = s.list(&q).await.unwrap();
    assert_eq!(p.records.len(), 3);
    assert!(p.records.iter().all(|r| r.status == CallStatus::InProgress));
    assert!(p.next.is_none());
}

async fn sweep_removes_expired_records_and_their_indexes(s: Arc<dyn Store>) {
    let old = rec("s1", 1, 0); // expires at 10_000
    let mut young = rec("s1", 2, 0);
    young.expires_at_ms = 50_000;
    young.embedding = Some(vec![0.5; 4]);
    s.insert(&old, &Quota::UNLIMITED).await.unwrap();
    s.insert(&young, &Quota::UNLIMITED).await.unwrap();
    let swept = s.sweep(20_000).await.unwrap();
    assert_eq!(swept, vec![(old.id.clone(), old.match_scope.clone())]);
    assert!(s.get(&old.id).await.unwrap().is_none());
    assert!(
        s.latest_by_exact(&old.match_scope, "hash1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.latest_by_key(&old.match_scope, "key1")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.candidates(&old.match_scope, "send", "fp", 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let v = s.vectors(20_000).await.unwrap();
    assert_eq!(v.len(), 1);
    assert_near(&v[0].vector, &[0.5; 4]);
    assert!(s.vectors(60_000).await.unwrap().is_empty());
    assert_eq!(s.sweep(20_000).await.unwrap().len(), 0);
}

/// Backends may store vectors compactly (int8): equal within a hundredth per coordinate.
fn assert_near(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    assert!(
        got.iter().zip(want).all(|(g, w)| (g - w).abs() < 0.01),
        "{got:?} vs {want:?}"
    );
}

async fn put_embedding_writes_only_the_embedding(s: Arc<dyn Store>) {
    let r = rec("s1", 1, 1000);
    s.insert(&r, &Quota::UNLIMITED).await.unwrap();
    // The background embedder read the record (in progress) before the caller completed it...
    let read = s.get(&r.id).await.unwrap().unwrap();
    assert_eq!(read.status, CallStatus::InProgress);
    let mut done = read.clone();
    done.status = CallStatus::Succeeded;
    done.result_json = Some("{\"sent\":true}".into());
    s.update(&done).await.unwrap();
    // ...and writes its embedding after the Complete: the Complete stays.
    assert!(s.put_embedding(&r.id, &[0.6, 0.8]).await.unwrap());
    let now = s.get(&r.id).await.unwrap().unwrap();
    assert_eq!(now.status, CallStatus::Succeeded);
    assert_eq!(now.result_json.as_deref(), Some("{\"sent\":true}"));
    let v = s.vectors(2000).await.unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].id, r.id);
    assert_near(&v[0].vector, &[0.6, 0.8]);
    // A later update that carries no embedding keeps the stored one.
    s.update(&done).await.unwrap();
    assert_eq!(s.vectors(2000).await.unwrap().len(), 1);
}

async fn put_embedding_of_a_swept_record_stores_nothing(s: Arc<dyn Store>) {
    let r = rec("s1", 1, 0);
    s.insert(&r, &Quota::UNLIMITED).await.unwrap();
    assert_eq!(s.sweep(r.expires_at_ms).await.unwrap().len(), 1);
    assert!(!s.put_embedding(&r.id, &[1.0, 0.0]).await.unwrap());
    assert!(!s.put_embedding("never-existed", &[1.0, 0.0]).await.unwrap());
    assert!(s.vectors(0).await.unwrap().is_empty());
    assert!(s.get(&r.id).await.unwrap().is_none());
}

/// A store with a vector log: the log follows stored embeddings and sweeps from a cursor, a
/// scope's vectors page by id from the log's head, and a cursor past the trimmed part is a gap.
async fn vector_log_follows_embeddings_and_sweeps(s: Arc<dyn Store>) {
    if !s.has_vector_log() {
        return;
    }
    let scope = match_scope("t", "s1", false);
    let first = s.scope_vectors(&scope, None, 10).await.unwrap();
    assert!(first.vectors.is_empty() && first.read == 0);
    let start = first.head.unwrap();
    let mut a = rec("s1", 1, 1000);
    a.embedding = Some(vec![0.6, 0.8]);
    s.insert(&a, &Quota::UNLIMITED).await.unwrap();
    let b = rec("s1", 2, 1000);
    s.insert(&b, &Quota::UNLIMITED).await.unwrap();
    assert!(s.put_embedding(&b.id, &[1.0, 0.0]).await.unwrap());
    // A Complete that carries the same embedding does not log it again.
    s.update(&a).await.unwrap();
    let VectorLog::Changes { changes, next } = s.vector_log(&scope, &start, 10).await.unwrap()
    else {
        panic!("no gap yet");
    };
    assert_eq!(
        changes,
        vec![
            VectorChange::Added {
                id: a.id.clone(),
                own: true
            },
            VectorChange::Added {
                id: b.id.clone(),
                own: true
            }
        ]
    );
    // Pages of one vector each, in id order (a is older, so its uuid is smaller).
    let p1 = s.scope_vectors(&scope, None, 1).await.unwrap();
    assert_eq!(p1.head.as_ref(), Some(&next));
    assert_eq!(p1.vectors.len(), 1);
    assert_eq!(p1.vectors[0].0, a.id);
    let p2 = s
        .scope_vectors(&scope, p1.last.as_deref(), 1)
        .await
        .unwrap();
    assert!(p2.head.is_none());
    assert_eq!(p2.vectors[0].0, b.id);
    assert_near(&p2.vectors[0].1, &[1.0, 0.0]);
    let got = s
        .vectors_of(&scope, &[b.id.clone(), "missing".into()])
        .await
        .unwrap();
    assert!(got[1].is_none());
    assert_near(got[0].as_ref().unwrap(), &[1.0, 0.0]);
    // A sweep logs the removals; nothing is left to page.
    assert_eq!(s.sweep(a.expires_at_ms).await.unwrap().len(), 2);
    let VectorLog::Changes { mut changes, .. } = s.vector_log(&scope, &next, 10).await.unwrap()
    else {
        panic!("no gap yet");
    };
    changes.sort_by_key(|c| format!("{c:?}"));
    let mut gone = vec![
        VectorChange::Removed(a.id.clone()),
        VectorChange::Removed(b.id),
    ];
    gone.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(changes, gone);
    assert_eq!(s.scope_vectors(&scope, None, 10).await.unwrap().read, 0);
    // Entries read in batches of one: the cursor moves one at a time.
    let VectorLog::Changes { changes, next: one } = s.vector_log(&scope, &start, 1).await.unwrap()
    else {
        panic!("no gap yet");
    };
    assert_eq!(
        changes,
        vec![VectorChange::Added {
            id: a.id,
            own: true
        }]
    );
    assert_ne!(one, start);
}

async fn sessions_and_stats_round_trip(s: Arc<dyn Store>) {
    assert!(s.get_session("t", "s1").await.unwrap().is_none());
    let o = SessionOverrides {
        ttl_secs: Some(60),
        ..Default::default()
    };
    s.put_session("t", "s1", &o).await.unwrap();
    assert_eq!(s.get_session("t", "s1").await.unwrap(), Some(o));
    let mut d = StatsSnapshot::default();
    d.apply(&StatsDelta {
        verdict: "DUPLICATE",
        stage: Some("exact"),
        replayed: true,
        duplicate_prevented: true,
        cost_avoided: 2.5,
        warnings: vec!["key_changes_per_attempt"],
    });
    s.add_stats("t", "s1", &d).await.unwrap();
    s.add_stats("t", "s2", &d).await.unwrap();
    s.add_stats("u", "s1", &d).await.unwrap();
    let one = s.stats("t", Some("s1")).await.unwrap();
    assert_eq!(one.checks, 1);
    assert_eq!(one.cost_avoided, 2.5);
    let all = s.stats("t", None).await.unwrap();
    assert_eq!(all.checks, 2);
    assert_eq!(all.by_stage.get("exact"), Some(&2));
    assert_eq!(all.warnings.get("key_changes_per_attempt"), Some(&2));
}

async fn a_reservation_fails_once_the_scope_changed(s: Arc<dyn Store>) {
    let a = rec("s1", 1, 1000);
    let b = rec("s1", 2, 1000);
    let Some(seen) = s.scope_version(&a.match_scope).await.unwrap() else {
        // A backend only this process writes: the engine's lock serialises; it just inserts.
        assert_eq!(
            s.insert_if_unchanged(&a, &Quota::UNLIMITED, 0)
                .await
                .unwrap(),
            Reserved::Inserted
        );
        assert!(s.get(&a.id).await.unwrap().is_some());
        return;
    };
    assert_eq!(
        s.insert_if_unchanged(&a, &Quota::UNLIMITED, seen)
            .await
            .unwrap(),
        Reserved::Inserted
    );
    // Another check read the same version before `a` was inserted: it must decide again.
    assert_eq!(
        s.insert_if_unchanged(&b, &Quota::UNLIMITED, seen)
            .await
            .unwrap(),
        Reserved::Conflict
    );
    assert!(s.get(&b.id).await.unwrap().is_none());
    assert!(
        s.latest_by_exact(&b.match_scope, "hash2")
            .await
            .unwrap()
            .is_none()
    );
    let page = s
        .list(&ListQuery {
            tenant: "t".into(),
            session: "s1".into(),
            status: None,
            page_size: 10,
            page_token: None,
        })
        .await
        .unwrap();
    assert_eq!(page.records.len(), 1);
    let now = s.scope_version(&a.match_scope).await.unwrap().unwrap();
    assert_ne!(now, seen);
    // Other scopes are untouched by it.
    let other = match_scope("t", "s2", false);
    let other_seen = s.scope_version(&other).await.unwrap().unwrap();
    let c = rec("s2", 3, 1000);
    assert_eq!(
        s.insert_if_unchanged(&c, &Quota::UNLIMITED, other_seen)
            .await
            .unwrap(),
        Reserved::Inserted
    );
    assert_eq!(
        s.insert_if_unchanged(&b, &Quota::UNLIMITED, now)
            .await
            .unwrap(),
        Reserved::Inserted
    );
    // A plain insert moves the version too.
    let before = s.scope_version(&a.match_scope).await.unwrap().unwrap();
    s.insert(&rec("s1", 4, 1000), &Quota::UNLIMITED)
        .await
        .unwrap();
    assert_ne!(
        s.scope_version(&a.match_scope).await.unwrap().unwrap(),
        before
    );
}

async fn the_resource_state_is_the_newest_marked_calls(s: Arc<dyn Store>) {
    use crate::record::{ResourceMark, ResourceState};
    let marked = |n: u32, tool: &str, generation: u64, created: Millis, expires: Millis| Record {
        tool: tool.into(),
        expires_at_ms: expires,
        resource: Some(ResourceMark {
            key: "res-1".into(),
            generation,
            since_ms: created,
        }),
        ..rec("s1", n, created)
    };
    let scope = match_scope("t", "s1", false);
    assert_eq!(s.resource_state(&scope, "res-1").await.unwrap(), None);
    // Outlives the next one: the state stays while any record on the resource lives.
    let enable = marked(1, "enable", 0, 1000, 90_000);
    s.insert(&enable, &Quota::UNLIMITED).await.unwrap();
    let disable = marked(2, "disable", 1, 2000, 20_000);
    s.insert_if_unchanged(
        &disable,
        &Quota::UNLIMITED,
        s.scope_version(&scope).await.unwrap().unwrap_or(0),
    )
    .await
    .unwrap();
    // An unmarked record leaves the state alone.
    s.insert(&rec("s1", 3, 3000), &Quota::UNLIMITED)
        .await
        .unwrap();
    let want = ResourceState {
        tool: "disable".into(),
        generation: 1,
        since_ms: 2000,
    };
    assert_eq!(
        s.resource_state(&scope, "res-1").await.unwrap(),
        Some(want.clone())
    );
    assert_eq!(s.resource_state(&scope, "res-2").await.unwrap(), None);
    let other = match_scope("t", "s2", false);
    assert_eq!(s.resource_state(&other, "res-1").await.unwrap(), None);
    s.sweep(30_000).await.unwrap();
    assert!(s.get(&disable.id).await.unwrap().is_none());
    assert_eq!(s.resource_state(&scope, "res-1").await.unwrap(), Some(want));
}

/// A tenant's counts follow inserts and sweeps; an insert past a quota is refused with the
/// limit and the count, and writes nothing.
async fn quotas_count_records_and_sessions_and_refuse_past_them(s: Arc<dyn Store>) {
    let usage = |records, sessions| Usage { records, sessions };
    let q = Quota {
        max_records: Some(3),
        max_sessions: Some(2),
    };
    assert_eq!(s.usage("t").await.unwrap(), usage(0, 0));
    let a = rec("s1", 1, 1000);
    let b = Record {
        expires_at_ms: 50_000,
        ..rec("s1", 2, 1000)
    };
    s.insert(&a, &q).await.unwrap();
    s.insert(&b, &q).await.unwrap();
    assert_eq!(s.usage("t").await.unwrap(), usage(2, 1));
    assert_eq!(s.usage("other").await.unwrap(), usage(0, 0));
    let c = rec("s2", 3, 1000);
    s.insert(&c, &q).await.unwrap();
    assert_eq!(s.usage("t").await.unwrap(), usage(3, 2));
    // A fourth record, in a session the tenant has: the records quota refuses it.
    let d = rec("s1", 4, 1000);
    match s.insert(&d, &q).await {
        Err(StoreError::Quota(e)) => {
            assert_eq!((e.limit, e.max, e.count), (QuotaLimit::Records, 3, 3));
            assert!(e.to_string().contains("max_records = 3"), "{e}");
        }
        other => panic!("a fourth record was not refused: {other:?}"),
    }
    assert!(
        s.get(&d.id).await.unwrap().is_none(),
        "a refused record was written"
    );
    assert!(
        s.latest_by_exact(&d.match_scope, "hash4")
            .await
            .unwrap()
            .is_none()
    );
    // With room for records, a third session is refused by the sessions quota.
    let roomy = Quota {
        max_records: Some(10),
        ..q
    };
    let e = rec("s3", 5, 1000);
    match s.insert(&e, &roomy).await {
        Err(StoreError::Quota(x)) => {
            assert_eq!((x.limit, x.max, x.count), (QuotaLimit::Sessions, 2, 2));
            assert!(x.to_string().contains("\"s3\""), "{x}");
        }
        other => panic!("a third session was not refused: {other:?}"),
    }
    assert!(s.get(&e.id).await.unwrap().is_none());
    let page = s
        .list(&ListQuery {
            tenant: "t".into(),
            session: "s3".into(),
            status: None,
            page_size: 10,
            page_token: None,
        })
        .await
        .unwrap();
    assert!(
        page.records.is_empty(),
        "a refused session has an intent log"
    );
    assert_eq!(s.usage("t").await.unwrap(), usage(3, 2));
    // A quota binds per tenant: another tenant's counts are its own.
    let other = Record {
        tenant: "u".into(),
        match_scope: match_scope("u", "s1", false),
        ..rec("s1", 6, 1000)
    };
    s.insert(&other, &q).await.unwrap();
    assert_eq!(s.usage("u").await.unwrap(), usage(1, 1));
    // The sweep gives back each swept record's share; s2 held one record and closes.
    s.sweep(20_000).await.unwrap();
    assert_eq!(s.usage("t").await.unwrap(), usage(1, 1));
    assert_eq!(s.usage("u").await.unwrap(), usage(0, 0));
    s.insert(&e, &q).await.unwrap();
    assert_eq!(s.usage("t").await.unwrap(), usage(2, 2));
    s.sweep(60_000).await.unwrap();
    assert_eq!(s.usage("t").await.unwrap(), usage(0, 0));
    // A reservation that loses its race gives its share back.
    if let Some(seen) = s.scope_version(&a.match_scope).await.unwrap() {
        let f = rec("s1", 7, 70_000);
        s.insert(&f, &q).await.unwrap();
        let g = rec("s1", 8, 70_000);
        assert_eq!(
            s.insert_if_unchanged(&g, &q, seen).await.unwrap(),
            Reserved::Conflict
        );
        assert_eq!(s.usage("t").await.unwrap(), usage(1, 1));
    }
}

async fn run_all(make: impl Fn() -> Arc<dyn Store>) {
    quotas_count_records_and_sessions_and_refuse_past_them(make()).await;
    the_resource_state_is_the_newest_marked_calls(make()).await;
    a_reservation_fails_once_the_scope_changed(make()).await;
    insert_get_update(make()).await;
    lookups_by_key_and_exact_return_the_newest(make()).await;
    candidates_are_windowed_and_newest_first(make()).await;
    list_pages_newest_first_with_status_filter(make()).await;
    sweep_removes_expired_records_and_their_indexes(make()).await;
    put_embedding_writes_only_the_embedding(make()).await;
    put_embedding_of_a_swept_record_stores_nothing(make()).await;
    sessions_and_stats_round_trip(make()).await;
    vector_log_follows_embeddings_and_sweeps(make()).await;
}

#[tokio::test]
async fn memory_store_conforms() {
    run_all(|| Arc::new(MemoryStore::new())).await;
}

#[path = "../../tests/redis_server/mod.rs"]
mod redis_server;

/// Options for a test server: these tests check what the store does, not how fast, and a
/// busy test machine's disk can stall the `appendfsync always` server past the 250 ms
/// default (the deadline behaviour is tested in `tests/redis_faults.rs`).
fn test_options(url: String) -> RedisOptions {
    RedisOptions {
        timeout: std::time::Duration::from_secs(5),
        ..RedisOptions::new(url)
    }
}

#[tokio::test]
async fn redis_store_conforms() {
    let server = redis_server::RedisServer::start();
    let base = RedisStore::connect(&test_options(server.url()))
        .await
        .unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    run_all(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(base.with_prefix(&format!("conformance{i}")))
    })
    .await;
}

#[tokio::test]
async fn redis_sweep_takes_every_due_record_past_one_batch() {
    let server = redis_server::RedisServer::start();
    let s = RedisStore::connect(&test_options(server.url()))
        .await
        .unwrap();
    let records: Vec<Record> = (0..1500).map(|n| rec("s1", n, 0)).collect();
    for chunk in records.chunks(50) {
        futures::future::join_all(chunk.iter().map(|r| s.insert(r, &Quota::UNLIMITED)))
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .unwrap();
    }
    assert_eq!(s.sweep(20_000).await.unwrap().len(), 1500);
    assert!(s.sweep(20_000).await.unwrap().is_empty());
    let scope = match_scope("t", "s1", false);
    assert!(
        s.candidates(&scope, "send", "fp", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn redis_vector_log_trimmed_past_a_cursor_is_a_gap() {
    let server = redis_server::RedisServer::start();
    let s = RedisStore::connect(&test_options(server.url()))
        .await
        .unwrap();
    let scope = match_scope("t", "s1", false);
    let start = s
        .scope_vectors(&scope, None, 1)
        .await
        .unwrap()
        .head
        .unwrap();
    let mut records = Vec::new();
    for n in 0..3 {
        let mut r = rec("s1", n, 1000);
        r.embedding = Some(vec![1.0, n as f32]);
        s.insert(&r, &Quota::UNLIMITED).await.unwrap();
        records.push(r);
    }
    let VectorLog::Changes {
        next: after_one, ..
    } = s.vector_log(&scope, &start, 1).await.unwrap()
    else {
        panic!("no gap yet");
    };
    let key = format!("idem:{{s{}}}:vl", super::redis::tag_of(&scope));
    // Trimming up to the cursor loses nothing it has not read.
    assert!(
        server
            .command(&format!("XTRIM {key} MAXLEN 2"))
            .unwrap()
            .starts_with(":1")
    );
    assert!(matches!(
        s.vector_log(&scope, &after_one, 10).await.unwrap(),
        VectorLog::Changes { ref changes, .. } if changes.len() == 2
    ));
    // Past it: a gap, also for the cursor from before the first entry.
    assert!(
        server
            .command(&format!("XTRIM {key} MAXLEN 1"))
            .unwrap()
            .starts_with(":1")
    );
    assert_eq!(
        s.vector_log(&scope, &after_one, 10).await.unwrap(),
        VectorLog::Gap
    );
    assert_eq!(
        s.vector_log(&scope, &start, 10).await.unwrap(),
        VectorLog::Gap
    );
    // A log that is gone (deleted) after entries were read is a gap too.
    server.command(&format!("DEL {key}")).unwrap();
    assert_eq!(
        s.vector_log(&scope, &after_one, 10).await.unwrap(),
        VectorLog::Gap
    );
}

#[tokio::test]
async fn redis_cluster_store_conforms() {
    let cluster = redis_server::RedisCluster::start();
    let base = RedisStore::connect(&test_options(cluster.url()))
        .await
        .unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    run_all(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(base.with_prefix(&format!("conformance{i}")))
    })
    .await;
}

#[tokio::test]
async fn pending_inserts_over_a_store_conform() {
    run_all(|| Arc::new(super::PendingInserts::new(Arc::new(MemoryStore::new())))).await;
}

#[tokio::test]
async fn embedded_store_conforms() {
    let dirs = std::sync::Mutex::new(Vec::new());
    run_all(|| {
        let d = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(d.path()).unwrap();
        dirs.lock().unwrap().push(d);
        Arc::new(s)
    })
    .await;
}

#[tokio::test]
async fn embedded_store_survives_reopen() {
    let d = tempfile::tempdir().unwrap();
    let r = rec("s1", 1, 1000);
    {
        let s = EmbeddedStore::open(d.path()).unwrap();
        s.insert(&r, &Quota::UNLIMITED).await.unwrap();
    }
    let s = EmbeddedStore::open(d.path()).unwrap();
    assert_eq!(s.get(&r.id).await.unwrap(), Some(r));
}

#[tokio::test]
async fn embedded_store_counts_survive_reopen_and_a_format_3_store_is_counted() {
    use redb::ReadableTable;
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (rec("s1", 1, 1000), rec("s2", 2, 1000));
    let usage = Usage {
        records: 2,
        sessions: 2,
    };
    {
        let s = EmbeddedStore::open(d.path()).unwrap();
        s.insert(&a, &Quota::UNLIMITED).await.unwrap();
        s.insert(&b, &Quota::UNLIMITED).await.unwrap();
    }
    let q = Quota {
        max_records: Some(2),
        max_sessions: None,
    };
    {
        let s = EmbeddedStore::open(d.path()).unwrap();
        assert_eq!(s.usage("t").await.unwrap(), usage);
        assert!(matches!(
            s.insert(&rec("s1", 3, 1000), &q).await,
            Err(StoreError::Quota(_))
        ));
    }
    // A store of format 3 (no counts kept): opened, it is counted from its records.
    let meta = redb::TableDefinition::<&str, u64>::new("meta");
    {
        let db = redb::Database::create(d.path().join("idem.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(meta).unwrap().insert("format", 3).unwrap();
        tx.delete_table(redb::TableDefinition::<&str, (u64, u64)>::new(
            "tenant_usage",
        ))
        .unwrap();
        tx.delete_table(redb::TableDefinition::<&str, u64>::new("session_usage"))
            .unwrap();
        tx.commit().unwrap();
    }
    let s = EmbeddedStore::open(d.path()).unwrap();
    assert_eq!(s.usage("t").await.unwrap(), usage);
    s.sweep(20_000).await.unwrap();
    assert_eq!(s.usage("t").await.unwrap(), Usage::default());
    drop(s);
    let db = redb::Database::create(d.path().join("idem.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    let format = tx
        .open_table(meta)
        .unwrap()
        .get("format")
        .unwrap()
        .unwrap()
        .value();
    assert_eq!(format, 4);
}

#[tokio::test]
async fn redis_counts_survive_a_new_connection() {
    let server = redis_server::RedisServer::start();
    let (a, b) = (rec("s1", 1, 1000), rec("s2", 2, 1000));
    {
        let s = RedisStore::connect(&test_options(server.url()))
            .await
            .unwrap();
        s.insert(&a, &Quota::UNLIMITED).await.unwrap();
        s.insert(&b, &Quota::UNLIMITED).await.unwrap();
    }
    let s = RedisStore::connect(&test_options(server.url()))
        .await
        .unwrap();
    assert_eq!(
        s.usage("t").await.unwrap(),
        Usage {
            records: 2,
            sessions: 2
        }
    );
    let q = Quota {
        max_records: None,
        max_sessions: Some(2),
    };
    assert!(matches!(
        s.insert(&rec("s3", 3, 1000), &q).await,
        Err(StoreError::Quota(_))
    ));
}

#[tokio::test]
async fn embedded_store_converts_a_format_1_store_when_opened() {
    let d = tempfile::tempdir().unwrap();
    let r = rec("s1", 1, 1000);
    {
        // Format 1, as the older idem wrote it: JSON records, f32 embeddings beside them.
        let db = redb::Database::create(d.path().join("idem.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let json = serde_json::to_string(&r).unwrap();
            tx.open_table(redb::TableDefinition::<&str, &str>::new("records"))
                .unwrap()
                .insert(r.id.as_str(), json.as_str())
                .unwrap();
            let v: Vec<u8> = [0.6f32, 0.8].iter().flat_map(|f| f.to_le_bytes()).collect();
            tx.open_table(redb::TableDefinition::<&str, &[u8]>::new("embeddings"))
                .unwrap()
                .insert(r.id.as_str(), v.as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let s = EmbeddedStore::open(d.path()).unwrap();
    assert_eq!(s.get(&r.id).await.unwrap(), Some(r.clone()));
    let v = s.vectors(2000).await.unwrap();
    assert_eq!(v.len(), 1);
    assert_near(&v[0].vector, &[0.6, 0.8]);
    drop(s);
    // Converted once: it opens again as the current format.
    let s = EmbeddedStore::open(d.path()).unwrap();
    assert_eq!(s.get(&r.id).await.unwrap(), Some(r));
    assert_eq!(s.vectors(2000).await.unwrap().len(), 1);
    drop(s);
    // An older idem reading it as format 1 fails on the table's type: it never sees it empty.
    let db = redb::Database::create(d.path().join("idem.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    assert!(
        tx.open_table(redb::TableDefinition::<&str, &str>::new("records"))
            .is_err()
    );
}

#[tokio::test]
async fn embedded_store_refuses_a_newer_format_and_names_the_fix() {
    let d = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open(d.path()).unwrap());
    {
        let db = redb::Database::create(d.path().join("idem.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
            .unwrap()
            .insert("format", 5)
            .unwrap();
        tx.commit().unwrap();
    }
    let Err(e) = EmbeddedStore::open(d.path()) else {
        panic!("a format-5 store opened");
    };
    let msg = e.to_string();
    assert!(
        msg.contains("format 5") && msg.contains("empty --data-dir"),
        "{msg}"
    );
}

#[tokio::test]
async fn embedded_store_opens_a_format_2_store_and_marks_it_format_4() {
    use redb::ReadableTable;
    let d = tempfile::tempdir().unwrap();
    let r = rec("s1", 1, 1000);
    {
        let s = EmbeddedStore::open(d.path()).unwrap();
        s.insert(&r, &Quota::UNLIMITED).await.unwrap();
    }
    let meta = redb::TableDefinition::<&str, u64>::new("meta");
    {
        let db = redb::Database::create(d.path().join("idem.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(meta).unwrap().insert("format", 2).unwrap();
        tx.commit().unwrap();
    }
    {
        let s = EmbeddedStore::open(d.path()).unwrap();
        assert_eq!(s.get(&r.id).await.unwrap().as_ref(), Some(&r));
    }
    let db = redb::Database::create(d.path().join("idem.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    let format = tx
        .open_table(meta)
        .unwrap()
        .get("format")
        .unwrap()
        .unwrap()
        .value();
    assert_eq!(format, 4);
}

#[tokio::test]
async fn embedded_store_reports_a_damaged_record_as_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let r = rec("s1", 1, 1000);
    {
        let s = EmbeddedStore::open(d.path()).unwrap();
        s.insert(&r, &Quota::UNLIMITED).await.unwrap();
    }
    {
        let db = redb::Database::create(d.path().join("idem.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<&str, &[u8]>::new("records"))
            .unwrap()
            .insert(r.id.as_str(), b"{\"id\":1}".as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let s = EmbeddedStore::open(d.path()).unwrap();
    assert!(matches!(
        s.get(&r.id).await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        s.vectors(0).await,
        Err(StoreError::Corrupt { .. })
    ));
}
