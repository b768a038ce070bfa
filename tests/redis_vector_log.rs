//! Two engines on one real Redis keep their vector indexes current from the per-scope vector
//! log: a call instance A records with free text is found by instance B's check of a
//! rewording through B's index (B neither reloads every vector nor embeds A's call again),
//! a log trimmed past B's cursor makes B rebuild that scope, and a vector A stores again for
//! a call B already indexed replaces the old one in B's index (and a sweep removes it).

mod common;
mod redis_server;

use std::sync::Arc;

use common::{semantic_config, semantic_engine};
use idem::clock::ManualClock;
use idem::engine::{CheckOutcome, CheckRequest, Engine, FeedCounts, Verdict};
use idem::funnel::StageKind;
use idem::store::{RedisOptions, RedisStore, Store, VectorChange, VectorLog};
use redis_server::RedisServer;

const ORIGINAL: &str = "Please send me the final report for the Q3 audit by Friday";
const REWORDED: &str = "Please send me the Q3 audit final report by Friday";

async fn engine(redis: &RedisServer) -> Arc<Engine> {
    instance(redis).await.0
}

/// An engine on its own connection to `redis`, with that store handle and its clock.
async fn instance(redis: &RedisServer) -> (Arc<Engine>, Arc<dyn Store>, ManualClock) {
    let store = RedisStore::connect(&RedisOptions {
        timeout: std::time::Duration::from_secs(2),
        ..RedisOptions::new(redis.url())
    })
    .await
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let (engine, clock) = semantic_engine(store.clone(), semantic_config());
    assert_eq!(
        engine.rebuild_indexes().await.unwrap(),
        0,
        "no full load at start"
    );
    (engine, store, clock)
}

async fn check(e: &Engine, to: &str, body: &str) -> CheckOutcome {
    e.check(CheckRequest {
        tenant: "t".into(),
        session: "s".into(),
        tool: "send_email".into(),
        arguments_json: serde_json::json!({"to": to, "body": body}).to_string(),
        deadline_ms: Some(10_000),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn counts(e: &Engine) -> FeedCounts {
    e.similarity().unwrap().feed_counts()
}

/// Records `to`'s original on `a` (its embedding is stored in the background: waited for),
/// then checks the rewording on `b`: a semantic repeat of it (in flight: not completed).
/// Returns the call's id.
async fn found_across(redis: &RedisServer, a: &Engine, b: &Engine, to: &str) -> String {
    let first = record(redis, a, to).await;
    let again = check(b, to, REWORDED).await;
    assert_eq!(again.verdict, Verdict::InFlight, "{}", again.reason);
    assert_eq!(again.call_id, first.call_id);
    assert_eq!(again.matched.map(|m| m.0), Some(StageKind::Semantic));
    first.call_id
}

/// Records `to`'s original on `e` and waits until its embedding is in Redis.
async fn record(redis: &RedisServer, e: &Engine, to: &str) -> CheckOutcome {
    let first = check(e, to, ORIGINAL).await;
    assert_eq!(first.verdict, Verdict::New, "{}", first.reason);
    let key = format!("{}v:{}", scope_base(), first.call_id);
    for _ in 0..500 {
        if redis.command(&format!("EXISTS {key}")).as_deref() == Some(":1\r\n") {
            return first;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the embedding of {} never reached Redis", first.call_id);
}

/// The start of the test scope's keys (the layout of `store/redis/keys.rs`).
fn scope_base() -> String {
    let scope = idem::record::match_scope("t", "s", false);
    let tag = &blake3::hash(scope.as_bytes()).to_hex()[..20];
    format!("idem:{{s{tag}}}:")
}

/// The vector log key of the test's scope (the layout of `store/redis/keys.rs`).
fn log_key() -> String {
    format!("{}vl", scope_base())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vector_one_instance_stores_is_found_by_the_other_through_its_index() {
    let redis = RedisServer::start();
    let (a, b) = (engine(&redis).await, engine(&redis).await);

    // B's first check of the scope rebuilds it from Redis (it has no cursor yet).
    found_across(&redis, &a, &b, "ann@example.com").await;
    let c = counts(&b);
    assert_eq!((c.rebuilds, c.embedded_again), (1, 0), "{c:?}");

    // Later calls reach B's index through the log: no rebuild, nothing embedded again.
    found_across(&redis, &a, &b, "bob@example.com").await;
    found_across(&redis, &a, &b, "cem@example.com").await;
    let c = counts(&b);
    assert_eq!(
        (c.rebuilds, c.applied, c.embedded_again),
        (1, 2, 0),
        "{c:?}"
    );

    // And the other way round: A takes B's call from the log.
    found_across(&redis, &b, &a, "dee@example.com").await;
    let c = counts(&a);
    assert_eq!(c.embedded_again, 0, "{c:?}");
    assert!(c.rebuilds + c.applied >= 1, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_trimmed_past_the_cursor_makes_the_instance_rebuild_the_scope() {
    let redis = RedisServer::start();
    let (a, b) = (engine(&redis).await, engine(&redis).await);
    found_across(&redis, &a, &b, "ann@example.com").await;
    assert_eq!(counts(&b).rebuilds, 1);

    // A records another call; the log loses every entry, this one included.
    let first = record(&redis, &a, "bob@example.com").await;
    let trimmed = redis
        .command(&format!("XTRIM {} MAXLEN 0", log_key()))
        .unwrap();
    assert!(
        trimmed.starts_with(":2"),
        "both entries trimmed: {trimmed:?}"
    );

    let again = check(&b, "bob@example.com", REWORDED).await;
    assert_eq!(again.verdict, Verdict::InFlight, "{}", again.reason);
    assert_eq!(again.call_id, first.call_id);
    assert_eq!(again.matched.map(|m| m.0), Some(StageKind::Semantic));
    let c = counts(&b);
    assert_eq!(
        (c.rebuilds, c.applied, c.embedded_again),
        (2, 0, 0),
        "{c:?}"
    );
}

/// A unit vector orthogonal to `v` (Gram-Schmidt on the axis where `v` is smallest).
fn orthogonal_to(v: &[f32]) -> Vec<f32> {
    let axis = (0..v.len())
        .min_by(|&i, &j| v[i].abs().total_cmp(&v[j].abs()))
        .unwrap();
    let norm2: f32 = v.iter().map(|x| x * x).sum();
    let mut u: Vec<f32> = v.iter().map(|x| -x * v[axis] / norm2).collect();
    u[axis] += 1.0;
    let n = u.iter().map(|x| x * x).sum::<f32>().sqrt();
    u.iter().map(|x| x / n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vector_another_instance_stores_again_replaces_the_indexed_one() {
    let redis = RedisServer::start();
    let (a, a_store, a_clock) = instance(&redis).await;
    let (b, b_store, _) = instance(&redis).await;
    let scope = idem::record::match_scope("t", "s", false);
    let id = found_across(&redis, &a, &b, "ann@example.com").await;
    let vid = idem::record::vector_id(&id);
    let old = b_store
        .vectors_of(&scope, std::slice::from_ref(&id))
        .await
        .unwrap()[0]
        .clone()
        .unwrap();

    // A stores another vector for the call B has indexed.
    let new = orthogonal_to(&old);
    assert!(a_store.put_embedding(&id, &new).await.unwrap());
    let sim = b.similarity().unwrap();
    sim.catch_up(b_store.as_ref(), &scope).await.unwrap();
    let score = |q: &[f32]| {
        let hits = sim.indexes().search(&scope, q, 1, &|v| v == vid).unwrap();
        assert_eq!(hits.len(), 1, "the call is still in B's index: {hits:?}");
        hits[0].1
    };
    let (with_new, with_old) = (score(&new), score(&old));
    assert!(with_new > 0.95, "B's index has the new vector: {with_new}");
    assert!(
        with_old < 0.2,
        "B's index dropped the old vector: {with_old}"
    );
    assert_eq!(counts(&b).rebuilds, 1, "taken from the log, not a rebuild");

    // A sweeps the call once it expired; B's next catch-up drops it.
    a_clock.advance_ms(365 * 24 * 3600 * 1000);
    assert!(a.sweep().await.unwrap() >= 1);
    sim.catch_up(b_store.as_ref(), &scope).await.unwrap();
    assert!(
        !sim.has_vector_id(&scope, vid),
        "the swept call left B's index"
    );
    assert!(counts(&b).removed >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_entry_without_a_writer_counts_as_another_instances() {
    let redis = RedisServer::start();
    let (a, a_store, _) = instance(&redis).await;
    let scope = idem::record::match_scope("t", "s", false);
    let first = record(&redis, &a, "ann@example.com").await;
    let head = a_store
        .scope_vectors(&scope, None, 1)
        .await
        .unwrap()
        .head
        .unwrap();
    // An older version logs `a id` alone; this instance's own entries carry its writer.
    redis
        .command(&format!("XADD {} * a {}", log_key(), first.call_id))
        .unwrap();
    assert!(
        a_store
            .put_embedding(&first.call_id, &[0.5; idem::embed::EMBEDDING_DIM])
            .await
            .unwrap()
    );
    let VectorLog::Changes { changes, .. } = a_store.vector_log(&scope, &head, 10).await.unwrap()
    else {
        panic!("no gap");
    };
    let added = |own| VectorChange::Added {
        id: first.call_id.clone(),
        own,
    };
    assert_eq!(changes, vec![added(false), added(true)]);
}
