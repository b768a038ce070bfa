//! What calibration on real traffic needs: a log of non-NEW verdicts and operators' judgements.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// One DUPLICATE / IN_FLIGHT / BORDERLINE answer (NEW answers are the records themselves).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckLog {
    pub check_id: String,
    pub tenant: String,
    pub session: String,
    pub tool: String,
    pub arguments_json: String,
    /// Verdict name.
    pub verdict: String,
    /// The original the verdict named.
    pub matched_call_id: String,
    pub stage: Option<String>,
    pub score: Option<f64>,
    pub created_at_ms: Millis,
    /// Kept as long as the original's record.
    pub expires_at_ms: Millis,
}

/// An operator's or agent's judgement of a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// The judged check (for NEW, the call id).
    pub check_id: String,
    pub tenant: String,
    /// Was the verdict right?
    pub correct: bool,
    pub note: String,
    pub at_ms: Millis,
}
