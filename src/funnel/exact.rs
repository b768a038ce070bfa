//! EXACT stage: the hash of tool + canonical form, matched in the scope.

use async_trait::async_trait;

use super::{CheckContext, Finding, Found, Stage, StageKind, StageOutcome, StageRun};
use crate::error::IdemError;

/// Matches calls whose canonical form is identical: a repeat, whatever key order, whitespace,
/// number form or metadata fields it was sent with.
pub struct ExactStage;

#[async_trait]
impl Stage for ExactStage {
    fn kind(&self) -> StageKind {
        StageKind::Exact
    }

    fn always_runs(&self) -> bool {
        true
    }

    async fn run(
        &self,
        ctx: &mut CheckContext,
        _borderline: Option<&Found>,
    ) -> Result<StageRun, IdemError> {
        let Some(record) = ctx
            .store
            .latest_by_exact(&ctx.match_scope, &ctx.call.exact_hash)
            .await?
        else {
            return Ok(StageRun::pass(StageOutcome::NoMatch));
        };
        if record.is_expired(ctx.now) || record.tool != ctx.call.tool || ctx.outside_window(&record)
        {
            return Ok(StageRun::pass(StageOutcome::NoMatch));
        }
        Ok(StageRun {
            finding: Finding::Found(Found {
                record,
                stage: StageKind::Exact,
                score: 1.0,
            }),
            outcome: StageOutcome::Match,
            best_score: Some(1.0),
            eligible_score: None,
            nearest: None,
            explain: None,
        })
    }
}
