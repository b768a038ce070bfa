//! The funnel: ordered stages, cheap and certain first, each of which may settle the verdict.
//!
//! A stage looks at the call in canonical form and at earlier records of its scope, and says
//! whether it found the call's original (`Found`), a possible one it cannot settle
//! (`Borderline`), or nothing (`Pass`). The funnel runs stages in order, checks the time left
//! before each one, and records what each did. It does not write: the engine turns the funnel's
//! finding into a verdict and a reservation.

pub mod alignment;
mod exact;
pub mod features;
mod fuzzy;
pub mod judge;
mod key;
mod semantic;
pub mod text;
pub mod text_cache;
mod verify;

pub use exact::ExactStage;
pub use fuzzy::{FuzzyScan, FuzzyStage, scan as fuzzy_scan};
pub use judge::{Judge, Judgement, MatchFilter, may_match};
pub use key::KeyStage;
pub use semantic::SemanticStage;
pub use text::PreparedText;
pub use text_cache::{CandidateText, TextCache};
pub use verify::{Verifier, VerifyStage};

use std::sync::{Arc, OnceLock};
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

/// What a stage concluded, named once (`as_str` is the wire form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageOutcome {
    /// The stage found the call's original.
    Match,
    /// No candidate matched.
    NoMatch,
    /// A possible original the stage cannot settle.
    Borderline,
    /// No identity-equal candidate to compare with.
    NoCandidates,
    /// The check carries no idempotency key.
    Skipped,
    /// The call has no free text.
    SkippedNoFreeText,
    /// No embedder is configured.
    SkippedNoEmbedder,
    /// No time left (or the embedding missed its deadline).
    Deadline,
    /// Candidates were close, but their texts name other values.
    NoMatchValuesDiffer,
    /// The verifier is off for this session.
    Disabled,
    /// The verifier said same action.
    Yes,
    /// The verifier said different actions.
    No,
    /// The verifier did not answer in time.
    Timeout,
    /// The verifier failed.
    Error,
}

impl StageOutcome {
    /// Lower-case name, as reported in responses.
    pub fn as_str(self) -> &'static str {
        match self {
            StageOutcome::Match => "match",
            StageOutcome::NoMatch => "no_match",
            StageOutcome::Borderline => "borderline",
            StageOutcome::NoCandidates => "no_candidates",
            StageOutcome::Skipped => "skipped",
            StageOutcome::SkippedNoFreeText => "skipped_no_free_text",
            StageOutcome::SkippedNoEmbedder => "skipped_no_embedder",
            StageOutcome::Deadline => "deadline",
            StageOutcome::NoMatchValuesDiffer => "no_match_values_differ",
            StageOutcome::Disabled => "disabled",
            StageOutcome::Yes => "yes",
            StageOutcome::No => "no",
            StageOutcome::Timeout => "timeout",
            StageOutcome::Error => "error",
        }
    }
}

/// What one stage found: returned by `Stage::run`, never written into the context.
#[derive(Debug, Clone)]
pub struct StageRun {
    pub finding: Finding,
    pub outcome: StageOutcome,
    /// Best raw score seen against any candidate (fuzzy ratio, cosine).
    pub best_score: Option<f64>,
    /// The score the stage's threshold is compared with: the best fuzzy ratio among verbatim
    /// candidates; the judge's best probability among the semantic neighbours.
    pub eligible_score: Option<f64>,
    /// The closest candidate seen: (call id, score).
    pub nearest: Option<(String, f64)>,
    /// Which features decided the best pair (the judge's explanation).
    pub explain: Option<String>,
}

impl StageRun {
    /// A run that found nothing, with `outcome`.
    pub fn pass(outcome: StageOutcome) -> Self {
        Self {
            finding: Finding::Pass,
            outcome,
            best_score: None,
            eligible_score: None,
            nearest: None,
            explain: None,
        }
    }
}

/// What one stage did, for the response.
#[derive(Debug, Clone, PartialEq)]
pub struct StageReport {
    pub stage: StageKind,
    pub micros: u64,
    pub outcome: StageOutcome,
    /// Best score seen against any candidate.
    pub best_score: Option<f64>,
    /// The score the stage's threshold is compared with (see `StageRun::eligible_score`).
    /// Calibration sweeps over it.
    pub eligible_score: Option<f64>,
    /// Which features decided the best pair.
    pub explain: Option<String>,
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
    /// Candidates' texts, prepared once per call id.
    pub texts: Arc<TextCache>,
    /// The call's free text, prepared when first needed (`query_text`).
    pub query: OnceLock<Arc<PreparedText>>,
    /// Identity-equal earlier calls inside the window (loaded once, by the first stage that needs them).
    pub candidates: Option<Arc<Vec<Candidate>>>,
    /// The fuzzy scan of `candidates`, when it was done ahead of the lock.
    pub fuzzy_ahead: Option<FuzzyScan>,
    /// Embedding of the call's free text, when computed.
    pub embedding: Option<Vec<f32>>,
    /// The content words' vectors of the call's free text, from the embedding's model call
    /// (the judge's word alignment); `None` when the embedding came from a cache.
    pub words: Option<Arc<crate::embed::WordVectors>>,
    /// Set by the engine when it found, on these candidates, that none may match whatever
    /// the cosine (`may_match`), which is why it did not embed: stages need not ask again.
    pub none_comparable: bool,
    /// The closest candidate any similarity stage saw: (call id, score). Written by the
    /// funnel loop only, from what the stages returned.
    pub nearest: Option<(String, f64)>,
    /// For a tool paired with an inverse: which of its earlier calls on the resource are
    /// still in their window.
    pub window: Option<ResourceWindow>,
}

/// The window of a tool's calls on one resource, as the resource's state sets it: calls of
/// an older generation were followed by a call of the inverse tool and are never repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceWindow {
    /// The resource (`ResourceMark::key`).
    pub key: String,
    /// The generation a repeat must be of, and a NEW is recorded in.
    pub generation: u64,
    /// When the current generation began, if a call of this tool began it; `None` when a
    /// NEW begins a generation (the inverse acted last, or nothing did).
    pub started_ms: Option<Millis>,
    /// No call of this tool on the resource before this time is in the window.
    pub floor_ms: Millis,
    /// The inverse tool, when it acted on the resource last (the window is closed).
    pub closed_by: Option<String>,
}

impl ResourceWindow {
    /// Whether `r`, a call of `tool`, lies before the window (an inverse call followed it).
    pub fn excludes(&self, tool: &str, r: &Record) -> bool {
        r.tool == tool
            && r.resource
                .as_ref()
                .is_some_and(|m| m.key == self.key && m.generation != self.generation)
    }
}

impl CheckContext {
    /// Whether `r` lies before the window of this call's resource (never its original).
    pub fn outside_window(&self, r: &Record) -> bool {
        self.window
            .as_ref()
            .is_some_and(|w| w.excludes(&self.call.tool, r))
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The call's free text, prepared (once).
    pub fn query_text(&self) -> &Arc<PreparedText> {
        self.query
            .get_or_init(|| Arc::new(PreparedText::new(self.call.free_text_joined())))
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
                self.window.as_ref(),
            )
            .await?;
            self.candidates = Some(c);
        }
        Ok(self.candidates.clone().unwrap_or_default())
    }

    /// A stage's match on candidate `c`: its whole record, or `None` when it was swept since the
    /// candidates were read (or lies before the resource's window).
    pub async fn found(
        &self,
        c: &Candidate,
        stage: StageKind,
        score: f64,
    ) -> Result<Option<Found>, IdemError> {
        Ok(self
            .store
            .get(&c.id)
            .await?
            .filter(|r| !self.outside_window(r))
            .map(|record| Found {
                record,
                stage,
                score,
            }))
    }
}

/// Identity-equal earlier calls of `call` in `scope` inside the session's window at `now`
/// (and the resource's `window`, if any), newest first, unexpired.
pub async fn load_candidates(
    store: &dyn Store,
    scope: &str,
    call: &CanonicalCall,
    settings: &SessionSettings,
    now: Millis,
    window: Option<&ResourceWindow>,
) -> Result<Arc<Vec<Candidate>>, IdemError> {
    let since = (now - (settings.window_secs as i64).saturating_mul(1000))
        .max(window.map_or(Millis::MIN, |w| w.floor_ms));
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
    /// Looks for the call's original; `borderline` is what earlier stages left unsettled.
    async fn run(
        &self,
        ctx: &mut CheckContext,
        borderline: Option<&Found>,
    ) -> Result<StageRun, IdemError>;
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

    /// Runs the stages the tool's mode enables, until one settles or time runs out. The loop
    /// owns the borderline finding and the reports.
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
        let mut borderline: Option<Found> = None;
        let pending = |b: &Option<Found>| match b {
            Some(b) => Finding::Borderline(b.clone()),
            None => Finding::Pass,
        };
        for stage in &self.stages {
            if certain_only && !stage.always_runs() {
                break;
            }
            let kind = stage.kind();
            if !kind.enabled_in(ctx.mode) {
                return Ok(FunnelResult {
                    finding: pending(&borderline),
                    stop: StopReason::Mode,
                    reports,
                });
            }
            if kind == StageKind::Verify && borderline.is_none() {
                continue;
            }
            let remaining = ctx.remaining();
            if !stage.always_runs() && (remaining.is_zero() || remaining < stage.min_budget()) {
                reports.push(StageReport {
                    stage: kind,
                    micros: 0,
                    outcome: StageOutcome::Deadline,
                    best_score: None,
                    eligible_score: None,
                    explain: None,
                });
                return Ok(FunnelResult {
                    finding: pending(&borderline),
                    stop: StopReason::Deadline,
                    reports,
                });
            }
            let started = std::time::Instant::now();
            // A child span of the RPC's span per stage (no argument values in it).
            let span = tracing::debug_span!("stage", stage = kind.name());
            let run =
                tracing::Instrument::instrument(stage.run(ctx, borderline.as_ref()), span).await?;
            let micros = started.elapsed().as_micros() as u64;
            // The later similarity stage's neighbour is the better "nearest" for feedback.
            if run.nearest.is_some() {
                ctx.nearest = run.nearest.clone();
            }
            reports.push(StageReport {
                stage: kind,
                micros,
                outcome: run.outcome,
                best_score: run.best_score,
                eligible_score: run.eligible_score,
                explain: run.explain,
            });
            match run.finding {
                Finding::Pass => {
                    // A verifier that answered settles the borderline either way.
                    if matches!(run.outcome, StageOutcome::No) {
                        borderline = None;
                    }
                }
                Finding::Found(f) => {
                    return Ok(FunnelResult {
                        finding: Finding::Found(f),
                        stop: StopReason::Settled,
                        reports,
                    });
                }
                Finding::Borderline(f) => {
                    if borderline.is_none() {
                        borderline = Some(f);
                    }
                }
            }
        }
        let stop = if borderline.is_some() {
            StopReason::Policy
        } else {
            StopReason::Settled
        };
        Ok(FunnelResult {
            finding: pending(&borderline),
            stop,
            reports,
        })
    }
}
