//! The embedding service the engine asks for embeddings: one place for the text cache, single
//! flight, admission control and the two lanes (checks first, backfills when idle).
//!
//! Concurrent requests for one text share one embedding (a retry storm costs one model call),
//! and a check is shed (RESOURCE_EXHAUSTED) only when the embedder's own estimate of its wait,
//! from the batch pipeline, passes what the check may wait: the offered load then exceeds
//! what the model can do inside the budget.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{
    Embedder, LocalEmbedder, LocalEmbedderConfig, RemoteEmbedder, RemoteEmbedderConfig, WordVectors,
};
use crate::config::{EmbedderKind, SemanticConfig};
use crate::error::IdemError;

/// How long a background embedding may take.
const BACKGROUND_DEADLINE: Duration = Duration::from_secs(10);
/// Entries the cache keeps at least: it is also the table of texts being embedded right now,
/// which single flight needs whatever `embed_cache` says.
const MIN_CACHE_ENTRIES: usize = 64;

/// Who waits for an embedding.
#[derive(Debug, Clone, Copy)]
enum Waiter {
    /// A check, admitted when the expected wait ends by `admit_by`; request lane.
    Check { admit_by: Instant },
    /// Nobody (a backfill); background lane, never shed.
    Nobody,
}

/// Embeddings for checks and backfills, shared behind an `Arc`.
pub struct EmbedService {
    embedder: Arc<dyn Embedder>,
    /// Embeddings of recently seen texts by the text's hash, and the texts being embedded:
    /// sentence vectors only (1.5 KB an entry). Word vectors would cost 2-10 KB more an entry
    /// for the rare check whose own text was embedded before; such a check is judged by the
    /// judge's base model.
    cache: quick_cache::sync::Cache<[u8; 32], Arc<Vec<f32>>>,
    /// Which words' vectors are kept and returned (the others are dropped at once).
    keep_word: fn(&str) -> bool,
}

impl EmbedService {
    /// A service over `embedder` keeping the embeddings of the last `cache_entries` texts
    /// (at least `MIN_CACHE_ENTRIES`: the single-flight table).
    pub fn new(embedder: Arc<dyn Embedder>, cache_entries: usize) -> Self {
        Self {
            embedder,
            cache: quick_cache::sync::Cache::new(cache_entries.max(MIN_CACHE_ENTRIES)),
            keep_word: |_| true,
        }
    }

    /// The same service keeping and returning only the vectors of words `keep_word` accepts
    /// (the judge's content words): the rest would only cost cache memory.
    pub fn keeping_words(mut self, keep_word: fn(&str) -> bool) -> Self {
        self.keep_word = keep_word;
        self
    }

    /// The configured embedder (`None` for `embedder = none`), keeping the vectors of the words
    /// `keep_word` accepts. Fails (no panic) when the local model files are missing, naming the
    /// file and the command that fetches them.
    pub fn from_config(
        s: &SemanticConfig,
        keep_word: fn(&str) -> bool,
    ) -> Result<Option<Arc<Self>>, IdemError> {
        let embedder: Arc<dyn Embedder> = match s.embedder {
            EmbedderKind::None => return Ok(None),
            EmbedderKind::Local => {
                let workers = s.embed_workers.max(1);
                // The workers share the cores: more threads than cores only adds switching.
                let cores = std::thread::available_parallelism().map_or(1, usize::from);
                let c = LocalEmbedderConfig {
                    models_dir: s.models_dir.clone(),
                    workers,
                    intra_threads: (cores / workers).max(1),
                    nice: s.embed_nice,
                    queue_capacity: s.embed_queue.max(1),
                    ..LocalEmbedderConfig::default()
                };
                Arc::new(LocalEmbedder::new(c).map_err(IdemError::Embed)?)
            }
            EmbedderKind::Remote => {
                let Some(url) = s.remote_url.clone() else {
                    return Err(IdemError::InvalidArgument(
                        "semantic.embedder = remote needs semantic.remote_url (or --remote-embed-url)".into(),
                    ));
                };
                let mut c = RemoteEmbedderConfig {
                    base_url: url,
                    ..RemoteEmbedderConfig::default()
                };
                if let Some(m) = &s.remote_model {
                    c.model = m.clone();
                }
                if let Some(var) = &s.remote_api_key_env {
                    c.api_key = std::env::var(var).ok();
                }
                Arc::new(RemoteEmbedder::new(c).map_err(IdemError::Embed)?)
            }
        };
        Ok(Some(Arc::new(
            Self::new(embedder, s.embed_cache).keeping_words(keep_word),
        )))
    }

    /// Forgets every cached embedding (benches and tests that must measure a cold text).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// The embedder's queue and batch sizes (metrics).
    pub fn load(&self) -> Option<super::EmbedLoad> {
        self.embedder.load()
    }

    /// Length of the vectors this service returns.
    pub fn dim(&self) -> usize {
        self.embedder.dim()
    }

    /// Runs a few embeddings so the first real checks do not pay the model's warm-up.
    pub async fn warm_up(&self) {
        for text in [
            "warm up",
            "a short sentence to warm up the model",
            "one more warm-up sentence of a few words",
        ] {
            if let Err(e) = self
                .embed(text, Instant::now() + Duration::from_secs(30))
                .await
            {
                tracing::warn!(%e, "embedder warm-up failed");
                return;
            }
        }
    }

    /// Embeds a text a check waits for, before `deadline`.
    pub async fn embed(&self, text: &str, deadline: Instant) -> Result<Vec<f32>, IdemError> {
        Ok(self
            .embed_for(Waiter::Check { admit_by: deadline }, text, deadline)
            .await?
            .0)
    }

    /// [`EmbedService::embed`], admitted only when the expected wait ends by `admit_by` (else
    /// RESOURCE_EXHAUSTED at once).
    pub async fn embed_admitted_by(
        &self,
        text: &str,
        admit_by: Instant,
        deadline: Instant,
    ) -> Result<Vec<f32>, IdemError> {
        Ok(self
            .embed_words_admitted_by(text, admit_by, deadline)
            .await?
            .0)
    }

    /// [`EmbedService::embed_admitted_by`], with the vectors of the text's kept words from the
    /// same model call when the embedder gives them (`None` from a remote embedder, and when
    /// the embedding came from the cache or from another caller's model call).
    pub async fn embed_words_admitted_by(
        &self,
        text: &str,
        admit_by: Instant,
        deadline: Instant,
    ) -> Result<(Vec<f32>, Option<WordVectors>), IdemError> {
        self.embed_for(Waiter::Check { admit_by }, text, deadline)
            .await
    }

    /// Embeds a text nobody waits for, behind every check's (never shed: it never delays a
    /// check by more than one model call).
    pub async fn embed_background(&self, text: &str) -> Result<Vec<f32>, IdemError> {
        Ok(self.embed_background_words(text).await?.0)
    }

    /// [`EmbedService::embed_background`] with the word vectors, as `embed_words_admitted_by`.
    pub async fn embed_background_words(
        &self,
        text: &str,
    ) -> Result<(Vec<f32>, Option<WordVectors>), IdemError> {
        self.embed_for(Waiter::Nobody, text, Instant::now() + BACKGROUND_DEADLINE)
            .await
    }

    async fn embed_for(
        &self,
        waiter: Waiter,
        text: &str,
        deadline: Instant,
    ) -> Result<(Vec<f32>, Option<WordVectors>), IdemError> {
        // Seen before: from the cache. Being embedded right now for another caller: wait for
        // that one; if it fails, the next waiter takes over.
        let key = *blake3::hash(text.as_bytes()).as_bytes();
        let guard = match tokio::time::timeout_at(
            deadline,
            self.cache.get_value_or_guard_async(&key),
        )
        .await
        {
            Ok(Ok(v)) => return Ok((v.as_ref().clone(), None)),
            Ok(Err(guard)) => guard,
            Err(_) => {
                return Err(IdemError::DeadlineExceeded(
                    "the same text was still being embedded at the deadline".into(),
                ));
            }
        };
        let (v, words) = match waiter {
            Waiter::Check { admit_by } => {
                self.admit(text, admit_by, deadline)?;
                self.embedder.embed_words(text, deadline).await?
            }
            Waiter::Nobody => self.embedder.embed_background_words(text, deadline).await?,
        };
        let words = words.map(|mut w| {
            w.retain(self.keep_word);
            w
        });
        // Err only when the entry was replaced meanwhile; the value is ours either way.
        let _ = guard.insert(Arc::new(v.clone()));
        Ok((v, words))
    }

    /// Sheds a check at once when the batches ahead cannot be embedded by `admit_by`; a text
    /// with nothing ahead is always admitted (the embedder's deadline covers it). A check whose
    /// own embedding would not fit even alone is not shed (the load is not the cause): it
    /// misses its embedding deadline at once instead.
    fn admit(&self, text: &str, admit_by: Instant, deadline: Instant) -> Result<(), IdemError> {
        let left = admit_by.saturating_duration_since(Instant::now());
        match self.embedder.expected_wait(text, deadline) {
            Some(w) if w.ahead > 0 && w.wait > left && w.alone > left => {
                Err(IdemError::DeadlineExceeded(format!(
                    "embedding this text takes ~{} ms, more than the check's budget leaves",
                    w.alone.as_millis()
                )))
            }
            Some(w) if w.ahead > 0 && w.wait > left => Err(IdemError::Shed(
                crate::error::ShedReason::EmbedWait,
                format!(
                    "embedding backlog ({} ahead, ~{} ms) is longer than this check may wait \
                 (semantic.max_embed_wait_share of its deadline); retry with backoff",
                    w.ahead,
                    w.wait.as_millis()
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::EmbedError;
    use crate::embed::Embedding;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the texts it is asked to embed and takes `delay` for each; the vector depends on
    /// the text's length.
    struct Fake {
        calls: AtomicUsize,
        in_flight: AtomicUsize,
        delay: std::time::Duration,
    }

    impl Fake {
        fn new(delay_ms: u64) -> Arc<Self> {
            Arc::new(Self {
                calls: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                delay: std::time::Duration::from_millis(delay_ms),
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl Embedder for Fake {
        async fn embed(&self, text: &str, _deadline: Instant) -> Result<Embedding, EmbedError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(vec![1.0, text.len() as f32])
        }
        /// Each word of the text with a one-dimensional vector.
        async fn embed_words(
            &self,
            text: &str,
            deadline: Instant,
        ) -> Result<(Embedding, Option<WordVectors>), EmbedError> {
            let words: Vec<Box<str>> = text.split_whitespace().map(Box::from).collect();
            let values = vec![1.0; words.len()];
            let v = self.embed(text, deadline).await?;
            Ok((v, Some(WordVectors::new(1, words, &values))))
        }
        /// One text at a time: each text ahead adds a whole delay.
        fn expected_wait(
            &self,
            _text: &str,
            _deadline: Instant,
        ) -> Option<crate::embed::ExpectedWait> {
            let ahead = self.in_flight.load(Ordering::SeqCst);
            Some(crate::embed::ExpectedWait {
                wait: self.delay * (ahead as u32 + 1),
                ahead,
                alone: self.delay,
            })
        }
        fn dim(&self) -> usize {
            2
        }
        fn name(&self) -> &str {
            "fake"
        }
    }

    #[tokio::test]
    async fn only_the_kept_words_are_returned_and_cached() {
        let s = EmbedService::new(Fake::new(0), 8).keeping_words(|w| w != "the");
        let words = |r: (Vec<f32>, Option<WordVectors>)| {
            let w = r.1.expect("the fake gives words");
            (0..w.len())
                .map(|i| w.word(i).to_string())
                .collect::<Vec<_>>()
        };
        let text = "send the report";
        let first = s
            .embed_words_admitted_by(text, soon(), soon())
            .await
            .unwrap();
        assert_eq!(words(first), ["send", "report"]);
        let cached = s.embed_background_words(text).await.unwrap();
        assert!(cached.1.is_none(), "the cache keeps sentence vectors only");
    }

    fn soon() -> Instant {
        Instant::now() + std::time::Duration::from_secs(5)
    }

    async fn calls_for(cache_entries: usize, texts: &[&str]) -> (usize, Vec<Vec<f32>>) {
        let fake = Fake::new(0);
        let s = EmbedService::new(fake.clone(), cache_entries);
        let mut out = Vec::new();
        for t in texts {
            out.push(s.embed(t, soon()).await.unwrap());
        }
        (fake.calls(), out)
    }

    #[tokio::test]
    async fn a_text_seen_before_is_not_embedded_again() {
        let (calls, vectors) = calls_for(16, &["send the report", "a b", "send the report"]).await;
        assert_eq!(calls, 2);
        assert_eq!(vectors[0], vectors[2]);
        assert_ne!(vectors[0], vectors[1]);
    }

    #[tokio::test]
    async fn a_backlog_longer_than_the_max_wait_is_shed_at_once() {
        let s = Arc::new(EmbedService::new(Fake::new(200), 0));
        let first = tokio::spawn({
            let s = s.clone();
            async move { s.embed("first", soon()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        // Alone it would fit (200 ms of 300); behind the first it would not (400 ms).
        let admit_by = Instant::now() + std::time::Duration::from_millis(300);
        let second = s.embed_admitted_by("second", admit_by, soon()).await;
        assert!(
            matches!(
                second,
                Err(IdemError::Shed(crate::error::ShedReason::EmbedWait, _))
            ),
            "{second:?}"
        );
        // A budget too short for the text alone is the deadline's doing, not the load's.
        let tight = Instant::now() + std::time::Duration::from_millis(5);
        let third = s.embed_admitted_by("third one", tight, soon()).await;
        assert!(
            matches!(third, Err(IdemError::DeadlineExceeded(_))),
            "{third:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert!(
            first.await.unwrap().is_ok(),
            "nothing ahead: always admitted"
        );
        // The backlog gone, the next one is admitted again.
        assert!(s.embed("fourth", soon()).await.is_ok());
    }

    #[tokio::test]
    async fn a_burst_of_the_same_text_costs_one_embedding_and_sheds_none() {
        let fake = Fake::new(50);
        // No cache asked for: single flight holds anyway.
        let s = Arc::new(EmbedService::new(fake.clone(), 0));
        // A tight admission bound: only a request with nothing ahead would be admitted.
        let admit_by = Instant::now() + std::time::Duration::from_millis(1);
        let calls = (0..10).map(|_| {
            let s = s.clone();
            async move { s.embed_admitted_by("same words", admit_by, soon()).await }
        });
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        assert_eq!(fake.calls(), 1);
    }
}
