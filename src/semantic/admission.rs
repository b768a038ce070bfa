//! Admission control for embeddings: answer RESOURCE_EXHAUSTED at once when the backlog ahead
//! of a request cannot be embedded before its deadline, instead of queueing until it passes.
//!
//! The wait is modelled as `base + per_ahead * ahead`: `base` is one embedding with nothing
//! ahead, `per_ahead` what each request already waiting adds (less than `base`, since waiting
//! requests are batched). Both are moving averages of what the embedder actually took, so the
//! model follows the machine's load (a busy CPU makes both grow).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// The estimate and the count of embeddings in flight.
#[derive(Debug)]
pub struct Admission {
    in_flight: AtomicUsize,
    base_us: AtomicU64,
    per_ahead_us: AtomicU64,
}

/// An admitted request; dropping it (also on cancellation) leaves the count.
#[derive(Debug)]
pub struct Ticket<'a> {
    admission: &'a Admission,
    ahead: u64,
    started: Instant,
}

impl Default for Admission {
    fn default() -> Self {
        Self::new(Duration::from_millis(5))
    }
}

impl Admission {
    /// Starts from `first_guess` for one embedding; half of it per request ahead.
    pub fn new(first_guess: Duration) -> Self {
        let us = first_guess.as_micros() as u64;
        Self {
            in_flight: AtomicUsize::new(0),
            base_us: AtomicU64::new(us),
            per_ahead_us: AtomicU64::new(us / 2),
        }
    }

    /// Expected wait for a request with `ahead` requests before it.
    pub fn expected(&self, ahead: u64) -> Duration {
        Duration::from_micros(
            self.base_us.load(Relaxed) + self.per_ahead_us.load(Relaxed).saturating_mul(ahead),
        )
    }

    /// Admits a request due by `deadline`, or says how long the backlog would take. A request
    /// with nothing ahead is always admitted: the embedder's own deadline check covers it.
    pub fn enter(&self, deadline: Instant) -> Result<Ticket<'_>, (u64, Duration)> {
        let ahead = self.in_flight.fetch_add(1, Relaxed) as u64;
        let ticket = Ticket {
            admission: self,
            ahead,
            started: Instant::now(),
        };
        let expected = self.expected(ahead);
        if ahead > 0 && expected > deadline.saturating_duration_since(Instant::now()) {
            return Err((ahead, expected));
        }
        Ok(ticket)
    }

    fn learn(&self, ahead: u64, took: Duration) {
        let took = took.as_micros() as u64;
        let mix = |cell: &AtomicU64, sample: u64| {
            let old = cell.load(Relaxed);
            cell.store((old * 7 + sample) / 8, Relaxed);
        };
        let base = self.base_us.load(Relaxed);
        match took.saturating_sub(base).checked_div(ahead) {
            Some(per_ahead) => mix(&self.per_ahead_us, per_ahead),
            // Nothing ahead: a sample of the base itself.
            None => mix(&self.base_us, took),
        }
    }
}

impl Ticket<'_> {
    /// The embedding came back: learn from how long it took.
    pub fn done(self) {
        self.admission.learn(self.ahead, self.started.elapsed());
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.admission.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_request_is_always_admitted() {
        let a = Admission::new(ms(100));
        assert!(a.enter(Instant::now() + ms(1)).is_ok());
    }

    #[test]
    fn backlog_past_the_deadline_is_refused_and_counted_out() {
        let a = Admission::new(ms(10));
        let first = a.enter(Instant::now() + ms(50)).unwrap();
        // base 10 + 5 per request ahead: 1 ahead is 15 ms.
        assert_eq!(a.enter(Instant::now() + ms(12)).unwrap_err().0, 1);
        let second = a.enter(Instant::now() + ms(50)).unwrap();
        assert_eq!(second.ahead, 1);
        drop(first);
        drop(second);
        assert_eq!(a.in_flight.load(Relaxed), 0);
    }

    #[test]
    fn estimate_follows_what_embeddings_take() {
        let a = Admission::new(ms(5));
        for _ in 0..64 {
            a.learn(0, ms(20));
            a.learn(4, ms(20 + 4 * 12));
        }
        let base = a.expected(0).as_millis();
        let per = (a.expected(1) - a.expected(0)).as_millis();
        assert!((19..=20).contains(&base), "base {base}");
        assert!((11..=12).contains(&per), "per request ahead {per}");
    }
}
