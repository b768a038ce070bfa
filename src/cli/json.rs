//! Responses as JSON objects for `--json`, enum values by name.

use serde_json::{Value, json};

use crate::proto;

fn enum_name<E: TryFrom<i32>>(v: i32, name: impl Fn(E) -> &'static str) -> Value {
    match E::try_from(v) {
        Ok(e) => Value::String(name(e).to_string()),
        Err(_) => json!(v),
    }
}

/// Verdict name.
pub fn verdict(v: i32) -> Value {
    enum_name(v, |e: proto::Verdict| e.as_str_name())
}

/// Status name.
pub fn status(v: i32) -> Value {
    enum_name(v, |e: proto::CallStatus| e.as_str_name())
}

/// A JSON text field as a JSON value when it parses, else as a string.
fn embedded_json(text: &Option<String>) -> Value {
    match text {
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.clone())),
        None => Value::Null,
    }
}

/// A CheckResponse as JSON.
pub fn check_response(r: &proto::CheckResponse) -> Value {
    json!({
        "verdict": verdict(r.verdict),
        "call_id": r.call_id,
        "matched": r.matched.as_ref().map(|m| json!({
            "stage": enum_name(m.stage, |e: proto::Stage| e.as_str_name()),
            "score": m.score,
        })),
        "status": status(r.status),
        "result_json": r.result_json,
        "result": embedded_json(&r.result_json),
        "replayed": r.replayed,
        "stages": r.stages.iter().map(|s| json!({
            "name": s.name, "micros": s.micros, "outcome": s.outcome, "best_score": s.best_score,
            "eligible_score": s.eligible_score, "explain": s.explain,
        })).collect::<Vec<_>>(),
        "stop_reason": enum_name(r.stop_reason, |e: proto::StopReason| e.as_str_name()),
        "previous_attempt_unknown": r.previous_attempt_unknown,
        "supersedes": r.supersedes,
        "reason": r.reason,
        "total_micros": r.total_micros,
        "action_key": r.action_key,
        "attempt": r.attempt,
        "warnings": r.warnings,
    })
}

/// A CallRecord as JSON.
pub fn call_record(r: &proto::CallRecord) -> Value {
    json!({
        "call_id": r.call_id,
        "tenant": r.tenant,
        "session": r.session,
        "tool": r.tool,
        "arguments_json": r.arguments_json,
        "canonical_json": r.canonical_json,
        "status": status(r.status),
        "result_json": r.result_json,
        "error": r.error,
        "idempotency_key": r.idempotency_key,
        "cost": r.cost,
        "supersedes": r.supersedes,
        "previous_attempt_unknown": r.previous_attempt_unknown,
        "created_at_ms": r.created_at_ms,
        "updated_at_ms": r.updated_at_ms,
        "lease_until_ms": r.lease_until_ms,
        "expires_at_ms": r.expires_at_ms,
        "identity_fingerprint": r.identity_fingerprint,
        "action_key": r.action_key,
        "attempt": r.attempt,
        "superseded_by": r.superseded_by,
        "compensation_json": r.compensation_json,
    })
}
