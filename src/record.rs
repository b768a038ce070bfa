//! What idem stores about a call, and the lifecycle rules every backend shares.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// Status of a recorded call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Reserved; the caller is executing it under a lease.
    InProgress,
    /// Ran and succeeded; repeats get the result replayed.
    Succeeded,
    /// Ran and did not succeed; a repeat may execute again.
    Failed,
}

/// Everything idem keeps about one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Call id (UUID v7: time-ordered).
    pub id: String,
    pub tenant: String,
    pub session: String,
    /// The scope records are matched in: tenant + session, or tenant alone for tenant-wide sessions.
    pub match_scope: String,
    pub tool: String,
    /// Arguments as the caller sent them.
    pub arguments_json: String,
    /// Canonical arguments (exact-match form).
    pub canonical_json: String,
    pub exact_hash: String,
    pub identity_fingerprint: String,
    /// Free text the fuzzy and semantic stages compare (joined).
    pub free_text: String,
    pub idempotency_key: Option<String>,
    pub status: CallStatus,
    pub result_json: Option<String>,
    pub error: Option<String>,
    pub cost: Option<f64>,
    pub supersedes: Option<String>,
    pub previous_attempt_unknown: bool,
    pub created_at_ms: Millis,
    pub updated_at_ms: Millis,
    pub lease_until_ms: Millis,
    pub expires_at_ms: Millis,
    /// The closest earlier call the similarity stages saw (for feedback on a NEW verdict).
    #[serde(default)]
    pub nearest_call_id: Option<String>,
    /// Embedding of `free_text`, when the semantic stage computed one (stored apart by backends).
    #[serde(skip)]
    pub embedding: Option<Vec<f32>>,
    /// The key of the logical action this record is an attempt of: the first attempt's call
    /// id, kept by lease take-overs and retries after a failure (the downstream API's
    /// idempotency key), new for a fresh call or a RESAMPLE.
    #[serde(default)]
    pub action_key: String,
    /// Which attempt of the action this is, from 1; grows by one per take-over or retry.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// The attempt that took over from this one after its lease expired: a Complete of this
    /// one is then refused (fencing).
    #[serde(default)]
    pub superseded_by: Option<String>,
    /// How to undo the call, as the caller gave it with `Complete` (sagas).
    #[serde(default)]
    pub compensation_json: Option<String>,
    /// The resource this call acts on, for a tool paired with an inverse (`inverse_of`): the
    /// window of its calls follows the resource's state.
    #[serde(default)]
    pub resource: Option<ResourceMark>,
}

/// Where a call stands in the history of the resource it acts on (tools with an inverse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceMark {
    /// Fingerprint of the tool pair and the resource fields' canonical values.
    pub key: String,
    /// Grows by one each time the pair's other tool acts on the resource: only calls of the
    /// current generation can be repeated.
    pub generation: u64,
    /// When the current generation began (the first call of it), for the candidate window.
    pub since_ms: Millis,
}

/// What a store keeps per resource: the newest call on it, as the window of the next check
/// of either tool of the pair needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceState {
    /// The tool of the newest call on the resource.
    pub tool: String,
    /// Its generation (`ResourceMark::generation`).
    pub generation: u64,
    /// When that generation began.
    pub since_ms: Millis,
}

impl ResourceState {
    /// The state a record leaves its resource in, if it has one.
    pub fn of(r: &Record) -> Option<(String, ResourceState)> {
        r.resource.as_ref().map(|m| {
            (
                m.key.clone(),
                ResourceState {
                    tool: r.tool.clone(),
                    generation: m.generation,
                    since_ms: m.since_ms,
                },
            )
        })
    }
}

fn first_attempt() -> u32 {
    1
}

impl Record {
    /// True once the TTL has passed: the record no longer matches and will be swept.
    pub fn is_expired(&self, now: Millis) -> bool {
        now >= self.expires_at_ms
    }

    /// What a repeat of this record should get, at `now`.
    pub fn repeat_outcome(&self, now: Millis) -> RepeatOutcome {
        if self.is_expired(now) {
            return RepeatOutcome::Absent;
        }
        match self.status {
            CallStatus::Succeeded => RepeatOutcome::Duplicate,
            CallStatus::InProgress if now < self.lease_until_ms => RepeatOutcome::InFlight,
            CallStatus::InProgress => RepeatOutcome::TakeOver,
            CallStatus::Failed => RepeatOutcome::Retry,
        }
    }
}

/// A stable 64-bit id derived from a call id (for vector indexes).
pub fn vector_id(call_id: &str) -> u64 {
    let h = blake3::hash(call_id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// The lifecycle rule: what a repeat of an existing record gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepeatOutcome {
    /// Expired: as if it never happened.
    Absent,
    /// Succeeded: DUPLICATE, result replayed.
    Duplicate,
    /// Running under a live lease: IN_FLIGHT.
    InFlight,
    /// Lease expired without Complete: the repeat takes over as NEW, previous attempt unknown.
    TakeOver,
    /// Failed: the repeat is NEW.
    Retry,
}

/// Builds the match scope of a session. Separators are control characters, which names may
/// not contain, so no tenant/session pair can collide with another tenant's scope.
pub fn match_scope(tenant: &str, session: &str, tenant_wide: bool) -> String {
    if tenant_wide {
        format!("{tenant}\u{1e}")
    } else {
        format!("{tenant}\u{1f}{session}")
    }
}
