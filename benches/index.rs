//! Vector index search latency: top-10 over n stored 384-d unit vectors, flat scan vs HNSW.
//!
//! Each index is built once per size, outside the measurement (build time and recall@10 against
//! the exact f32 answer are printed: the flat index stores int8, so its recall is the ranking
//! cost of quantisation). Sizes: `IDEM_BENCH_FLAT_SIZES` and `IDEM_BENCH_HNSW_SIZES`,
//! comma-separated; the defaults keep the run near ten minutes on 2 cores. The vectors are
//! embedding-like (a 32-dimensional latent factor model plus noise, so neighbours are meaningful,
//! as in real sentence embeddings); `IDEM_BENCH_DATA=uniform` uses uniform random vectors
//! instead, HNSW's worst case, where its recall collapses.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use idem::index::{FlatIndex, HnswIndex, IndexConfig, VectorIndex};

const DIM: usize = 384;
const K: usize = 10;
const QUERIES: usize = 64;
/// Search candidate list sizes measured for HNSW.
const EF_SEARCH: [usize; 3] = [64, 128, 256];
/// Dimensions of the latent factors behind the embedding-like vectors.
const LATENT: usize = 32;
/// Standard deviation of the per-coordinate noise added to the latent signal (whose
/// per-coordinate standard deviation is sqrt(LATENT), about 5.7).
const NOISE: f32 = 1.0;

/// Deterministic pseudo-random numbers (splitmix64), so every run measures the same data.
struct Rng(u64);

impl Rng {
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

/// Source of the vectors to index and query, all unit length.
struct Data {
    rng: Rng,
    /// DIM x LATENT mixing matrix of the latent factor model; empty for uniform data.
    mixing: Vec<f32>,
}

impl Data {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let uniform = std::env::var("IDEM_BENCH_DATA").is_ok_and(|v| v == "uniform");
        let mixing = if uniform {
            Vec::new()
        } else {
            (0..DIM * LATENT).map(|_| rng.normal()).collect()
        };
        Self { rng, mixing }
    }

    /// `n` vectors, row after row.
    fn vectors(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n * DIM);
        let mut latent = [0.0f32; LATENT];
        for _ in 0..n {
            let start = out.len();
            if self.mixing.is_empty() {
                for _ in 0..DIM {
                    out.push(self.rng.uniform() * 2.0 - 1.0);
                }
            } else {
                latent.iter_mut().for_each(|z| *z = self.rng.normal());
                for row in self.mixing.chunks_exact(LATENT) {
                    let signal: f32 = row.iter().zip(&latent).map(|(w, z)| w * z).sum();
                    out.push(signal + NOISE * self.rng.normal());
                }
            }
            let row = &mut out[start..];
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        out
    }
}

fn sizes(var: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(var) {
        Ok(list) => list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
        Err(_) => default.to_vec(),
    }
}

fn label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// The exact top-k ids of each query among the first `n` rows, by f32 cosine.
fn exact_top(data: &[f32], n: usize, queries: &[f32]) -> Vec<Vec<u64>> {
    queries
        .chunks_exact(DIM)
        .map(|q| {
            let mut scored: Vec<(u64, f32)> = data[..n * DIM]
                .chunks_exact(DIM)
                .enumerate()
                .map(|(i, row)| (i as u64, idem::embed::cosine(q, row)))
                .collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1));
            scored.into_iter().take(K).map(|(id, _)| id).collect()
        })
        .collect()
}

/// Share of the exact top-k that the index also returned, over all queries.
fn recall(index: &dyn VectorIndex, truth: &[Vec<u64>], queries: &[f32]) -> f64 {
    let mut found = 0;
    for (q, truth) in queries.chunks_exact(DIM).zip(truth) {
        found += index
            .search(q, K, &|_| true)
            .iter()
            .filter(|h| truth.contains(&h.0))
            .count();
    }
    found as f64 / (K * truth.len()) as f64
}

/// Largest and mean |score - f32 cosine| over the top-k hits of every query.
fn score_error(index: &dyn VectorIndex, data: &[f32], queries: &[f32]) -> (f32, f32) {
    let (mut worst, mut sum, mut n) = (0.0f32, 0.0f32, 0);
    for q in queries.chunks_exact(DIM) {
        for (id, score) in index.search(q, K, &|_| true) {
            let row = &data[id as usize * DIM..(id as usize + 1) * DIM];
            let err = (score - idem::embed::cosine(q, row)).abs();
            worst = worst.max(err);
            sum += err;
            n += 1;
        }
    }
    (worst, sum / n.max(1) as f32)
}

fn search(c: &mut Criterion) {
    let flat_sizes = sizes(
        "IDEM_BENCH_FLAT_SIZES",
        &[1_000, 10_000, 100_000, 1_000_000],
    );
    let hnsw_sizes = sizes("IDEM_BENCH_HNSW_SIZES", &[1_000, 10_000, 100_000]);
    let largest = flat_sizes
        .iter()
        .chain(&hnsw_sizes)
        .copied()
        .max()
        .unwrap_or(0);
    let mut source = Data::new(1);
    let queries = source.vectors(QUERIES);
    let data = source.vectors(largest);
    let rows = |n: usize| data[..n * DIM].chunks_exact(DIM).enumerate();

    let mut group = c.benchmark_group("index_search_top10");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    for &n in &flat_sizes {
        let mut flat = FlatIndex::new(DIM);
        for (i, row) in rows(n) {
            flat.insert(i as u64, row);
        }
        if n <= 100_000 {
            let (worst, mean) = score_error(&flat, &data, &queries);
            eprintln!(
                "flat_int8/{}: recall@{K} = {:.4} against f32; cosine error max {worst:.5}, \
                 mean {mean:.5}; {} bytes of index ({:.0} a vector)",
                label(n),
                recall(&flat, &exact_top(&data, n, &queries), &queries),
                flat.heap_bytes(),
                flat.heap_bytes() as f64 / n as f64
            );
        }
        let mut q = queries.chunks_exact(DIM).cycle();
        group.bench_function(BenchmarkId::new("flat", label(n)), |b| {
            b.iter(|| black_box(flat.search(q.next().unwrap_or_default(), K, &|_| true)))
        });
    }

    let params = IndexConfig::default().hnsw_params();
    for &n in &hnsw_sizes {
        let started = Instant::now();
        let mut hnsw = HnswIndex::build(DIM, params, rows(n).map(|(i, row)| (i as u64, row)));
        let build = started.elapsed();
        let truth = exact_top(&data, n, &queries);
        eprintln!(
            "hnsw/{}: built in {:.1} s on {} threads (M={}, ef_construction={})",
            label(n),
            build.as_secs_f64(),
            std::thread::available_parallelism().map_or(1, |p| p.get()),
            params.max_nb_connection,
            params.ef_construction,
        );
        for ef in EF_SEARCH {
            hnsw.set_ef_search(ef);
            eprintln!(
                "hnsw/{}/ef{ef}: recall@{K} = {:.3}",
                label(n),
                recall(&hnsw, &truth, &queries)
            );
        }
        for ef in EF_SEARCH {
            hnsw.set_ef_search(ef);
            let mut q = queries.chunks_exact(DIM).cycle();
            group.bench_function(BenchmarkId::new(format!("hnsw_ef{ef}"), label(n)), |b| {
                b.iter(|| black_box(hnsw.search(q.next().unwrap_or_default(), K, &|_| true)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, search);
criterion_main!(benches);
