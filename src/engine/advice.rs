//! Advisories a check carries besides its verdict: a client key minted per attempt, and an
//! agent that loops on one tool. They never change a verdict; adapters log them.

use super::{CheckOutcome, Engine, Verdict};
use crate::clock::Millis;
use crate::config::SessionSettings;
use crate::store::SEP;

/// An advisory on a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warning {
    /// The same canonical call arrived under a different idempotency key than its original: a
    /// key minted afresh per attempt, which only looks like idempotency.
    KeyChangesPerAttempt,
    /// The n-th repeat of one tool in the loop window: the agent may be looping.
    LoopSuspected(u32),
}

impl Warning {
    /// The advisory's name (what stats count it under).
    pub fn name(self) -> &'static str {
        match self {
            Self::KeyChangesPerAttempt => "key_changes_per_attempt",
            Self::LoopSuspected(_) => "loop_suspected",
        }
    }

    /// The advisory as the wire carries it (`loop_suspected:<count>`).
    pub fn wire(self) -> String {
        match self {
            Self::LoopSuspected(n) => format!("{}:{n}", self.name()),
            other => other.name().to_string(),
        }
    }
}

/// Repeat times kept per session and tool (the threshold cannot usefully exceed it).
const MAX_TRACKED: usize = 64;
/// Sessions and tools tracked at most; the map is cleared when it grows past this.
const MAX_LOOP_KEYS: usize = 10_000;

impl Engine {
    /// Adds the advisories to `out`, a verdict for `tool` in `tenant`/`session` at `now`;
    /// `keys` are the check's idempotency key and the one its exact original was recorded under.
    pub(super) fn advise(
        &self,
        out: &mut CheckOutcome,
        scope: (&str, &str, &str),
        keys: (Option<&str>, Option<&str>),
        settings: &SessionSettings,
        now: Millis,
    ) {
        if let (Some(mine), Some(theirs)) = keys
            && mine != theirs
        {
            out.warnings.push(Warning::KeyChangesPerAttempt);
        }
        let repeat = out.verdict != Verdict::New || out.matched.is_some();
        if repeat
            && settings.loop_threshold > 0
            && let Some(n) = self.note_repeat(scope, now, settings)
        {
            out.warnings.push(Warning::LoopSuspected(n));
        }
    }

    /// Records a repeat of the tool; the count in the window when it reaches the threshold.
    fn note_repeat(
        &self,
        (tenant, session, tool): (&str, &str, &str),
        now: Millis,
        settings: &SessionSettings,
    ) -> Option<u32> {
        if self.loops.len() > MAX_LOOP_KEYS {
            self.loops.clear();
        }
        let since = now - (settings.loop_window_secs as i64).saturating_mul(1000);
        let mut times = self
            .loops
            .entry(format!("{tenant}{SEP}{session}{SEP}{tool}"))
            .or_default();
        while times.front().is_some_and(|t| *t < since) {
            times.pop_front();
        }
        if times.len() == MAX_TRACKED {
            times.pop_front();
        }
        times.push_back(now);
        let n = times.len() as u32;
        (n >= settings.loop_threshold).then_some(n)
    }
}
