//! ReportFeedback and ExportPairs: judged verdicts become labelled pairs for `idem calibrate`.

use serde_json::{Value, json};

use super::{CheckOutcome, CheckRequest, Engine, Verdict, validate};
use crate::error::IdemError;
use crate::store::{CheckLog, Feedback};

/// Verdict log entries buffered at most; past it new entries are dropped (with a warning).
pub(crate) const CHECK_LOG_BUFFER: usize = 100_000;

/// Judged pairs, in the calibration format.
#[derive(Debug, Clone, Default)]
pub struct Export {
    /// One JSON object per pair.
    pub pairs: Vec<Value>,
    /// Judgements that could not become a pair.
    pub skipped: u32,
}

/// The NOT_FOUND of an unknown verdict id (also what another tenant's caller gets).
pub fn unknown_verdict(check_id: &str) -> IdemError {
    IdemError::NotFound(format!(
        "no verdict {check_id:?} to judge: pass the check_id (or call_id of a NEW) from CheckResponse"
    ))
}

impl Engine {
    /// Logs a non-NEW verdict so feedback can name it later.
    pub(crate) fn log_check(&self, req: &CheckRequest, out: &CheckOutcome, ttl_ms: i64) {
        let now = self.clock.now_ms();
        let entry = CheckLog {
            check_id: out.check_id.clone(),
            tenant: req.tenant.clone(),
            session: req.session.clone(),
            tool: req.tool.clone(),
            arguments_json: req.arguments_json.clone(),
            verdict: out.verdict.name().to_string(),
            matched_call_id: out.call_id.clone(),
            stage: out.matched.map(|(s, _)| s.name().to_string()),
            score: out.matched.map(|(_, s)| s),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms),
        };
        match self.check_log.lock() {
            Ok(mut g) if g.len() < CHECK_LOG_BUFFER => g.push(entry),
            Ok(_) => tracing::warn!(
                "verdict log buffer full; a verdict will not be available for feedback"
            ),
            Err(_) => tracing::warn!("verdict log lock poisoned"),
        }
    }

    /// Writes buffered verdict log entries to the store.
    pub async fn flush_check_log(&self) -> Result<(), IdemError> {
        let batch = match self.check_log.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(_) => return Ok(()),
        };
        if !batch.is_empty() {
            self.store.put_checks(&batch).await?;
        }
        Ok(())
    }

    /// The tenant of a verdict (a check id, or a call id for its NEW), for ownership checks.
    pub async fn verdict_tenant(&self, check_id: &str) -> Result<Option<String>, IdemError> {
        validate::name("call_id", check_id)?;
        self.flush_check_log().await?;
        if let Some(c) = self.store.get_check(check_id).await? {
            return Ok(Some(c.tenant));
        }
        Ok(self.store.get(check_id).await?.map(|r| r.tenant))
    }

    /// Records whether the verdict of `check_id` (a check id, or a call id for its NEW) was right.
    pub async fn report_feedback(
        &self,
        check_id: &str,
        correct: bool,
        note: &str,
    ) -> Result<(), IdemError> {
        validate::name("call_id", check_id)?;
        self.flush_check_log().await?;
        let tenant = match self.store.get_check(check_id).await? {
            Some(c) => c.tenant,
            None => match self.store.get(check_id).await? {
                Some(r) => r.tenant,
                None => return Err(unknown_verdict(check_id)),
            },
        };
        let f = Feedback {
            check_id: check_id.to_string(),
            tenant,
            correct,
            note: note.to_string(),
            at_ms: self.clock.now_ms(),
        };
        self.store.put_feedback(&f).await?;
        Ok(())
    }

    /// The tenant's judged verdicts as labelled pairs: `a` the earlier call the verdict named
    /// (or, for NEW, the nearest one), `b` the judged call; `duplicate` is what the verdict
    /// claimed if it was right, the opposite if it was wrong.
    pub async fn export_pairs(&self, tenant: &str, since: i64) -> Result<Export, IdemError> {
        validate::name("tenant", tenant)?;
        self.flush_check_log().await?;
        let mut out = Export::default();
        for f in self.store.list_feedback(tenant, since).await? {
            let pair = match self.store.get_check(&f.check_id).await? {
                Some(c) => {
                    let Some(orig) = self.store.get(&c.matched_call_id).await? else {
                        out.skipped += 1;
                        continue;
                    };
                    let claimed_dup = c.verdict != Verdict::New.name();
                    Some((
                        orig.tool,
                        orig.arguments_json,
                        c.tool,
                        c.arguments_json,
                        claimed_dup,
                        c.verdict,
                    ))
                }
                None => match self.store.get(&f.check_id).await? {
                    Some(r) => match r.nearest_call_id.as_deref() {
                        Some(n) => match self.store.get(n).await? {
                            Some(orig) => Some((
                                orig.tool,
                                orig.arguments_json,
                                r.tool,
                                r.arguments_json,
                                false,
                                "NEW".into(),
                            )),
                            None => None,
                        },
                        None => None,
                    },
                    None => None,
                },
            };
            let Some((ta, aa, tb, ab, claimed_dup, verdict)) = pair else {
                out.skipped += 1;
                continue;
            };
            let parse =
                |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::String(s.to_string()));
            out.pairs.push(json!({
                "id": f.check_id,
                "a": {"tool": ta, "args": parse(&aa)},
                "b": {"tool": tb, "args": parse(&ab)},
                "duplicate": if f.correct { claimed_dup } else { !claimed_dup },
                "kind": format!("feedback_{}_{}", verdict.to_lowercase(), if f.correct { "right" } else { "wrong" }),
                "source": "feedback",
                "note": f.note,
            }));
        }
        Ok(out)
    }
}
