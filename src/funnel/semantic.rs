//! SEMANTIC stage: cosine of free-text embeddings among identity-equal candidates.

use std::sync::Arc;

use async_trait::async_trait;

use super::text::compare;
use super::{CheckContext, Finding, Found, Stage, StageKind};
use crate::error::IdemError;
use crate::index::ScopeIndexes;
use crate::record::vector_id;

/// Nearest neighbours examined per check.
const TOP_K: usize = 8;

/// Catches the repeat that says the same thing in other words. Only identity-equal candidates
/// are searched, and a candidate whose text names other values (see `text::Conflict`) is
/// never a match; a reordering of the same words is at most borderline.
pub struct SemanticStage {
    indexes: Arc<ScopeIndexes>,
    /// Whether an embedder is configured at all (else the stage says it is skipped).
    embedder: bool,
}

impl SemanticStage {
    /// The stage over the per-scope vector indexes (the engine embeds the call before).
    pub fn new(indexes: Arc<ScopeIndexes>, embedder: bool) -> Self {
        Self { indexes, embedder }
    }
}

#[async_trait]
impl Stage for SemanticStage {
    fn kind(&self) -> StageKind {
        StageKind::Semantic
    }

    async fn run(&self, ctx: &mut CheckContext) -> Result<Finding, IdemError> {
        let text = ctx.call.free_text_joined().to_string();
        if text.is_empty() {
            ctx.note = Some("skipped_no_free_text".into());
            return Ok(Finding::Pass);
        }
        if !self.embedder {
            ctx.note = Some("skipped_no_embedder".into());
            return Ok(Finding::Pass);
        }
        let candidates = ctx.candidates().await?;
        if candidates.is_empty() {
            ctx.note = Some("no_candidates".into());
            return Ok(Finding::Pass);
        }
        let Some(query) = ctx.embedding.clone() else {
            // Not embedded: either no candidate may match (nothing to compare), or time ran out.
            let comparable = candidates
                .iter()
                .any(|c| super::may_match(&text, &c.free_text, &ctx.settings));
            ctx.note = Some(
                if comparable {
                    "deadline"
                } else {
                    "no_match_values_differ"
                }
                .into(),
            );
            return Ok(Finding::Pass);
        };
        // Vector ids are hash-derived already: the cheap Fx hasher is enough.
        let by_vid: rustc_hash::FxHashMap<u64, usize> = candidates
            .iter()
            .enumerate()
            .map(|(i, r)| (vector_id(&r.id), i))
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
        ctx.best_score = hits.first().map(|(_, c)| f64::from(*c));
        // The semantic neighbour is the better "nearest" for feedback on a NEW verdict.
        if let Some((vid, c)) = hits.first()
            && let Some(&i) = by_vid.get(vid)
        {
            ctx.nearest = Some((candidates[i].id.clone(), f64::from(*c)));
        }
        let mut borderline: Option<Found> = None;
        let mut conflicts = 0;
        for (vid, cos) in hits {
            let Some(&i) = by_vid.get(&vid) else { continue };
            let cos = f64::from(cos).clamp(-1.0, 1.0);
            let candidate = &candidates[i];
            let rel = compare(&text, &candidate.free_text);
            if rel.conflict.is_some() {
                conflicts += 1;
                continue;
            }
            if !rel.reordered && ctx.eligible_score.is_none() {
                ctx.eligible_score = Some(cos);
            }
            if cos < border {
                break;
            }
            if cos >= dup && !rel.reordered {
                if let Some(found) = ctx.found(candidate, StageKind::Semantic, cos).await? {
                    return Ok(Finding::Found(found));
                }
            } else if borderline.is_none() {
                borderline = ctx.found(candidate, StageKind::Semantic, cos).await?;
            }
        }
        if borderline.is_none() && conflicts > 0 {
            ctx.note = Some("no_match_values_differ".into());
        }
        Ok(borderline.map_or(Finding::Pass, Finding::Borderline))
    }
}
