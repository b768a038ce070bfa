//! The engine's request and answer types (the wire types live in `proto`).

use crate::funnel::{StageKind, StageReport, StopReason};
use crate::record::CallStatus;

/// The kind of retry a check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryIntent {
    /// The caller lost an answer it is owed: dedup applies.
    #[default]
    Transient,
    /// The earlier result failed validation: a genuinely new execution.
    Resample,
}

/// A check of one tool call.
#[derive(Debug, Clone, Default)]
pub struct CheckRequest {
    pub tenant: String,
    pub session: String,
    pub tool: String,
    pub arguments_json: String,
    pub idempotency_key: Option<String>,
    /// Per-request deadline (overrides the session's).
    pub deadline_ms: Option<u32>,
    pub retry: RetryIntent,
    /// With `Resample`: the call being re-done.
    pub retry_of: Option<String>,
    /// The transport's own deadline (gRPC `grpc-timeout`), which may only tighten the check's.
    pub transport_deadline_ms: Option<u64>,
}

/// The verdict of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded as in progress: run the tool, then Complete.
    New,
    /// Repeats an earlier call; its result is replayed when it succeeded.
    Duplicate,
    /// The original is still running: do not run it again.
    InFlight,
    /// Possibly a repeat; the caller decides (borderline policy `ask`).
    Borderline,
}

impl Verdict {
    /// Upper-case name, as on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::New => "NEW",
            Verdict::Duplicate => "DUPLICATE",
            Verdict::InFlight => "IN_FLIGHT",
            Verdict::Borderline => "BORDERLINE",
        }
    }
}

/// The answer to a check.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub verdict: Verdict,
    /// The new record (NEW) or the matched original. Empty when the tool's mode is `off`.
    pub call_id: String,
    /// Stage and score of the match.
    pub matched: Option<(StageKind, f64)>,
    /// Status of the record `call_id` names.
    pub status: CallStatus,
    pub result_json: Option<String>,
    pub replayed: bool,
    pub stages: Vec<StageReport>,
    pub stop: StopReason,
    pub previous_attempt_unknown: bool,
    pub supersedes: Option<String>,
    pub reason: String,
    pub total_micros: u64,
    /// Id of this check, for feedback (the call id for NEW).
    pub check_id: String,
    /// Cost recorded on the replayed original (what the replay saved).
    pub replayed_cost: Option<f64>,
    /// The logical action's key (NEW, and a held take-over): pass it to the downstream API as
    /// its idempotency key, so a second execution after a lease take-over is deduplicated there.
    pub action_key: String,
    /// The attempt of the action `call_id` is (from 1); `Complete` carries it.
    pub attempt: u32,
    /// Advisories for the caller.
    pub warnings: Vec<super::Warning>,
}

impl CheckOutcome {
    /// An outcome naming `call_id` in `status`, with nothing matched, replayed or timed yet.
    pub fn new(verdict: Verdict, call_id: String, status: CallStatus, reason: String) -> Self {
        Self {
            verdict,
            call_id,
            matched: None,
            status,
            result_json: None,
            replayed: false,
            stages: Vec::new(),
            stop: StopReason::Settled,
            previous_attempt_unknown: false,
            supersedes: None,
            reason,
            total_micros: 0,
            replayed_cost: None,
            check_id: String::new(),
            action_key: String::new(),
            attempt: 0,
            warnings: Vec::new(),
        }
    }
}

/// How a call ended, reported by the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Ran and succeeded, with its result (JSON text).
    Succeeded { result_json: String },
    /// Ran and did not succeed.
    Failed { error: String },
}

/// A completion report.
#[derive(Debug, Clone, PartialEq)]
pub struct CompleteRequest {
    pub call_id: String,
    pub outcome: Outcome,
    pub cost: Option<f64>,
    /// The attempt the caller completes (`CheckOutcome::attempt`), when it says.
    pub attempt: Option<u32>,
    /// How to undo the call (saga compensation), kept on the record.
    pub compensation_json: Option<String>,
}
