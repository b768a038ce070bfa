//! Shared state of the similarity stages: the embedder, the per-scope vector indexes and the
//! verifier client. The stages themselves live in `funnel`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::clock::Millis;
use crate::config::{EmbedderKind, ServerConfig};
use crate::embed::{
    EmbedError, Embedder, LocalEmbedder, LocalEmbedderConfig, RemoteEmbedder, RemoteEmbedderConfig,
};
use crate::error::IdemError;
use crate::funnel::{FuzzyStage, SemanticStage, Stage, Verifier, VerifyStage};
use crate::index::{AdaptiveIndex, IndexConfig, VectorIndex};
use crate::record::{Record, vector_id};
use crate::store::{Store, StoreError};

/// Background embeddings (of records recorded before their embedding was ready) allowed at once.
const BACKGROUND_EMBEDS: usize = 8;
/// How long a background embedding may take.
const BACKGROUND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Embedder, indexes and verifier, shared by the similarity stages.
pub struct Semantic {
    embedder: Option<Arc<dyn Embedder>>,
    indexes: DashMap<String, Arc<RwLock<AdaptiveIndex>>>,
    index_config: IndexConfig,
    dim: usize,
    verifier: Option<Arc<Verifier>>,
    background: Arc<Semaphore>,
    /// Index inserts handed to blocking threads and not yet applied.
    pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Embeddings requested and not yet answered (admission control).
    embedding_now: std::sync::atomic::AtomicUsize,
    /// Moving average of one embedding's service time (nothing queued ahead), in microseconds.
    embed_ewma_us: std::sync::atomic::AtomicU64,
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
            indexes: DashMap::new(),
            index_config,
            dim,
            verifier: verifier.map(Arc::new),
            background: Arc::new(Semaphore::new(BACKGROUND_EMBEDS)),
            pending: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            embedding_now: std::sync::atomic::AtomicUsize::new(0),
            embed_ewma_us: std::sync::atomic::AtomicU64::new(5_000),
        }
    }

    /// Builds the similarity stages' state from the server config. Fails (no panic) when the
    /// local model files are missing, naming the file and the command that fetches it.
    pub fn from_config(config: &ServerConfig) -> Result<Option<Arc<Semantic>>, IdemError> {
        let s = &config.semantic;
        let embedder: Option<Arc<dyn Embedder>> = match s.embedder {
            EmbedderKind::None => None,
            EmbedderKind::Local => {
                let c = LocalEmbedderConfig {
                    models_dir: s.models_dir.clone(),
                    workers: s.embed_workers.max(1),
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
        Ok(Some(Arc::new(Semantic::new(
            embedder,
            index_config,
            verifier,
        ))))
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

    /// Waits until every index insert handed off so far is applied (calibration, tests).
    pub async fn settle(&self) {
        while self.pending.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
    }

    /// Whether an embedder is configured.
    pub fn has_embedder(&self) -> bool {
        self.embedder.is_some()
    }

    /// Embeds a call's free text before `deadline`.
    pub async fn embed(&self, text: &str, deadline: Instant) -> Result<Vec<f32>, IdemError> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(e) = &self.embedder else {
            return Err(IdemError::Embed(EmbedError::Backend(
                "no embedder configured".into(),
            )));
        };
        // Admission: when the backlog ahead of this request cannot be embedded before its
        // deadline, say so now (RESOURCE_EXHAUSTED) instead of queueing until the deadline.
        let ahead = self.embedding_now.fetch_add(1, Relaxed) as u64;
        let _done = Decrement(&self.embedding_now);
        let ewma = self.embed_ewma_us.load(Relaxed);
        // Waiting requests are batched together, so the backlog costs the batch in hand plus
        // a batch that grows slowly with its size, not one embedding per request.
        let expected = std::time::Duration::from_micros(ewma * 2 + ewma * ahead / 8);
        if ahead > 0 && expected > deadline.saturating_duration_since(Instant::now()) {
            return Err(IdemError::ResourceExhausted(format!(
                "embedding backlog ({ahead} ahead, ~{} ms) exceeds the deadline; retry with backoff",
                expected.as_millis()
            )));
        }
        let started = Instant::now();
        let v = e.embed(text, deadline).await?;
        // Learn the service time only from requests that had nothing ahead of them: a latency
        // that includes queueing would count the backlog twice.
        if ahead == 0 {
            let took = started.elapsed().as_micros() as u64;
            let old = self.embed_ewma_us.load(Relaxed);
            self.embed_ewma_us.store((old * 7 + took) / 8, Relaxed);
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
        let Some(idx) = self.indexes.get(scope).map(|e| e.clone()) else {
            return Vec::new();
        };
        let Ok(g) = idx.read() else { return Vec::new() };
        g.search(query, k, keep)
    }

    fn scope_index(&self, scope: &str) -> Arc<RwLock<AdaptiveIndex>> {
        self.indexes
            .entry(scope.to_string())
            .or_insert_with(|| {
                Arc::new(RwLock::new(AdaptiveIndex::new(
                    self.dim,
                    self.index_config.clone(),
                )))
            })
            .clone()
    }

    fn insert_vector(&self, scope: &str, call_id: &str, vector: &[f32]) {
        let idx = self.scope_index(scope);
        let Ok(mut g) = idx.write() else { return };
        g.insert(vector_id(call_id), vector);
    }

    /// Adds a newly recorded call to its scope's index; embeds it in the background when the
    /// check could not (deadline), so later paraphrases can still find it.
    pub fn index_new(self: &Arc<Self>, record: &Record, store: Arc<dyn Store>) {
        if let Some(v) = &record.embedding {
            let (this, scope, id, v) = (
                self.clone(),
                record.match_scope.clone(),
                record.id.clone(),
                v.clone(),
            );
            // Inserting may migrate the index to HNSW: keep it off the tokio workers.
            self.pending
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::task::spawn_blocking(move || {
                this.insert_vector(&scope, &id, &v);
                this.pending
                    .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
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
            match this
                .embed(&record.free_text, Instant::now() + BACKGROUND_DEADLINE)
                .await
            {
                Ok(v) => {
                    if let Ok(Some(mut current)) = store.get(&record.id).await {
                        current.embedding = Some(v.clone());
                        if let Err(e) = store.update(&current).await {
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
        let n = vectors.len();
        let mut by_scope: HashMap<String, Vec<(String, Vec<f32>)>> = HashMap::new();
        for v in vectors {
            by_scope
                .entry(v.match_scope)
                .or_default()
                .push((v.id, v.vector));
        }
        for (scope, items) in by_scope {
            let index = AdaptiveIndex::build(
                self.dim,
                self.index_config.clone(),
                items.iter().map(|(id, v)| (vector_id(id), v.as_slice())),
            );
            self.indexes.insert(scope, Arc::new(RwLock::new(index)));
        }
        Ok(n)
    }

    /// Drops swept records from the indexes (and empty scopes altogether).
    pub fn forget(&self, swept: &[(String, String)]) {
        for (id, scope) in swept {
            let Some(idx) = self.indexes.get(scope).map(|e| e.clone()) else {
                continue;
            };
            let empty = match idx.write() {
                Ok(mut g) => {
                    g.remove(vector_id(id));
                    g.is_empty()
                }
                Err(_) => false,
            };
            if empty {
                self.indexes.remove(scope);
            }
        }
    }
}

/// Decrements a counter when dropped (also when the request is cancelled).
struct Decrement<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
