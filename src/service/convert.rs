//! Conversions between wire (`proto`) and engine types.

use std::collections::BTreeMap;

use crate::config::{
    BorderlinePolicy, KeyMismatch, LeaseExpiry, ScopeMode, SessionOverrides, SessionSettings,
    ToolMode, ToolPolicy,
};
use crate::engine::{CheckOutcome, RetryIntent, Verdict};
use crate::error::IdemError;
use crate::funnel::{StageKind, StopReason};
use crate::proto;
use crate::record::{CallStatus, Record};
use crate::store::StatsSnapshot;

/// Engine verdict to wire verdict.
pub fn verdict(v: Verdict) -> proto::Verdict {
    match v {
        Verdict::New => proto::Verdict::New,
        Verdict::Duplicate => proto::Verdict::Duplicate,
        Verdict::InFlight => proto::Verdict::InFlight,
        Verdict::Borderline => proto::Verdict::Borderline,
    }
}

/// Engine stage to wire stage.
pub fn stage(s: StageKind) -> proto::Stage {
    match s {
        StageKind::Key => proto::Stage::Key,
        StageKind::Exact => proto::Stage::Exact,
        StageKind::Fuzzy => proto::Stage::Fuzzy,
        StageKind::Semantic => proto::Stage::Semantic,
        StageKind::Verify => proto::Stage::Verified,
    }
}

/// Engine status to wire status.
pub fn status(s: CallStatus) -> proto::CallStatus {
    match s {
        CallStatus::InProgress => proto::CallStatus::InProgress,
        CallStatus::Succeeded => proto::CallStatus::Succeeded,
        CallStatus::Failed => proto::CallStatus::Failed,
    }
}

/// Wire status to engine status.
pub fn status_from(s: i32) -> Result<CallStatus, IdemError> {
    match proto::CallStatus::try_from(s) {
        Ok(proto::CallStatus::InProgress) => Ok(CallStatus::InProgress),
        Ok(proto::CallStatus::Succeeded) => Ok(CallStatus::Succeeded),
        Ok(proto::CallStatus::Failed) => Ok(CallStatus::Failed),
        _ => Err(IdemError::InvalidArgument(format!(
            "unknown call status {s}"
        ))),
    }
}

/// Wire retry intent to engine intent.
pub fn retry(r: i32) -> Result<RetryIntent, IdemError> {
    match proto::RetryIntent::try_from(r) {
        Ok(proto::RetryIntent::Transient) => Ok(RetryIntent::Transient),
        Ok(proto::RetryIntent::Resample) => Ok(RetryIntent::Resample),
        Err(_) => Err(IdemError::InvalidArgument(format!(
            "unknown retry intent {r}; use TRANSIENT or RESAMPLE"
        ))),
    }
}

fn stop(s: StopReason) -> proto::StopReason {
    match s {
        StopReason::Settled => proto::StopReason::Settled,
        StopReason::Deadline => proto::StopReason::Deadline,
        StopReason::Policy => proto::StopReason::Policy,
        StopReason::Mode => proto::StopReason::Mode,
    }
}

/// Engine outcome to wire response.
pub fn check_response(o: CheckOutcome) -> proto::CheckResponse {
    proto::CheckResponse {
        verdict: verdict(o.verdict) as i32,
        call_id: o.call_id,
        matched: o.matched.map(|(s, score)| proto::Match {
            stage: stage(s) as i32,
            score,
        }),
        status: status(o.status) as i32,
        result_json: o.result_json,
        replayed: o.replayed,
        stages: o
            .stages
            .into_iter()
            .map(|r| proto::StageTiming {
                name: r.stage.name().to_string(),
                micros: r.micros,
                outcome: r.outcome.as_str().to_string(),
                best_score: r.best_score,
                eligible_score: r.eligible_score,
                explain: r.explain,
            })
            .collect(),
        stop_reason: stop(o.stop) as i32,
        previous_attempt_unknown: o.previous_attempt_unknown,
        supersedes: o.supersedes,
        reason: o.reason,
        total_micros: o.total_micros,
        check_id: o.check_id,
        action_key: o.action_key,
        attempt: o.attempt,
        warnings: o.warnings.iter().map(|w| w.wire()).collect(),
    }
}

/// Record to wire record.
pub fn call_record(r: Record) -> proto::CallRecord {
    proto::CallRecord {
        call_id: r.id,
        tenant: r.tenant,
        session: r.session,
        tool: r.tool,
        arguments_json: r.arguments_json,
        canonical_json: r.canonical_json,
        status: status(r.status) as i32,
        result_json: r.result_json,
        error: r.error,
        idempotency_key: r.idempotency_key,
        cost: r.cost,
        supersedes: r.supersedes,
        previous_attempt_unknown: r.previous_attempt_unknown,
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        lease_until_ms: r.lease_until_ms,
        expires_at_ms: r.expires_at_ms,
        identity_fingerprint: r.identity_fingerprint,
        action_key: r.action_key,
        attempt: r.attempt,
        superseded_by: r.superseded_by,
        compensation_json: r.compensation_json,
    }
}

/// Counters to wire stats.
pub fn stats(s: StatsSnapshot) -> proto::Stats {
    proto::Stats {
        checks: s.checks,
        by_verdict: s.by_verdict.into_iter().collect(),
        by_stage: s.by_stage.into_iter().collect(),
        replays_served: s.replays_served,
        duplicates_prevented: s.duplicates_prevented,
        cost_avoided: s.cost_avoided,
        warnings: s.warnings.into_iter().collect(),
    }
}

fn mode_name(m: ToolMode) -> &'static str {
    match m {
        ToolMode::Off => "off",
        ToolMode::KeyOnly => "key_only",
        ToolMode::Exact => "exact",
        ToolMode::Semantic => "semantic",
    }
}

fn policy_name(p: BorderlinePolicy) -> &'static str {
    match p {
        BorderlinePolicy::Proceed => "proceed",
        BorderlinePolicy::Block => "block",
        BorderlinePolicy::Ask => "ask",
    }
}

fn scope_name(s: ScopeMode) -> &'static str {
    match s {
        ScopeMode::Session => "session",
        ScopeMode::Tenant => "tenant",
    }
}

/// Effective settings to wire config (every field set).
pub fn session_config(tenant: &str, session: &str, s: &SessionSettings) -> proto::SessionConfig {
    proto::SessionConfig {
        tenant: tenant.into(),
        session: session.into(),
        ttl_seconds: Some(s.ttl_secs),
        lease_seconds: Some(s.lease_secs),
        window_seconds: Some(s.window_secs),
        window_calls: Some(s.window_calls),
        deadline_ms: Some(s.deadline_ms),
        fuzzy_threshold: Some(s.fuzzy_threshold),
        semantic_duplicate: Some(s.semantic_duplicate),
        semantic_borderline: Some(s.semantic_borderline),
        borderline_policy: Some(policy_name(s.borderline_policy).into()),
        verifier_enabled: Some(s.verifier_enabled),
        scope: Some(scope_name(s.scope).into()),
        key_mismatch: Some(
            match s.key_mismatch {
                KeyMismatch::Reject => "reject",
                KeyMismatch::Replay => "replay",
            }
            .into(),
        ),
        loop_threshold: Some(s.loop_threshold),
        loop_window_seconds: Some(s.loop_window_secs),
        tools: s
            .tools
            .iter()
            .map(|(name, p)| {
                let tp = proto::ToolPolicy {
                    mode: mode_name(p.mode).into(),
                    identity_fields: p.identity_fields.clone(),
                    free_text_fields: p.free_text_fields.clone(),
                    ignored_fields: p.ignored_fields.clone(),
                    defaults_json: (!p.defaults.is_empty())
                        .then(|| serde_json::Value::Object(p.defaults.clone()).to_string()),
                    ttl_seconds: p.ttl_secs,
                    on_lease_expiry: Some(p.on_lease_expiry.name().into()),
                    resource_fields: p.resource_fields.clone(),
                    inverse_of: p.inverse_of.clone(),
                };
                (name.clone(), tp)
            })
            .collect(),
    }
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    field: &str,
    value: &str,
    allowed: &str,
) -> Result<T, IdemError> {
    serde_json::from_value(serde_json::Value::String(value.trim().to_ascii_lowercase())).map_err(
        |_| IdemError::InvalidArgument(format!("{field} must be one of {allowed}, got {value:?}")),
    )
}

/// Wire config to session overrides (unset fields inherit).
pub fn session_overrides(c: &proto::SessionConfig) -> Result<SessionOverrides, IdemError> {
    let mut tools = BTreeMap::new();
    for (name, p) in &c.tools {
        let mode = if p.mode.trim().is_empty() {
            ToolMode::Semantic
        } else {
            parse_enum(
                &format!("tools.{name}.mode"),
                &p.mode,
                "off, key_only, exact, semantic",
            )?
        };
        let defaults = match p.defaults_json.as_deref().filter(|s| !s.trim().is_empty()) {
            None => serde_json::Map::new(),
            Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => {
                    return Err(IdemError::InvalidArgument(format!(
                        "tools.{name}.defaults_json must be a JSON object of field defaults"
                    )));
                }
            },
        };
        tools.insert(
            name.clone(),
            ToolPolicy {
                mode,
                identity_fields: p.identity_fields.clone(),
                free_text_fields: p.free_text_fields.clone(),
                ignored_fields: p.ignored_fields.clone(),
                // Not on the wire yet: schema-typed numbers come from the server's config.
                numeric_fields: Vec::new(),
                defaults,
                ttl_secs: p.ttl_seconds,
                on_lease_expiry: match p.on_lease_expiry.as_deref().map(str::trim) {
                    None | Some("") => LeaseExpiry::TakeOver,
                    Some(v) => LeaseExpiry::parse(v).ok_or_else(|| {
                        IdemError::InvalidArgument(format!(
                            "tools.{name}.on_lease_expiry must be take_over or hold, got {v:?}"
                        ))
                    })?,
                },
                resource_fields: p
                    .resource_fields
                    .iter()
                    .map(|f| f.trim().to_string())
                    .collect(),
                inverse_of: p
                    .inverse_of
                    .as_deref()
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string),
            },
        );
    }
    Ok(SessionOverrides {
        ttl_secs: c.ttl_seconds,
        lease_secs: c.lease_seconds,
        window_secs: c.window_seconds,
        window_calls: c.window_calls,
        deadline_ms: c.deadline_ms,
        fuzzy_threshold: c.fuzzy_threshold,
        semantic_duplicate: c.semantic_duplicate,
        semantic_borderline: c.semantic_borderline,
        borderline_policy: c
            .borderline_policy
            .as_deref()
            .map(|v| parse_enum("borderline_policy", v, "proceed, block, ask"))
            .transpose()?,
        verifier_enabled: c.verifier_enabled,
        scope: c
            .scope
            .as_deref()
            .map(|v| parse_enum("scope", v, "session, tenant"))
            .transpose()?,
        tools,
        key_mismatch: c
            .key_mismatch
            .as_deref()
            .map(|v| parse_enum("key_mismatch", v, "reject, replay"))
            .transpose()?,
        loop_threshold: c.loop_threshold,
        loop_window_secs: c.loop_window_seconds,
    })
}
