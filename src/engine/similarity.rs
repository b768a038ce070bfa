//! What the similarity stages share, assembled once from the config and owned by the engine:
//! the embedding service, the per-scope vector indexes and the verifier; and the background
//! backfill that embeds calls recorded without an embedding.
//!
//! Each stage gets only its part (fuzzy nothing, semantic the indexes, verify the verifier);
//! the engine embeds before the lock and backfills after a NEW. Backfills are tracked tasks,
//! bounded in number, drained at shutdown, and write only the embedding (`put_embedding`), so
//! a `Complete` made meanwhile is never undone.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Millis;
use crate::config::ServerConfig;
use crate::embed::{EMBEDDING_DIM, EmbedService};
use crate::error::IdemError;
use crate::funnel::alignment::is_content_word;
use crate::funnel::{FuzzyStage, SemanticStage, Stage, TextCache, Verifier, VerifyStage};
use crate::index::{IndexConfig, ScopeIndexes};
use crate::record::{Record, vector_id};
use crate::store::{Store, StoreError};

use super::vector_feed::{FeedCounts, VectorFeed};

/// Backfill embeddings handed to the embedder at once (its background lane batches them).
const MAX_BACKFILLS: usize = 64;

/// Backfills waiting for one of the `MAX_BACKFILLS` slots (a few hundred bytes each); more are
/// dropped, and a later check that needs such a call's vector embeds it then. A burst of NEWs
/// faster than the model is embedded over the following seconds instead of never.
const MAX_QUEUED_BACKFILLS: usize = 4_096;

/// Embedding service, indexes, verifier and backfills.
pub struct Similarity {
    embed: Option<Arc<EmbedService>>,
    indexes: Arc<ScopeIndexes>,
    verifier: Option<Arc<Verifier>>,
    backfills: TaskTracker,
    backfill_slots: Arc<Semaphore>,
    /// Backfills queued or running (`MAX_QUEUED_BACKFILLS` permits).
    backfill_queue: Arc<Semaphore>,
    /// Cancelled at shutdown: queued backfills that have not started are dropped.
    stopping: CancellationToken,
    /// Cursors into a shared store's vector logs (unused on stores only this process writes).
    feed: VectorFeed,
}

impl Similarity {
    /// Parts over `embed` (None: fuzzy only) and an optional verifier.
    pub fn new(
        embed: Option<Arc<EmbedService>>,
        index_config: IndexConfig,
        verifier: Option<Verifier>,
    ) -> Self {
        let dim = embed.as_ref().map_or(EMBEDDING_DIM, |e| e.dim());
        Self {
            embed,
            indexes: Arc::new(ScopeIndexes::new(dim, index_config)),
            verifier: verifier.map(Arc::new),
            backfills: TaskTracker::new(),
            backfill_slots: Arc::new(Semaphore::new(MAX_BACKFILLS)),
            backfill_queue: Arc::new(Semaphore::new(MAX_QUEUED_BACKFILLS)),
            stopping: CancellationToken::new(),
            feed: VectorFeed::default(),
        }
    }

    /// Builds the parts from the server config. Fails (no panic) when the local model files
    /// are missing, naming the file and the command that fetches it.
    pub fn from_config(config: &ServerConfig) -> Result<Option<Arc<Self>>, IdemError> {
        let embed = EmbedService::from_config(&config.semantic, is_content_word)?;
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
            hnsw_threshold: config.semantic.hnsw_threshold,
            ..IndexConfig::default()
        };
        Ok(Some(Arc::new(Self::new(embed, index_config, verifier))))
    }

    /// The similarity stages, in funnel order, each with only what it uses.
    pub fn stages(&self) -> Vec<Arc<dyn Stage>> {
        vec![
            Arc::new(FuzzyStage),
            Arc::new(SemanticStage::new(
                self.indexes.clone(),
                self.embed.is_some(),
            )),
            Arc::new(VerifyStage::new(self.verifier.clone())),
        ]
    }

    /// The embedding service, when an embedder is configured.
    pub fn embedder(&self) -> Option<&Arc<EmbedService>> {
        self.embed.as_ref()
    }

    /// The per-scope vector indexes (sizes for metrics, builds to drain at shutdown).
    pub fn indexes(&self) -> &Arc<ScopeIndexes> {
        &self.indexes
    }

    /// Runs a few embeddings so the first real checks do not pay the model's warm-up.
    pub async fn warm_up(&self) {
        if let Some(e) = &self.embed {
            e.warm_up().await;
        }
    }

    /// Whether the call of vector id `vid` (`record::vector_id`) has a vector in `scope`'s
    /// index (a poisoned index reads as "no": the caller embeds it again, and the error is
    /// logged).
    pub fn has_vector_id(&self, scope: &str, vid: u64) -> bool {
        self.indexes.contains(scope, vid).unwrap_or_else(|e| {
            tracing::error!(%e, "vector index lookup failed");
            false
        })
    }

    /// Adds a call's vector to its scope's index, off the tokio workers (an insert into a
    /// large index takes a while).
    pub async fn add_vector(&self, scope: &str, call_id: &str, vector: Vec<f32>) {
        let (indexes, scope, id) = (self.indexes.clone(), scope.to_string(), vector_id(call_id));
        match tokio::task::spawn_blocking(move || indexes.insert(&scope, id, &vector)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(%e, call = %call_id, "vector index insert failed"),
            Err(e) => tracing::error!(%e, call = %call_id, "vector index insert panicked"),
        }
    }

    /// Brings `scope`'s index up to date with what other instances stored, from a shared
    /// store's vector log (a no-op on a store only this process writes).
    pub async fn catch_up(&self, store: &dyn Store, scope: &str) -> Result<(), StoreError> {
        self.feed.catch_up(&self.indexes, store, scope).await
    }

    /// What keeping the indexes current from a shared store's vector log did so far.
    pub fn feed_counts(&self) -> FeedCounts {
        self.feed.counts()
    }

    /// Takes in the embedding a check computed for an earlier call that had none: indexed now,
    /// stored in the background (only the embedding: `put_embedding`), so a restart keeps it.
    pub async fn adopt(&self, scope: &str, call_id: &str, vector: Vec<f32>, store: Arc<dyn Store>) {
        self.feed
            .embedded_again
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.add_vector(scope, call_id, vector.clone()).await;
        // Bounded like the backfills; without a slot the vector is only indexed (a restart
        // embeds it again when a check needs it).
        let Ok(slot) = self.backfill_slots.clone().try_acquire_owned() else {
            return;
        };
        let id = call_id.to_string();
        self.backfills.spawn(async move {
            let _slot = slot;
            if let Err(e) = store.put_embedding(&id, &vector).await {
                tracing::warn!(%e, call = %id, "could not store an embedding");
            }
        });
    }

    /// Embeds a call recorded without its embedding (nothing to compare with, or the
    /// deadline) in the background lane, stores the embedding alone and then indexes it, so
    /// later rewordings can find it. Bounded: with every slot taken the call is embedded when a
    /// check needs it.
    /// The call's content-word vectors, from the same model call, are kept in `texts`.
    pub fn backfill(&self, record: &Record, store: Arc<dyn Store>, texts: Arc<TextCache>) {
        let Some(embed) = self.embed.clone() else {
            return;
        };
        if record.free_text.is_empty() {
            return;
        }
        let Ok(queued) = self.backfill_queue.clone().try_acquire_owned() else {
            tracing::debug!(call = %record.id, "backfill queue full; the call is embedded when a check needs it");
            return;
        };
        let (slots, stopping) = (self.backfill_slots.clone(), self.stopping.clone());
        let indexes = self.indexes.clone();
        let (id, scope, text) = (
            record.id.clone(),
            record.match_scope.clone(),
            record.free_text.clone(),
        );
        self.backfills.spawn(async move {
            let _queued = queued;
            let _slot = tokio::select! {
                slot = slots.acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
                // Shutdown: not started, so left to the check that needs it after a restart.
                _ = stopping.cancelled() => return,
            };
            let v = match embed.embed_background_words(&text).await {
                Ok((v, words)) => {
                    if let Some(w) = words {
                        texts.put_words(&id, &text, w);
                    }
                    v
                }
                Err(e) => {
                    tracing::warn!(%e, call = %id, "background embedding failed");
                    return;
                }
            };
            // Only the embedding is written: a Complete meanwhile stays as it is.
            match store.put_embedding(&id, &v).await {
                Ok(true) => {}
                // Swept meanwhile: nothing to index.
                Ok(false) => return,
                Err(e) => tracing::warn!(%e, call = %id, "could not store a background embedding"),
            }
            let vid = vector_id(&id);
            match tokio::task::spawn_blocking(move || indexes.insert(&scope, vid, &v)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(%e, call = %id, "vector index insert failed"),
                Err(e) => tracing::error!(%e, call = %id, "vector index insert panicked"),
            }
        });
    }

    /// Rebuilds every scope's index from the stored embeddings. A store with a vector log is
    /// not read here: each scope is rebuilt when a check first needs it (`catch_up`).
    pub async fn rebuild(&self, store: &dyn Store, now: Millis) -> Result<usize, StoreError> {
        if store.has_vector_log() {
            return Ok(0);
        }
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

    /// Drops a record whose insert failed from its scope's index, off the tokio workers.
    pub async fn unindex(self: &Arc<Self>, scope: &str, call_id: &str) {
        let (sim, gone) = (self.clone(), [(call_id.to_string(), scope.to_string())]);
        if let Err(e) = tokio::task::spawn_blocking(move || sim.forget(&gone)).await {
            tracing::error!(%e, "vector index clean-up after a failed insert failed");
        }
    }

    /// Drops swept records from the indexes (and empty scopes altogether). Blocking.
    pub fn forget(&self, swept: &[(String, String)]) {
        let ids: Vec<(u64, &str)> = swept
            .iter()
            .map(|(id, scope)| (vector_id(id), scope.as_str()))
            .collect();
        if let Err(e) = self.indexes.forget(&ids) {
            tracing::error!(%e, "vector index clean-up after a sweep failed");
        }
    }

    /// Backfills queued or running (benches wait for none before they measure).
    pub fn backfills_pending(&self) -> usize {
        MAX_QUEUED_BACKFILLS - self.backfill_queue.available_permits()
    }

    /// Stops taking backfills, drops the queued ones and waits for those running and for
    /// index builds (shutdown).
    pub async fn drain(&self) {
        self.stopping.cancel();
        self.backfills.close();
        self.backfills.wait().await;
        let indexes = self.indexes.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || indexes.wait_for_builds()).await {
            tracing::error!(%e, "waiting for index builds failed");
        }
    }
}
