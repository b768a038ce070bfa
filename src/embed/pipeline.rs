//! The admission model of the batching embedder: how long a text queued now waits for its
//! embedding, from the batch pipeline (what is left of the batches running, then the batches
//! ahead of it at the batch size in use), with batch costs learned from measurements.
//!
//! A batch costs `overhead + per_token x tokens` (texts are grouped by length before the
//! model runs, so padding is small). Both terms are fitted online by least squares over
//! exponentially weighted moments of what batches actually took, so the model follows the
//! machine's load. Tokens are estimated from the text (`estimate_tokens`): the fit absorbs a
//! constant error of the estimate.

use std::sync::Mutex;
use std::time::Duration;

/// Word pieces a text is estimated to take: about one per four characters, plus the two
/// special tokens, capped at what the model reads.
pub fn estimate_tokens(text: &str, max_tokens: usize) -> u32 {
    let chars = text.chars().count();
    (chars.div_ceil(4) + 2).min(max_tokens) as u32
}

/// Learned cost of one model call, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchCost {
    /// Cost of a call whatever its size (session run, pooling, hand-off).
    pub overhead_us: f64,
    /// Cost of each token in the call.
    pub per_token_us: f64,
}

impl BatchCost {
    /// What a call of `tokens` tokens is expected to take.
    pub fn of(&self, tokens: u64) -> Duration {
        Duration::from_micros(
            (self.overhead_us + self.per_token_us * tokens as f64).max(0.0) as u64,
        )
    }
}

/// Online least-squares fit of `took = overhead + per_token x tokens`.
#[derive(Debug)]
pub struct CostModel {
    moments: Mutex<Moments>,
}

#[derive(Debug, Clone, Copy)]
struct Moments {
    x: f64,
    y: f64,
    xx: f64,
    xy: f64,
    samples: u32,
    prior: BatchCost,
}

/// Weight of a new sample in the moving moments (about the last 32 batches).
const ALPHA: f64 = 1.0 / 32.0;
/// Samples before the fit replaces the prior.
const MIN_SAMPLES: u32 = 8;

impl CostModel {
    /// A model that answers `prior` until it has measured enough batches.
    pub fn new(prior: BatchCost) -> Self {
        Self {
            moments: Mutex::new(Moments {
                x: 0.0,
                y: 0.0,
                xx: 0.0,
                xy: 0.0,
                samples: 0,
                prior,
            }),
        }
    }

    /// Learns from one model call of `tokens` tokens that took `took`.
    pub fn learn(&self, tokens: u64, took: Duration) {
        let (x, y) = (tokens as f64, took.as_micros() as f64);
        let mut m = self.moments.lock().unwrap_or_else(|p| p.into_inner());
        let a = if m.samples == 0 {
            1.0
        } else {
            ALPHA.max(1.0 / f64::from(m.samples + 1))
        };
        m.x += a * (x - m.x);
        m.y += a * (y - m.y);
        m.xx += a * (x * x - m.xx);
        m.xy += a * (x * y - m.xy);
        m.samples = m.samples.saturating_add(1);
    }

    /// The current cost estimate.
    pub fn cost(&self) -> BatchCost {
        let m = *self.moments.lock().unwrap_or_else(|p| p.into_inner());
        if m.samples < MIN_SAMPLES {
            return m.prior;
        }
        let var = m.xx - m.x * m.x;
        let cov = m.xy - m.x * m.y;
        // Batches all of one size: no slope to fit; keep the prior's split of the mean.
        if var < 1.0 || cov <= 0.0 {
            let per_token = if m.x > 0.0 {
                (m.y / m.x).max(0.0)
            } else {
                m.prior.per_token_us
            };
            return BatchCost {
                overhead_us: 0.0,
                per_token_us: per_token,
            };
        }
        let per_token = cov / var;
        BatchCost {
            overhead_us: (m.y - per_token * m.x).max(0.0),
            per_token_us: per_token,
        }
    }
}

/// What the pipeline looks like when a text asks to join it.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    /// Per worker: the time left of the batch it runs (zero when idle).
    pub running_left: Vec<Duration>,
    /// Token estimates of the texts waiting, in queue order.
    pub waiting: Vec<u32>,
    /// Most texts a worker takes in one batch.
    pub max_batch: usize,
}

impl Pipeline {
    /// Expected wait of a text of `tokens` tokens queued behind `waiting`: the batches ahead
    /// go to whichever worker frees first, each at its learned cost; the text's own batch is
    /// the last of them.
    pub fn expected_wait(&self, tokens: u32, cost: &BatchCost) -> Duration {
        let mut free: Vec<Duration> = if self.running_left.is_empty() {
            vec![Duration::ZERO]
        } else {
            self.running_left.clone()
        };
        let batch = self.max_batch.max(1);
        let mut queue = self.waiting.clone();
        queue.push(tokens);
        let mut done = Duration::ZERO;
        for chunk in queue.chunks(batch) {
            let Some((w, start)) = free.iter().copied().enumerate().min_by_key(|(_, t)| *t) else {
                break;
            };
            let end = start + cost.of(chunk.iter().map(|&t| u64::from(t)).sum());
            free[w] = end;
            done = end;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const COST: BatchCost = BatchCost {
        overhead_us: 1000.0,
        per_token_us: 100.0,
    };

    #[test]
    fn an_idle_pipeline_waits_for_the_text_alone() {
        let p = Pipeline {
            running_left: vec![Duration::ZERO],
            waiting: vec![],
            max_batch: 16,
        };
        // 1 ms + 40 tokens x 0.1 ms.
        assert_eq!(p.expected_wait(40, &COST), ms(5));
    }

    #[test]
    fn waiting_texts_share_one_batch_up_to_the_batch_size() {
        let p = Pipeline {
            running_left: vec![ms(3)],
            waiting: vec![40; 7],
            max_batch: 8,
        };
        // The running batch ends in 3 ms; then one batch of 8 x 40 tokens: 1 + 32 ms.
        assert_eq!(p.expected_wait(40, &COST), ms(36));
        // One more text ahead: the text's batch is the second of size 8 and 1.
        let p = Pipeline {
            waiting: vec![40; 8],
            ..p
        };
        assert_eq!(p.expected_wait(40, &COST), ms(3 + 33 + 5));
    }

    #[test]
    fn batches_go_to_the_worker_that_frees_first() {
        let p = Pipeline {
            running_left: vec![ms(10), ms(2)],
            waiting: vec![10, 10],
            max_batch: 2,
        };
        // Batch [10, 10] on worker 2 (free at 2 ms): ends at 2 + 3 = 5 ms; the text's batch on
        // worker 2 again (free at 5 ms, before worker 1 at 10): ends at 5 + 2 = 7 ms.
        assert_eq!(p.expected_wait(10, &COST), ms(7));
    }

    #[test]
    fn the_fit_recovers_overhead_and_per_token_cost() {
        let m = CostModel::new(BatchCost {
            overhead_us: 0.0,
            per_token_us: 1.0,
        });
        for i in 0..200u64 {
            let tokens = 20 + (i * 37) % 300;
            m.learn(tokens, Duration::from_micros(800 + 150 * tokens));
        }
        let c = m.cost();
        assert!((c.per_token_us - 150.0).abs() < 1.0, "{c:?}");
        assert!((c.overhead_us - 800.0).abs() < 50.0, "{c:?}");
    }

    #[test]
    fn the_prior_answers_until_enough_batches_are_measured() {
        let prior = BatchCost {
            overhead_us: 500.0,
            per_token_us: 50.0,
        };
        let m = CostModel::new(prior);
        m.learn(10, ms(100));
        assert_eq!(m.cost(), prior);
    }

    #[test]
    fn token_estimate_grows_with_the_text_and_is_capped() {
        assert_eq!(estimate_tokens("", 256), 2);
        assert!(estimate_tokens("send the quarterly report to finance", 256) > 8);
        assert_eq!(estimate_tokens(&"word ".repeat(1000), 256), 256);
    }
}
