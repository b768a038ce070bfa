//! [`Guard`]: the check, run, complete protocol around one tool call, written once for every
//! adapter. The tool closure runs at most once per `run`, and only on NEW (or when idem is down
//! and the policy is fail-open); a failed tool is recorded FAILED so a retry may run it again.
//! If the `run` future is dropped while the tool runs, the call stays in progress until its
//! lease expires, and the next repeat takes over with `previous_attempt_unknown`: the honest
//! answer, since nobody knows whether the side effect happened.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::time::Instant;

use crate::connection::{CheckOptions, IdemClient};
use crate::error::{ClientError, GuardError};
use crate::types::{Action, CallStatus, Outcome, Verdict};

/// What to do when idem cannot be reached (down, timed out, overloaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Do not run the tool; return [`GuardError::Unavailable`]. The safe default for side effects.
    #[default]
    FailClosed,
    /// Run the tool without dedup and log a warning: availability over at-most-once.
    FailOpen,
}

/// Bounds of the wait for an in-flight original: exponential backoff between polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlightWait {
    /// Longest total wait before giving up with [`GuardError::StillInFlight`].
    pub max_wait: Duration,
    /// First pause between polls.
    pub initial_backoff: Duration,
    /// Longest pause between polls.
    pub max_backoff: Duration,
}

impl Default for InFlightWait {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Retries of a check idem shed as overloaded (RESOURCE_EXHAUSTED) before the failure policy
/// decides: exponential backoff with jitter, so shed clients do not return in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverloadRetry {
    /// Retries after the first attempt (0: the policy decides at once).
    pub retries: u32,
    /// Pause before the first retry; doubled each time, each pause jittered to 50-150%.
    pub initial_backoff: Duration,
}

impl Default for OverloadRetry {
    fn default() -> Self {
        Self {
            retries: 3,
            initial_backoff: Duration::from_millis(20),
        }
    }
}

impl OverloadRetry {
    /// The pause before retry number `attempt` (0-based), jittered by `jitter` in [0, 1).
    fn pause(&self, attempt: u32, jitter: f64) -> Duration {
        let base = self.initial_backoff.saturating_mul(1 << attempt.min(16));
        base.mul_f64(0.5 + jitter)
    }
}

/// A borderline match handed to the borderline callback.
#[derive(Debug, Clone, PartialEq)]
pub struct BorderlineCase {
    pub tool: String,
    pub arguments: Value,
    /// The earlier call this one may repeat.
    pub original_call_id: String,
    pub score: Option<f64>,
    pub reason: String,
}

/// The borderline callback's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BorderlineDecision {
    /// A different action: run it (checked again as a new execution superseding the original).
    Run,
    /// A repeat: replay the original's result (waiting for it if it is still running).
    Duplicate,
    /// Undecided: do not run; return [`GuardError::Borderline`].
    Reject,
}

type BorderlineCallback = Arc<dyn Fn(&BorderlineCase) -> BorderlineDecision + Send + Sync>;

/// How the value of a [`GuardOutcome`] came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Execution {
    /// The tool ran; its result is recorded under `call_id`.
    Ran { call_id: String },
    /// The tool ran and nothing is recorded: its mode is `off`.
    Untracked,
    /// The tool ran, but reporting the result to idem failed (logged); repeats will see the
    /// call in flight until its lease expires.
    RanUnrecorded { call_id: String },
    /// idem was unreachable and the policy is fail-open: the tool ran without dedup.
    FailedOpen,
    /// The tool did not run: the result of `call_id` is replayed. `waited` when it was in
    /// flight first.
    Replayed { call_id: String, waited: bool },
}

/// The result of a guarded call.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardOutcome {
    /// The tool's result, fresh or replayed.
    pub value: Value,
    pub execution: Execution,
}

/// Wraps tool calls of one scope (tenant + session) in the idem protocol.
#[derive(Clone)]
pub struct Guard {
    client: IdemClient,
    tenant: String,
    session: String,
    wait: InFlightWait,
    policy: FailurePolicy,
    overload: OverloadRetry,
    borderline: Option<BorderlineCallback>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("tenant", &self.tenant)
            .field("session", &self.session)
            .field("wait", &self.wait)
            .field("policy", &self.policy)
            .field("borderline_callback", &self.borderline.is_some())
            .finish()
    }
}

/// What the check loop decided before any tool runs.
enum Step {
    /// Run the tool as `action`; complete `call_id` when there is one.
    Execute(Option<String>, Action),
    /// Run the tool without idem.
    FailOpen,
    /// Done without running.
    Replay {
        call_id: String,
        value: Value,
        waited: bool,
    },
}

impl Guard {
    /// A guard for `tenant`/`session`: fail-closed, default in-flight wait, borderline rejected.
    pub fn new(client: IdemClient, tenant: impl Into<String>, session: impl Into<String>) -> Self {
        Self {
            client,
            tenant: tenant.into(),
            session: session.into(),
            wait: InFlightWait::default(),
            policy: FailurePolicy::default(),
            overload: OverloadRetry::default(),
            borderline: None,
        }
    }

    /// Sets what happens when idem is unreachable.
    pub fn on_unavailable(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets how often a check shed as overloaded is retried before the failure policy decides.
    pub fn overload_retry(mut self, retry: OverloadRetry) -> Self {
        self.overload = retry;
        self
    }

    /// Sets the bounds of the wait for an in-flight original.
    pub fn in_flight_wait(mut self, wait: InFlightWait) -> Self {
        self.wait = wait;
        self
    }

    /// Sets the callback deciding BORDERLINE verdicts (without one they are rejected).
    pub fn on_borderline(
        mut self,
        callback: impl Fn(&BorderlineCase) -> BorderlineDecision + Send + Sync + 'static,
    ) -> Self {
        self.borderline = Some(Arc::new(callback));
        self
    }

    /// The client this guard talks through.
    pub fn client(&self) -> &IdemClient {
        &self.client
    }

    /// Runs `tool` through the protocol: the closure runs only when idem says NEW (or is down
    /// and the policy is fail-open); otherwise the original's result is returned. The closure
    /// gets the [`Action`]: pass its key to the downstream API as its idempotency key.
    pub async fn run<F, Fut, E>(
        &self,
        tool: &str,
        args: &Value,
        tool_fn: F,
    ) -> Result<GuardOutcome, GuardError<E>>
    where
        F: FnOnce(Action) -> Fut,
        Fut: Future<Output = Result<Value, E>>,
        E: Display,
    {
        self.run_with(tool, args, CheckOptions::default(), tool_fn)
            .await
    }

    /// [`Guard::run`] with check options (idempotency key, deadline, resample).
    pub async fn run_with<F, Fut, E>(
        &self,
        tool: &str,
        args: &Value,
        options: CheckOptions,
        tool_fn: F,
    ) -> Result<GuardOutcome, GuardError<E>>
    where
        F: FnOnce(Action) -> Fut,
        Fut: Future<Output = Result<Value, E>>,
        E: Display,
    {
        let step = self
            .decide(tool, args, options)
            .await
            .map_err(|e| e.retype())?;
        let call_id = match step {
            Step::Replay {
                call_id,
                value,
                waited,
            } => {
                return Ok(GuardOutcome {
                    value,
                    execution: Execution::Replayed { call_id, waited },
                });
            }
            Step::FailOpen => {
                let unrecorded = Action {
                    key: None,
                    attempt: 0,
                };
                let value = tool_fn(unrecorded).await.map_err(GuardError::Tool)?;
                return Ok(GuardOutcome {
                    value,
                    execution: Execution::FailedOpen,
                });
            }
            Step::Execute(call_id, action) => (call_id, action),
        };
        let (call_id, action) = call_id;
        let attempt = Some(action.attempt).filter(|a| *a > 0);
        let result = tool_fn(action).await;
        let Some(call_id) = call_id else {
            return result
                .map(|value| GuardOutcome {
                    value,
                    execution: Execution::Untracked,
                })
                .map_err(GuardError::Tool);
        };
        let outcome = match &result {
            Ok(v) => Outcome::Succeeded {
                result: v.clone(),
                cost: None,
            },
            Err(e) => Outcome::Failed {
                error: e.to_string(),
            },
        };
        let recorded = match self
            .client
            .complete_attempt(&call_id, attempt, outcome)
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(
                    %call_id, tool, error = %e,
                    "the tool ran but idem did not record its outcome; repeats see it in flight \
                     until the lease expires"
                );
                false
            }
        };
        let value = result.map_err(GuardError::Tool)?;
        let execution = if recorded {
            Execution::Ran { call_id }
        } else {
            Execution::RanUnrecorded { call_id }
        };
        Ok(GuardOutcome { value, execution })
    }

    /// Checks (and re-checks after waits) until the call must run or has a result to replay.
    async fn decide(
        &self,
        tool: &str,
        args: &Value,
        mut options: CheckOptions,
    ) -> Result<Step, GuardError<Never>> {
        let mut wait_until: Option<Instant> = None;
        let started = Instant::now();
        let mut shed = 0u32;
        loop {
            let check = match self
                .client
                .check(&self.tenant, &self.session, tool, args, &options)
                .await
            {
                Ok(c) => c,
                Err(e) if e.is_overloaded() && shed < self.overload.retries => {
                    tokio::time::sleep(self.overload.pause(shed, jitter())).await;
                    shed += 1;
                    continue;
                }
                Err(e) if e.is_unavailable() => {
                    return match self.policy {
                        FailurePolicy::FailClosed => Err(GuardError::Unavailable(e)),
                        FailurePolicy::FailOpen => {
                            tracing::warn!(
                                tool, tenant = %self.tenant, session = %self.session, error = %e,
                                "idem is unavailable; policy fail-open: running the tool WITHOUT dedup"
                            );
                            Ok(Step::FailOpen)
                        }
                    };
                }
                Err(e) => return Err(GuardError::Idem(e)),
            };
            for w in &check.warnings {
                tracing::warn!(tool, warning = %w, reason = %check.reason, "idem advisory");
            }
            let original = match check.verdict {
                Verdict::New { call_id, .. } => {
                    let action = Action {
                        key: Some(check.action_key).filter(|k| !k.is_empty()),
                        attempt: check.attempt,
                    };
                    return Ok(Step::Execute(call_id, action));
                }
                Verdict::Duplicate { call_id, result } => {
                    return Ok(Step::Replay {
                        call_id,
                        value: result,
                        waited: wait_until.is_some(),
                    });
                }
                Verdict::InFlight { call_id } => call_id,
                Verdict::Borderline { call_id } => {
                    let case = BorderlineCase {
                        tool: tool.to_string(),
                        arguments: args.clone(),
                        original_call_id: call_id.clone(),
                        score: check.score,
                        reason: check.reason,
                    };
                    let decision = self
                        .borderline
                        .as_ref()
                        .map_or(BorderlineDecision::Reject, |cb| cb(&case));
                    match decision {
                        BorderlineDecision::Run => {
                            options.resample_of = Some(call_id);
                            continue;
                        }
                        BorderlineDecision::Duplicate => call_id,
                        BorderlineDecision::Reject => {
                            return Err(GuardError::Borderline {
                                call_id,
                                reason: case.reason,
                            });
                        }
                    }
                }
            };
            let deadline = *wait_until.get_or_insert(started + self.wait.max_wait);
            match self.wait_for(&original, deadline).await {
                Ok(Some(value)) => {
                    return Ok(Step::Replay {
                        call_id: original,
                        value,
                        waited: true,
                    });
                }
                // Failed, or its lease ran out: check again, which decides who runs it.
                Ok(None) => {}
                // Never fail open here: the original is known to be running.
                Err(e) if e.is_unavailable() => return Err(GuardError::Unavailable(e)),
                Err(e) => return Err(GuardError::Idem(e)),
            }
            if Instant::now() >= deadline {
                return Err(GuardError::StillInFlight {
                    call_id: original,
                    waited: started.elapsed(),
                });
            }
        }
    }

    /// Waits for `call_id` until it succeeds (its result), fails, loses its lease or is taken
    /// over (`None`: check again), or `deadline` passes (`None` as well; the caller checks the
    /// time). Waits on the server (WaitForCall); polls GetCall with backoff against a server
    /// without it.
    async fn wait_for(
        &self,
        call_id: &str,
        deadline: Instant,
    ) -> Result<Option<Value>, ClientError> {
        let mut backoff = self.wait.initial_backoff;
        let mut server_side = true;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let call = if server_side {
                match self.client.wait_for_call(call_id, deadline - now).await {
                    Ok(call) => call,
                    Err(e) if e.is_unimplemented() => {
                        server_side = false;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                tokio::time::sleep(backoff.min(deadline - now)).await;
                backoff = (backoff * 2).min(self.wait.max_backoff);
                self.client.get_call(call_id).await?
            };
            match call.status {
                CallStatus::Succeeded => return Ok(Some(call.result.unwrap_or(Value::Null))),
                CallStatus::Failed => return Ok(None),
                CallStatus::InProgress
                    if call.superseded_by.is_some() || call.lease_until_ms <= unix_ms() =>
                {
                    return Ok(None);
                }
                CallStatus::InProgress => {}
            }
        }
    }
}

/// A number in [0, 1) that differs between clients and calls: enough to spread retries.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = u64::from(nanos).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    mixed as f64 / (1u64 << 53) as f64
}

/// Milliseconds since the Unix epoch on this machine (0 if the clock is before 1970).
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The error type of the decision phase, which runs no tool.
#[derive(Debug)]
enum Never {}

impl GuardError<Never> {
    /// Re-types an error of the decision phase, which cannot hold a tool error.
    fn retype<E>(self) -> GuardError<E> {
        match self {
            GuardError::Tool(never) => match never {},
            GuardError::Unavailable(e) => GuardError::Unavailable(e),
            GuardError::Idem(e) => GuardError::Idem(e),
            GuardError::StillInFlight { call_id, waited } => {
                GuardError::StillInFlight { call_id, waited }
            }
            GuardError::Borderline { call_id, reason } => {
                GuardError::Borderline { call_id, reason }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_pauses_double_and_stay_within_the_jitter_band() {
        let r = OverloadRetry {
            retries: 3,
            initial_backoff: Duration::from_millis(20),
        };
        assert_eq!(r.pause(0, 0.5), Duration::from_millis(20));
        assert_eq!(r.pause(2, 0.5), Duration::from_millis(80));
        assert_eq!(r.pause(1, 0.0), Duration::from_millis(20));
        assert!(r.pause(1, 0.999) < Duration::from_millis(60));
        // A huge attempt number saturates instead of overflowing.
        assert!(r.pause(u32::MAX, 0.5) > Duration::from_secs(600));
    }

    #[test]
    fn jitter_is_a_fraction() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn only_resource_exhausted_counts_as_overloaded() {
        let err = |code| ClientError::Rpc {
            rpc: "CheckAndRecord",
            status: Box::new(tonic::Status::new(code, "x")),
        };
        assert!(err(tonic::Code::ResourceExhausted).is_overloaded());
        assert!(!err(tonic::Code::Unavailable).is_overloaded());
        assert!(!err(tonic::Code::InvalidArgument).is_overloaded());
    }
}
