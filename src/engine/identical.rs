//! Identical checks under way in this instance: checks of one call (match scope and exact
//! hash) that run at once, as in a retry storm. A check that runs out of time waiting for its
//! scope's lock while an identical check is still under way waits for that check's record
//! instead of failing: identical checks ahead of a check never make it fail.

use dashmap::DashMap;

/// Counts the checks under way per call; an entry lives only while one of its checks runs,
/// so the map is bounded by the checks in flight (the admission limit).
#[derive(Default)]
pub(crate) struct IdenticalChecks {
    running: DashMap<(String, String), usize>,
}

impl IdenticalChecks {
    /// Registers a check of `exact_hash` in `scope` until the returned guard is dropped.
    pub(crate) fn enter(&self, scope: &str, exact_hash: &str) -> IdenticalGuard<'_> {
        let key = (scope.to_string(), exact_hash.to_string());
        *self.running.entry(key.clone()).or_insert(0) += 1;
        IdenticalGuard { checks: self, key }
    }
}

/// One registered check; unregisters it when dropped.
pub(crate) struct IdenticalGuard<'a> {
    checks: &'a IdenticalChecks,
    key: (String, String),
}

impl IdenticalGuard<'_> {
    /// Whether another check of the same call is under way in this instance.
    pub(crate) fn others_running(&self) -> bool {
        self.checks.running.get(&self.key).is_some_and(|n| *n > 1)
    }
}

impl Drop for IdenticalGuard<'_> {
    fn drop(&mut self) {
        self.checks.running.remove_if_mut(&self.key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_sees_identical_checks_only_while_they_run_and_entries_go_away() {
        let checks = IdenticalChecks::default();
        let a = checks.enter("t/s", "h1");
        assert!(!a.others_running());
        let b = checks.enter("t/s", "h1");
        let other_call = checks.enter("t/s", "h2");
        let other_scope = checks.enter("t/x", "h1");
        assert!(a.others_running() && b.others_running());
        assert!(!other_call.others_running() && !other_scope.others_running());
        drop(b);
        assert!(!a.others_running());
        drop((a, other_call, other_scope));
        assert!(checks.running.is_empty());
    }
}
