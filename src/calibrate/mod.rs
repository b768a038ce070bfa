//! Threshold calibration: labelled pairs run through the server's own funnel, in process.
//!
//! For each pair, a fresh scope records `a` (completed as succeeded), then checks `b`, and keeps
//! what every stage saw: whether a certain stage (key, exact) matched, the *eligible* fuzzy
//! ratio (best among verbatim candidates) and the judge's probability (best among the semantic
//! neighbours). A pair is predicted duplicate at thresholds (f, s) when a certain stage matched,
//! or the eligible fuzzy ratio is >= f, or the judge's probability is >= s: exactly the
//! funnel's rule, so a sweep over thresholds needs one pass over the data. `train` fits the
//! judge itself (`idem train-scorer`).

mod metrics;
mod pairs;
mod plot;
pub mod train;

pub use metrics::{
    Confusion, SweepPoint, at_threshold, best_single_threshold, recommend, sweep, wilson_upper,
};
pub use pairs::{Malformed, Pair, PairCall, read_pairs};
pub use plot::write_plot;

use std::sync::Arc;

use crate::clock::SystemClock;
use crate::config::ServerConfig;
use crate::embed::EmbedService;
use crate::engine::{CheckRequest, CompleteRequest, Engine, Outcome, Similarity, Verdict};
use crate::error::IdemError;
use crate::funnel::StageKind;
use crate::store::MemoryStore;

/// What the funnel saw for one pair.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scored {
    /// The pair's id.
    pub id: String,
    /// Ground truth.
    pub duplicate: bool,
    /// Group value (e.g. the pair's `kind`), when grouping.
    pub group: Option<String>,
    /// Verdict at the configured thresholds: DUPLICATE or IN_FLIGHT counts as duplicate.
    pub predicted: bool,
    /// The stage that matched at the configured thresholds.
    pub stage: Option<&'static str>,
    /// A certain stage (key or exact) matched: duplicate at any threshold.
    pub certain: bool,
    /// Eligible fuzzy similarity, if the stage saw a candidate.
    pub fuzzy: Option<f64>,
    /// The judge's probability for the most probable semantic neighbour, if any.
    pub semantic: Option<f64>,
    /// Best raw cosine the semantic stage saw.
    pub cosine: Option<f64>,
    /// Which features decided the judged pair.
    pub explain: Option<String>,
    /// Naive baseline: cosine of the whole calls' embeddings.
    pub naive_cosine: Option<f64>,
}

impl Scored {
    /// Predicted duplicate at thresholds (fuzzy, semantic)?
    pub fn at(&self, fuzzy: f64, semantic: f64) -> bool {
        self.certain
            || self.fuzzy.is_some_and(|f| f >= fuzzy)
            || self.semantic.is_some_and(|s| s >= semantic)
    }
}

/// Runs pairs through the funnel.
pub struct Calibrator {
    config: ServerConfig,
    semantic: Option<Arc<Similarity>>,
    /// The configured (fuzzy, semantic) thresholds being measured.
    thresholds: (f64, f64),
}

impl Calibrator {
    /// A calibrator using `config` (thresholds, tool policies, embedder).
    pub fn new(mut config: ServerConfig) -> Result<Self, IdemError> {
        // Nothing may be cut short by a deadline while calibrating, and no similarity stage may
        // settle early: every stage runs and reports its score, so a sweep is exact. The
        // configured thresholds are then applied to the scores (the funnel's own rule).
        config.defaults.deadline_ms = 60_000;
        // Offline: every pair waits its turn for the embedder, none is shed.
        config.semantic.max_embed_wait_share = 1.0;
        let thresholds = (
            config.defaults.fuzzy_threshold,
            config.defaults.semantic_duplicate,
        );
        // The borderline threshold is also what the engine's pre-embedding filter
        // (`funnel::may_match`) holds a pair against: at 0 every pair without a hard conflict
        // is embedded and judged, so the sweep sees the judge's score at every threshold (at 1
        // nothing would be, and the semantic stage would report no score at all). A borderline
        // pair then only proceeds: no verifier is asked, no policy holds it.
        config.defaults.fuzzy_threshold = 1.0;
        config.defaults.semantic_duplicate = 1.0;
        config.defaults.semantic_borderline = 0.0;
        config.defaults.verifier_enabled = false;
        config.defaults.borderline_policy = crate::config::BorderlinePolicy::Proceed;
        let semantic = Similarity::from_config(&config)?;
        Ok(Self {
            config,
            semantic,
            thresholds,
        })
    }

    /// Scores one pair in a fresh scope; `naive` also embeds the whole calls for the baseline.
    pub async fn score(
        &self,
        pair: &Pair,
        group: Option<String>,
        naive: bool,
    ) -> Result<Scored, IdemError> {
        let engine = Engine::with_parts(
            Arc::new(MemoryStore::new()),
            self.config.clone(),
            Arc::new(SystemClock),
            self.semantic.clone(),
        );
        let session = format!("calibrate-{}", pair.id);
        let req = |c: &PairCall| CheckRequest {
            tenant: "calibrate".into(),
            session: session.clone(),
            tool: c.tool.clone(),
            arguments_json: c.args.to_string(),
            deadline_ms: Some(60_000),
            ..Default::default()
        };
        let first = engine.check(req(&pair.a)).await?;
        if first.verdict == Verdict::New && !first.call_id.is_empty() {
            engine
                .complete(CompleteRequest {
                    call_id: first.call_id,
                    outcome: Outcome::Succeeded {
                        result_json: "{}".into(),
                    },
                    cost: None,
                    attempt: None,
                    compensation_json: None,
                })
                .await?;
        }
        let second = engine.check(req(&pair.b)).await?;
        let stage_score = |k: StageKind| {
            second
                .stages
                .iter()
                .find(|r| r.stage == k)
                .and_then(|r| r.eligible_score)
        };
        let certain = second
            .matched
            .is_some_and(|(s, _)| matches!(s, StageKind::Key | StageKind::Exact));
        let (fuzzy, semantic) = (
            stage_score(StageKind::Fuzzy),
            stage_score(StageKind::Semantic),
        );
        let semantic_report = second
            .stages
            .iter()
            .find(|r| r.stage == StageKind::Semantic);
        let cosine = semantic_report.and_then(|r| r.best_score);
        let explain = semantic_report.and_then(|r| r.explain.clone());
        let (tf, ts) = self.thresholds;
        let stage = if certain {
            second.matched.map(|(s, _)| s.name())
        } else if fuzzy.is_some_and(|f| f >= tf) {
            Some("fuzzy")
        } else if semantic.is_some_and(|s| s >= ts) {
            Some("semantic")
        } else {
            None
        };
        let predicted = stage.is_some();
        let embedder = self.semantic.as_ref().and_then(|s| s.embedder());
        let naive_cosine = match (embedder, naive) {
            (Some(e), true) => Some(naive_cosine(e, pair).await?),
            _ => None,
        };
        Ok(Scored {
            id: pair.id.clone(),
            duplicate: pair.duplicate,
            group,
            predicted,
            stage,
            certain,
            fuzzy,
            semantic,
            cosine,
            explain,
            naive_cosine,
        })
    }
}

/// The usual recipe: one embedding of the whole call (tool + canonical JSON), one cosine.
async fn naive_cosine(s: &EmbedService, pair: &Pair) -> Result<f64, IdemError> {
    let deadline = || tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = |c: &PairCall| format!("{} {}", c.tool, crate::canonical::normalize(&c.args));
    let a = s.embed(&text(&pair.a), deadline()).await?;
    let b = s.embed(&text(&pair.b), deadline()).await?;
    Ok(f64::from(crate::embed::cosine(&a, &b)))
}
