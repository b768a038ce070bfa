//! FUZZY stage: string similarity of free text among identity-equal candidates.

use async_trait::async_trait;

use super::features::measure_prepared;
use super::text::{PreparedText, similarity, similarity_bound};
use super::text_cache::TextCache;
use super::{CheckContext, Finding, Found, Stage, StageKind, StageOutcome, StageRun};
use crate::error::IdemError;
use crate::store::Candidate;

/// Settles near-verbatim repeats (typo fixes, punctuation, casing, inflection, a function word
/// added) without an embedding. Normalized Levenshtein over lower-cased words: order-aware, so
/// a swap scores low. Only a *verbatim* pair may match here (`TextFeatures::verbatim`: every
/// content word aligned, same order, same polarity, same names and values): a near-copy that
/// changes one content word ("go" / "onnx") is left to the judge in the semantic stage.
pub struct FuzzyStage;

/// Newest candidates scored for the best-score report (unless they cannot beat the best so
/// far); older ones only when they can reach the threshold.
const ALWAYS_SCORED: usize = 8;
/// Candidates the fuzzy stage looks at, newest first. Near-verbatim retries follow their
/// original closely; older calls are left to the semantic stage's index, which scales (a
/// near-verbatim repeat is also a semantic one) and costs no CPU while the embedder needs it.
const MAX_SCANNED: usize = 64;

#[async_trait]
impl Stage for FuzzyStage {
    fn kind(&self) -> StageKind {
        StageKind::Fuzzy
    }

    async fn run(
        &self,
        ctx: &mut CheckContext,
        _borderline: Option<&Found>,
    ) -> Result<StageRun, IdemError> {
        if ctx.call.free_text_joined().is_empty() {
            return Ok(StageRun::pass(StageOutcome::SkippedNoFreeText));
        }
        let threshold = ctx.settings.fuzzy_threshold;
        let candidates = ctx.candidates().await?;
        let scan = match ctx.fuzzy_ahead.take() {
            Some(s) if s.threshold == threshold && s.scanned_of == candidates.len() => s,
            _ => scan(ctx.query_text(), &candidates, threshold, &ctx.texts),
        };
        let n = candidates.len();
        let mut run = StageRun::pass(if n == 0 {
            StageOutcome::NoCandidates
        } else {
            StageOutcome::NoMatch
        });
        run.best_score = (n > 0).then(|| scan.best_any.map_or(0.0, |(s, _)| s));
        run.nearest = scan.best_any.map(|(s, i)| (candidates[i].id.clone(), s));
        run.eligible_score = scan.eligible;
        if let Some((score, i)) = scan.matched
            && let Some(found) = ctx.found(&candidates[i], StageKind::Fuzzy, score).await?
        {
            run.finding = Finding::Found(found);
            run.outcome = StageOutcome::Match;
        }
        Ok(run)
    }
}

/// What a fuzzy scan of a candidate list found: a pure function of the text, the list and the
/// threshold, so it can run while the embedding is computed (see the engine).
#[derive(Debug, Clone, PartialEq)]
pub struct FuzzyScan {
    threshold: f64,
    /// Length of the candidate list scanned (the indexes below point into it).
    scanned_of: usize,
    /// Best score against any candidate scored, and its index.
    best_any: Option<(f64, usize)>,
    /// Best score among verbatim candidates (the only ones this stage may match).
    eligible: Option<f64>,
    /// The eligible candidate at or above the threshold with the best score, if any.
    matched: Option<(f64, usize)>,
}

impl FuzzyScan {
    /// Whether an eligible candidate reached the threshold: the fuzzy stage will settle.
    pub fn settles(&self) -> bool {
        self.matched.is_some()
    }
}

/// Scores `query` against `candidates` (newest first, their texts prepared through `texts`)
/// with the fuzzy measure.
pub fn scan(
    query: &PreparedText,
    candidates: &[Candidate],
    threshold: f64,
    texts: &TextCache,
) -> FuzzyScan {
    let q = query.fuzzy_form();
    let mut out = FuzzyScan {
        threshold,
        scanned_of: candidates.len(),
        best_any: None,
        eligible: None,
        matched: None,
    };
    for (i, c) in candidates.iter().enumerate().take(MAX_SCANNED) {
        if c.free_text.is_empty() {
            continue;
        }
        let prepared = texts.get(c);
        let other = prepared.text.fuzzy_form();
        // Skip pairs whose character counts alone rule out what they could change: past the
        // newest few a match, among those the best scores too.
        let bound = similarity_bound(q, other);
        let skip = if i >= ALWAYS_SCORED {
            bound < threshold
        } else {
            out.best_any.is_some_and(|(b, _)| bound <= b)
                && out.eligible.is_some_and(|e| bound <= e)
        };
        if skip {
            continue;
        }
        let s = similarity(q, other);
        if out.best_any.is_none_or(|(b, _)| s > b) {
            out.best_any = Some((s, i));
        }
        if out.eligible.is_none_or(|e| s > e) && measure_prepared(query, &prepared.text).verbatim()
        {
            out.eligible = Some(s);
            if s >= threshold {
                out.matched = Some((s, i));
            }
        }
    }
    out
}
