//! SEMANTIC stage: the nearest identity-equal candidates by embedding cosine, each judged.
//!
//! The stage's score (match score, `eligible_score`) is the judge's calibrated probability;
//! `best_score` stays the best raw cosine.

use std::sync::Arc;

use async_trait::async_trait;

use super::alignment::{WordSims, align};
use super::features::measure_prepared;
use super::judge::{Judge, MatchFilter};
use super::{CheckContext, Finding, Found, Stage, StageKind, StageOutcome, StageRun};
use crate::error::IdemError;
use crate::index::ScopeIndexes;

/// Nearest neighbours examined per check.
const TOP_K: usize = 8;

/// Catches the repeat that says the same thing in other words. Only identity-equal candidates
/// are searched; each of the nearest neighbours is judged (`funnel::judge`: cosine and text
/// features to a calibrated probability), and the most probable one is a duplicate at or above
/// `semantic_duplicate`, borderline at or above `semantic_borderline`. A hard conflict (other
/// values in the text, swapped directions) gives probability 0.
pub struct SemanticStage {
    indexes: Arc<ScopeIndexes>,
    /// Whether an embedder is configured at all (else the stage says it is skipped).
    embedder: bool,
    judge: &'static Judge,
}

impl SemanticStage {
    /// The stage over the per-scope vector indexes (the engine embeds the call before),
    /// judged by the shipped model.
    pub fn new(indexes: Arc<ScopeIndexes>, embedder: bool) -> Self {
        // The model is compiled in (include_str!) and `judge::tests::shipped_model_loads`
        // checks it parses: a failure here is a build defect, found at start-up.
        let judge = Judge::shipped().expect("the shipped judge model parses (tested at build)");
        Self {
            indexes,
            embedder,
            judge,
        }
    }
}

#[async_trait]
impl Stage for SemanticStage {
    fn kind(&self) -> StageKind {
        StageKind::Semantic
    }

    async fn run(
        &self,
        ctx: &mut CheckContext,
        _borderline: Option<&Found>,
    ) -> Result<StageRun, IdemError> {
        if ctx.call.free_text_joined().is_empty() {
            return Ok(StageRun::pass(StageOutcome::SkippedNoFreeText));
        }
        if !self.embedder {
            return Ok(StageRun::pass(StageOutcome::SkippedNoEmbedder));
        }
        let candidates = ctx.candidates().await?;
        if candidates.is_empty() {
            return Ok(StageRun::pass(StageOutcome::NoCandidates));
        }
        let text = ctx.query_text().clone();
        let Some(query) = ctx.embedding.clone() else {
            // Not embedded: time ran out, or no candidate may match whatever the cosine (the
            // engine then skips the model); say why for the newest one.
            let filter = MatchFilter::new(&text, &ctx.settings);
            if !ctx.none_comparable
                && candidates
                    .iter()
                    .any(|c| filter.may_match(&ctx.texts.get(c).text))
            {
                return Ok(StageRun::pass(StageOutcome::Deadline));
            }
            let t = measure_prepared(&text, &ctx.texts.get(&candidates[0]).text);
            let mut run = StageRun::pass(if t.conflict.is_some() {
                StageOutcome::NoMatchValuesDiffer
            } else {
                StageOutcome::NoMatch
            });
            run.explain = Some(format!(
                "not embedded: distinct at any cosine ({})",
                self.judge.judge(&t, 1.0).explain()
            ));
            return Ok(run);
        };
        // Vector ids are hash-derived already: the cheap Fx hasher is enough. The prepared
        // texts carry them (kept from the filter that ran before the embedding).
        let prepared: Vec<_> = candidates.iter().map(|c| ctx.texts.get(c)).collect();
        let by_vid: rustc_hash::FxHashMap<u64, usize> = prepared
            .iter()
            .enumerate()
            .map(|(i, t)| (t.vid, i))
            .collect();
        let hits = self
            .indexes
            .search(&ctx.match_scope, &query, TOP_K.min(by_vid.len()), &|vid| {
                by_vid.contains_key(&vid)
            })
            .unwrap_or_else(|e| {
                tracing::error!(%e, "vector search failed");
                Vec::new()
            });
        let (dup, border) = (
            ctx.settings.semantic_duplicate,
            ctx.settings.semantic_borderline,
        );
        let mut run = StageRun::pass(StageOutcome::NoMatch);
        run.best_score = hits.first().map(|(_, c)| f64::from(*c));
        if let Some((vid, c)) = hits.first()
            && let Some(&i) = by_vid.get(vid)
        {
            run.nearest = Some((candidates[i].id.clone(), f64::from(*c)));
        }
        // Every judged neighbour: (probability, candidate index, explanation).
        let mut judged: Vec<(f64, usize, String)> = Vec::new();
        let mut conflicts = 0;
        for (vid, cos) in hits {
            let Some(&i) = by_vid.get(&vid) else { continue };
            let cos = f64::from(cos).clamp(-1.0, 1.0);
            let t = measure_prepared(&text, &prepared[i].text);
            if t.conflict.is_some() {
                conflicts += 1;
            }
            // The word alignment, when both texts' word vectors are at hand (the call's from
            // its own embedding, the candidate's from the word cache); else the base model.
            let alignment = match (&ctx.words, self.judge.has_alignment()) {
                (Some(q), true) if t.conflict.is_none() => ctx
                    .texts
                    .words(&candidates[i])
                    .map(|c| align(&WordSims::between(q, &c.words))),
                _ => None,
            };
            let j = self.judge.judge_aligned(&t, cos, alignment.as_ref());
            let mut explain = j.explain();
            if let Some((word, c)) = alignment.as_ref().and_then(|a| a.worst.as_ref())
                && j.deciding.iter().any(|(n, _)| n.starts_with("align_"))
            {
                explain.push_str(&format!(" (least aligned word: {word:?} at {c:.2})"));
            }
            judged.push((j.probability, i, explain));
        }
        // Most probable first; stable, so ties keep the search's order.
        judged.sort_by(|a, b| b.0.total_cmp(&a.0));
        let Some((p, _, explain)) = judged.first() else {
            return Ok(run);
        };
        run.eligible_score = Some(*p);
        run.explain = Some(explain.clone());
        // The most probable neighbour whose record is still there: one that is gone (a NEW
        // whose commit failed, or swept since the candidates were read) must not hide the
        // next one.
        for (p, i, explain) in judged.into_iter().take_while(|(p, _, _)| *p >= border) {
            let Some(found) = ctx.found(&candidates[i], StageKind::Semantic, p).await? else {
                continue;
            };
            run.eligible_score = Some(p);
            run.explain = Some(explain);
            if p >= dup {
                run.finding = Finding::Found(found);
                run.outcome = StageOutcome::Match;
            } else {
                run.finding = Finding::Borderline(found);
                run.outcome = StageOutcome::Borderline;
            }
            return Ok(run);
        }
        if conflicts > 0 {
            run.outcome = StageOutcome::NoMatchValuesDiffer;
        }
        Ok(run)
    }
}
