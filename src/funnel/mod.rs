//! The funnel: ordered stages, cheap and certain first, each of which may settle the verdict.
//!
//! A stage looks at the call in canonical form and at earlier records of its scope, and says
//! whether it found the call's original (`Found`), a possible one it cannot settle
//! (`Borderline`), or nothing (`Pass`). The funnel runs stages in order, checks the time left
//! before each one, and records what each did. It does not write: the engine turns the funnel's
//! finding into a verdict and a reservation.

mod exact;
mod fuzzy;
mod key;
mod semantic;
pub mod text;
mod verify;

pub use exact::ExactStage;
pub use fuzzy::{FuzzyScan, FuzzyStage, scan as fuzzy_scan};
pub use key::KeyStage;
pub use semantic::SemanticStage;
pub use verify::{Verifier, VerifyStage};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::canonical::CanonicalCall;
use crate::clock::Millis;
use crate::config::{SessionSettings, ToolMode};
use crate::error::IdemError;
use crate::record::Record;
use crate::store::{Candidate, Store};

/// The stages, in funnel order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StageKind {
    /// Client idempotency key.
    Key,
    /// Hash of tool + canonical form.
    Exact,
    /// strsim similarity of free text among identity-equal candidates.
    Fuzzy,
    /// Embedding cosine among identity-equal candidates.
    Semantic,
    /// LLM judgement of a borderline pair.
    Verify,
}

impl StageKind {
    /// Lower-case stage name, as reported in responses.
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Key => "key",
            StageKind::Exact => "exact",
            StageKind::Fuzzy => "fuzzy",
            StageKind::Semantic => "semantic",
            StageKind::Verify => "verify",
        }
    }

    /// Whether a tool in `mode` runs this stage.
    pub fn enabled_in(self, mode: ToolMode) -> bool {
        match mode {
            ToolMode::Off => false,
            ToolMode::KeyOnly => self == StageKind::Key,
            ToolMode::Exact => matches!(self, StageKind::Key | StageKind::Exact),
            ToolMode::Semantic => true,
        }
    }
}

/// Why the funnel stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stage settled the verdict, or every stage ran.
    Settled,
    /// No time left for the next stage.
    Deadline,
    /// The borderline policy decided.
    Policy,
    /// The tool's mode skipped the remaining stages.
    Mode,
}

/// A stage's finding.
#[derive(Debug, Clone)]
pub enum Finding {
    /// Nothing here; go on.
    Pass,
    /// This earlier record is the call's original.
    Found(Found),
    /// A possible original this stage cannot settle.
    Borderline(Found),
}

/// An earlier record a stage matched, with the stage and score.
#[derive(Debug, Clone)]
pub struct Found {
    pub record: Record,
    pub stage: StageKind,
    pub score: f64,
}

/// What one stage did, for the response.
#[derive(Debug, Clone, PartialEq)]
pub struct StageReport {
    pub stage: StageKind,
    pub micros: u64,
    /// `match`, `no_match`, `borderline`, `skipped`, `deadline`, `timeout`, `error`, ...
    pub outcome: String,
    /// Best score seen against any candidate.
    pub best_score: Option<f64>,
    /// Best score among candidates the text checks allow to match (no value conflict, not a
    /// reordering): what a threshold is compared with. Calibration sweeps over it.
    pub eligible_score: Option<f64>,
}

/// Everything a stage may look at.
pub struct CheckContext {
    pub call: CanonicalCall,
    pub idempotency_key: Option<String>,
    pub match_scope: String,
    pub settings: Arc<SessionSettings>,
    pub mode: ToolMode,
    pub now: Millis,
    pub deadline: Instant,
    pub store: Arc<dyn Store>,
    /// Identity-equal earlier calls inside the window (loaded once, by the first stage that needs them).
    pub candidates: Option<Arc<Vec<Candidate>>>,
    /// The fuzzy scan of `candidates`, when it was done ahead of the lock.
    pub fuzzy_ahead: Option<FuzzyScan>,
    /// Embedding of the call's free text, when computed.
    pub embedding: Option<Vec<f32>>,
    /// A borderline finding a later stage (verify) may settle.
    pub borderline: Option<Found>,
    /// Best score per stage, for reports.
    pub best_score: Option<f64>,
    /// Best score among candidates eligible to match, for reports.
    pub eligible_score: Option<f64>,
    /// The closest candidate any similarity stage saw: (call id, score).
    pub nearest: Option<(String, f64)>,
    /// Free-form detail for the stage report's outcome (e.g. `verifier_timeout`).
    pub note: Option<String>,
}

impl CheckContext {
    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Identity-equal candidates inside the window, newest first, loaded once.
    pub async fn candidates(&mut self) -> Result<Arc<Vec<Candidate>>, IdemError> {
        if self.candidates.is_none() {
            let c = load_candidates(
                self.store.as_ref(),
                &self.match_scope,
                &self.call,
                &self.settings,
                self.now,
            )
            .await?;
            self.candidates = Some(c);
        }
        Ok(self.candidates.clone().unwrap_or_default())
    }

    /// A stage's match on candidate `c`: its whole record, or `None` when it was swept since the
    /// candidates were read.
    pub async fn found(
        &self,
        c: &Candidate,
        stage: StageKind,
        score: f64,
    ) -> Result<Option<Found>, IdemError> {
        Ok(self.store.get(&c.id).await?.map(|record| Found {
            record,
            stage,
            score,
        }))
    }
}

/// Identity-equal earlier calls of `call` in `scope` inside the session's window at `now`,
/// newest first, unexpired.
pub async fn load_candidates(
    store: &dyn Store,
    scope: &str,
    call: &CanonicalCall,
    settings: &SessionSettings,
    now: Millis,
) -> Result<Arc<Vec<Candidate>>, IdemError> {
    let since = now - (settings.window_secs as i64).saturating_mul(1000);
    let mut c = store
        .candidates(
            scope,
            &call.tool,
            &call.identity_fingerprint,
            since,
            settings.window_calls as usize,
        )
        .await?;
    c.retain(|r| !r.is_expired(now));
    Ok(Arc::new(c))
}

/// Whether `candidate_text` may be the original of a call with `query_text` for some cosine:
/// false only when the pair is distinct whatever the embeddings say (a changed value, name or
/// role inside the text). The engine embeds a call only when some candidate may match, so
/// this must never say false for a pair the similarity stages could call a duplicate or
/// borderline. Cheap: it runs on every candidate before any embedding.
pub fn may_match(query_text: &str, candidate_text: &str, _settings: &SessionSettings) -> bool {
    !candidate_text.is_empty() && text::compare(query_text, candidate_text).conflict.is_none()
}

/// One stage of the funnel.
#[async_trait]
pub trait Stage: Send + Sync {
    /// Which stage this is.
    fn kind(&self) -> StageKind;
    /// Least time the stage needs to be worth starting.
    fn min_budget(&self) -> Duration {
        Duration::ZERO
    }
    /// Certain stages (key, exact) run whatever the time left: they cost microseconds, and
    /// skipping them would let an exact repeat through as NEW.
    fn always_runs(&self) -> bool {
        false
    }
    /// Looks for the call's original.
    async fn run(&self, ctx: &mut CheckContext) -> Result<Finding, IdemError>;
}

/// What the funnel concluded.
#[derive(Debug, Clone)]
pub struct FunnelResult {
    /// The original, if a stage found one (or a borderline match settled by policy later).
    pub finding: Finding,
    pub stop: StopReason,
    pub reports: Vec<StageReport>,
}

/// The ordered stages.
#[derive(Clone)]
pub struct Funnel {
    stages: Vec<Arc<dyn Stage>>,
}

impl Funnel {
    /// A funnel of `stages`, run in the order given.
    pub fn new(stages: Vec<Arc<dyn Stage>>) -> Self {
        Self { stages }
    }

    /// Runs the stages the tool's mode enables, until one settles or time runs out.
    pub async fn run(&self, ctx: &mut CheckContext) -> Result<FunnelResult, IdemError> {
        self.run_stages(ctx, false).await
    }

    /// Runs only the certain stages (key, exact): what a check can settle without the scope's
    /// lock, because their finding (a live original) does not depend on what is reserved next.
    pub async fn run_certain(&self, ctx: &mut CheckContext) -> Result<FunnelResult, IdemError> {
        self.run_stages(ctx, true).await
    }

    async fn run_stages(
        &self,
        ctx: &mut CheckContext,
        certain_only: bool,
    ) -> Result<FunnelResult, IdemError> {
        let mut reports = Vec::new();
        for stage in &self.stages {
            if certain_only && !stage.always_runs() {
                break;
            }
            let kind = stage.kind();
            if !kind.enabled_in(ctx.mode) {
                return Ok(FunnelResult {
                    finding: pending(ctx),
                    stop: StopReason::Mode,
                    reports,
                });
            }
            if kind == StageKind::Verify && ctx.borderline.is_none() {
                continue;
            }
            let remaining = ctx.remaining();
            if !stage.always_runs() && (remaining.is_zero() || remaining < stage.min_budget()) {
                reports.push(StageReport {
                    stage: kind,
                    micros: 0,
                    outcome: "deadline".into(),
                    best_score: None,
                    eligible_score: None,
                });
                return Ok(FunnelResult {
                    finding: pending(ctx),
                    stop: StopReason::Deadline,
                    reports,
                });
            }
            ctx.best_score = None;
            ctx.eligible_score = None;
            ctx.note = None;
            let started = std::time::Instant::now();
            let finding = stage.run(ctx).await?;
            let micros = started.elapsed().as_micros() as u64;
            let outcome = match (&finding, &ctx.note) {
                (_, Some(n)) => n.clone(),
                (Finding::Pass, None) => "no_match".into(),
                (Finding::Found(_), None) => "match".into(),
                (Finding::Borderline(_), None) => "borderline".into(),
            };
            reports.push(StageReport {
                stage: kind,
                micros,
                outcome,
                best_score: ctx.best_score,
                eligible_score: ctx.eligible_score,
            });
            match finding {
                Finding::Pass => {}
                Finding::Found(f) => {
                    return Ok(FunnelResult {
                        finding: Finding::Found(f),
                        stop: StopReason::Settled,
                        reports,
                    });
                }
                Finding::Borderline(f) => ctx.borderline = Some(f),
            }
        }
        let stop = if ctx.borderline.is_some() {
            StopReason::Policy
        } else {
            StopReason::Settled
        };
        Ok(FunnelResult {
            finding: pending(ctx),
            stop,
            reports,
        })
    }
}

fn pending(ctx: &CheckContext) -> Finding {
    match &ctx.borderline {
        Some(b) => Finding::Borderline(b.clone()),
        None => Finding::Pass,
    }
}
