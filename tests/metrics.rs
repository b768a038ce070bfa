//! The Prometheus endpoint, scraped over HTTP after a NEW, a DUPLICATE and a shed check, and
//! parsed with a Prometheus text parser (`prometheus-parse`): the counters say what happened,
//! and no label carries a tenant, session or argument value.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::routing::post;
use common::*;
use idem::clock::{Clock, ManualClock};
use idem::config::{EmbedderKind, ServerConfig};
use idem::engine::{Engine, Similarity};
use idem::metrics::Metrics;
use idem::proto;
use idem::service::ServeOptions;
use idem::store::MemoryStore;
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::{Value as Json_, json};

/// Text the stub embedder answers 429 Too Many Requests for (the embedder is overloaded).
const OVERLOAD: &str = "overload";

/// An OpenAI-compatible embeddings stub: a deterministic unit vector per text, 429 for texts
/// containing `OVERLOAD`.
async fn embed_stub() -> (String, tokio::task::JoinHandle<()>) {
    async fn embeddings(body: String) -> axum::response::Response {
        use axum::response::IntoResponse;
        let body: Json_ = serde_json::from_str(&body).unwrap_or_default();
        let text = body["input"][0].as_str().unwrap_or_default().to_string();
        if text.contains(OVERLOAD) {
            return (axum::http::StatusCode::TOO_MANY_REQUESTS, "busy").into_response();
        }
        let h = blake3::hash(text.as_bytes());
        let mut v: Vec<f32> = (0..384)
            .map(|i| f32::from(h.as_bytes()[i % 32]) - 127.5 + i as f32 * 0.01)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        let out = json!({"data": [{"embedding": v, "index": 0}]}).to_string();
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            out,
        )
            .into_response()
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let app = axum::Router::new().route("/v1/embeddings", post(embeddings));
    let task = tokio::spawn(async move {
        axum::serve(l, app).await.unwrap();
    });
    (url, task)
}

struct Running {
    addr: std::net::SocketAddr,
    metrics_url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start(embed_url: &str) -> Running {
    let mut config = ServerConfig::default();
    config.semantic.embedder = EmbedderKind::Remote;
    config.semantic.remote_url = Some(embed_url.to_string());
    let semantic = Similarity::from_config(&config).unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let c: Arc<dyn Clock> = Arc::new(clock);
    let engine = Arc::new(Engine::with_parts(
        Arc::new(MemoryStore::new()),
        config,
        c,
        semantic,
    ));
    let metrics = Metrics::new(&engine);
    let (listener, addr) = idem::service::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (ml, maddr) = idem::service::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (mstop, mstopped) = tokio::sync::oneshot::channel::<()>();
    let m = metrics.clone();
    let metrics_task = tokio::spawn(async move {
        idem::metrics::serve(m, ml, async {
            let _ = mstopped.await;
        })
        .await
        .unwrap();
    });
    let server = tokio::spawn(async move {
        let options = ServeOptions {
            metrics: Some(metrics),
            ..ServeOptions::default()
        };
        idem::service::serve_with(engine, listener, options, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let _ = mstop.send(());
    });
    Running {
        addr,
        metrics_url: format!("http://{maddr}/metrics"),
        stop,
        tasks: vec![server, metrics_task],
    }
}

async fn scrape(url: &str) -> (String, Scrape) {
    let resp = reqwest::get(url).await.expect("metrics endpoint answers");
    assert!(resp.status().is_success(), "{}", resp.status());
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ctype.contains("openmetrics-text"), "{ctype}");
    let text = resp.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = Scrape::parse(lines).expect("a valid Prometheus exposition");
    (text, parsed)
}

fn samples<'a>(s: &'a Scrape, name: &str) -> Vec<&'a Sample> {
    s.samples.iter().filter(|x| x.metric == name).collect()
}

fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(s, name)
        .into_iter()
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|c| c.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test]
async fn a_scrape_counts_new_duplicate_and_shed_checks_without_tenant_labels() {
    let (embed_url, stub) = embed_stub().await;
    let s = start(&embed_url).await;
    let mut c = {
        let url = format!("http://{}", s.addr);
        let mut tries = 0;
        loop {
            match proto::idem_client::IdemClient::connect(url.clone()).await {
                Ok(c) => break c,
                Err(_) if tries < 50 => tries += 1,
                Err(e) => panic!("{e}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let req = |body: &str| proto::CheckRequest {
        tenant: "secret-tenant".into(),
        session: "secret-session".into(),
        tool: "send_email".into(),
        arguments_json: json!({"to": "alice@example.com", "body": body}).to_string(),
        deadline_ms: Some(5000),
        ..Default::default()
    };
    let first = req("Hi Alice, the March invoice is attached to this message.");
    let new = run(&mut c, first.clone()).await;
    assert_eq!(verdict(&new), proto::Verdict::New);
    succeed(&mut c, &new.call_id, r#"{"message_id": "m-1"}"#, Some(0.25)).await;
    let dup = run(&mut c, first).await;
    assert_eq!(verdict(&dup), proto::Verdict::Duplicate);
    assert!(dup.replayed);
    // Identity-equal, different words: the embedder is asked, and answers 429.
    let shed = c
        .check_and_record(req(&format!(
            "{OVERLOAD} please, Alice: another note entirely"
        )))
        .await
        .unwrap_err();
    assert_eq!(shed.code(), tonic::Code::ResourceExhausted, "{shed:?}");

    let (text, m) = scrape(&s.metrics_url).await;
    assert_eq!(
        value(
            &m,
            "idem_checks_total",
            &[("verdict", "new"), ("stage", "none")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            "idem_checks_total",
            &[("verdict", "duplicate"), ("stage", "exact")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&m, "idem_replays_total", &[]), Some(1.0));
    assert_eq!(value(&m, "idem_cost_avoided_total", &[]), Some(0.25));
    assert_eq!(
        value(&m, "idem_shed_total", &[("reason", "embed_queue")]),
        Some(1.0)
    );
    assert_eq!(value(&m, "idem_store_errors_total", &[]), Some(0.0));
    assert_eq!(
        value(&m, "idem_check_duration_seconds_count", &[]),
        Some(2.0),
        "the shed check was not answered, so it is not timed"
    );
    assert!(
        value(
            &m,
            "idem_stage_duration_seconds_count",
            &[("stage", "exact")]
        )
        .unwrap_or(0.0)
            >= 2.0
    );
    assert_eq!(
        value(&m, "idem_build_info", &[("version", idem::VERSION)]),
        Some(1.0)
    );
    assert!(value(&m, "idem_index_vectors", &[]).is_some(), "{text}");
    assert!(value(&m, "idem_backfills_pending", &[]).is_some(), "{text}");
    // Bounded labels only: no tenant, session or argument text anywhere in the exposition.
    for secret in ["secret-tenant", "secret-session", "alice", "invoice"] {
        assert!(!text.contains(secret), "{secret} leaked into metrics");
    }
    let keys: BTreeMap<&str, ()> = m
        .samples
        .iter()
        .flat_map(|x| x.labels.keys().map(|k| (k.as_str(), ())))
        .collect();
    for k in keys.keys() {
        assert!(
            ["verdict", "stage", "reason", "version", "api", "le"].contains(k),
            "unexpected label {k}"
        );
    }
    let _ = s.stop.send(());
    for t in s.tasks {
        t.await.unwrap();
    }
    stub.abort();
}
