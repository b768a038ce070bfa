//! Typed answers of the client, converted once from the protobuf messages. JSON text on the wire
//! becomes `serde_json::Value` here, so callers never parse.

use serde_json::Value;

use crate::error::ClientError;
use crate::proto;

/// What idem said about a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Recorded as in progress: run the tool, then complete `call_id`. `call_id` is `None` when
    /// the tool's mode is `off` (not recorded): run it and do not complete.
    New {
        call_id: Option<String>,
        /// An earlier attempt's lease expired without Complete: it may or may not have run.
        previous_attempt_unknown: bool,
    },
    /// Repeats `call_id`, which succeeded: `result` is its stored result.
    Duplicate { call_id: String, result: Value },
    /// Repeats `call_id`, which is still running: wait for it, do not run the tool.
    InFlight { call_id: String },
    /// May repeat `call_id` (the session asked to decide borderline cases itself).
    Borderline { call_id: String },
}

/// A verdict with the server's explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub verdict: Verdict,
    /// Score of the matching stage, when an earlier call matched.
    pub score: Option<f64>,
    /// Human-readable reason for the verdict.
    pub reason: String,
    /// The logical action's key (empty when nothing was recorded): the first attempt's call
    /// id, kept by lease take-overs and retries after a failure. Pass it to the downstream API
    /// as its idempotency key.
    pub action_key: String,
    /// Which attempt of the action the call is, from 1 (0 when nothing was recorded).
    pub attempt: u32,
    /// Advisories from the server (`key_changes_per_attempt`, ...).
    pub warnings: Vec<String>,
}

/// The logical action a guarded tool is about to execute, handed to the tool closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// Pass this as the downstream API's idempotency key (an `Idempotency-Key` header): it
    /// stays the same when idem's lease is taken over after a crash, so the downstream
    /// deduplicates the second execution. `None` when idem recorded nothing (the tool's mode
    /// is `off`, or idem was down and the policy is fail-open).
    pub key: Option<String>,
    /// Which attempt this is, from 1 (0 when nothing was recorded).
    pub attempt: u32,
}

/// Status of a recorded call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    InProgress,
    Succeeded,
    Failed,
}

/// One recorded call, as [`IdemClient::get_call`](crate::IdemClient::get_call) reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallInfo {
    pub call_id: String,
    pub tool: String,
    pub arguments: Value,
    pub status: CallStatus,
    /// The stored result, when it succeeded.
    pub result: Option<Value>,
    /// What went wrong, when it failed.
    pub error: Option<String>,
    /// End of the in-progress lease, Unix milliseconds of the server's clock.
    pub lease_until_ms: i64,
    /// The logical action's key (see [`Check::action_key`]).
    pub action_key: String,
    /// Which attempt of the action this call is.
    pub attempt: u32,
    /// The attempt that took over after this one's lease expired.
    pub superseded_by: Option<String>,
}

/// The outcome of a call answered NEW, reported with [`IdemClient::complete`](crate::IdemClient::complete).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The tool succeeded with `result` (any JSON value); repeats get it replayed.
    Succeeded { result: Value, cost: Option<f64> },
    /// The tool ran and failed; a repeat may run again.
    Failed { error: String },
}

/// How far the server's funnel goes for a tool (a session's tool policy), by its wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolMode {
    /// Pure reads: never deduplicated, always NEW and not recorded.
    Off,
    /// Only the client idempotency key matches.
    KeyOnly,
    /// Key and exact canonical match.
    Exact,
    /// The whole funnel (the server's default).
    Semantic,
}

impl ToolMode {
    /// The mode's name on the wire (`ToolPolicy.mode`), as in the server's config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::KeyOnly => "key_only",
            Self::Exact => "exact",
            Self::Semantic => "semantic",
        }
    }
}

/// What a server says about its version ([`IdemClient::server_version`](crate::IdemClient::server_version)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    /// The server's version, e.g. `0.1.0`: also the version of the API and of the clients built
    /// from the same proto.
    pub version: String,
    /// The API package the server speaks, `idem.v1`.
    pub api: String,
}

impl ServerVersion {
    /// True when a client of version `client` (usually [`crate::VERSION`]) is promised to work
    /// with this server: the same API package and the same release line (major version, or
    /// `0.minor` before 1.0). See the README's Versions section.
    pub fn is_compatible_with(&self, client: &str) -> bool {
        match (release_line(&self.version), release_line(client)) {
            (Some(server), Some(client)) => self.api == crate::API && server == client,
            _ => false,
        }
    }
}

/// `1` of `1.4.2`, `0.3` of `0.3.1` (before 1.0 a minor release may break).
fn release_line(version: &str) -> Option<(u64, Option<u64>)> {
    let mut parts = version.split(['.', '-', '+']);
    let major: u64 = parts.next()?.parse().ok()?;
    if major > 0 {
        return Some((major, None));
    }
    let minor: u64 = parts.next()?.parse().ok()?;
    Some((0, Some(minor)))
}

fn parse(field: &'static str, text: &str) -> Result<Value, ClientError> {
    serde_json::from_str(text).map_err(|source| ClientError::Decode { field, source })
}

impl TryFrom<proto::CheckResponse> for Check {
    type Error = ClientError;

    fn try_from(r: proto::CheckResponse) -> Result<Self, ClientError> {
        let verdict = match proto::Verdict::try_from(r.verdict) {
            Ok(proto::Verdict::New) => Verdict::New {
                call_id: Some(r.call_id).filter(|id| !id.is_empty()),
                previous_attempt_unknown: r.previous_attempt_unknown,
            },
            Ok(proto::Verdict::Duplicate) => Verdict::Duplicate {
                result: match &r.result_json {
                    Some(t) => parse("result_json", t)?,
                    None => Value::Null,
                },
                call_id: r.call_id,
            },
            Ok(proto::Verdict::InFlight) => Verdict::InFlight { call_id: r.call_id },
            Ok(proto::Verdict::Borderline) => Verdict::Borderline { call_id: r.call_id },
            Ok(proto::Verdict::Unspecified) | Err(_) => {
                return Err(ClientError::UnknownEnum {
                    what: "verdict",
                    value: r.verdict,
                });
            }
        };
        Ok(Self {
            verdict,
            score: r.matched.map(|m| m.score),
            reason: r.reason,
            action_key: r.action_key,
            attempt: r.attempt,
            warnings: r.warnings,
        })
    }
}

impl TryFrom<proto::CallRecord> for CallInfo {
    type Error = ClientError;

    fn try_from(r: proto::CallRecord) -> Result<Self, ClientError> {
        let status = match proto::CallStatus::try_from(r.status) {
            Ok(proto::CallStatus::InProgress) => CallStatus::InProgress,
            Ok(proto::CallStatus::Succeeded) => CallStatus::Succeeded,
            Ok(proto::CallStatus::Failed) => CallStatus::Failed,
            Ok(proto::CallStatus::Unspecified) | Err(_) => {
                return Err(ClientError::UnknownEnum {
                    what: "call status",
                    value: r.status,
                });
            }
        };
        Ok(Self {
            arguments: parse("arguments_json", &r.arguments_json)?,
            result: r
                .result_json
                .as_deref()
                .map(|t| parse("result_json", t))
                .transpose()?,
            call_id: r.call_id,
            tool: r.tool,
            status,
            error: r.error,
            lease_until_ms: r.lease_until_ms,
            action_key: r.action_key,
            attempt: r.attempt,
            superseded_by: r.superseded_by,
        })
    }
}

impl From<proto::VersionInfo> for ServerVersion {
    fn from(v: proto::VersionInfo) -> Self {
        Self {
            version: v.version,
            api: v.api,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(version: &str) -> ServerVersion {
        ServerVersion {
            version: version.into(),
            api: "idem.v1".into(),
        }
    }

    #[test]
    fn same_release_line_is_compatible() {
        assert!(server("1.4.2").is_compatible_with("1.0.0"));
        assert!(server("0.3.1").is_compatible_with("0.3.0"));
        assert!(server("0.1.0").is_compatible_with(crate::VERSION));
    }

    #[test]
    fn another_release_line_or_api_is_not() {
        assert!(!server("2.0.0").is_compatible_with("1.9.0"));
        assert!(!server("0.4.0").is_compatible_with("0.3.9"));
        assert!(!server("garbage").is_compatible_with("garbage"));
        let v2 = ServerVersion {
            version: "1.0.0".into(),
            api: "idem.v2".into(),
        };
        assert!(!v2.is_compatible_with("1.0.0"));
    }
}
