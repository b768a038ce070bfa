//! The per-scope map of vector indexes: one `AdaptiveIndex` per match scope, made on first insert
//! and dropped when a sweep empties it.
//!
//! Two rules keep every insert. A scope emptied by a sweep is *retired* under its own lock before
//! it leaves the map, so an insert that raced the sweep sees the mark and goes to a fresh entry.
//! A move to HNSW (or a graph rebuild) is built beside, on a tracked thread, while the live index
//! keeps serving searches and taking writes; those writes are journaled and replayed onto the new
//! index before it is swapped in, so the request path never waits for a build.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use dashmap::DashMap;

use super::{AdaptiveIndex, IndexConfig, ReshapeJob, VectorIndex};

/// Journal entries left at which the builder stops replaying in rounds and swaps under the lock:
/// a few graph inserts, so the lock is held for milliseconds at most.
const SWAP_REPLAY: usize = 32;

/// Why an index operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A thread panicked while changing the scope's index, which may be half-changed.
    #[error("the vector index of scope {scope:?} is unusable: a thread panicked while changing it")]
    Poisoned { scope: String },
    /// The thread that builds indexes off the request path could not be started.
    #[error("cannot start an index build thread: {0}")]
    Spawn(String),
}

/// Sizes of the map, for metrics and memory accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexCounts {
    /// Scopes with an index.
    pub scopes: usize,
    /// Live vectors over all scopes.
    pub vectors: usize,
    /// Scopes searched through an HNSW graph.
    pub hnsw_scopes: usize,
    /// Scopes whose reshaped index is being built.
    pub building: usize,
}

/// One write to a scope's index, kept while a reshape is being built.
enum Write {
    Insert(u64, Vec<f32>),
    Remove(u64),
}

/// A scope's index and its bookkeeping, behind the scope's lock.
struct ScopeState {
    index: AdaptiveIndex,
    /// Set (under the lock) when a sweep emptied the index: it is leaving the map, and writes
    /// must go to a fresh entry instead.
    retired: bool,
    /// Writes made since a reshape build started, replayed onto its result; `None`: no build.
    journal: Option<Vec<Write>>,
}

impl ScopeState {
    fn record(&mut self, write: impl FnOnce() -> Write) {
        if let Some(journal) = &mut self.journal {
            journal.push(write());
        }
    }

    /// The due reshape, when none is being built already; starts the journal for it.
    fn start_reshape(&mut self) -> Option<ReshapeJob> {
        if self.journal.is_some() {
            return None;
        }
        let job = self.index.reshape_job()?;
        self.journal = Some(Vec::new());
        Some(job)
    }
}

struct ScopeIndex {
    state: RwLock<ScopeState>,
}

impl ScopeIndex {
    fn read(&self, scope: &str) -> Result<RwLockReadGuard<'_, ScopeState>, IndexError> {
        self.state.read().map_err(|_| poisoned(scope))
    }

    fn write(&self, scope: &str) -> Result<RwLockWriteGuard<'_, ScopeState>, IndexError> {
        self.state.write().map_err(|_| poisoned(scope))
    }
}

fn poisoned(scope: &str) -> IndexError {
    IndexError::Poisoned {
        scope: scope.to_string(),
    }
}

/// Test-only pause points, to make the races deterministic.
#[cfg(test)]
#[derive(Default)]
struct Hooks {
    /// In `forget`, after a scope was retired and its lock released, before it leaves the map.
    after_retire: Option<Box<dyn Fn() + Send + Sync>>,
    /// On the build thread, after the build, before the journal is replayed and swapped.
    before_swap: Option<Box<dyn Fn() + Send + Sync>>,
}

/// Every scope's vector index, keyed by match scope. Sync methods that may take a scope's lock
/// for the length of one insert or search: call them off the tokio workers when the index can
/// be large. Builds run on their own threads, tracked until [`ScopeIndexes::wait_for_builds`].
pub struct ScopeIndexes {
    dim: usize,
    config: IndexConfig,
    scopes: DashMap<String, Arc<ScopeIndex>>,
    builds: Mutex<Vec<JoinHandle<()>>>,
    #[cfg(test)]
    hooks: Arc<Hooks>,
}

impl std::fmt::Debug for ScopeIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeIndexes")
            .field("dim", &self.dim)
            .field("scopes", &self.scopes.len())
            .finish_non_exhaustive()
    }
}

impl ScopeIndexes {
    /// An empty map of `dim`-dimensional indexes. Reshapes always run beside the live index,
    /// whatever `config.reshape_inline` says.
    pub fn new(dim: usize, config: IndexConfig) -> Self {
        Self {
            dim,
            config: IndexConfig {
                reshape_inline: false,
                ..config
            },
            scopes: DashMap::new(),
            builds: Mutex::new(Vec::new()),
            #[cfg(test)]
            hooks: Arc::default(),
        }
    }

    fn new_scope(&self, index: AdaptiveIndex) -> Arc<ScopeIndex> {
        Arc::new(ScopeIndex {
            state: RwLock::new(ScopeState {
                index,
                retired: false,
                journal: None,
            }),
        })
    }

    /// The scope's entry, made when missing. The map's shard lock is released on return: a
    /// scope's lock is never taken while a shard lock is held.
    fn entry(&self, scope: &str) -> Arc<ScopeIndex> {
        if let Some(e) = self.scopes.get(scope) {
            return e.clone();
        }
        self.scopes
            .entry(scope.to_string())
            .or_insert_with(|| self.new_scope(AdaptiveIndex::new(self.dim, self.config.clone())))
            .clone()
    }

    fn existing(&self, scope: &str) -> Option<Arc<ScopeIndex>> {
        self.scopes.get(scope).map(|e| e.clone())
    }

    /// Drops `entry` from the map unless it was replaced already.
    fn unlink(&self, scope: &str, entry: &Arc<ScopeIndex>) {
        self.scopes.remove_if(scope, |_, e| Arc::ptr_eq(e, entry));
    }

    /// Stores `vector` under `id` in `scope`'s index (replacing an earlier one); starts a
    /// reshape build beside it when one is due. Never waits for a build.
    pub fn insert(&self, scope: &str, id: u64, vector: &[f32]) -> Result<(), IndexError> {
        loop {
            let entry = self.entry(scope);
            let mut state = entry.write(scope)?;
            if state.retired {
                // A sweep emptied this one and is about to unlink it: do that now, retry.
                drop(state);
                self.unlink(scope, &entry);
                continue;
            }
            state.index.insert(id, vector);
            state.record(|| Write::Insert(id, vector.to_vec()));
            let job = state.start_reshape();
            drop(state);
            if let Some(job) = job {
                self.spawn_build(scope, entry, job)?;
            }
            return Ok(());
        }
    }

    /// Nearest vectors of `scope` to `query`, restricted to ids for which `keep` is true, as
    /// (id, cosine), cosine descending.
    pub fn search(
        &self,
        scope: &str,
        query: &[f32],
        k: usize,
        keep: &dyn Fn(u64) -> bool,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        let Some(entry) = self.existing(scope) else {
            return Ok(Vec::new());
        };
        let state = entry.read(scope)?;
        Ok(state.index.search(query, k, keep))
    }

    /// Whether `scope`'s index holds a live vector `id`.
    pub fn contains(&self, scope: &str, id: u64) -> Result<bool, IndexError> {
        let Some(entry) = self.existing(scope) else {
            return Ok(false);
        };
        let state = entry.read(scope)?;
        Ok(!state.retired && state.index.contains(id))
    }

    /// Whether `scope` is searched through an HNSW graph.
    pub fn is_hnsw(&self, scope: &str) -> Result<bool, IndexError> {
        let Some(entry) = self.existing(scope) else {
            return Ok(false);
        };
        let state = entry.read(scope)?;
        Ok(state.index.is_hnsw())
    }

    /// Removes swept records, given as (vector id, match scope); a scope left empty leaves the
    /// map. A removal may start a graph rebuild beside the live index.
    pub fn forget(&self, swept: &[(u64, &str)]) -> Result<(), IndexError> {
        for &(id, scope) in swept {
            let Some(entry) = self.existing(scope) else {
                continue;
            };
            let mut state = entry.write(scope)?;
            if state.retired {
                continue;
            }
            state.index.remove(id);
            state.record(|| Write::Remove(id));
            if state.index.is_empty() {
                // Retired under the lock: an insert that already holds this entry sees the
                // mark and goes to a fresh one, so nothing is inserted into a dropped index.
                state.retired = true;
                drop(state);
                #[cfg(test)]
                if let Some(hook) = &self.hooks.after_retire {
                    hook();
                }
                self.unlink(scope, &entry);
                continue;
            }
            let job = state.start_reshape();
            drop(state);
            if let Some(job) = job {
                self.spawn_build(scope, entry, job)?;
            }
        }
        Ok(())
    }

    /// Replaces every scope's index with one built from `vectors` (scope, id, vector), as at
    /// start-up. Blocking (graphs are built in parallel for scopes past the threshold): run it
    /// off the tokio workers. Returns the number of vectors given.
    pub fn rebuild(&self, vectors: impl IntoIterator<Item = (String, u64, Vec<f32>)>) -> usize {
        let mut by_scope: HashMap<String, Vec<(u64, Vec<f32>)>> = HashMap::new();
        let mut n = 0;
        for (scope, id, vector) in vectors {
            by_scope.entry(scope).or_default().push((id, vector));
            n += 1;
        }
        self.scopes.clear();
        for (scope, items) in by_scope {
            let index = AdaptiveIndex::build(
                self.dim,
                self.config.clone(),
                items.iter().map(|(id, v)| (*id, v.as_slice())),
            );
            drop(items);
            self.scopes.insert(scope, self.new_scope(index));
        }
        n
    }

    /// Replaces `scope`'s index with one built from `vectors` (id, vector), as when a scope is
    /// rebuilt from a store several instances share; an empty list drops the scope. The old
    /// index is retired under its lock first, so a write racing the swap retries on the new
    /// one. Blocking.
    pub fn replace_scope(&self, scope: &str, vectors: Vec<(u64, Vec<f32>)>) {
        if let Some(old) = self.existing(scope) {
            match old.state.write() {
                Ok(mut state) => state.retired = true,
                Err(p) => p.into_inner().retired = true,
            }
            self.unlink(scope, &old);
        }
        if vectors.is_empty() {
            return;
        }
        let index = AdaptiveIndex::build(
            self.dim,
            self.config.clone(),
            vectors.iter().map(|(id, v)| (*id, v.as_slice())),
        );
        drop(vectors);
        self.scopes.insert(scope.to_string(), self.new_scope(index));
    }

    /// Sizes of the map. Takes each scope's read lock in turn, never a shard lock meanwhile.
    pub fn counts(&self) -> Result<IndexCounts, IndexError> {
        let entries: Vec<(String, Arc<ScopeIndex>)> = self
            .scopes
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        let mut counts = IndexCounts::default();
        for (scope, entry) in entries {
            let state = entry.read(&scope)?;
            if state.retired {
                continue;
            }
            counts.scopes += 1;
            counts.vectors += state.index.len();
            counts.hnsw_scopes += usize::from(state.index.is_hnsw());
            counts.building += usize::from(state.journal.is_some());
        }
        Ok(counts)
    }

    /// Waits for every reshape build started so far (at shutdown, and in tests). Blocking.
    pub fn wait_for_builds(&self) {
        loop {
            let handles =
                std::mem::take(&mut *self.builds.lock().unwrap_or_else(|p| p.into_inner()));
            if handles.is_empty() {
                return;
            }
            for h in handles {
                if h.join().is_err() {
                    tracing::error!("a vector index build panicked; its scope keeps the old index");
                }
            }
        }
    }

    /// Builds `job` on a thread of its own and swaps the result into `entry`.
    fn spawn_build(
        &self,
        scope: &str,
        entry: Arc<ScopeIndex>,
        job: ReshapeJob,
    ) -> Result<(), IndexError> {
        let scope = scope.to_string();
        #[cfg(test)]
        let hooks = self.hooks.clone();
        let build_entry = entry.clone();
        let spawned = std::thread::Builder::new()
            .name("idem-index-build".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let next = job.build();
                #[cfg(test)]
                if let Some(hook) = &hooks.before_swap {
                    hook();
                }
                match swap_in(&scope, &build_entry, next) {
                    Ok(()) => tracing::info!(
                        ms = started.elapsed().as_millis() as u64,
                        "vector index reshaped beside the live one and swapped in"
                    ),
                    Err(e) => tracing::error!(%e, "vector index reshape not swapped in"),
                }
            });
        match spawned {
            Ok(handle) => {
                // A poisoned list of handles is still a list of handles.
                let mut builds = self.builds.lock().unwrap_or_else(|p| p.into_inner());
                builds.retain(|h| !h.is_finished());
                builds.push(handle);
                Ok(())
            }
            Err(e) => {
                // No build: stop journaling, so a later write tries again.
                if let Ok(mut state) = entry.state.write() {
                    state.journal = None;
                }
                Err(IndexError::Spawn(e.to_string()))
            }
        }
    }

    #[cfg(test)]
    fn with_hooks(mut self, hooks: Hooks) -> Self {
        self.hooks = Arc::new(hooks);
        self
    }
}

/// Replays the journal onto `next` in rounds with the lock released, then the last few writes
/// under the lock, and swaps `next` in. A retired scope drops the build.
fn swap_in(scope: &str, entry: &ScopeIndex, mut next: AdaptiveIndex) -> Result<(), IndexError> {
    loop {
        let mut state = entry.write(scope)?;
        if state.retired {
            state.journal = None;
            return Ok(());
        }
        let pending = state
            .journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        if pending.len() > SWAP_REPLAY {
            drop(state);
            replay(&mut next, pending);
            continue;
        }
        replay(&mut next, pending);
        state.index = next;
        state.journal = None;
        // Still due (many writes meanwhile)? The next write starts another build.
        return Ok(());
    }
}

fn replay(index: &mut AdaptiveIndex, writes: Vec<Write>) {
    for write in writes {
        match write {
            Write::Insert(id, vector) => index.insert(id, &vector),
            Write::Remove(id) => index.remove(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::index::testdata::unit_vectors;

    const DIM: usize = 32;

    /// A pause point: the hook says it arrived, then waits until the test lets it go on.
    fn pause() -> (
        Box<dyn Fn() + Send + Sync>,
        mpsc::Receiver<()>,
        mpsc::Sender<()>,
    ) {
        let (arrived_tx, arrived_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        let hook = Box::new(move || {
            let _ = arrived_tx.send(());
            let _ = go_rx.lock().map(|rx| rx.recv());
        });
        (hook, arrived_rx, go_tx)
    }

    fn config(threshold: usize) -> IndexConfig {
        IndexConfig {
            hnsw_threshold: threshold,
            ..IndexConfig::default()
        }
    }

    #[test]
    fn inserts_are_searchable_per_scope_and_forget_drops_an_emptied_scope() {
        let map = ScopeIndexes::new(DIM, config(1_000));
        let v = unit_vectors(3, DIM, 1);
        map.insert("a", 1, &v[0]).unwrap();
        map.insert("a", 2, &v[1]).unwrap();
        map.insert("b", 3, &v[2]).unwrap();
        assert_eq!(map.search("a", &v[1], 1, &|_| true).unwrap()[0].0, 2);
        assert!(map.search("a", &v[2], 5, &|id| id == 3).unwrap().is_empty());
        assert!(map.contains("b", 3).unwrap() && !map.contains("a", 3).unwrap());
        assert!(
            map.search("nowhere", &v[0], 5, &|_| true)
                .unwrap()
                .is_empty()
        );
        let counts = map.counts().unwrap();
        assert_eq!((counts.scopes, counts.vectors), (2, 3));

        map.forget(&[(3, "b"), (1, "a"), (99, "c")]).unwrap();
        let counts = map.counts().unwrap();
        assert_eq!((counts.scopes, counts.vectors), (1, 1));
        assert!(!map.contains("a", 1).unwrap() && map.contains("a", 2).unwrap());
        assert!(
            map.scopes.get("b").is_none(),
            "an emptied scope leaves the map"
        );
    }

    #[test]
    fn an_insert_racing_the_sweep_that_empties_its_scope_is_kept() {
        let (hook, retired, go) = pause();
        let map = Arc::new(ScopeIndexes::new(DIM, config(1_000)).with_hooks(Hooks {
            after_retire: Some(hook),
            ..Hooks::default()
        }));
        let v = unit_vectors(2, DIM, 2);
        map.insert("s", 1, &v[0]).unwrap();
        let sweeper = std::thread::spawn({
            let map = map.clone();
            move || map.forget(&[(1, "s")])
        });
        // The sweep has emptied the scope and released its lock, but not yet unlinked it.
        retired.recv().unwrap();
        map.insert("s", 2, &v[1]).unwrap();
        go.send(()).unwrap();
        sweeper.join().unwrap().unwrap();
        assert!(map.contains("s", 2).unwrap(), "the racing insert was lost");
        assert_eq!(map.search("s", &v[1], 1, &|_| true).unwrap()[0].0, 2);
        assert_eq!(map.counts().unwrap().vectors, 1);
    }

    #[test]
    fn migration_is_built_beside_while_the_flat_index_serves_and_keeps_every_write() {
        let (hook, built, go) = pause();
        let map = ScopeIndexes::new(DIM, config(64)).with_hooks(Hooks {
            before_swap: Some(hook),
            ..Hooks::default()
        });
        let v = unit_vectors(120, DIM, 3);
        for (i, x) in v.iter().enumerate().take(64) {
            map.insert("s", i as u64, x).unwrap();
        }
        // The insert that reached the threshold returned before the graph exists.
        assert!(!map.is_hnsw("s").unwrap());
        built.recv().unwrap();
        // Built, not yet swapped: the flat index still takes writes and answers exactly.
        for (i, x) in v.iter().enumerate().skip(64) {
            map.insert("s", i as u64, x).unwrap();
        }
        map.forget(&[(3, "s")]).unwrap();
        let hit = map.search("s", &v[100], 1, &|_| true).unwrap()[0];
        assert!(hit.0 == 100 && (hit.1 - 1.0).abs() < 1e-2, "{hit:?}");
        assert_eq!(map.counts().unwrap().building, 1);
        go.send(()).unwrap();
        map.wait_for_builds();

        assert!(map.is_hnsw("s").unwrap());
        let counts = map.counts().unwrap();
        assert_eq!((counts.vectors, counts.building), (119, 0));
        for id in (0..120u64).filter(|&id| id != 3) {
            assert!(
                map.contains("s", id).unwrap(),
                "write {id} lost in the swap"
            );
        }
        assert!(
            !map.contains("s", 3).unwrap(),
            "the removal was lost in the swap"
        );
        for id in [0usize, 63, 64, 119] {
            assert_eq!(
                map.search("s", &v[id], 1, &|_| true).unwrap()[0].0,
                id as u64
            );
        }
        assert!(
            map.search("s", &v[3], 5, &|_| true)
                .unwrap()
                .iter()
                .all(|h| h.0 != 3)
        );
    }

    #[test]
    fn replace_scope_swaps_one_scope_and_an_empty_list_drops_it() {
        let map = ScopeIndexes::new(DIM, config(1_000));
        let v = unit_vectors(4, DIM, 5);
        map.insert("a", 1, &v[0]).unwrap();
        map.insert("b", 2, &v[1]).unwrap();
        map.replace_scope("a", vec![(3, v[2].clone()), (4, v[3].clone())]);
        assert!(!map.contains("a", 1).unwrap());
        assert!(map.contains("a", 3).unwrap() && map.contains("a", 4).unwrap());
        assert!(map.contains("b", 2).unwrap(), "another scope is untouched");
        map.insert("a", 1, &v[0]).unwrap();
        assert_eq!(map.counts().unwrap().vectors, 4);
        map.replace_scope("a", Vec::new());
        assert!(map.scopes.get("a").is_none());
        assert_eq!(map.counts().unwrap().vectors, 1);
    }

    #[test]
    fn rebuild_replaces_every_scope_from_stored_vectors() {
        let map = ScopeIndexes::new(DIM, config(50));
        let v = unit_vectors(80, DIM, 4);
        map.insert("old", 1, &v[0]).unwrap();
        let stored = v.iter().enumerate().map(|(i, x)| {
            (
                if i < 60 { "big" } else { "small" }.to_string(),
                i as u64,
                x.clone(),
            )
        });
        assert_eq!(map.rebuild(stored), 80);
        assert!(map.is_hnsw("big").unwrap() && !map.is_hnsw("small").unwrap());
        assert!(!map.contains("old", 1).unwrap());
        let counts = map.counts().unwrap();
        assert_eq!(
            (counts.scopes, counts.vectors, counts.hnsw_scopes),
            (2, 80, 1)
        );
        assert_eq!(map.search("small", &v[70], 1, &|_| true).unwrap()[0].0, 70);
    }
}
