//! Prometheus metrics: what the service counts per request, plus gauges read from the engine
//! at scrape time, served as text on `metrics_listen` at `/metrics` (`serve`).
//!
//! Labels carry only bounded values (verdict, stage, shed reason, quota limit), never a tenant, session or
//! argument: the series count does not grow with traffic.

mod http;

pub use http::serve;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::engine::{CheckOutcome, Engine, Verdict};
use crate::error::IdemError;

/// Label set of one bounded dimension.
type Label1 = [(&'static str, &'static str); 1];
/// Label set of two bounded dimensions.
type Label2 = [(&'static str, &'static str); 2];
/// A family of histograms over latency buckets.
type Histograms = Family<Label1, Histogram, fn() -> Histogram>;

/// Latency buckets: 50 µs to about 3.3 s, doubling.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

/// The server's metrics. Cheap to update from any task (atomics).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    checks: Family<Label2, Counter>,
    check_duration: Histogram,
    stage_duration: Histograms,
    replays: Counter,
    cost_avoided: Counter<f64, AtomicU64>,
    shed: Family<Label1, Counter>,
    quota_refusals: Family<Label1, Counter>,
    store_errors: Counter,
}

impl Metrics {
    /// Metrics of `engine` (held weakly: the metrics never keep a stopped engine alive).
    pub fn new(engine: &Arc<Engine>) -> Arc<Self> {
        let mut registry = Registry::with_prefix("idem");
        let checks = Family::<Label2, Counter>::default();
        registry.register(
            "checks",
            "Checks answered, by verdict and the stage that decided (none for NEW)",
            checks.clone(),
        );
        let check_duration = latency_buckets();
        registry.register_with_unit(
            "check_duration",
            "Server-side time of a check",
            Unit::Seconds,
            check_duration.clone(),
        );
        let stage_duration: Histograms = Family::new_with_constructor(latency_buckets);
        registry.register_with_unit(
            "stage_duration",
            "Time of each funnel stage that ran",
            Unit::Seconds,
            stage_duration.clone(),
        );
        let replays = Counter::default();
        registry.register(
            "replays",
            "Stored results replayed to a repeat",
            replays.clone(),
        );
        let cost_avoided = Counter::<f64, AtomicU64>::default();
        registry.register(
            "cost_avoided",
            "Sum of the recorded cost of the calls whose result was replayed (the caller's unit)",
            cost_avoided.clone(),
        );
        let shed = Family::<Label1, Counter>::default();
        registry.register(
            "shed",
            "Checks refused with RESOURCE_EXHAUSTED because the server was at capacity",
            shed.clone(),
        );
        let quota_refusals = Family::<Label1, Counter>::default();
        registry.register(
            "quota_refusals",
            "New calls refused with RESOURCE_EXHAUSTED because their tenant was at a quota, by \
             the limit (max_records, max_sessions)",
            quota_refusals.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Requests that failed in the store",
            store_errors.clone(),
        );
        registry.register(
            "build",
            "The server's version and API",
            Info::new([("version", crate::VERSION), ("api", idem_client::API)]),
        );
        registry.register_collector(Box::new(EngineGauges {
            engine: Arc::downgrade(engine),
        }));
        Arc::new(Self {
            registry,
            checks,
            check_duration,
            stage_duration,
            replays,
            cost_avoided,
            shed,
            quota_refusals,
            store_errors,
        })
    }

    /// Counts one answered check.
    pub fn check(&self, out: &CheckOutcome) {
        let stage = match (out.verdict, out.matched) {
            (Verdict::New, _) | (_, None) => "none",
            (_, Some((s, _))) => s.name(),
        };
        self.checks
            .get_or_create(&[("verdict", verdict_label(out.verdict)), ("stage", stage)])
            .inc();
        self.check_duration
            .observe(out.total_micros as f64 / 1_000_000.0);
        for s in &out.stages {
            self.stage_duration
                .get_or_create(&[("stage", s.stage.name())])
                .observe(s.micros as f64 / 1_000_000.0);
        }
        if out.replayed {
            self.replays.inc();
            if let Some(c) = out.replayed_cost.filter(|c| c.is_finite() && *c > 0.0) {
                self.cost_avoided.inc_by(c);
            }
        }
    }

    /// Counts a refused request that is the server's doing (shed, quota, store failure).
    pub fn error(&self, e: &IdemError) {
        match e {
            IdemError::Shed(reason, _) => {
                self.shed
                    .get_or_create(&[("reason", reason.as_str())])
                    .inc();
            }
            IdemError::Store(crate::store::StoreError::Quota(q)) => {
                self.quota_refusals
                    .get_or_create(&[("limit", q.limit.key())])
                    .inc();
            }
            IdemError::Store(_) => {
                self.store_errors.inc();
            }
            _ => {}
        }
    }

    /// The metrics in the Prometheus text format (OpenMetrics flavour).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Lower-case verdict name for the `verdict` label.
fn verdict_label(v: Verdict) -> &'static str {
    match v {
        Verdict::New => "new",
        Verdict::Duplicate => "duplicate",
        Verdict::InFlight => "in_flight",
        Verdict::Borderline => "borderline",
    }
}

/// Gauges read from the engine at each scrape: embedder queue, batch sizes, index vectors,
/// pending backfills.
#[derive(Debug)]
struct EngineGauges {
    engine: Weak<Engine>,
}

impl Collector for EngineGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(engine) = self.engine.upgrade() else {
            return Ok(());
        };
        let Some(semantic) = engine.semantic.as_ref() else {
            return Ok(());
        };
        let vectors = match semantic.indexes().counts() {
            Ok(c) => c.vectors,
            Err(e) => {
                tracing::warn!(%e, "index counts unavailable for metrics");
                return Ok(());
            }
        };
        let g = ConstGauge::new(vectors as i64);
        g.encode(encoder.encode_descriptor(
            "index_vectors",
            "Vectors in the in-memory indexes",
            None,
            g.metric_type(),
        )?)?;
        let b = ConstGauge::new(semantic.backfills_pending() as i64);
        b.encode(encoder.encode_descriptor(
            "backfills_pending",
            "Calls recorded without an embedding whose background embedding is queued or running",
            None,
            b.metric_type(),
        )?)?;
        let Some(load) = semantic.embedder().and_then(|e| e.load()) else {
            return Ok(());
        };
        let q = ConstGauge::new(load.queued as i64);
        q.encode(encoder.encode_descriptor(
            "embed_queue_depth",
            "Check texts waiting for an embedding worker",
            None,
            q.metric_type(),
        )?)?;
        let mut m = encoder.encode_descriptor(
            "embed_batch_size",
            "Texts per batch the embedding workers ran",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            load.batched_texts as f64,
            load.batches,
            &load.batch_buckets,
            None,
        )
    }
}
