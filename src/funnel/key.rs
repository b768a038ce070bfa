//! KEY stage: the client's idempotency key, matched exactly in the scope.

use async_trait::async_trait;

use super::{CheckContext, Finding, Found, Stage, StageKind, StageOutcome, StageRun};
use crate::config::KeyMismatch;
use crate::error::IdemError;

/// Matches a client idempotency key. The same key with a different canonical payload is an
/// error (FAILED_PRECONDITION), never a silent replay: the client reused a key by mistake;
/// unless the session's `key_mismatch` is `replay`, where the key decides alone.
pub struct KeyStage;

#[async_trait]
impl Stage for KeyStage {
    fn kind(&self) -> StageKind {
        StageKind::Key
    }

    fn always_runs(&self) -> bool {
        true
    }

    async fn run(
        &self,
        ctx: &mut CheckContext,
        _borderline: Option<&Found>,
    ) -> Result<StageRun, IdemError> {
        let Some(key) = ctx.idempotency_key.clone() else {
            return Ok(StageRun::pass(StageOutcome::Skipped));
        };
        let Some(record) = ctx.store.latest_by_key(&ctx.match_scope, &key).await? else {
            return Ok(StageRun::pass(StageOutcome::NoMatch));
        };
        // A call an inverse call followed is not repeated, whatever key it carried.
        if record.is_expired(ctx.now) || ctx.outside_window(&record) {
            return Ok(StageRun::pass(StageOutcome::NoMatch));
        }
        if record.exact_hash != ctx.call.exact_hash
            && ctx.settings.key_mismatch == KeyMismatch::Reject
        {
            return Err(IdemError::FailedPrecondition(format!(
                "idempotency key {key:?} was already used for a different call (call {}, tool {:?}, arguments {}); \
                 use a new key for a different call",
                record.id, record.tool, record.canonical_json
            )));
        }
        Ok(StageRun {
            finding: Finding::Found(Found {
                record,
                stage: StageKind::Key,
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
