//! Per-tenant quotas through the real gRPC server on the embedded store: a NEW past
//! `limits.max_records` and the first call of a session past `limits.max_sessions` are
//! RESOURCE_EXHAUSTED with the limit and the count in the message, nothing is recorded, the
//! refusals are counted in `idem_quota_refusals_total{limit}` (no tenant label), a
//! duplicate still answers at the quota, another tenant keeps its own quota, the counts
//! survive a restart, and the sweep gives room back.

mod common;

use std::sync::Arc;

use common::*;
use idem::clock::{Clock, ManualClock};
use idem::config::{ServerConfig, TenantLimits};
use idem::engine::Engine;
use idem::metrics::Metrics;
use idem::proto;
use idem::service::ServeOptions;
use idem::store::{EmbeddedStore, Store, Usage};
use prometheus_parse::{Scrape, Value};

struct Running {
    addr: std::net::SocketAddr,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn config() -> ServerConfig {
    let mut c = ServerConfig::default();
    c.limits.max_records = Some(4);
    c.limits.max_sessions = Some(2);
    c.limits.tenants.insert(
        "big".into(),
        TenantLimits {
            max_records: Some(100),
            max_sessions: Some(50),
        },
    );
    c.defaults.ttl_secs = 60;
    c
}

async fn start(dir: &std::path::Path, clock: &ManualClock) -> Running {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir).unwrap());
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    let engine = Arc::new(Engine::with_parts(store, config(), c, None));
    let metrics = Metrics::new(&engine);
    let (listener, addr) = idem::service::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (e, m) = (engine.clone(), metrics.clone());
    let task = tokio::spawn(async move {
        let options = ServeOptions {
            metrics: Some(m),
            ..ServeOptions::default()
        };
        idem::service::serve_with(e, listener, options, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Running {
        addr,
        engine,
        metrics,
        stop,
        task,
    }
}

impl Running {
    async fn client(&self) -> proto::idem_client::IdemClient<tonic::transport::Channel> {
        let url = format!("http://{}", self.addr);
        for _ in 0..50 {
            if let Ok(c) = proto::idem_client::IdemClient::connect(url.clone()).await {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("server at {url} did not come up");
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }

    fn refusals(&self, limit: &str) -> f64 {
        let text = self.metrics.encode().unwrap();
        assert!(!text.contains("\"acme\""), "a label carries the tenant");
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "idem_quota_refusals_total" && s.labels.get("limit") == Some(limit)
            })
            .map(|s| match s.value {
                Value::Counter(v) | Value::Untyped(v) => v,
                _ => panic!("not a counter"),
            })
            .unwrap_or(0.0)
    }
}

fn req(tenant: &str, session: &str, n: u32) -> proto::CheckRequest {
    proto::CheckRequest {
        tenant: tenant.into(),
        session: session.into(),
        tool: "send_email".into(),
        arguments_json: format!(r#"{{"to":"user{n}@example.com"}}"#),
        ..Default::default()
    }
}

async fn refused(
    c: &mut proto::idem_client::IdemClient<tonic::transport::Channel>,
    r: proto::CheckRequest,
) -> String {
    match c.check_and_record(r).await {
        Err(s) => {
            assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
            s.message().to_string()
        }
        Ok(v) => panic!("not refused: {:?}", v.into_inner()),
    }
}

async fn calls(
    c: &mut proto::idem_client::IdemClient<tonic::transport::Channel>,
    session: &str,
) -> usize {
    c.list_calls(proto::ListCallsRequest {
        tenant: "acme".into(),
        session: session.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .calls
    .len()
}

#[tokio::test]
async fn both_quotas_refuse_a_new_call_with_the_limit_and_count_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let s = start(dir.path(), &clock).await;
    let mut c = s.client().await;
    let first = run(&mut c, req("acme", "s1", 1)).await;
    assert_eq!(verdict(&first), proto::Verdict::New);
    assert_eq!(
        verdict(&run(&mut c, req("acme", "s1", 2)).await),
        proto::Verdict::New
    );
    assert_eq!(
        verdict(&run(&mut c, req("acme", "s2", 3)).await),
        proto::Verdict::New
    );

    // A third session, with room for records left: the sessions quota.
    clock.advance_ms(1_000);
    let msg = refused(&mut c, req("acme", "s3", 4)).await;
    assert!(
        msg.contains("limits.max_sessions = 2")
            && msg.contains("2 sessions")
            && msg.contains("\"s3\""),
        "{msg}"
    );
    assert_eq!(calls(&mut c, "s3").await, 0, "a refused call was recorded");
    assert_eq!(s.refusals("max_sessions"), 1.0);

    // A fourth record, in a session the tenant has, fits; a fifth meets the records quota.
    assert_eq!(
        verdict(&run(&mut c, req("acme", "s1", 5)).await),
        proto::Verdict::New
    );
    let msg = refused(&mut c, req("acme", "s1", 6)).await;
    assert!(
        msg.contains("limits.max_records = 4") && msg.contains("holds 4 records"),
        "{msg}"
    );
    assert_eq!(calls(&mut c, "s1").await, 3);
    assert_eq!(s.refusals("max_records"), 1.0);

    // At the quota a repeat still answers (it records nothing) and another tenant has its own.
    succeed(&mut c, &first.call_id, r#"{"sent":true}"#, None).await;
    let again = run(&mut c, req("acme", "s1", 1)).await;
    assert_eq!(verdict(&again), proto::Verdict::Duplicate);
    for n in 0..5 {
        let r = run(&mut c, req("big", &format!("b{n}"), n)).await;
        assert_eq!(
            verdict(&r),
            proto::Verdict::New,
            "tenant big has its own quota"
        );
    }
    s.stop().await;

    // The counts are in the store: after a restart the quota still holds.
    let s = start(dir.path(), &clock).await;
    let mut c = s.client().await;
    assert_eq!(
        s.engine.usage("acme").await.unwrap(),
        Usage {
            records: 4,
            sessions: 2
        }
    );
    refused(&mut c, req("acme", "s1", 7)).await;
    // Past the TTL and swept, the tenant has room again.
    clock.advance_ms(61_000);
    assert_eq!(s.engine.sweep().await.unwrap(), 9);
    assert_eq!(s.engine.usage("acme").await.unwrap(), Usage::default());
    assert_eq!(
        verdict(&run(&mut c, req("acme", "s3", 8)).await),
        proto::Verdict::New
    );
    s.stop().await;
}
