//! How loaded the embedder is, for metrics: texts waiting now, and a histogram of the batch
//! sizes its workers ran. Counted with atomics on the workers' threads; read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the batch-size buckets (texts per model call batch).
pub const BATCH_BUCKETS: [u64; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// Batch sizes seen so far: a cumulative histogram.
#[derive(Debug, Default)]
pub struct BatchSizes {
    /// Batches of more than `BATCH_BUCKETS[i-1]` and at most `BATCH_BUCKETS[i]` texts; the
    /// extra last one counts larger batches.
    buckets: [AtomicU64; BATCH_BUCKETS.len() + 1],
    batches: AtomicU64,
    texts: AtomicU64,
}

impl BatchSizes {
    /// Counts one batch of `n` texts.
    pub fn record(&self, n: usize) {
        let n = n as u64;
        let i = BATCH_BUCKETS
            .iter()
            .position(|b| n <= *b)
            .unwrap_or(BATCH_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.texts.fetch_add(n, Ordering::Relaxed);
    }

    /// `(upper bound, count in this bucket alone)` per bucket, the last bound `f64::MAX`
    /// (+Inf); then the total texts and the batch count.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, u64) {
        let bounds = BATCH_BUCKETS.iter().map(|b| *b as f64).chain([f64::MAX]);
        let buckets = bounds
            .zip(&self.buckets)
            .map(|(b, c)| (b, c.load(Ordering::Relaxed)))
            .collect();
        (
            buckets,
            self.texts.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
        )
    }
}

/// An embedder's load right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmbedLoad {
    /// Check texts waiting for a worker.
    pub queued: usize,
    /// `(upper bound, count)` buckets of batch sizes, not cumulative, the last one +Inf.
    pub batch_buckets: Vec<(f64, u64)>,
    /// Texts embedded in batches so far.
    pub batched_texts: u64,
    /// Batches run so far.
    pub batches: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_land_in_their_bucket_and_large_ones_in_the_overflow() {
        let b = BatchSizes::default();
        for n in [1, 3, 3, 200] {
            b.record(n);
        }
        let (buckets, texts, batches) = b.snapshot();
        assert_eq!(buckets[0], (1.0, 1));
        assert_eq!(buckets[1], (2.0, 0));
        assert_eq!(buckets[2], (4.0, 2));
        assert_eq!(buckets[7], (128.0, 0));
        assert_eq!(buckets[8], (f64::MAX, 1));
        assert_eq!((texts, batches), (207, 4));
    }
}
