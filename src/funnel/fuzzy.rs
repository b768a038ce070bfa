//! FUZZY stage: string similarity of free text among identity-equal candidates.

use async_trait::async_trait;

use super::text::{compare, fuzzy_form, similarity, similarity_bound};
use super::{CheckContext, Finding, Stage, StageKind};
use crate::error::IdemError;

/// Settles near-verbatim repeats (typo fixes, punctuation, casing, a word added) without an
/// embedding. Normalized Levenshtein over lower-cased words: order-aware, so a swap scores low;
/// see `text` for why this measure and for the conflict checks that run before any match.
pub struct FuzzyStage;

/// Newest candidates scored for the best-score report (unless they cannot beat the best so
/// far); older ones only when they can reach the threshold.
const ALWAYS_SCORED: usize = 16;
/// Candidates the fuzzy stage looks at, newest first. Near-verbatim retries follow their
/// original closely; older calls are left to the semantic stage's index, which scales.
const MAX_SCANNED: usize = 256;

#[async_trait]
impl Stage for FuzzyStage {
    fn kind(&self) -> StageKind {
        StageKind::Fuzzy
    }

    async fn run(&self, ctx: &mut CheckContext) -> Result<Finding, IdemError> {
        let text = ctx.call.free_text_joined().to_string();
        if text.is_empty() {
            ctx.note = Some("skipped_no_free_text".into());
            return Ok(Finding::Pass);
        }
        let threshold = ctx.settings.fuzzy_threshold;
        let query = fuzzy_form(&text);
        let candidates = ctx.candidates().await?;
        let mut best: Option<(f64, usize)> = None;
        let mut best_any = 0.0f64;
        let mut eligible: Option<f64> = None;
        let mut best_any_at: Option<usize> = None;
        for (i, c) in candidates.iter().enumerate().take(MAX_SCANNED) {
            if c.free_text.is_empty() {
                continue;
            }
            let other = fuzzy_form(&c.free_text);
            // Skip pairs whose character counts alone rule out what they could change: past the
            // newest few a match, among those the best scores too.
            let bound = similarity_bound(&query, &other);
            let skip = if i >= ALWAYS_SCORED {
                bound < threshold
            } else {
                best_any_at.is_some() && bound <= best_any && eligible.is_some_and(|e| bound <= e)
            };
            if skip {
                continue;
            }
            let s = similarity(&query, &other);
            if best_any_at.is_none() || s > best_any {
                best_any = s;
                best_any_at = Some(i);
            }
            if eligible.is_none_or(|e| s > e) {
                let rel = compare(&text, &c.free_text);
                if rel.conflict.is_none() && !rel.reordered {
                    eligible = Some(s);
                    if s >= threshold {
                        best = Some((s, i));
                    }
                }
            }
        }
        let n = candidates.len();
        ctx.best_score = (n > 0).then_some(best_any);
        if let Some(i) = best_any_at {
            ctx.nearest = Some((candidates[i].id.clone(), best_any));
        }
        ctx.eligible_score = eligible;
        match best {
            Some((score, i)) => Ok(ctx
                .found(&candidates[i], StageKind::Fuzzy, score)
                .await?
                .map_or(Finding::Pass, Finding::Found)),
            None => {
                if n == 0 {
                    ctx.note = Some("no_candidates".into());
                }
                Ok(Finding::Pass)
            }
        }
    }
}
