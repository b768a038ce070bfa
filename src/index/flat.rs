//! Exact nearest-neighbour search by scanning every vector.
//!
//! Vectors sit in one contiguous `Vec<f32>` (row i = slot i) so the scan streams through memory.
//! Removal is real, not a tombstone: the last row moves into the hole, so the scan never visits a
//! dead vector. Exact and cheap for small scopes; `AdaptiveIndex` switches to HNSW past a size.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::VectorIndex;
use crate::embed::cosine;

/// Exact top-k by full scan over contiguous storage.
#[derive(Debug, Clone)]
pub struct FlatIndex {
    dim: usize,
    /// Row-major vectors, `dim` floats per slot.
    data: Vec<f32>,
    /// Slot → id.
    ids: Vec<u64>,
    /// Id → slot.
    slots: HashMap<u64, usize>,
}

impl FlatIndex {
    /// An empty index of `dim`-dimensional vectors.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            data: Vec::new(),
            ids: Vec::new(),
            slots: HashMap::new(),
        }
    }

    /// Dimension of the stored vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Every stored (id, vector), in storage order; used to migrate to another index.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[f32])> + '_ {
        self.ids
            .iter()
            .copied()
            .zip(self.data.chunks_exact(self.dim.max(1)))
    }

    fn row(&self, slot: usize) -> &[f32] {
        &self.data[slot * self.dim..(slot + 1) * self.dim]
    }
}

impl VectorIndex for FlatIndex {
    fn insert(&mut self, id: u64, vector: &[f32]) {
        if !super::dimension_fits(self.dim, vector) {
            return;
        }
        match self.slots.get(&id) {
            Some(&slot) => {
                self.data[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(vector);
            }
            None => {
                self.slots.insert(id, self.ids.len());
                self.ids.push(id);
                self.data.extend_from_slice(vector);
            }
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        let last = self.ids.len() - 1;
        if slot != last {
            let moved = self.ids[last];
            self.data
                .copy_within(last * self.dim..(last + 1) * self.dim, slot * self.dim);
            self.ids[slot] = moved;
            self.slots.insert(moved, slot);
        }
        self.ids.truncate(last);
        self.data.truncate(last * self.dim);
    }

    fn contains(&self, id: u64) -> bool {
        self.slots.contains_key(&id)
    }

    fn search(&self, query: &[f32], k: usize, keep: &dyn Fn(u64) -> bool) -> Vec<(u64, f32)> {
        if k == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let mut top = TopK::new(k);
        for (slot, &id) in self.ids.iter().enumerate() {
            let score = cosine(query, self.row(slot));
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
