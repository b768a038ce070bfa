//! Reservation across instances. The per-scope lock serialises the checks of this process; a
//! store several instances share also reports a per-scope version, read at the start of each
//! attempt (before the check reads the scope's records). The NEW is then committed only if the
//! version is unchanged (`Ticket::commit_unless_changed`); otherwise another instance recorded
//! a call meanwhile and the check decides again on fresh reads (`StoreError::ScopeChanged`,
//! caught by the funnel loop).

use std::sync::atomic::{AtomicU64, Ordering};

use super::Engine;
use crate::error::IdemError;
use crate::store::StoreError;

/// The scope version the current attempt of a check read, if the store has versions.
#[derive(Debug, Default)]
pub(super) struct SeenVersion(
    /// 0 = none read (a store only this process writes); otherwise version + 1.
    AtomicU64,
);

impl SeenVersion {
    /// The version read, if any: the commit of a NEW is conditional on it.
    pub(super) fn get(&self) -> Option<u64> {
        self.0.load(Ordering::Acquire).checked_sub(1)
    }

    fn set(&self, v: Option<u64>) {
        self.0
            .store(v.map_or(0, |v| v.saturating_add(1)), Ordering::Release);
    }
}

impl Engine {
    /// Reads the scope's version for the attempt about to start (a no-op answer for stores
    /// only this process writes).
    pub(super) async fn read_scope_version(
        &self,
        scope: &str,
        seen: &SeenVersion,
    ) -> Result<(), IdemError> {
        seen.set(self.store.scope_version(scope).await?);
        Ok(())
    }
}

/// Whether a check's attempt lost a race with another instance and should decide again.
pub(super) fn lost_race(e: &IdemError) -> bool {
    matches!(e, IdemError::Store(StoreError::ScopeChanged))
}

/// The answer when the deadline passed while other instances kept winning the race.
pub(super) fn out_of_time() -> IdemError {
    IdemError::DeadlineExceeded(
        "no verdict before the deadline: other instances kept recording calls in this scope \
         while this check decided; retry"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seen_version_round_trips_including_zero() {
        let s = SeenVersion::default();
        assert_eq!(s.get(), None);
        s.set(Some(0));
        assert_eq!(s.get(), Some(0));
        s.set(Some(41));
        assert_eq!(s.get(), Some(41));
        s.set(None);
        assert_eq!(s.get(), None);
    }
}
