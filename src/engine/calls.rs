//! Complete, GetCall, ListCalls, GetStats.

use std::time::Duration;

use super::{CompleteRequest, Engine, Outcome, validate};
use crate::error::IdemError;
use crate::record::{CallStatus, Record};
use crate::store::{ListQuery, Page, SEP, StatsDelta, StatsSnapshot};

/// Largest page ListCalls returns.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Page size when the request sets none.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Longest WaitForCall.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// Wait when WaitForCall names none.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// How often a wait reads the record again (Completes made by other instances wake nobody).
const WAIT_POLL: Duration = Duration::from_millis(250);

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
        if let Some(c) = &req.compensation_json {
            validate::payload("compensation_json", c, self.config.max_payload_bytes)?;
            validate::json("compensation_json", c)?;
        }
        let Some(record) = self.store.get(&req.call_id).await? else {
            return Err(unknown_call(&req.call_id));
        };
        let stripe = self.stripe(&record.match_scope);
        let _guard = stripe.lock.lock().await;
        // Re-read under the lock: a concurrent Complete may have landed.
        let Some(mut record) = self.store.get(&req.call_id).await? else {
            return Err(unknown_call(&req.call_id));
        };
        // Fencing: an attempt that was taken over, or a Complete naming another attempt,
        // changes nothing (the attempt that took over owns the action now).
        if let Some(by) = &record.superseded_by {
            return Err(IdemError::FailedPrecondition(format!(
                "call {} (attempt {} of action {}) was taken over by call {by} after its lease \
                 expired; its Complete is refused: report the outcome on call {by}",
                record.id, record.attempt, record.action_key
            )));
        }
        if let Some(a) = req.attempt
            && a != record.attempt
        {
            return Err(IdemError::FailedPrecondition(format!(
                "call {} is attempt {} of action {}, not attempt {a}",
                record.id, record.attempt, record.action_key
            )));
        }
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
        record.compensation_json = req.compensation_json;
        record.updated_at_ms = now;
        self.store.update(&record).await?;
        stripe.completed.notify_waiters();
        Ok(record)
    }

    /// Waits until call `call_id` leaves IN_PROGRESS, is taken over or loses its lease, or
    /// `timeout` passes, and returns the record as it then is. Woken by this instance's Complete and take-overs;
    /// it also reads the record again every 250 ms, for a store other instances write.
    pub async fn wait_for_call(
        &self,
        call_id: &str,
        timeout: Duration,
    ) -> Result<Record, IdemError> {
        validate::name("call_id", call_id)?;
        let until = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        let read = || async {
            self.store
                .get(call_id)
                .await?
                .ok_or_else(|| unknown_call(call_id))
        };
        // Done, taken over, or its lease ran out (a repeat would now take over).
        let settled = |r: &Record| {
            let now = self.clock.now_ms();
            r.status != CallStatus::InProgress
                || r.superseded_by.is_some()
                || r.lease_until_ms <= now
                || r.is_expired(now)
        };
        let stripe = self.stripe(&read().await?.match_scope);
        loop {
            let completed = stripe.completed.notified();
            tokio::pin!(completed);
            completed.as_mut().enable();
            // Read after registering, so a Complete in between is not missed.
            let record = read().await?;
            if settled(&record) || tokio::time::Instant::now() >= until {
                return Ok(record);
            }
            let next = (tokio::time::Instant::now() + WAIT_POLL).min(until);
            tokio::select! {
                _ = &mut completed => {}
                _ = tokio::time::sleep_until(next) => {}
            }
        }
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
