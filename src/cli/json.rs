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

/// Stats as JSON.
pub fn stats(s: &proto::Stats) -> Value {
    json!({
        "checks": s.checks,
        "by_verdict": s.by_verdict,
        "by_stage": s.by_stage,
        "replays_served": s.replays_served,
        "duplicates_prevented": s.duplicates_prevented,
        "cost_avoided": s.cost_avoided,
        "warnings": s.warnings,
    })
}

/// A session's effective settings as JSON.
pub fn session_config(c: &proto::SessionConfig) -> Value {
    let tools: serde_json::Map<String, Value> = c
        .tools
        .iter()
        .map(|(name, p)| {
            let policy = json!({
                "mode": p.mode,
                "identity_fields": p.identity_fields,
                "free_text_fields": p.free_text_fields,
                "ignored_fields": p.ignored_fields,
                "defaults": embedded_json(&p.defaults_json),
                "ttl_seconds": p.ttl_seconds,
                "on_lease_expiry": p.on_lease_expiry,
                "resource_fields": p.resource_fields,
                "inverse_of": p.inverse_of,
            });
            (name.clone(), policy)
        })
        .collect();
    json!({
        "tenant": c.tenant,
        "session": c.session,
        "ttl_seconds": c.ttl_seconds,
        "lease_seconds": c.lease_seconds,
        "window_seconds": c.window_seconds,
        "window_calls": c.window_calls,
        "deadline_ms": c.deadline_ms,
        "fuzzy_threshold": c.fuzzy_threshold,
        "semantic_duplicate": c.semantic_duplicate,
        "semantic_borderline": c.semantic_borderline,
        "borderline_policy": c.borderline_policy,
        "verifier_enabled": c.verifier_enabled,
        "scope": c.scope,
        "key_mismatch": c.key_mismatch,
        "loop_threshold": c.loop_threshold,
        "loop_window_seconds": c.loop_window_seconds,
        "tools": tools,
    })
}
