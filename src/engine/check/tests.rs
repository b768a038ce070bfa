//! The check path: lock-free settling, insert wake-ups, commits outside the scope lock.

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::*;
use crate::config::{ServerConfig, SessionOverrides};
use crate::engine::{CompleteRequest, Outcome};
use crate::store::{
    CheckLog, Feedback, ListQuery, LogCursor, MemoryStore, Page, Quota, ScopeVectors,
    StatsSnapshot, Store, StoreError, StoredVector, Usage, VectorLog,
};

fn request(args: &str) -> CheckRequest {
    CheckRequest {
        tenant: "t".into(),
        session: "s".into(),
        tool: "transfer".into(),
        arguments_json: args.into(),
        idempotency_key: None,
        deadline_ms: None,
        retry: RetryIntent::Transient,
        retry_of: None,
        transport_deadline_ms: None,
    }
}

#[tokio::test]
async fn an_exact_repeat_is_answered_while_another_check_holds_the_scope_lock() {
    let engine = Engine::new(Arc::new(MemoryStore::new()), ServerConfig::default());
    let args = r#"{"to": "bob", "amount": 100}"#;
    let first = engine.check(request(args)).await.unwrap();
    assert_eq!(first.verdict, Verdict::New);
    let scope = match_scope("t", "s", false);
    let _held = engine.lock_for(&scope).lock().await;
    let repeat = tokio::time::timeout(Duration::from_secs(5), engine.check(request(args)))
        .await
        .expect("answered without the lock")
        .unwrap();
    assert_eq!(repeat.verdict, Verdict::InFlight);
    assert_eq!(repeat.call_id, first.call_id);
}

/// A memory-store engine.
fn memory_engine() -> Arc<Engine> {
    Arc::new(Engine::new(
        Arc::new(MemoryStore::new()),
        ServerConfig::default(),
    ))
}

/// Starts a check of `args` with a deadline of `deadline_ms`.
fn spawn_with_deadline(
    engine: &Arc<Engine>,
    args: &str,
    deadline_ms: u32,
) -> tokio::task::JoinHandle<Result<CheckOutcome, IdemError>> {
    let engine = engine.clone();
    let req = CheckRequest {
        deadline_ms: Some(deadline_ms),
        ..request(args)
    };
    tokio::spawn(async move { engine.check(req).await })
}

/// Records `p` as the check holding the lock would (the lock stays held), then takes the
/// answer of `waiting`, which must come within 5 s; (original, answer).
async fn record_then_answer(
    engine: &Engine,
    p: &Prepared,
    waiting: tokio::task::JoinHandle<Result<CheckOutcome, IdemError>>,
) -> (CheckOutcome, CheckOutcome) {
    let ctx = engine.context(p, engine.clock.now_ms());
    let original = engine
        .reserve(p, &ctx, None, NewCall::fresh(), "test")
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered from the new record while the lock is still held")
        .unwrap()
        .unwrap();
    (original, answer)
}

#[tokio::test]
async fn a_check_waiting_for_the_lock_is_settled_by_the_insert_of_its_original() {
    let engine = memory_engine();
    let args = r#"{"to": "bob", "amount": 100}"#;
    let scope = match_scope("t", "s", false);
    let held = engine.lock_for(&scope).lock().await;
    // Nothing recorded yet: this check queues for the lock (with a deadline long enough
    // that only the insert can end its wait).
    let waiting = spawn_with_deadline(&engine, args, 30_000);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished(), "nothing could settle it yet");
    // The holder records the original (as the check holding the lock would) and keeps
    // the lock: the waiter is answered from the new record, not after the lock.
    let p = engine.prepare(request(args)).await.unwrap().ok().unwrap();
    let (original, answer) = record_then_answer(&engine, &p, waiting).await;
    drop(held);
    assert_eq!(answer.verdict, Verdict::InFlight);
    assert_eq!(answer.call_id, original.call_id);
}

#[tokio::test]
async fn a_check_out_of_time_waits_for_the_record_of_an_identical_check_holding_the_lock() {
    let engine = memory_engine();
    let args = r#"{"to": "bob", "amount": 100}"#;
    let scope = match_scope("t", "s", false);
    // An identical check holds the scope's lock and has recorded nothing yet (a slow leader).
    let p = engine.prepare(request(args)).await.unwrap().ok().unwrap();
    let leader = engine.identical.enter(&scope, &p.call.exact_hash);
    let held = engine.lock_for(&scope).lock().await;
    let waiting = spawn_with_deadline(&engine, args, 10);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !waiting.is_finished(),
        "past its deadline it waits for the identical check instead of failing"
    );
    let (original, answer) = record_then_answer(&engine, &p, waiting).await;
    drop((held, leader));
    assert_eq!(answer.verdict, Verdict::InFlight);
    assert_eq!(answer.call_id, original.call_id);
}

#[tokio::test]
async fn a_check_out_of_time_behind_a_different_call_fails_at_its_deadline() {
    let engine = memory_engine();
    let scope = match_scope("t", "s", false);
    let other = engine
        .prepare(request(r#"{"to": "carol", "amount": 7}"#))
        .await
        .unwrap()
        .ok()
        .unwrap();
    let _other = engine.identical.enter(&scope, &other.call.exact_hash);
    let _held = engine.lock_for(&scope).lock().await;
    let req = CheckRequest {
        deadline_ms: Some(10),
        ..request(r#"{"to": "bob", "amount": 100}"#)
    };
    let answer = tokio::time::timeout(Duration::from_secs(1), engine.check(req))
        .await
        .expect("no identical check to wait for: it gives up at its deadline");
    assert!(
        matches!(answer, Err(IdemError::DeadlineExceeded(_))),
        "{answer:?}"
    );
}

/// A memory store whose inserts of calls marked `"gate"` wait for a permit (and fail when the
/// gate is closed): a slow or failing commit, on demand.
struct GatedStore {
    inner: MemoryStore,
    gate: Semaphore,
}

#[async_trait]
impl Store for GatedStore {
    async fn insert(&self, r: &Record, quota: &Quota) -> Result<(), StoreError> {
        if r.arguments_json.contains("gate") {
            let permit = self.gate.acquire().await;
            permit
                .map_err(|_| StoreError::Backend("disk on fire".into()))?
                .forget();
        }
        self.inner.insert(r, quota).await
    }
    async fn usage(&self, tenant: &str) -> Result<Usage, StoreError> {
        self.inner.usage(tenant).await
    }
    async fn update(&self, r: &Record) -> Result<(), StoreError> {
        self.inner.update(r).await
    }
    async fn put_embedding(&self, id: &str, v: &[f32]) -> Result<bool, StoreError> {
        self.inner.put_embedding(id, v).await
    }
    async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        self.inner.get(id).await
    }
    async fn latest_by_key(&self, scope: &str, key: &str) -> Result<Option<Record>, StoreError> {
        self.inner.latest_by_key(scope, key).await
    }
    async fn latest_by_exact(&self, scope: &str, h: &str) -> Result<Option<Record>, StoreError> {
        self.inner.latest_by_exact(scope, h).await
    }
    async fn resource_state(
        &self,
        scope: &str,
        res: &str,
    ) -> Result<Option<crate::record::ResourceState>, StoreError> {
        self.inner.resource_state(scope, res).await
    }
    async fn candidates(
        &self,
        scope: &str,
        tool: &str,
        fp: &str,
        since: Millis,
        limit: usize,
    ) -> Result<Vec<Candidate>, StoreError> {
        self.inner.candidates(scope, tool, fp, since, limit).await
    }
    async fn list(&self, q: &ListQuery) -> Result<Page, StoreError> {
        self.inner.list(q).await
    }
    async fn sweep(&self, now: Millis) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.sweep(now).await
    }
    async fn vectors(&self, now: Millis) -> Result<Vec<StoredVector>, StoreError> {
        self.inner.vectors(now).await
    }

    fn has_vector_log(&self) -> bool {
        self.inner.has_vector_log()
    }

    async fn vector_log(
        &self,
        scope: &str,
        after: &LogCursor,
        limit: usize,
    ) -> Result<VectorLog, StoreError> {
        self.inner.vector_log(scope, after, limit).await
    }

    async fn scope_vectors(
        &self,
        scope: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScopeVectors, StoreError> {
        self.inner.scope_vectors(scope, after, limit).await
    }

    async fn vectors_of(
        &self,
        scope: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Vec<f32>>>, StoreError> {
        self.inner.vectors_of(scope, ids).await
    }
    async fn put_session(&self, t: &str, s: &str, o: &SessionOverrides) -> Result<(), StoreError> {
        self.inner.put_session(t, s, o).await
    }
    async fn get_session(&self, t: &str, s: &str) -> Result<Option<SessionOverrides>, StoreError> {
        self.inner.get_session(t, s).await
    }
    async fn add_stats(&self, t: &str, s: &str, d: &StatsSnapshot) -> Result<(), StoreError> {
        self.inner.add_stats(t, s, d).await
    }
    async fn stats(&self, t: &str, s: Option<&str>) -> Result<StatsSnapshot, StoreError> {
        self.inner.stats(t, s).await
    }
    async fn put_checks(&self, logs: &[CheckLog]) -> Result<(), StoreError> {
        self.inner.put_checks(logs).await
    }
    async fn get_check(&self, id: &str) -> Result<Option<CheckLog>, StoreError> {
        self.inner.get_check(id).await
    }
    async fn put_feedback(&self, f: &Feedback) -> Result<(), StoreError> {
        self.inner.put_feedback(f).await
    }
    async fn list_feedback(&self, t: &str, since: Millis) -> Result<Vec<Feedback>, StoreError> {
        self.inner.list_feedback(t, since).await
    }
}

fn gated() -> (Arc<Engine>, Arc<GatedStore>) {
    let store = Arc::new(GatedStore {
        inner: MemoryStore::new(),
        gate: Semaphore::new(0),
    });
    let engine = Engine::new(store.clone(), ServerConfig::default());
    (Arc::new(engine), store)
}

fn spawn_check(
    engine: &Arc<Engine>,
    args: &str,
) -> tokio::task::JoinHandle<Result<CheckOutcome, IdemError>> {
    let (engine, req) = (engine.clone(), request(args));
    tokio::spawn(async move { engine.check(req).await })
}

#[tokio::test]
async fn a_new_commits_without_holding_its_scope_lock_and_its_repeats_wait_for_the_commit() {
    let (engine, store) = gated();
    let slow = r#"{"to": "bob", "amount": 100, "note": "gate"}"#;
    let first = spawn_check(&engine, slow);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!first.is_finished(), "its commit is held at the gate");
    // Another call of the same scope is decided and committed while the first commits.
    let other = tokio::time::timeout(
        Duration::from_secs(5),
        engine.check(request(r#"{"to": "carol", "amount": 5}"#)),
    )
    .await
    .expect("not queued behind the first one's commit")
    .unwrap();
    assert_eq!(other.verdict, Verdict::New);
    // A repeat of the first sees it, but is not answered before it is durable.
    let repeat = spawn_check(&engine, slow);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(
        !repeat.is_finished(),
        "answered from a record not yet durable"
    );
    store.gate.add_permits(1);
    let first = first.await.unwrap().unwrap();
    let repeat = repeat.await.unwrap().unwrap();
    assert_eq!(first.verdict, Verdict::New);
    assert_eq!(repeat.verdict, Verdict::InFlight);
    assert_eq!(repeat.call_id, first.call_id);
}

#[tokio::test]
async fn when_a_commit_fails_its_waiting_repeat_is_recorded_instead() {
    let (engine, store) = gated();
    let slow = r#"{"to": "bob", "amount": 100, "note": "gate"}"#;
    let first = spawn_check(&engine, slow);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let repeat = spawn_check(&engine, slow);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!repeat.is_finished());
    // The first commit fails; the repeat must not be answered from a record that never was.
    store.gate.close();
    assert!(first.await.unwrap().is_err());
    let repeat = repeat.await.unwrap();
    assert!(
        repeat.is_err(),
        "the gate is closed for it too: it tried to record the call itself, got {repeat:?}"
    );
    assert_eq!(engine.pending.in_flight(), 0);
    let p = engine.prepare(request(slow)).await.unwrap().ok().unwrap();
    let stored = store
        .inner
        .latest_by_exact(&p.scope, &p.call.exact_hash)
        .await;
    assert!(stored.unwrap().is_none(), "nothing was recorded");
}

/// An engine whose session pairs `disable_2fa` with `enable_2fa` on `user_id`.
async fn paired() -> Engine {
    let engine = Engine::new(Arc::new(MemoryStore::new()), ServerConfig::default());
    let mut tools = std::collections::BTreeMap::new();
    tools.insert(
        "disable_2fa".to_string(),
        crate::config::ToolPolicy {
            resource_fields: vec!["user_id".into()],
            inverse_of: Some("enable_2fa".into()),
            ..Default::default()
        },
    );
    engine
        .configure_session(
            "t",
            "s",
            SessionOverrides {
                tools,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    engine
}

/// Checks `tool` on `user` and, when NEW, completes it as succeeded.
async fn act(engine: &Engine, tool: &str, user: &str, note: &str) -> CheckOutcome {
    let out = engine
        .check(CheckRequest {
            tool: tool.into(),
            ..request(&format!(r#"{{"user_id": "{user}", "note": "{note}"}}"#))
        })
        .await
        .unwrap();
    if out.verdict == Verdict::New {
        engine
            .complete(CompleteRequest {
                call_id: out.call_id.clone(),
                outcome: Outcome::Succeeded {
                    result_json: "{}".into(),
                },
                cost: None,
                attempt: None,
                compensation_json: None,
            })
            .await
            .unwrap();
    }
    out
}

#[tokio::test]
async fn a_call_of_the_inverse_ends_the_window_of_earlier_calls_on_the_same_resource() {
    let engine = paired().await;
    let first = act(&engine, "enable_2fa", "u1", "a").await;
    assert_eq!(first.verdict, Verdict::New);
    // Same resource, same tool: still a repeat.
    let again = act(&engine, "enable_2fa", "u1", "a").await;
    assert_eq!(
        (again.verdict, again.call_id.as_str()),
        (Verdict::Duplicate, first.call_id.as_str())
    );
    assert_eq!(
        act(&engine, "disable_2fa", "u1", "a").await.verdict,
        Verdict::New
    );
    let after = act(&engine, "enable_2fa", "u1", "a").await;
    assert_eq!(after.verdict, Verdict::New, "{}", after.reason);
    assert!(after.reason.contains("disable_2fa"), "{}", after.reason);
    assert_ne!(after.action_key, first.action_key);
    // The new window holds the new call; the next repeat replays it.
    let repeat = act(&engine, "enable_2fa", "u1", "a").await;
    assert_eq!(
        (repeat.verdict, repeat.call_id.as_str()),
        (Verdict::Duplicate, after.call_id.as_str())
    );
    // And the inverse's own window was ended by that enable.
    assert_eq!(
        act(&engine, "disable_2fa", "u1", "a").await.verdict,
        Verdict::New
    );
}

#[tokio::test]
async fn another_resource_and_unpaired_tools_keep_their_windows() {
    let engine = paired().await;
    let u1 = act(&engine, "enable_2fa", "u1", "a").await;
    let u2 = act(&engine, "enable_2fa", "u2", "a").await;
    assert_eq!((u1.verdict, u2.verdict), (Verdict::New, Verdict::New));
    assert_eq!(
        act(&engine, "disable_2fa", "u2", "a").await.verdict,
        Verdict::New
    );
    let again = act(&engine, "enable_2fa", "u1", "a").await;
    assert_eq!(
        (again.verdict, again.call_id.as_str()),
        (Verdict::Duplicate, u1.call_id.as_str())
    );
    // A tool outside the pair is not followed.
    let other = act(&engine, "transfer", "u2", "a").await;
    assert_eq!(other.verdict, Verdict::New);
    assert_eq!(
        act(&engine, "transfer", "u2", "a").await.verdict,
        Verdict::Duplicate
    );
}

#[tokio::test]
async fn a_closed_window_also_ends_a_key_match() {
    let engine = paired().await;
    let keyed = |key: &str, note: &str| CheckRequest {
        tool: "enable_2fa".into(),
        idempotency_key: Some(key.into()),
        ..request(&format!(r#"{{"user_id": "u1", "note": "{note}"}}"#))
    };
    let first = engine.check(keyed("k1", "turn on")).await.unwrap();
    assert_eq!(first.verdict, Verdict::New);
    assert_eq!(
        act(&engine, "disable_2fa", "u1", "x").await.verdict,
        Verdict::New
    );
    // The same key after the inverse: a new action, not the old one in flight.
    let reused = engine.check(keyed("k1", "turn on")).await.unwrap();
    assert_eq!(reused.verdict, Verdict::New, "{}", reused.reason);
    assert_ne!(reused.call_id, first.call_id);
}

/// A check whose read-ahead fuzzy match is a NEW still committing, and whose commit then
/// fails, decides again (and embeds) instead of answering NEW beside its semantic original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fuzzy_match_whose_commit_fails_does_not_hide_the_semantic_original() {
    let store = Arc::new(GatedStore {
        inner: MemoryStore::new(),
        gate: Semaphore::new(0),
    });
    let mut config = ServerConfig::default();
    config.semantic.models_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models").into();
    config.semantic.embedder = crate::config::EmbedderKind::Local;
    let sim = super::super::Similarity::from_config(&config).expect("model files (make models)");
    let engine = Arc::new(Engine::with_parts(
        store.clone(),
        config,
        Arc::new(crate::clock::SystemClock),
        sim,
    ));
    let email = |body: &str, extra: &str| CheckRequest {
        tool: "send_email".into(),
        deadline_ms: Some(30_000),
        ..request(&format!(
            r#"{{"to": "bob@example.com", "body": "{body}"{extra}}}"#
        ))
    };
    let original = engine
        .check(email(
            "Nightly backup job failed on the billing database",
            "",
        ))
        .await
        .unwrap();
    assert_eq!(original.verdict, Verdict::New);
    // A call worded as the check below (fuzzy-verbatim) is registered as a NEW whose commit
    // waits at the gate.
    let p = engine
        .prepare(email(
            "The billing database nightly backup job has failed!",
            r#", "request_id": "gate""#,
        ))
        .await
        .unwrap()
        .ok()
        .unwrap();
    let committing = tokio::spawn({
        let engine = engine.clone();
        async move {
            let ctx = engine.context(&p, engine.clock.now_ms());
            engine
                .reserve(&p, &ctx, None, NewCall::fresh(), "test")
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let check = tokio::spawn({
        let engine = engine.clone();
        let req = email("The billing database nightly backup job has failed", "");
        async move { engine.check(req).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The commit fails: the fuzzy match the check read ahead is gone.
    store.gate.close();
    assert!(committing.await.unwrap().is_err());
    let answer = tokio::time::timeout(Duration::from_secs(20), check)
        .await
        .expect("answered")
        .unwrap()
        .unwrap();
    assert_eq!(answer.verdict, Verdict::InFlight, "{}", answer.reason);
    assert_eq!(answer.call_id, original.call_id);
}
