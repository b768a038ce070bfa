//! Shared state of the similarity stages: the embedder, the per-scope vector indexes and the
//! verifier client. The stages themselves live in `funnel`.

mod admission;

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use self::admission::Admission;
use crate::clock::Millis;
use crate::config::{EmbedderKind, ServerConfig};
use crate::embed::{
    EmbedError, Embedder, LocalEmbedder, LocalEmbedderConfig, RemoteEmbedder, RemoteEmbedderConfig,
};
use crate::error::IdemError;
use crate::funnel::{FuzzyStage, SemanticStage, Stage, Verifier, VerifyStage};
use crate::index::{IndexConfig, ScopeIndexes};
use crate::record::{Record, vector_id};
use crate::store::{Store, StoreError};

/// Background embeddings (of records recorded before their embedding was ready) allowed at once.
const BACKGROUND_EMBEDS: usize = 8;
/// How long a background embedding may take.
const BACKGROUND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Who waits for an embedding: a check (admission control, request lane) or nobody (a
/// backfill, background lane).
#[derive(Debug, Clone, Copy)]
enum Waiter {
    /// Admitted when the expected wait ends by `admit_by`.
    Check {
        admit_by: Instant,
    },
    Nobody,
}

/// Embedder, indexes and verifier, shared by the similarity stages.
pub struct Semantic {
    embedder: Option<Arc<dyn Embedder>>,
    indexes: Arc<ScopeIndexes>,
    verifier: Option<Arc<Verifier>>,
    background: Arc<Semaphore>,
    /// Sheds embeddings that could not finish before their deadline.
    admission: Admission,
    /// Embeddings of recently seen texts, by the text's hash; `None` when turned off.
    cache: Option<quick_cache::sync::Cache<[u8; 32], Arc<Vec<f32>>>>,
}

impl Semantic {
    /// Shared state over `embedder` (None: fuzzy only) and an optional verifier.
    pub fn new(
        embedder: Option<Arc<dyn Embedder>>,
        index_config: IndexConfig,
        verifier: Option<Verifier>,
    ) -> Self {
        let dim = embedder
            .as_ref()
            .map_or(crate::embed::EMBEDDING_DIM, |e| e.dim());
        Self {
            embedder,
            indexes: Arc::new(ScopeIndexes::new(dim, index_config)),
            verifier: verifier.map(Arc::new),
            background: Arc::new(Semaphore::new(BACKGROUND_EMBEDS)),
            admission: Admission::default(),
            cache: None,
        }
    }

    /// Keeps the embeddings of the last `entries` distinct texts (0: no cache).
    pub fn with_cache(mut self, entries: usize) -> Self {
        self.cache = (entries > 0).then(|| quick_cache::sync::Cache::new(entries));
        self
    }

    /// Builds the similarity stages' state from the server config. Fails (no panic) when the
    /// local model files are missing, naming the file and the command that fetches it.
    pub fn from_config(config: &ServerConfig) -> Result<Option<Arc<Semantic>>, IdemError> {
        let s = &config.semantic;
        let embedder: Option<Arc<dyn Embedder>> = match s.embedder {
            EmbedderKind::None => None,
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
                Some(Arc::new(LocalEmbedder::new(c).map_err(IdemError::Embed)?))
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
                Some(Arc::new(RemoteEmbedder::new(c).map_err(IdemError::Embed)?))
            }
        };
        let verifier = match &config.verifier.base_url {
            Some(url) => Some(
                Verifier::new(
                    url,
                    &config.verifier.model,
                    std::env::var(&config.verifier.api_key_env).ok(),
                )
                .map_err(|e| IdemError::InvalidArgument(format!("verifier: {e}")))?,
            ),
            None => None,
        };
        let index_config = IndexConfig {
            hnsw_threshold: s.hnsw_threshold,
            ..IndexConfig::default()
        };
        Ok(Some(Arc::new(
            Semantic::new(embedder, index_config, verifier).with_cache(s.embed_cache),
        )))
    }

    /// The similarity stages, in funnel order.
    pub fn stages(self: &Arc<Self>) -> Vec<Arc<dyn Stage>> {
        vec![
            Arc::new(FuzzyStage),
            Arc::new(SemanticStage::new(self.clone())),
            Arc::new(VerifyStage::new(self.verifier.clone())),
        ]
    }

    /// Runs a few embeddings so the first real checks do not pay the model's warm-up.
    pub async fn warm_up(&self) {
        for text in [
            "warm up",
            "a short sentence to warm up the model",
            "one more warm-up sentence of a few words",
        ] {
            if let Err(e) = self
                .embed(text, Instant::now() + std::time::Duration::from_secs(30))
                .await
            {
                tracing::warn!(%e, "embedder warm-up failed");
                return;
            }
        }
    }

    /// Whether an embedder is configured.
    pub fn has_embedder(&self) -> bool {
        self.embedder.is_some()
    }

    /// Embeds a call's free text before `deadline` (from the cache when the text was seen).
    pub async fn embed(&self, text: &str, deadline: Instant) -> Result<Vec<f32>, IdemError> {
        self.embed_for(Waiter::Check { admit_by: deadline }, text, deadline)
            .await
    }

    /// [`Semantic::embed`], admitted only when the expected wait for the embedder ends by
    /// `admit_by` (else RESOURCE_EXHAUSTED at once).
    pub async fn embed_admitted_by(
        &self,
        text: &str,
        admit_by: Instant,
        deadline: Instant,
    ) -> Result<Vec<f32>, IdemError> {
        self.embed_for(Waiter::Check { admit_by }, text, deadline)
            .await
    }

    /// Embeds a text nobody waits for, behind every check's embedding (no admission control:
    /// it never delays a check by more than one embedding).
    async fn embed_background(&self, text: &str) -> Result<Vec<f32>, IdemError> {
        self.embed_for(Waiter::Nobody, text, Instant::now() + BACKGROUND_DEADLINE)
            .await
    }

    async fn embed_for(
        &self,
        waiter: Waiter,
        text: &str,
        deadline: Instant,
    ) -> Result<Vec<f32>, IdemError> {
        // Seen before: from the cache. Being embedded right now for another check: wait for
        // that one (a burst of identical calls costs one embedding, not one each); if it fails,
        // the next waiter takes over.
        let mut placeholder = None;
        if let Some(cache) = &self.cache {
            let key = *blake3::hash(text.as_bytes()).as_bytes();
            match tokio::time::timeout_at(deadline, cache.get_value_or_guard_async(&key)).await {
                Ok(Ok(v)) => return Ok(v.as_ref().clone()),
                Ok(Err(guard)) => placeholder = Some(guard),
                Err(_) => {
                    return Err(IdemError::DeadlineExceeded(
                        "the same text was still being embedded at the deadline".into(),
                    ));
                }
            }
        }
        let Some(e) = &self.embedder else {
            return Err(IdemError::Embed(EmbedError::Backend(
                "no embedder configured".into(),
            )));
        };
        let v = match waiter {
            Waiter::Check { admit_by } => {
                let ticket = self.admission.enter(admit_by).map_err(|(ahead, expected)| {
                    IdemError::ResourceExhausted(format!(
                        "embedding backlog ({ahead} ahead, ~{} ms) is longer than this check may \
                         wait (semantic.max_embed_wait_share of its deadline); retry with backoff",
                        expected.as_millis()
                    ))
                })?;
                let v = e.embed(text, deadline).await?;
                ticket.done();
                v
            }
            Waiter::Nobody => e.embed_background(text, deadline).await?,
        };
        if let Some(guard) = placeholder {
            // Err only when the entry was replaced meanwhile; the value is ours either way.
            let _ = guard.insert(Arc::new(v.clone()));
        }
        Ok(v)
    }

    /// Nearest vectors of `scope` to `query`, restricted to `keep`, as (vector id, cosine).
    pub fn search(
        &self,
        scope: &str,
        query: &[f32],
        k: usize,
        keep: &dyn Fn(u64) -> bool,
    ) -> Vec<(u64, f32)> {
        self.indexes
            .search(scope, query, k, keep)
            .unwrap_or_else(|e| {
                tracing::error!(%e, "vector search failed");
                Vec::new()
            })
    }

    /// The per-scope vector indexes (sizes for metrics, builds to drain at shutdown).
    pub fn indexes(&self) -> &Arc<ScopeIndexes> {
        &self.indexes
    }

    fn insert_vector(&self, scope: &str, call_id: &str, vector: &[f32]) {
        if let Err(e) = self.indexes.insert(scope, vector_id(call_id), vector) {
            tracing::error!(%e, call = %call_id, "vector index insert failed");
        }
    }

    /// Adds a newly recorded call to its scope's index; embeds it in the background when the
    /// check could not (deadline), so later paraphrases can still find it.
    ///
    /// A call with its embedding is searchable when this returns (the caller answers NEW after
    /// it, under the scope lock, so an immediate rewording finds it).
    pub async fn index_new(self: &Arc<Self>, record: &Record, store: Arc<dyn Store>) {
        if let Some(v) = &record.embedding {
            let (this, scope, id, v) = (
                self.clone(),
                record.match_scope.clone(),
                record.id.clone(),
                v.clone(),
            );
            // Inserting may migrate the index to HNSW: keep it off the tokio workers.
            if let Err(e) =
                tokio::task::spawn_blocking(move || this.insert_vector(&scope, &id, &v)).await
            {
                tracing::warn!(%e, call = %record.id, "vector index insert failed");
            }
            return;
        }
        if self.embedder.is_none() || record.free_text.is_empty() {
            return;
        }
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            tracing::warn!(call = %record.id, "background embedding queue full; call not indexed for semantic match");
            return;
        };
        let this = self.clone();
        let record = record.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match this.embed_background(&record.free_text).await {
                Ok(v) => {
                    // Only the embedding is written: a Complete meanwhile stays as it is.
                    match store.put_embedding(&record.id, &v).await {
                        Ok(true) => {}
                        // Swept meanwhile: nothing to index.
                        Ok(false) => return,
                        Err(e) => {
                            tracing::warn!(%e, "could not store a background embedding");
                        }
                    }
                    let (scope, id) = (record.match_scope.clone(), record.id.clone());
                    let _ =
                        tokio::task::spawn_blocking(move || this.insert_vector(&scope, &id, &v))
                            .await;
                }
                Err(e) => tracing::warn!(%e, call = %record.id, "background embedding failed"),
            }
        });
    }

    /// Rebuilds every scope's index from the stored embeddings.
    pub async fn rebuild(&self, store: &dyn Store, now: Millis) -> Result<usize, StoreError> {
        let vectors = store.vectors(now).await?;
        let indexes = self.indexes.clone();
        tokio::task::spawn_blocking(move || {
            indexes.rebuild(
                vectors
                    .into_iter()
                    .map(|v| (v.match_scope, vector_id(&v.id), v.vector)),
            )
        })
        .await
        .map_err(|e| StoreError::Backend(format!("vector index rebuild failed: {e}")))
    }

    /// Drops swept records from the indexes (and empty scopes altogether).
    pub fn forget(&self, swept: &[(String, String)]) {
        let ids: Vec<(u64, &str)> = swept
            .iter()
            .map(|(id, scope)| (vector_id(id), scope.as_str()))
            .collect();
        if let Err(e) = self.indexes.forget(&ids) {
            tracing::error!(%e, "vector index clean-up after a sweep failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::Embedding;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the texts it is asked to embed and takes `delay` for each; the vector depends on
    /// the text's length.
    struct Fake {
        calls: AtomicUsize,
        delay: std::time::Duration,
    }

    impl Fake {
        fn new(delay_ms: u64) -> Arc<Self> {
            Arc::new(Self {
                calls: AtomicUsize::new(0),
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
            tokio::time::sleep(self.delay).await;
            Ok(vec![1.0, text.len() as f32])
        }
        fn dim(&self) -> usize {
            2
        }
        fn name(&self) -> &str {
            "fake"
        }
    }

    fn soon() -> Instant {
        Instant::now() + std::time::Duration::from_secs(5)
    }

    async fn calls_for(cache_entries: usize, texts: &[&str]) -> (usize, Vec<Vec<f32>>) {
        let fake = Fake::new(0);
        let s = Semantic::new(Some(fake.clone()), IndexConfig::default(), None)
            .with_cache(cache_entries);
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
        let s = Arc::new(Semantic::new(
            Some(Fake::new(200)),
            IndexConfig::default(),
            None,
        ));
        let first = tokio::spawn({
            let s = s.clone();
            async move { s.embed("first", soon()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        let admit_by = Instant::now() + std::time::Duration::from_millis(5);
        let second = s.embed_admitted_by("second", admit_by, soon()).await;
        assert!(
            matches!(second, Err(IdemError::ResourceExhausted(_))),
            "{second:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert!(
            first.await.unwrap().is_ok(),
            "nothing ahead: always admitted"
        );
        // The backlog gone, the next one is admitted again.
        assert!(s.embed("third", soon()).await.is_ok());
    }

    #[tokio::test]
    async fn a_burst_of_the_same_text_costs_one_embedding_and_sheds_none() {
        let fake = Fake::new(50);
        let s = Arc::new(
            Semantic::new(Some(fake.clone()), IndexConfig::default(), None).with_cache(16),
        );
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

    #[tokio::test]
    async fn cache_off_embeds_every_time() {
        let (calls, _) = calls_for(0, &["send the report", "send the report"]).await;
        assert_eq!(calls, 2);
    }
}
