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

use super::{Embedder, LocalEmbedder, LocalEmbedderConfig, RemoteEmbedder, RemoteEmbedderConfig};
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
    /// Embeddings of recently seen texts by the text's hash, and the texts being embedded.
    cache: quick_cache::sync::Cache<[u8; 32], Arc<Vec<f32>>>,
}

impl EmbedService {
    /// A service over `embedder` keeping the embeddings of the last `cache_entries` texts
    /// (at least `MIN_CACHE_ENTRIES`: the single-flight table).
    pub fn new(embedder: Arc<dyn Embedder>, cache_entries: usize) -> Self {
        Self {
            embedder,
            cache: quick_cache::sync::Cache::new(cache_entries.max(MIN_CACHE_ENTRIES)),
        }
    }

    /// The configured embedder (`None` for `embedder = none`). Fails (no panic) when the local
    /// model files are missing, naming the file and the command that fetches them.
    pub fn from_config(s: &SemanticConfig) -> Result<Option<Arc<Self>>, IdemError> {
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
        Ok(Some(Arc::new(Self::new(embedder, s.embed_cache))))
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
        self.embed_for(Waiter::Check { admit_by: deadline }, text, deadline)
            .await
    }

    /// [`EmbedService::embed`], admitted only when the expected wait ends by `admit_by` (else
    /// RESOURCE_EXHAUSTED at once).
    pub async fn embed_admitted_by(
        &self,
        text: &str,
        admit_by: Instant,
        deadline: Instant,
    ) -> Result<Vec<f32>, IdemError> {
        self.embed_for(Waiter::Check { admit_by }, text, deadline)
            .await
    }

    /// Embeds a text nobody waits for, behind every check's (never shed: it never delays a
    /// check by more than one model call).
    pub async fn embed_background(&self, text: &str) -> Result<Vec<f32>, IdemError> {
        self.embed_for(Waiter::Nobody, text, Instant::now() + BACKGROUND_DEADLINE)
            .await
    }

    async fn embed_for(
        &self,
        waiter: Waiter,
        text: &str,
        deadline: Instant,
    ) -> Result<Vec<f32>, IdemError> {
        // Seen before: from the cache. Being embedded right now for another caller: wait for
        // that one; if it fails, the next waiter takes over.
        let key = *blake3::hash(text.as_bytes()).as_bytes();
        let guard =
            match tokio::time::timeout_at(deadline, self.cache.get_value_or_guard_async(&key))
                .await
            {
                Ok(Ok(v)) => return Ok(v.as_ref().clone()),
                Ok(Err(guard)) => guard,
                Err(_) => {
                    return Err(IdemError::DeadlineExceeded(
                        "the same text was still being embedded at the deadline".into(),
                    ));
                }
            };
        let v = match waiter {
            Waiter::Check { admit_by } => {
                self.admit(text, admit_by)?;
                self.embedder.embed(text, deadline).await?
            }
            Waiter::Nobody => self.embedder.embed_background(text, deadline).await?,
        };
        // Err only when the entry was replaced meanwhile; the value is ours either way.
        let _ = guard.insert(Arc::new(v.clone()));
        Ok(v)
    }

    /// Sheds a check at once when the batches ahead cannot be embedded by `admit_by`; a text
    /// with nothing ahead is always admitted (the embedder's deadline covers it).
    fn admit(&self, text: &str, admit_by: Instant) -> Result<(), IdemError> {
        match self.embedder.expected_wait(text) {
            Some(w) if w.ahead > 0 && w.wait > admit_by.saturating_duration_since(Instant::now()) => {
                Err(IdemError::ResourceExhausted(format!(
                    "embedding backlog ({} ahead, ~{} ms) is longer than this check may wait \
                     (semantic.max_embed_wait_share of its deadline); retry with backoff",
                    w.ahead,
                    w.wait.as_millis()
                )))
            }
            _ => Ok(()),
        }
    }
}
