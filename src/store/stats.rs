//! Per-session counters: checks by verdict and stage, replays, cost avoided.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What one check adds to its session's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsDelta {
    /// Verdict name (`NEW`, `DUPLICATE`, ...).
    pub verdict: &'static str,
    /// Deciding stage name, when a stage matched.
    pub stage: Option<&'static str>,
    pub replayed: bool,
    pub duplicate_prevented: bool,
    pub cost_avoided: f64,
    /// Advisories the check carried, by name.
    pub warnings: Vec<&'static str>,
}

/// Accumulated counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub checks: u64,
    pub by_verdict: BTreeMap<String, u64>,
    pub by_stage: BTreeMap<String, u64>,
    pub replays_served: u64,
    pub duplicates_prevented: u64,
    pub cost_avoided: f64,
    /// Advisories given, by name.
    #[serde(default)]
    pub warnings: BTreeMap<String, u64>,
}

impl StatsSnapshot {
    /// Adds one check.
    pub fn apply(&mut self, d: &StatsDelta) {
        self.checks += 1;
        *self.by_verdict.entry(d.verdict.to_string()).or_default() += 1;
        if let Some(s) = d.stage {
            *self.by_stage.entry(s.to_string()).or_default() += 1;
        }
        self.replays_served += u64::from(d.replayed);
        self.duplicates_prevented += u64::from(d.duplicate_prevented);
        self.cost_avoided += d.cost_avoided;
        for w in &d.warnings {
            *self.warnings.entry(w.to_string()).or_default() += 1;
        }
    }

    /// Adds another snapshot (tenant totals).
    pub fn merge(&mut self, o: &StatsSnapshot) {
        self.checks += o.checks;
        for (k, v) in &o.by_verdict {
            *self.by_verdict.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.by_stage {
            *self.by_stage.entry(k.clone()).or_default() += v;
        }
        self.replays_served += o.replays_served;
        self.duplicates_prevented += o.duplicates_prevented;
        self.cost_avoided += o.cost_avoided;
        for (k, v) in &o.warnings {
            *self.warnings.entry(k.clone()).or_default() += v;
        }
    }
}
