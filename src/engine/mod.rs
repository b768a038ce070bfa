//! The engine: funnel + store + lifecycle. Everything the service does, without the wire.
//!
//! A check runs the funnel under its match scope's lock (one of a fixed set of stripes), so N
//! concurrent identical checks produce exactly one NEW; a NEW's commit runs after the lock is
//! let go, visible meanwhile through the pending inserts (`store::PendingInserts`). Expensive work that needs no lock (the
//! embedding) is done before the lock is taken, and the candidates are read meanwhile: each
//! stripe counts the records inserted under it, so a check knows under the lock whether what it
//! read ahead is still the whole picture when this instance is the only writer of its store.
//! A store several instances share adds a per-scope version: a NEW is inserted only if no
//! instance inserted into the scope since the attempt began, else the check decides again
//! (`reservation`).

mod advice;
mod calls;
mod check;
mod feedback;
mod identical;
mod reservation;
mod sessions;
mod similarity;
mod types;
mod validate;
mod vector_feed;

pub use advice::Warning;
pub use calls::{DEFAULT_WAIT, MAX_WAIT, unknown_call};
pub use feedback::{Export, unknown_verdict};
pub use similarity::Similarity;
pub use types::*;
pub use vector_feed::FeedCounts;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{Mutex, Semaphore};

use crate::clock::{Clock, SystemClock};
use crate::config::{ServerConfig, SessionSettings};
use crate::funnel::{ExactStage, Funnel, KeyStage, Stage, TextCache};
use crate::store::{PendingInserts, StatsSnapshot, Store, StoreError};

/// Lock stripes: scopes hash onto these, so memory does not grow with the number of scopes.
const LOCK_STRIPES: usize = 1024;
/// Cached session settings kept at most; the cache is cleared when it grows past this.
const SESSION_CACHE_MAX: usize = 10_000;

/// One lock stripe: the lock checks of its scopes run under, and how many records were
/// inserted under it (read without the lock to validate candidates read ahead of it).
#[derive(Default)]
struct Stripe {
    lock: Mutex<()>,
    inserts: std::sync::atomic::AtomicU64,
    /// Woken after every insert, so checks waiting for the lock can look again for an
    /// original that settles them without it.
    inserted: tokio::sync::Notify,
    /// Woken after every Complete and take-over, for WaitForCall.
    completed: tokio::sync::Notify,
}

/// The dedup engine.
pub struct Engine {
    /// The store, seen through `pending`: lookups see NEWs decided and still committing.
    pub(crate) store: Arc<dyn Store>,
    /// NEWs decided under their scope's lock whose commit runs after the lock is let go.
    pending: Arc<PendingInserts>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) funnel: Funnel,
    pub(crate) semantic: Option<Arc<Similarity>>,
    /// Candidates' free texts, prepared once per call id (`semantic.text_cache` entries).
    texts: Arc<TextCache>,
    stripes: Vec<Stripe>,
    /// Checks of one call under way at once (a retry storm), so none fails for the others.
    identical: identical::IdenticalChecks,
    sessions: DashMap<String, Arc<SessionSettings>>,
    stats: DashMap<String, StatsSnapshot>,
    check_log: std::sync::Mutex<Vec<crate::store::CheckLog>>,
    admission: Arc<Semaphore>,
    /// Recent repeat times per session and tool, for the loop advisory (bounded).
    loops: DashMap<String, std::collections::VecDeque<crate::clock::Millis>>,
}

impl Engine {
    /// An engine over `store` with the certain stages only (key, exact).
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        Self::with_parts(store, config, Arc::new(SystemClock), None)
    }

    /// An engine with an explicit clock and optional semantic stages (fuzzy, semantic, verify).
    pub fn with_parts(
        store: Arc<dyn Store>,
        config: ServerConfig,
        clock: Arc<dyn Clock>,
        semantic: Option<Arc<Similarity>>,
    ) -> Self {
        let mut stages: Vec<Arc<dyn Stage>> = vec![Arc::new(KeyStage), Arc::new(ExactStage)];
        if let Some(s) = &semantic {
            stages.extend(s.stages());
        }
        let admission = Arc::new(Semaphore::new(config.max_concurrent_checks));
        let pending = Arc::new(PendingInserts::new(store));
        let texts = Arc::new(TextCache::with_words(
            config.semantic.text_cache,
            config.semantic.word_cache,
        ));
        Self {
            store: pending.clone(),
            pending,
            config: Arc::new(config),
            clock,
            funnel: Funnel::new(stages),
            semantic,
            texts,
            stripes: (0..LOCK_STRIPES).map(|_| Stripe::default()).collect(),
            identical: identical::IdenticalChecks::default(),
            sessions: DashMap::new(),
            stats: DashMap::new(),
            check_log: std::sync::Mutex::new(Vec::new()),
            admission,
            loops: DashMap::new(),
        }
    }

    /// The server configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The similarity parts (embedder, indexes), when the semantic stages are on.
    pub fn similarity(&self) -> Option<&Arc<Similarity>> {
        self.semantic.as_ref()
    }

    fn stripe(&self, scope: &str) -> &Stripe {
        let h = blake3::hash(scope.as_bytes());
        let idx = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8])) as usize
            % LOCK_STRIPES;
        &self.stripes[idx]
    }

    fn lock_for(&self, scope: &str) -> &Mutex<()> {
        &self.stripe(scope).lock
    }

    /// What `tenant` holds in the store: the counts its quota (`[limits]`) is checked against.
    pub async fn usage(&self, tenant: &str) -> Result<crate::store::Usage, StoreError> {
        self.store.usage(tenant).await
    }

    /// Rebuilds vector indexes from the store (at start).
    pub async fn rebuild_indexes(&self) -> Result<usize, StoreError> {
        match &self.semantic {
            Some(s) => s.rebuild(self.store.as_ref(), self.clock.now_ms()).await,
            None => Ok(0),
        }
    }

    /// Deletes expired records and drops them from the vector indexes.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let swept = self.store.sweep(self.clock.now_ms()).await?;
        self.texts.forget(swept.iter().map(|(id, _)| id.as_str()));
        if let Some(s) = &self.semantic {
            // Removing vectors may rebuild an index: keep it off the tokio workers.
            let (s, ids) = (s.clone(), swept.clone());
            if let Err(e) = tokio::task::spawn_blocking(move || s.forget(&ids)).await {
                tracing::warn!(%e, "index clean-up after sweep failed");
            }
        }
        Ok(swept.len())
    }

    /// At shutdown, after the last check: waits for the background embeddings and index
    /// builds, then writes the buffered counters and verdict log.
    pub async fn drain(&self) -> Result<(), crate::error::IdemError> {
        if let Some(s) = &self.semantic {
            s.drain().await;
        }
        self.flush_stats().await?;
        self.flush_check_log().await
    }

    /// Writes buffered counters to the store.
    pub async fn flush_stats(&self) -> Result<(), StoreError> {
        let keys: Vec<String> = self.stats.iter().map(|e| e.key().clone()).collect();
        for k in keys {
            if let Some((k, snap)) = self.stats.remove(&k) {
                let (tenant, session) = k.split_once(crate::store::SEP).unwrap_or((&k, ""));
                self.store.add_stats(tenant, session, &snap).await?;
            }
        }
        Ok(())
    }

    /// Spawns the background sweeper and stats flusher; they stop when the engine is dropped.
    pub fn spawn_maintenance(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = Duration::from_secs(self.config.sweep_interval_secs);
        tokio::spawn(async move {
            let mut sweep = tokio::time::interval(every);
            let mut flush = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = sweep.tick() => {
                        let Some(e) = weak.upgrade() else { return };
                        match e.sweep().await {
                            Ok(n) if n > 0 => tracing::info!(swept = n, "expired records swept"),
                            Ok(_) => {}
                            Err(err) => tracing::warn!(%err, "sweep failed"),
                        }
                    }
                    _ = flush.tick() => {
                        let Some(e) = weak.upgrade() else { return };
                        if let Err(err) = e.flush_stats().await {
                            tracing::warn!(%err, "stats flush failed");
                        }
                        if let Err(err) = e.flush_check_log().await {
                            tracing::warn!(%err, "verdict log flush failed");
                        }
                    }
                }
            }
        });
    }
}
