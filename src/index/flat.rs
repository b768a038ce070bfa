//! Nearest-neighbour search by scanning every vector, stored as int8 (`int8.rs`).
//!
//! Codes sit in one contiguous `Vec<i8>` (row i = slot i) so the scan streams through memory, a
//! quarter of the bytes of f32; the query is quantised too and scored by integer dot products
//! (within about 0.0015 of the f32 cosine). Removal is real, not a tombstone: the last row moves
//! into the hole, so the scan never visits a dead vector. Storage grows by an eighth at a time,
//! not by doubling, so at most about 12 % of it is slack.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use super::VectorIndex;
use super::int8;

/// Rows added at least when storage grows.
const MIN_GROWTH: usize = 256;

/// Top-k by full scan over contiguous int8 storage.
#[derive(Debug, Clone)]
pub struct FlatIndex {
    dim: usize,
    /// Row-major quantised vectors, `dim` codes per slot.
    codes: Vec<i8>,
    /// Slot → scale of its codes.
    scales: Vec<f32>,
    /// Slot → id.
    ids: Vec<u64>,
    /// Id → slot (ids are hashes already: the cheap Fx hasher is enough).
    slots: FxHashMap<u64, u32>,
}

impl FlatIndex {
    /// An empty index of `dim`-dimensional vectors.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            codes: Vec::new(),
            scales: Vec::new(),
            ids: Vec::new(),
            slots: FxHashMap::default(),
        }
    }

    /// Dimension of the stored vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Every stored (id, vector), dequantised, in storage order; used to migrate to HNSW.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Vec<f32>)> + '_ {
        (0..self.ids.len()).map(|slot| {
            let (codes, scale) = self.row(slot);
            (self.ids[slot], int8::dequantize(codes, scale))
        })
    }

    /// Bytes held by the index's own storage (capacity, not length), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.codes.capacity()
            + self.scales.capacity() * 4
            + self.ids.capacity() * 8
            // hashbrown: key, value and one control byte per bucket.
            + self.slots.capacity() * (8 + 4 + 1)
    }

    fn row(&self, slot: usize) -> (&[i8], f32) {
        (
            &self.codes[slot * self.dim..(slot + 1) * self.dim],
            self.scales[slot],
        )
    }

    /// Makes room for one more row, growing by an eighth (not doubling) when full.
    fn reserve_row(&mut self) {
        let rows = self.ids.len();
        if rows < self.ids.capacity() && self.codes.capacity() >= (rows + 1) * self.dim {
            return;
        }
        let more = (rows / 8).max(MIN_GROWTH);
        self.ids.reserve_exact(more);
        self.scales.reserve_exact(more);
        self.codes.reserve_exact(more * self.dim);
    }
}

impl VectorIndex for FlatIndex {
    fn insert(&mut self, id: u64, vector: &[f32]) {
        if !super::dimension_fits(self.dim, vector) {
            return;
        }
        let (codes, scale) = int8::quantize(vector);
        match self.slots.get(&id) {
            Some(&slot) => {
                let slot = slot as usize;
                self.codes[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(&codes);
                self.scales[slot] = scale;
            }
            None => {
                let Ok(slot) = u32::try_from(self.ids.len()) else {
                    tracing::error!("a flat index holds at most 2^32 vectors; vector refused");
                    return;
                };
                self.reserve_row();
                self.slots.insert(id, slot);
                self.ids.push(id);
                self.scales.push(scale);
                self.codes.extend_from_slice(&codes);
            }
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        let (slot32, slot) = (slot, slot as usize);
        let last = self.ids.len() - 1;
        if slot != last {
            let moved = self.ids[last];
            self.codes
                .copy_within(last * self.dim..(last + 1) * self.dim, slot * self.dim);
            self.scales[slot] = self.scales[last];
            self.ids[slot] = moved;
            self.slots.insert(moved, slot32);
        }
        self.ids.truncate(last);
        self.scales.truncate(last);
        self.codes.truncate(last * self.dim);
    }

    fn contains(&self, id: u64) -> bool {
        self.slots.contains_key(&id)
    }

    fn search(&self, query: &[f32], k: usize, keep: &dyn Fn(u64) -> bool) -> Vec<(u64, f32)> {
        if k == 0 || query.len() != self.dim {
            return Vec::new();
        }
        // The query quantised too: the scan is integer dot products (the score is the cosine
        // of the two quantised directions).
        let (query, query_scale) = int8::quantize(query);
        let mut top = TopK::new(k);
        for (slot, &id) in self.ids.iter().enumerate() {
            let (codes, scale) = self.row(slot);
            let score = int8::dot_codes(&query, codes) as f32 * (query_scale * scale);
            // `keep` may cost a lookup: ask only for vectors that would enter the top k.
            if top.admits(score) && keep(id) {
                top.push(id, score);
            }
        }
        top.into_sorted()
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The k best (id, score) seen so far: a min-heap whose root is the worst kept score.
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Scored>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Whether a candidate with this score would be kept.
    pub(crate) fn admits(&self, score: f32) -> bool {
        self.heap.len() < self.k || self.heap.peek().is_some_and(|worst| score > worst.score)
    }

    pub(crate) fn push(&mut self, id: u64, score: f32) {
        if self.heap.len() < self.k {
            self.heap.push(Scored { score, id });
        } else if let Some(mut worst) = self.heap.peek_mut()
            && score > worst.score
        {
            *worst = Scored { score, id };
        }
    }

    /// The kept pairs, best score first.
    pub(crate) fn into_sorted(self) -> Vec<(u64, f32)> {
        // Ascending in `Scored`'s reversed order is descending by score.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|s| (s.id, s.score))
            .collect()
    }
}

/// Heap entry ordered so that the lowest score is the heap's maximum (its root).
struct Scored {
    score: f32,
    id: u64,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| self.id.cmp(&other.id))
    }
}
