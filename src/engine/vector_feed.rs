//! Keeping this instance's per-scope vector indexes current from a shared store's vector log
//! (Redis: a bounded stream per scope, in the scope's slot). Each scope has a cursor; a check
//! that is about to compare embeddings first applies the log entries past it (one script when
//! nothing is new, one more to fetch vectors another instance stored: each replaces what the
//! index held for its call, so a vector stored again elsewhere is not left stale here). A scope without a
//! cursor (first use since start, or too many scopes) or whose cursor the log's trimming
//! passed is rebuilt from the scope's stored vectors, and the cursor taken before that read
//! makes sure nothing stored meanwhile is missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use tokio::sync::Mutex;

use crate::index::ScopeIndexes;
use crate::record::vector_id;
use crate::store::{LogCursor, Store, StoreError, VectorChange, VectorLog};

/// Log entries read per script.
const LOG_BATCH: usize = 256;
/// Batches applied per catch-up at most (the rest at the next check of the scope).
const MAX_BATCHES: usize = 8;
/// Stored vectors read per page while rebuilding a scope.
const REBUILD_PAGE: usize = 512;
/// Scopes whose cursor is kept; past this the map is cleared (those scopes are rebuilt when
/// next used), so memory does not grow with the number of scopes.
const MAX_CURSORS: usize = 100_000;

/// What the feed did, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedCounts {
    /// Scopes rebuilt from the store (first use, or a gap in the log).
    pub rebuilds: u64,
    /// Vectors another writer stored, taken from the log into an index.
    pub applied: u64,
    /// Vectors dropped from an index because the log said their call was swept.
    pub removed: u64,
    /// Earlier calls embedded again by a check because this instance had no vector for them.
    pub embedded_again: u64,
}

/// What an id's last entry in a batch of the log says.
#[derive(Debug, Clone, Copy)]
enum Latest {
    /// This instance stored its vector.
    AddedHere,
    /// Another instance stored its vector.
    AddedElsewhere,
    /// It was swept.
    Removed,
}

/// Cursors per scope and counters.
#[derive(Default)]
pub(super) struct VectorFeed {
    cursors: DashMap<String, Arc<Mutex<Option<LogCursor>>>>,
    rebuilds: AtomicU64,
    applied: AtomicU64,
    removed: AtomicU64,
    pub(super) embedded_again: AtomicU64,
}

impl VectorFeed {
    pub(super) fn counts(&self) -> FeedCounts {
        FeedCounts {
            rebuilds: self.rebuilds.load(Ordering::Relaxed),
            applied: self.applied.load(Ordering::Relaxed),
            removed: self.removed.load(Ordering::Relaxed),
            embedded_again: self.embedded_again.load(Ordering::Relaxed),
        }
    }

    fn slot(&self, scope: &str) -> Arc<Mutex<Option<LogCursor>>> {
        if let Some(s) = self.cursors.get(scope) {
            return s.clone();
        }
        if self.cursors.len() >= MAX_CURSORS {
            self.cursors.clear();
        }
        self.cursors.entry(scope.to_string()).or_default().clone()
    }

    /// Brings `scope`'s index up to date with `store`'s vector log (nothing to do for a store
    /// without one). Catch-ups of one scope take turns.
    pub(super) async fn catch_up(
        &self,
        indexes: &Arc<ScopeIndexes>,
        store: &dyn Store,
        scope: &str,
    ) -> Result<(), StoreError> {
        if !store.has_vector_log() {
            return Ok(());
        }
        let slot = self.slot(scope);
        let mut cursor = slot.lock().await;
        for _ in 0..MAX_BATCHES {
            let Some(at) = cursor.clone() else {
                *cursor = Some(self.rebuild(indexes, store, scope).await?);
                return Ok(());
            };
            match store.vector_log(scope, &at, LOG_BATCH).await? {
                VectorLog::Gap => {
                    tracing::info!(
                        scope,
                        "vector log trimmed past this instance's cursor; rebuilding the scope"
                    );
                    *cursor = None;
                }
                VectorLog::Changes { changes, next } => {
                    let n = changes.len();
                    self.apply(indexes, store, scope, changes).await?;
                    *cursor = Some(next);
                    if n < LOG_BATCH {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies log entries: removals, then the vectors added by other instances (fetched and
    /// indexed, replacing what the index held for the call) and this instance's own that the
    /// index lacks.
    async fn apply(
        &self,
        indexes: &Arc<ScopeIndexes>,
        store: &dyn Store,
        scope: &str,
        changes: Vec<VectorChange>,
    ) -> Result<(), StoreError> {
        // The last entry of an id decides (an id is added, perhaps replaced, then perhaps
        // swept): what is stored now is what that entry wrote.
        let mut last: HashMap<String, Latest> = HashMap::new();
        for c in changes {
            match c {
                VectorChange::Added { id, own: true } => last.insert(id, Latest::AddedHere),
                VectorChange::Added { id, own: false } => last.insert(id, Latest::AddedElsewhere),
                VectorChange::Removed(id) => last.insert(id, Latest::Removed),
            };
        }
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for (id, latest) in last {
            match latest {
                // Indexed when this instance wrote it (fetched if that insert is missing).
                Latest::AddedHere => {
                    if !indexes.contains(scope, vector_id(&id)).unwrap_or(false) {
                        added.push(id);
                    }
                }
                // Another instance's vector, perhaps a new one for a call indexed here.
                Latest::AddedElsewhere => added.push(id),
                Latest::Removed => removed.push(vector_id(&id)),
            }
        }
        let vectors = store.vectors_of(scope, &added).await?;
        let fresh: Vec<(u64, Vec<f32>)> = added
            .iter()
            .zip(vectors)
            .filter_map(|(id, v)| v.map(|v| (vector_id(id), v)))
            .collect();
        if fresh.is_empty() && removed.is_empty() {
            return Ok(());
        }
        self.applied
            .fetch_add(fresh.len() as u64, Ordering::Relaxed);
        self.removed
            .fetch_add(removed.len() as u64, Ordering::Relaxed);
        let (indexes, scope) = (indexes.clone(), scope.to_string());
        tokio::task::spawn_blocking(move || {
            let gone: Vec<(u64, &str)> = removed.iter().map(|id| (*id, scope.as_str())).collect();
            indexes.forget(&gone)?;
            for (id, v) in fresh {
                indexes.insert(&scope, id, &v)?;
            }
            Ok::<_, crate::index::IndexError>(())
        })
        .await
        .map_err(|e| StoreError::Backend(format!("vector index update panicked: {e}")))?
        .map_err(|e| StoreError::Backend(format!("vector index update failed: {e}")))
    }

    /// Rebuilds `scope`'s index from its stored vectors; returns the log's head read before.
    async fn rebuild(
        &self,
        indexes: &Arc<ScopeIndexes>,
        store: &dyn Store,
        scope: &str,
    ) -> Result<LogCursor, StoreError> {
        let first = store.scope_vectors(scope, None, REBUILD_PAGE).await?;
        let head = first
            .head
            .clone()
            .ok_or_else(|| StoreError::Backend("the first vector page has no log head".into()))?;
        let mut vectors: Vec<(u64, Vec<f32>)> = Vec::new();
        let mut page = first;
        loop {
            vectors.extend(page.vectors.into_iter().map(|(id, v)| (vector_id(&id), v)));
            match page.last {
                Some(last) if page.read >= REBUILD_PAGE => {
                    page = store
                        .scope_vectors(scope, Some(&last), REBUILD_PAGE)
                        .await?;
                }
                _ => break,
            }
        }
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
        let (indexes, scope) = (indexes.clone(), scope.to_string());
        tokio::task::spawn_blocking(move || indexes.replace_scope(&scope, vectors))
            .await
            .map_err(|e| StoreError::Backend(format!("vector index rebuild panicked: {e}")))?;
        Ok(head)
    }
}
