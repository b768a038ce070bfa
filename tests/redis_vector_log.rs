//! Two engines on one real Redis keep their vector indexes current from the per-scope vector
//! log: a call instance A records with free text is found by instance B's check of a
//! rewording through B's index (B neither reloads every vector nor embeds A's call again),
//! and a log trimmed past B's cursor makes B rebuild that scope.

mod common;
mod redis_server;

use std::sync::Arc;

use common::{semantic_config, semantic_engine};
use idem::engine::{CheckOutcome, CheckRequest, Engine, FeedCounts, Verdict};
use idem::funnel::StageKind;
use idem::store::{RedisOptions, RedisStore, Store};
use redis_server::RedisServer;

const ORIGINAL: &str = "Please send me the final report for the Q3 audit by Friday";
const REWORDED: &str = "Please send me the Q3 audit final report by Friday";

async fn engine(redis: &RedisServer) -> Arc<Engine> {
    let store = RedisStore::connect(&RedisOptions {
        timeout: std::time::Duration::from_secs(2),
        ..RedisOptions::new(redis.url())
    })
    .await
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let (engine, _clock) = semantic_engine(store, semantic_config());
    assert_eq!(
        engine.rebuild_indexes().await.unwrap(),
        0,
        "no full load at start"
    );
    engine
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
async fn found_across(redis: &RedisServer, a: &Engine, b: &Engine, to: &str) {
    let first = record(redis, a, to).await;
    let again = check(b, to, REWORDED).await;
    assert_eq!(again.verdict, Verdict::InFlight, "{}", again.reason);
    assert_eq!(again.call_id, first.call_id);
    assert_eq!(again.matched.map(|m| m.0), Some(StageKind::Semantic));
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
