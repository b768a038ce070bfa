//! Complete, GetCall, ListCalls, GetStats.

use super::{CompleteRequest, Engine, Outcome, validate};
use crate::error::IdemError;
use crate::record::{CallStatus, Record};
use crate::store::{ListQuery, Page, SEP, StatsDelta, StatsSnapshot};

/// Largest page ListCalls returns.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Page size when the request sets none.
pub const DEFAULT_PAGE_SIZE: usize = 100;

impl Engine {
    /// Records the outcome of a call answered NEW. Idempotent for the same outcome; a different
    /// outcome after the first is refused.
    pub async fn complete(&self, req: CompleteRequest) -> Result<Record, IdemError> {
        validate::name("call_id", &req.call_id)?;
        if let Some(c) = req.cost
            && (!c.is_finite() || c < 0.0)
        {
            return Err(IdemError::InvalidArgument(format!(
                "cost must be a finite number >= 0, got {c}"
            )));
        }
        let (status, result_json, error) = match &req.outcome {
            Outcome::Succeeded { result_json } => {
                validate::payload("result_json", result_json, self.config.max_payload_bytes)?;
                validate::json("result_json", result_json)?;
                (CallStatus::Succeeded, Some(result_json.clone()), None)
            }
            Outcome::Failed { error } => {
                validate::payload("error", error, self.config.max_payload_bytes)?;
                (CallStatus::Failed, None, Some(error.clone()))
            }
        };
        let Some(record) = self.store.get(&req.call_id).await? else {
            return Err(unknown_call(&req.call_id));
        };
        let _guard = self.lock_for(&record.match_scope).lock().await;
        // Re-read under the lock: a concurrent Complete may have landed.
        let Some(mut record) = self.store.get(&req.call_id).await? else {
            return Err(unknown_call(&req.call_id));
        };
        match record.status {
            CallStatus::InProgress => {}
            s if s == status => return Ok(record),
            s => {
                return Err(IdemError::FailedPrecondition(format!(
                    "call {} was already completed as {}; it cannot be completed as {}",
                    record.id,
                    status_name(s),
                    status_name(status)
                )));
            }
        }
        let now = self.clock.now_ms();
        record.status = status;
        record.result_json = result_json;
        record.error = error;
        record.cost = req.cost;
        record.updated_at_ms = now;
        self.store.update(&record).await?;
        Ok(record)
    }

    /// One record by id.
    pub async fn get_call(&self, call_id: &str) -> Result<Record, IdemError> {
        validate::name("call_id", call_id)?;
        self.store
            .get(call_id)
            .await?
            .ok_or_else(|| unknown_call(call_id))
    }

    /// The intent log of a session, newest first.
    pub async fn list_calls(
        &self,
        tenant: &str,
        session: &str,
        status: Option<CallStatus>,
        page_size: usize,
        page_token: Option<String>,
    ) -> Result<Page, IdemError> {
        validate::name("tenant", tenant)?;
        validate::name("session", session)?;
        if let Some(t) = &page_token
            && uuid::Uuid::parse_str(t).is_err()
        {
            return Err(IdemError::InvalidArgument(format!(
                "page_token {t:?} is not a token this server issued; pass next_page_token from the previous page"
            )));
        }
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let q = ListQuery {
            tenant: tenant.into(),
            session: session.into(),
            status,
            page_size,
            page_token,
        };
        Ok(self.store.list(&q).await?)
    }

    /// Counters of a session, or of the whole tenant.
    pub async fn stats(
        &self,
        tenant: &str,
        session: Option<&str>,
    ) -> Result<StatsSnapshot, IdemError> {
        validate::name("tenant", tenant)?;
        if let Some(s) = session {
            validate::name("session", s)?;
        }
        self.flush_stats().await?;
        Ok(self.store.stats(tenant, session).await?)
    }

    /// Buffers one check's counters (flushed to the store every second and on GetStats).
    pub(crate) fn record_stats(&self, tenant: &str, session: &str, delta: &StatsDelta) {
        let k = format!("{tenant}{SEP}{session}");
        let mut snap = StatsSnapshot::default();
        snap.apply(delta);
        self.stats.entry(k).or_default().merge(&snap);
    }
}

/// The NOT_FOUND of an unknown call id (also what a caller gets for another tenant's call, so
/// ids cannot be probed).
pub fn unknown_call(call_id: &str) -> IdemError {
    IdemError::NotFound(format!(
        "unknown call id {call_id:?} (never recorded, or expired and swept)"
    ))
}

/// Upper-case status name, as on the wire.
pub fn status_name(s: CallStatus) -> &'static str {
    match s {
        CallStatus::InProgress => "IN_PROGRESS",
        CallStatus::Succeeded => "SUCCEEDED",
        CallStatus::Failed => "FAILED",
    }
}
