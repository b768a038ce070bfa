//! The admission model of the batching embedder: how long a text queued now waits for its
//! embedding, from the batch pipeline (what is left of the batches running, then the batches
//! ahead of it as the workers will form them), with batch costs learned from measurements.
//!
//! A batch costs `overhead + per_token x tokens` (texts are grouped by length before the
//! model runs, so padding is small). Both terms are fitted online by least squares over
//! exponentially weighted moments of what whole batches actually took, so the model follows
//! the machine's load. Tokens are estimated from the text (`estimate_tokens`): the fit absorbs
//! a constant error of the estimate.
//!
//! A worker forms a batch from the waiting texts in order, and takes the next text only while
//! the batch, at its expected cost, still ends by the deadline of every text in it
//! (`Batcher`). So a text admitted because its batch ends in time is not made late by texts
//! queued after it joining that batch (under load every batch would grow to `max_batch`), and
//! the admission estimate simulates the same rule.

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

/// A text waiting for a worker: its estimated tokens and the time left until its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// Estimated word pieces.
    pub tokens: u32,
    /// Time left until its embedding stops being useful.
    pub left: Duration,
}

/// The rule a worker forms a batch by, starting at `start` (time from now): texts in queue
/// order, at most `max_batch`; the first always; each next one only while the batch, at its
/// expected cost, still ends by the deadline of every text in it.
#[derive(Debug, Clone, Copy)]
pub struct Batcher {
    start: Duration,
    max_batch: usize,
    tokens: u64,
    /// The earliest deadline among the texts taken.
    bound: Duration,
    taken: usize,
}

impl Batcher {
    /// An empty batch starting `start` from now.
    pub fn new(start: Duration, max_batch: usize) -> Self {
        Self {
            start,
            max_batch: max_batch.max(1),
            tokens: 0,
            bound: Duration::MAX,
            taken: 0,
        }
    }

    /// Takes `w` into the batch if the rule allows it; `false` ends the batch.
    pub fn take(&mut self, w: Waiting, cost: &BatchCost) -> bool {
        if self.taken >= self.max_batch {
            return false;
        }
        let tokens = self.tokens + u64::from(w.tokens);
        let bound = self.bound.min(w.left);
        if self.taken > 0 && self.start + cost.of(tokens) > bound {
            return false;
        }
        self.tokens = tokens;
        self.bound = bound;
        self.taken += 1;
        true
    }

    /// When the batch is expected to end (time from now).
    pub fn end(&self, cost: &BatchCost) -> Duration {
        self.start + cost.of(self.tokens)
    }
}

/// What the pipeline looks like when a text asks to join it.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    /// Per worker: the time left of the batch it runs (zero when idle).
    pub running_left: Vec<Duration>,
    /// The texts waiting, in queue order.
    pub waiting: Vec<Waiting>,
    /// Most texts a worker takes in one batch.
    pub max_batch: usize,
}

impl Pipeline {
    /// Expected wait of text `w` queued behind `waiting`: the batches ahead, formed as the
    /// workers form them (`Batcher`), go to whichever worker frees first, each at its learned
    /// cost; the text's own batch is the last of them.
    pub fn expected_wait(&self, w: Waiting, cost: &BatchCost) -> Duration {
        let mut free: Vec<Duration> = if self.running_left.is_empty() {
            vec![Duration::ZERO]
        } else {
            self.running_left.clone()
        };
        let mut queue = self.waiting.clone();
        queue.push(w);
        let mut done = Duration::ZERO;
        let mut next = 0;
        while next < queue.len() {
            let Some((worker, start)) = free.iter().copied().enumerate().min_by_key(|(_, t)| *t)
            else {
                break;
            };
            let mut batch = Batcher::new(start, self.max_batch);
            while next < queue.len() && batch.take(queue[next], cost) {
                next += 1;
            }
            let end = batch.end(cost);
            free[worker] = end;
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

    /// A text of `tokens` with a deadline far away.
    fn w(tokens: u32) -> Waiting {
        Waiting {
            tokens,
            left: Duration::from_secs(10),
        }
    }

    fn ws(tokens: u32, n: usize) -> Vec<Waiting> {
        vec![w(tokens); n]
    }

    #[test]
    fn an_idle_pipeline_waits_for_the_text_alone() {
        let p = Pipeline {
            running_left: vec![Duration::ZERO],
            waiting: vec![],
            max_batch: 16,
        };
        // 1 ms + 40 tokens x 0.1 ms.
        assert_eq!(p.expected_wait(w(40), &COST), ms(5));
    }

    #[test]
    fn waiting_texts_share_one_batch_up_to_the_batch_size() {
        let p = Pipeline {
            running_left: vec![ms(3)],
            waiting: ws(40, 7),
            max_batch: 8,
        };
        // The running batch ends in 3 ms; then one batch of 8 x 40 tokens: 1 + 32 ms.
        assert_eq!(p.expected_wait(w(40), &COST), ms(36));
        // One more text ahead: the text's batch is the second of size 8 and 1.
        let p = Pipeline {
            waiting: ws(40, 8),
            ..p
        };
        assert_eq!(p.expected_wait(w(40), &COST), ms(3 + 33 + 5));
    }

    #[test]
    fn batches_go_to_the_worker_that_frees_first() {
        let p = Pipeline {
            running_left: vec![ms(10), ms(2)],
            waiting: ws(10, 2),
            max_batch: 2,
        };
        // Batch [10, 10] on worker 2 (free at 2 ms): ends at 2 + 3 = 5 ms; the text's batch on
        // worker 2 again (free at 5 ms, before worker 1 at 10): ends at 5 + 2 = 7 ms.
        assert_eq!(p.expected_wait(w(10), &COST), ms(7));
    }

    #[test]
    fn a_batch_takes_no_text_that_would_make_an_earlier_one_late() {
        // The first text must be embedded within 12 ms: 1 + 40 x 0.1 = 5 ms alone, 9 ms with a
        // second text of 40 tokens, 13 ms with a third: the third waits for the next batch.
        let first = Waiting {
            tokens: 40,
            left: ms(12),
        };
        let mut b = Batcher::new(Duration::ZERO, 16);
        assert!(b.take(first, &COST));
        assert!(b.take(w(40), &COST));
        assert!(!b.take(w(40), &COST));
        assert_eq!(b.end(&COST), ms(9));
        // A later text with a deadline too close for the batch so far is left out too; the
        // first of a batch is always taken, whatever its deadline.
        let mut b = Batcher::new(ms(2), 16);
        assert!(b.take(
            Waiting {
                tokens: 40,
                left: ms(1)
            },
            &COST
        ));
        let mut b2 = Batcher::new(Duration::ZERO, 16);
        assert!(b2.take(w(40), &COST));
        assert!(!b2.take(
            Waiting {
                tokens: 40,
                left: ms(8)
            },
            &COST
        ));
        // The batch size caps it as well.
        let mut b3 = Batcher::new(Duration::ZERO, 2);
        assert!(b3.take(w(1), &COST) && b3.take(w(1), &COST));
        assert!(!b3.take(w(1), &COST));
        assert!(b.end(&COST) >= ms(7));
    }

    #[test]
    fn the_estimate_forms_batches_as_the_workers_do() {
        // Eight texts of 40 tokens waiting, the first due in 20 ms: one batch of all of them
        // would take 33 ms, so the worker takes four (17 ms) and the rest go in the next
        // batch. A text queued now waits for both: 17 + (1 + 5 x 4) = 38 ms, not the 37 ms of
        // one batch of nine that chunking by size alone says.
        let mut waiting = vec![Waiting {
            tokens: 40,
            left: ms(20),
        }];
        waiting.extend(ws(40, 7));
        let p = Pipeline {
            running_left: vec![Duration::ZERO],
            waiting,
            max_batch: 16,
        };
        assert_eq!(p.expected_wait(w(40), &COST), ms(17 + 21));
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
