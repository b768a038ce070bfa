//! Vector indexes for the semantic stage: nearest stored embeddings of a query, by cosine.
//!
//! A scope holds an `AdaptiveIndex`: an exact `FlatIndex` while small (faster than a graph up to
//! ~50k vectors), an `HnswIndex` past `hnsw_threshold`. Migrating or rebuilding a graph takes
//! seconds to minutes, so `ScopeIndexes` (the per-scope map) builds it beside the live index
//! and swaps it in when done; `reshape_inline` does it in place, for single-owner uses.

pub mod flat;
pub mod hnsw;
pub mod int8;
pub mod scopes;

pub use flat::FlatIndex;
pub use hnsw::{DotDistance, HnswIndex, HnswParams};
pub use scopes::{IndexCounts, IndexError, ScopeIndexes};

/// One vector index over normalised f32 vectors, keyed by u64 ids.
///
/// Contract for every implementation: inserting an existing id replaces its vector; a vector
/// whose length is not the index's dimension is refused (logged, not stored); `search` returns
/// at most `k` live ids, each once, cosine descending, none for which `keep` is false.
pub trait VectorIndex: Send + Sync {
    /// Stores `vector` under `id`, replacing any earlier vector of that id.
    fn insert(&mut self, id: u64, vector: &[f32]);
    /// Marks an id deleted (tombstone); searches skip it.
    fn remove(&mut self, id: u64);
    /// Whether `id` is live.
    fn contains(&self, id: u64) -> bool;
    /// Top-k (id, cosine) with cosine descending, skipping ids for which `keep` returns false.
    fn search(&self, query: &[f32], k: usize, keep: &dyn Fn(u64) -> bool) -> Vec<(u64, f32)>;
    /// Live vectors.
    fn len(&self) -> usize;
    /// Whether no vector is live.
    fn is_empty(&self) -> bool;
}

/// When an `AdaptiveIndex` switches to HNSW and how its graph is built and searched.
///
/// Defaults come from `benches/index.rs` on 2 cores: a flat scan beats hnsw_rs up to about
/// 50k vectors (10k: 0.46 ms flat vs 1.2 ms HNSW at ef_search 128; 100k: 6.1 ms vs 3.4 ms), is
/// exact, and deletes for free; a graph costs 11 s to build at 10k and 5 min at 100k.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct IndexConfig {
    /// Live vectors at which a flat index becomes HNSW. A rebuild goes back to flat below half
    /// of it, so a scope hovering at the threshold does not flip back and forth.
    pub hnsw_threshold: usize,
    /// HNSW links per node and layer (M): more is better recall, more memory, slower inserts.
    pub max_nb_connection: usize,
    /// HNSW candidate list while inserting: more is a better graph, slower inserts.
    pub ef_construction: usize,
    /// HNSW candidate list while searching: more is better recall, slower searches (recall@10
    /// at 100k embedding-like vectors: 0.92 at 64, 0.97 at 128, 0.995 at 256).
    pub ef_search: usize,
    /// Share of stored vectors that may be tombstones before the graph is rebuilt.
    pub tombstone_rebuild_ratio: f64,
    /// Whether `insert` and `remove` migrate or rebuild in place when due (simple, but the call
    /// then blocks for the whole build: for benches and single-owner uses). When false (the
    /// default) they never do; the owner polls `needs_reshape` and swaps in a build of
    /// `reshape_job()` made off the request path, as `ScopeIndexes` does.
    pub reshape_inline: bool,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            hnsw_threshold: 50_000,
            max_nb_connection: 16,
            ef_construction: 200,
            ef_search: 128,
            tombstone_rebuild_ratio: 0.25,
            reshape_inline: false,
        }
    }
}

impl IndexConfig {
    /// The HNSW graph parameters of this config.
    pub fn hnsw_params(&self) -> HnswParams {
        HnswParams {
            max_nb_connection: self.max_nb_connection,
            ef_construction: self.ef_construction,
            ef_search: self.ef_search,
        }
    }
}

/// Flat below `hnsw_threshold` live vectors, HNSW above it (migrates on growth); rebuilds the
/// graph when tombstones exceed `tombstone_rebuild_ratio` of the stored vectors.
#[derive(Debug)]
pub struct AdaptiveIndex {
    config: IndexConfig,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Flat(FlatIndex),
    Hnsw(HnswIndex),
}

impl AdaptiveIndex {
    /// An empty index of `dim`-dimensional vectors.
    pub fn new(dim: usize, config: IndexConfig) -> Self {
        Self {
            config,
            inner: Inner::Flat(FlatIndex::new(dim)),
        }
    }

    /// Builds an index from many vectors at once (e.g. the store's embeddings at start-up),
    /// with a parallel graph build when they are past the threshold, whatever `reshape_inline`.
    pub fn build<'a>(
        dim: usize,
        config: IndexConfig,
        items: impl IntoIterator<Item = (u64, &'a [f32])>,
    ) -> Self {
        let mut flat = FlatIndex::new(dim);
        for (id, vector) in items {
            flat.insert(id, vector);
        }
        let index = Self {
            config,
            inner: Inner::Flat(flat),
        };
        index.reshaped().unwrap_or(index)
    }

    /// Whether searches currently go through the HNSW graph.
    pub fn is_hnsw(&self) -> bool {
        matches!(self.inner, Inner::Hnsw(_))
    }

    /// Dimension of the stored vectors.
    pub fn dim(&self) -> usize {
        match &self.inner {
            Inner::Flat(flat) => flat.dim(),
            Inner::Hnsw(hnsw) => hnsw.dim(),
        }
    }

    /// Whether a migration to HNSW or a rebuild is due (cheap).
    pub fn needs_reshape(&self) -> bool {
        let config = &self.config;
        match &self.inner {
            Inner::Flat(flat) => !flat.is_empty() && flat.len() >= config.hnsw_threshold,
            Inner::Hnsw(hnsw) => {
                hnsw.tombstones() as f64 > config.tombstone_rebuild_ratio * hnsw.stored() as f64
            }
        }
    }

    /// A copy with the due migration or rebuild done, `None` when none is due. Blocking, up to
    /// minutes; see [`AdaptiveIndex::reshape_job`] to build it without holding `self`.
    pub fn reshaped(&self) -> Option<Self> {
        self.reshape_job().map(ReshapeJob::build)
    }

    /// The input of the due migration or rebuild, copied out of `self` (the flat vectors, or
    /// shared handles on the graph's live points), `None` when none is due. Cheap next to the
    /// build itself, so an owner takes it under its lock and builds with the lock released.
    pub fn reshape_job(&self) -> Option<ReshapeJob> {
        if !self.needs_reshape() {
            return None;
        }
        let config = self.config.clone();
        let input = match &self.inner {
            Inner::Flat(flat) => ReshapeInput::ToHnsw(flat.clone()),
            Inner::Hnsw(hnsw) if hnsw.len() < config.hnsw_threshold / 2 => {
                ReshapeInput::ToFlat(hnsw.live())
            }
            Inner::Hnsw(hnsw) => ReshapeInput::Rebuild(hnsw.live()),
        };
        Some(ReshapeJob { config, input })
    }

    fn index(&self) -> &dyn VectorIndex {
        match &self.inner {
            Inner::Flat(flat) => flat,
            Inner::Hnsw(hnsw) => hnsw,
        }
    }

    fn index_mut(&mut self) -> &mut dyn VectorIndex {
        match &mut self.inner {
            Inner::Flat(flat) => flat,
            Inner::Hnsw(hnsw) => hnsw,
        }
    }

    /// Applies a due reshape in place when the config asks for it.
    fn reshape_inline(&mut self) {
        if self.config.reshape_inline
            && let Some(next) = self.reshaped()
        {
            *self = next;
        }
    }
}

impl VectorIndex for AdaptiveIndex {
    fn insert(&mut self, id: u64, vector: &[f32]) {
        self.index_mut().insert(id, vector);
        self.reshape_inline();
    }

    fn remove(&mut self, id: u64) {
        self.index_mut().remove(id);
        self.reshape_inline();
    }

    fn contains(&self, id: u64) -> bool {
        self.index().contains(id)
    }

    fn search(&self, query: &[f32], k: usize, keep: &dyn Fn(u64) -> bool) -> Vec<(u64, f32)> {
        self.index().search(query, k, keep)
    }

    fn len(&self) -> usize {
        self.index().len()
    }

    fn is_empty(&self) -> bool {
        self.index().is_empty()
    }
}

/// A due migration or rebuild of an [`AdaptiveIndex`], detached from it: [`ReshapeJob::build`]
/// runs on any thread while the original keeps serving.
pub struct ReshapeJob {
    config: IndexConfig,
    input: ReshapeInput,
}

enum ReshapeInput {
    /// A copy of the flat index that reached `hnsw_threshold`.
    ToHnsw(FlatIndex),
    /// The live points of a graph that shrank below half the threshold.
    ToFlat(hnsw::LivePoints),
    /// The live points of a graph with too many tombstones.
    Rebuild(hnsw::LivePoints),
}

impl std::fmt::Debug for ReshapeJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, n) = match &self.input {
            ReshapeInput::ToHnsw(flat) => ("to_hnsw", flat.len()),
            ReshapeInput::ToFlat(live) => ("to_flat", live.len()),
            ReshapeInput::Rebuild(live) => ("rebuild", live.len()),
        };
        f.debug_struct("ReshapeJob")
            .field("kind", &kind)
            .field("vectors", &n)
            .finish()
    }
}

impl ReshapeJob {
    /// Builds the reshaped index. Blocking and CPU-heavy (a graph build uses every core): run it
    /// off the tokio workers.
    pub fn build(self) -> AdaptiveIndex {
        let config = self.config;
        let inner = match self.input {
            ReshapeInput::ToHnsw(flat) => {
                tracing::info!(vectors = flat.len(), "vector index moves to HNSW");
                let (dim, vectors): (usize, Vec<(u64, Vec<f32>)>) =
                    (flat.dim(), flat.iter().collect());
                drop(flat);
                Inner::Hnsw(HnswIndex::build(
                    dim,
                    config.hnsw_params(),
                    vectors.iter().map(|(id, v)| (*id, v.as_slice())),
                ))
            }
            ReshapeInput::ToFlat(live) => {
                tracing::info!(live = live.len(), "vector index moves back to flat");
                let mut flat = FlatIndex::new(live.dim());
                live.for_each(|id, vector| flat.insert(id, vector));
                Inner::Flat(flat)
            }
            ReshapeInput::Rebuild(live) => {
                tracing::info!(live = live.len(), "vector index rebuilds its graph");
                Inner::Hnsw(live.build(config.hnsw_params()))
            }
        };
        AdaptiveIndex { config, inner }
    }
}

/// Whether `vector` has the index's dimension; logs the caller bug when it has not.
fn dimension_fits(dim: usize, vector: &[f32]) -> bool {
    let fits = vector.len() == dim;
    if !fits {
        tracing::error!(
            expected = dim,
            got = vector.len(),
            "vector of the wrong dimension refused by the index"
        );
    }
    fits
}

/// Deterministic test vectors, shared by the index tests (no RNG crate needed).
#[cfg(test)]
pub(crate) mod testdata {
    /// `n` pseudo-random unit vectors of `dim` floats, the same for the same `seed`.
    pub(crate) fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            // splitmix64, mapped to [-1, 1)
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..dim).map(|_| next()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect()
    }
}

/// The behaviour every `VectorIndex` keeps, run against each implementation.
#[cfg(test)]
macro_rules! vector_index_suite {
    ($suite:ident, $tolerance:expr, $make:expr) => {
        mod $suite {
            use super::testdata::unit_vectors;
            use super::*;
            use crate::embed::cosine;

            const DIM: usize = 32;
            /// How far a score may be from the f32 cosine (int8 storage rounds).
            const TOL: f32 = $tolerance;

            fn filled(n: usize) -> (Box<dyn VectorIndex>, Vec<Vec<f32>>) {
                let make: fn() -> Box<dyn VectorIndex> = $make;
                let mut index = make();
                let vectors = unit_vectors(n, DIM, 7);
                for (i, v) in vectors.iter().enumerate() {
                    index.insert(i as u64, v);
                }
                (index, vectors)
            }

            #[test]
            fn stored_vector_is_its_own_nearest_with_cosine_one() {
                let (index, vectors) = filled(200);
                assert_eq!(index.len(), 200);
                for id in [0usize, 57, 199] {
                    let hits = index.search(&vectors[id], 1, &|_| true);
                    assert_eq!(hits[0].0, id as u64);
                    assert!((hits[0].1 - 1.0).abs() < TOL, "{hits:?}");
                }
            }

            #[test]
            fn results_are_k_distinct_ids_by_descending_true_cosine() {
                let (index, vectors) = filled(200);
                let query = &unit_vectors(1, DIM, 99)[0];
                let hits = index.search(query, 10, &|_| true);
                assert_eq!(hits.len(), 10);
                let mut ids: Vec<u64> = hits.iter().map(|h| h.0).collect();
                ids.sort_unstable();
                ids.dedup();
                assert_eq!(ids.len(), 10);
                for pair in hits.windows(2) {
                    assert!(pair[0].1 >= pair[1].1, "{hits:?}");
                }
                for (id, score) in &hits {
                    let truth = cosine(query, &vectors[*id as usize]);
                    assert!((truth - score).abs() < TOL, "{truth} vs {score}");
                }
            }

            #[test]
            fn removed_id_is_never_returned() {
                let (mut index, vectors) = filled(200);
                index.remove(42);
                index.remove(42);
                index.remove(10_000);
                assert_eq!(index.len(), 199);
                let hits = index.search(&vectors[42], 10, &|_| true);
                assert_eq!(hits.len(), 10);
                assert!(hits.iter().all(|h| h.0 != 42), "{hits:?}");
            }

            #[test]
            fn keep_filter_is_respected() {
                let (index, vectors) = filled(200);
                let hits = index.search(&vectors[3], 10, &|id| id % 2 == 0);
                assert_eq!(hits.len(), 10);
                assert!(hits.iter().all(|h| h.0 % 2 == 0), "{hits:?}");
                assert!(index.search(&vectors[3], 10, &|_| false).is_empty());
            }

            #[test]
            fn reinserting_an_id_replaces_its_vector() {
                let (mut index, vectors) = filled(200);
                index.insert(5, &vectors[6]);
                assert_eq!(index.len(), 200);
                let hits = index.search(&vectors[6], 2, &|_| true);
                let ids: Vec<u64> = hits.iter().map(|h| h.0).collect();
                assert!(ids.contains(&5) && ids.contains(&6), "{hits:?}");
                assert!(hits.iter().all(|h| (h.1 - 1.0).abs() < TOL));
                let old = index.search(&vectors[5], 1, &|_| true);
                assert_ne!(old[0].0, 5);
            }

            #[test]
            fn exact_duplicates_do_not_panic_and_score_one() {
                let make: fn() -> Box<dyn VectorIndex> = $make;
                let mut index = make();
                let v = &unit_vectors(1, DIM, 1)[0];
                for id in 0..50 {
                    index.insert(id, v);
                }
                let hits = index.search(v, 5, &|_| true);
                assert_eq!(hits.len(), 5);
                assert!(hits.iter().all(|h| (h.1 - 1.0).abs() < TOL), "{hits:?}");
            }

            #[test]
            fn empty_index_zero_k_and_wrong_dimension_give_nothing() {
                let make: fn() -> Box<dyn VectorIndex> = $make;
                let mut index = make();
                let v = &unit_vectors(1, DIM, 1)[0];
                assert!(index.is_empty());
                assert!(index.search(v, 5, &|_| true).is_empty());
                index.insert(1, &v[..DIM - 1]);
                assert!(index.is_empty(), "a short vector was stored");
                index.insert(1, v);
                assert!(index.search(v, 0, &|_| true).is_empty());
                assert!(index.search(&v[..DIM - 1], 5, &|_| true).is_empty());
                assert_eq!(index.search(v, 5, &|_| true).len(), 1);
            }
        }
    };
}

#[cfg(test)]
vector_index_suite!(flat_suite, 0.01, || Box::new(FlatIndex::new(DIM)));
#[cfg(test)]
vector_index_suite!(hnsw_suite, 1e-4, || Box::new(HnswIndex::new(
    DIM,
    HnswParams::default(),
    0
)));
#[cfg(test)]
vector_index_suite!(adaptive_suite, 0.01, || Box::new(AdaptiveIndex::new(
    DIM,
    IndexConfig {
        hnsw_threshold: 100,
        reshape_inline: true,
        ..IndexConfig::default()
    }
)));

#[cfg(test)]
mod tests {
    use super::testdata::unit_vectors;
    use super::*;

    #[test]
    fn adaptive_moves_to_hnsw_past_the_threshold_and_still_finds_vectors() {
        let config = IndexConfig {
            hnsw_threshold: 300,
            reshape_inline: true,
            ..IndexConfig::default()
        };
        let vectors = unit_vectors(400, 64, 3);
        let mut index = AdaptiveIndex::new(64, config);
        for (i, v) in vectors.iter().enumerate() {
            index.insert(i as u64, v);
            assert_eq!(index.is_hnsw(), i + 1 >= 300, "after {} inserts", i + 1);
        }
        for id in [0usize, 150, 299, 399] {
            assert_eq!(index.search(&vectors[id], 1, &|_| true)[0].0, id as u64);
        }
        let fresh = &unit_vectors(1, 64, 4)[0];
        index.insert(1_000, fresh);
        assert_eq!(index.search(fresh, 1, &|_| true)[0].0, 1_000);
    }

    #[test]
    fn adaptive_rebuilds_when_tombstones_pile_up_and_shrinks_back_to_flat() {
        let config = IndexConfig {
            hnsw_threshold: 200,
            tombstone_rebuild_ratio: 0.25,
            reshape_inline: true,
            ..IndexConfig::default()
        };
        let vectors = unit_vectors(400, 32, 5);
        let mut index = AdaptiveIndex::build(
            32,
            config,
            vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u64, v.as_slice())),
        );
        assert!(index.is_hnsw());
        // 101 removals out of 400 stored crosses 25%: rebuilt as HNSW (299 live >= 100).
        for id in 0..101u64 {
            index.remove(id);
        }
        match &index.inner {
            Inner::Hnsw(hnsw) => assert_eq!((hnsw.tombstones(), hnsw.len()), (0, 299)),
            Inner::Flat(_) => panic!("299 live vectors should stay HNSW"),
        }
        // Each later rebuild happens at about 3/4 of the previous size; the first one below
        // 100 live (half the threshold) goes flat, well before 20 live are left.
        for id in 101..380u64 {
            index.remove(id);
        }
        assert!(!index.is_hnsw());
        assert_eq!(index.len(), 20);
        assert_eq!(index.search(&vectors[390], 1, &|_| true)[0].0, 390);
        let hits = index.search(&vectors[5], 50, &|_| true);
        assert_eq!(hits.len(), 20);
        assert!(hits.iter().all(|h| h.0 >= 380));
    }

    #[test]
    fn owner_driven_reshape_leaves_inserts_cheap_and_swaps_in_a_graph() {
        let config = IndexConfig {
            hnsw_threshold: 100,
            reshape_inline: false,
            ..IndexConfig::default()
        };
        let vectors = unit_vectors(150, 32, 9);
        let mut index = AdaptiveIndex::new(32, config);
        for (i, v) in vectors.iter().enumerate() {
            index.insert(i as u64, v);
        }
        assert!(!index.is_hnsw());
        assert!(index.needs_reshape());
        let next = index.reshaped().expect("a migration is due");
        assert!(next.is_hnsw() && !next.needs_reshape());
        assert_eq!(next.len(), 150);
        assert_eq!(next.search(&vectors[120], 1, &|_| true)[0].0, 120);
        assert!(next.reshaped().is_none());
    }
}
