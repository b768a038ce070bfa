//! The deadline of the request a store call serves, carried with the task (tokio task-local)
//! so a backend that talks to a server (Redis) never waits past it: a stalled server is then
//! a timeout inside the check's budget. Calls outside a request (sweeps, background
//! embeddings) have none and use the backend's own timeout.

use std::future::Future;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `f` with store calls bounded by `deadline`.
pub async fn within<F: Future>(deadline: Instant, f: F) -> F::Output {
    DEADLINE.scope(deadline, f).await
}

/// The deadline of the current request, if the calling task serves one.
pub(crate) fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_deadline_is_seen_inside_its_scope_only() {
        assert_eq!(current(), None);
        let d = Instant::now() + Duration::from_millis(5);
        assert_eq!(within(d, async { current() }).await, Some(d));
        assert_eq!(current(), None);
    }
}
