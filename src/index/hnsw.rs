//! Approximate nearest-neighbour search with an HNSW graph (hnsw_rs).
//!
//! hnsw_rs cannot delete, so removal is a tombstone: searches over-fetch and skip dead entries,
//! and the owner rebuilds the graph from the live vectors when tombstones pile up (`rebuilt`).
//! The graph is keyed by internal slots, not ids, so re-inserting an id just retires its old slot.
//! Distance is `1 - dot`, clamped at 0: hnsw_rs's `DistCosine` is slow (f64 sums) and `DistDot`
//! panics on an exact duplicate, whose rounded distance can come out negative.

use std::collections::HashMap;
use std::sync::Arc;

use hnsw_rs::prelude::{Distance, Hnsw, Point};

use super::VectorIndex;
use crate::embed::cosine;

/// Most layers of the graph; hnsw_rs caps it at 16, plenty for billions of points.
const MAX_LAYERS: usize = 16;

/// `1 - cosine` of normalised vectors, never negative (hnsw_rs asserts distances are >= 0).
#[derive(Debug, Default, Clone, Copy)]
pub struct DotDistance;

impl Distance<f32> for DotDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        // `max` also maps a NaN to 0 rather than let it poison the graph's ordering.
        (1.0 - cosine(a, b)).max(0.0)
    }
}

/// Graph parameters; see `IndexConfig` for what each one trades.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HnswParams {
    /// Links per node and layer (M).
    pub max_nb_connection: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
    /// Candidate list size while searching (at least k).
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            max_nb_connection: 16,
            ef_construction: 200,
            ef_search: 128,
        }
    }
}

/// HNSW over normalised vectors, with tombstones for removed ids.
pub struct HnswIndex {
    dim: usize,
    params: HnswParams,
    graph: Hnsw<'static, f32, DotDistance>,
    /// Slot (the graph's data id) → id.
    ids: Vec<u64>,
    /// Slot → still live (false: tombstone).
    live: Vec<bool>,
    /// Id → its live slot.
    slots: HashMap<u64, usize>,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("dim", &self.dim)
            .field("params", &self.params)
            .field("live", &self.slots.len())
            .field("stored", &self.ids.len())
            .finish_non_exhaustive()
    }
}

impl HnswIndex {
    /// An empty graph for `dim`-dimensional vectors; `capacity` is a sizing hint only.
    pub fn new(dim: usize, params: HnswParams, capacity: usize) -> Self {
        // hnsw_rs exits the process above 256 links; clamp rather than trust the config.
        let max_nb_connection = params.max_nb_connection.clamp(2, 256);
        let params = HnswParams {
            max_nb_connection,
            ef_construction: params.ef_construction.max(1),
            ef_search: params.ef_search.max(1),
        };
        let graph = Hnsw::new(
            max_nb_connection,
            capacity.max(1),
            MAX_LAYERS,
            params.ef_construction,
            DotDistance,
        );
        Self {
            dim,
            params,
            graph,
            ids: Vec::with_capacity(capacity),
            live: Vec::with_capacity(capacity),
            slots: HashMap::with_capacity(capacity),
        }
    }

    /// Builds a graph from many vectors at once, inserting on all cores (rayon).
    ///
    /// Later pairs with the same id replace earlier ones.
    pub fn build<'a>(
        dim: usize,
        params: HnswParams,
        items: impl IntoIterator<Item = (u64, &'a [f32])>,
    ) -> Self {
        let mut latest: HashMap<u64, &'a [f32]> = HashMap::new();
        let mut order = Vec::new();
        for (id, vector) in items {
            if !super::dimension_fits(dim, vector) {
                continue;
            }
            if latest.insert(id, vector).is_none() {
                order.push(id);
            }
        }
        let mut index = Self::new(dim, params, order.len());
        let mut batch = Vec::with_capacity(order.len());
        for id in order {
            let slot = index.ids.len();
            index.ids.push(id);
            index.live.push(true);
            index.slots.insert(id, slot);
            batch.push((latest[&id], slot));
        }
        index.graph.parallel_insert_slice(&batch);
        index
    }

    /// A fresh graph of the live vectors only, dropping every tombstone. O(n log n): run it
    /// where blocking is fine.
    pub fn rebuilt(&self) -> Self {
        self.live().build(self.params)
    }

    /// Calls `f` with every live (id, vector), read back from the graph (no copy kept here).
    pub fn for_each_live(&self, f: impl FnMut(u64, &[f32])) {
        self.live().for_each(f);
    }

    /// Handles on the graph's live points (their vectors are shared, not copied), detached from
    /// the graph so a rebuild can run while it keeps serving.
    pub fn live(&self) -> LivePoints {
        let points = if self.graph.get_nb_point() == 0 {
            // hnsw_rs's point iterator panics on an empty graph.
            Vec::new()
        } else {
            self.graph
                .get_point_indexation()
                .into_iter()
                .filter_map(|point| {
                    let slot = point.get_origin_id();
                    let live = self.live.get(slot).copied().unwrap_or(false);
                    live.then(|| (self.ids[slot], point))
                })
                .collect()
        };
        LivePoints {
            dim: self.dim,
            points,
        }
    }

    /// Changes the search candidate list size (recall against speed) without a rebuild.
    pub fn set_ef_search(&mut self, ef_search: usize) {
        self.params.ef_search = ef_search.max(1);
    }

    /// Vectors stored in the graph, live or tombstoned.
    pub fn stored(&self) -> usize {
        self.ids.len()
    }

    /// Tombstoned vectors still in the graph.
    pub fn tombstones(&self) -> usize {
        self.ids.len() - self.slots.len()
    }

    /// Dimension of the stored vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// One graph search for `fetch` neighbours, filtered to live, kept ids. Also says whether
    /// the graph had nothing more to give.
    fn search_once(
        &self,
        query: &[f32],
        fetch: usize,
        keep: &dyn Fn(u64) -> bool,
    ) -> (Vec<(u64, f32)>, bool) {
        let ef = self.params.ef_search.max(fetch);
        let found = self.graph.search(query, fetch, ef);
        let exhausted = found.len() < fetch;
        let hits = found
            .into_iter()
            .filter(|n| self.live.get(n.d_id).copied().unwrap_or(false))
            .map(|n| (self.ids[n.d_id], 1.0 - n.distance))
            .filter(|&(id, _)| keep(id))
            .collect();
        (hits, exhausted)
    }
}

/// The live (id, point) pairs of a graph at one moment; the vectors are shared with the graph.
pub struct LivePoints {
    dim: usize,
    points: Vec<(u64, Arc<Point<'static, f32>>)>,
}

impl LivePoints {
    /// Live vectors.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Dimension of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Calls `f` with every (id, vector).
    pub fn for_each(&self, mut f: impl FnMut(u64, &[f32])) {
        for (id, point) in &self.points {
            f(*id, point.get_v());
        }
    }

    /// A fresh graph of these vectors. Blocking, O(n log n).
    pub fn build(&self, params: HnswParams) -> HnswIndex {
        HnswIndex::build(
            self.dim,
            params,
            self.points.iter().map(|(id, point)| (*id, point.get_v())),
        )
    }
}

impl VectorIndex for HnswIndex {
    fn insert(&mut self, id: u64, vector: &[f32]) {
        if !super::dimension_fits(self.dim, vector) {
            return;
        }
        if let Some(old) = self.slots.remove(&id) {
            self.live[old] = false;
        }
        let slot = self.ids.len();
        self.graph.insert_slice((vector, slot));
        self.ids.push(id);
        self.live.push(true);
        self.slots.insert(id, slot);
    }

    fn remove(&mut self, id: u64) {
        if let Some(slot) = self.slots.remove(&id) {
            self.live[slot] = false;
        }
    }

    fn contains(&self, id: u64) -> bool {
        self.slots.contains_key(&id)
    }

    fn search(&self, query: &[f32], k: usize, keep: &dyn Fn(u64) -> bool) -> Vec<(u64, f32)> {
        if k == 0 || self.slots.is_empty() || query.len() != self.dim {
            return Vec::new();
        }
        // Over-fetch for the share of tombstones, then widen while filters leave fewer than k.
        let stored = self.ids.len();
        let dead_share = self.tombstones() as f64 / stored as f64;
        let mut fetch = ((k as f64 / (1.0 - dead_share).max(0.05)).ceil() as usize + k).min(stored);
        loop {
            let (mut hits, exhausted) = self.search_once(query, fetch, keep);
            if hits.len() >= k || exhausted || fetch >= stored {
                hits.sort_by(|a, b| b.1.total_cmp(&a.1));
                hits.truncate(k);
                return hits;
            }
            fetch = (fetch * 4).min(stored);
        }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::FlatIndex;
    use crate::index::testdata::unit_vectors;

    #[test]
    fn distance_of_a_vector_to_itself_is_zero_never_negative() {
        for v in unit_vectors(200, 384, 11) {
            let d = DotDistance.eval(&v, &v);
            assert!((0.0..1e-5).contains(&d), "{d}");
        }
        assert_eq!(DotDistance.eval(&[f32::NAN], &[1.0]), 0.0);
    }

    #[test]
    fn recall_at_10_against_exact_search_is_at_least_0_9() {
        // Uniform random vectors are harder for HNSW than real embeddings, which cluster: at 384
        // dimensions they need ef_search ~256 for 0.9 (benches/index.rs prints the recall).
        // 64 dimensions keep this test quick in an unoptimised build.
        let dim = 64;
        let vectors = unit_vectors(2_000, dim, 21);
        let items = || {
            vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u64, v.as_slice()))
        };
        let hnsw = HnswIndex::build(dim, HnswParams::default(), items());
        let mut flat = FlatIndex::new(dim);
        items().for_each(|(id, v)| flat.insert(id, v));

        let queries = unit_vectors(50, dim, 22);
        let mut found = 0;
        for q in &queries {
            let truth: Vec<u64> = flat.search(q, 10, &|_| true).iter().map(|h| h.0).collect();
            let hits = hnsw.search(q, 10, &|_| true);
            found += hits.iter().filter(|h| truth.contains(&h.0)).count();
        }
        let recall = found as f64 / (10 * queries.len()) as f64;
        assert!(recall >= 0.9, "recall@10 = {recall}");
    }

    #[test]
    fn search_widens_past_many_tombstones_and_rebuild_drops_them() {
        let dim = 32;
        let vectors = unit_vectors(1_000, dim, 31);
        let mut hnsw = HnswIndex::build(
            dim,
            HnswParams::default(),
            vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u64, v.as_slice())),
        );
        for id in 0..950u64 {
            hnsw.remove(id);
        }
        assert_eq!(
            (hnsw.len(), hnsw.stored(), hnsw.tombstones()),
            (50, 1_000, 950)
        );
        let hits = hnsw.search(&vectors[0], 10, &|_| true);
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.0 >= 950), "{hits:?}");
        // A filter that keeps 5 of the 50 live ids still finds all 5.
        let hits = hnsw.search(&vectors[0], 10, &|id| id % 10 == 0);
        assert_eq!(hits.len(), 5, "{hits:?}");

        let rebuilt = hnsw.rebuilt();
        assert_eq!(
            (rebuilt.len(), rebuilt.stored(), rebuilt.tombstones()),
            (50, 50, 0)
        );
        assert_eq!(rebuilt.search(&vectors[999], 1, &|_| true)[0], (999, 1.0));
        let mut seen = 0;
        rebuilt.for_each_live(|id, v| {
            assert_eq!(v, vectors[id as usize].as_slice());
            seen += 1;
        });
        assert_eq!(seen, 50);
    }

    #[test]
    fn empty_graph_rebuilds_and_iterates_without_panicking() {
        let hnsw = HnswIndex::new(8, HnswParams::default(), 0);
        assert!(hnsw.rebuilt().is_empty());
        hnsw.for_each_live(|_, _| panic!("nothing is live"));
    }
}
