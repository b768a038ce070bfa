//! Local embedding latency: one short text, one ~80-token text, and 16 concurrent texts
//! (batched by the worker into one model call), through the real queue and worker pool; then
//! texts/s at batch 1, 4, 8 and 16 of 10-40-word texts, for one worker of 2 ONNX Runtime
//! threads and for two workers of one thread each (`IDEM_BENCH_LAYOUTS=1x2,2x1`).
//!
//! Needs the model in `models/` (`make models`); without it, says so and measures nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use idem::embed::{Embedder, LocalEmbedder, LocalEmbedderConfig};
use tokio::time::Instant;

const SHORT: &str = "Send the quarterly report to the finance team";

/// About 80 word pieces.
const LONG: &str = "Create a high priority ticket in the payments project for the checkout \
    failure reported by the customer this morning: card payments above five hundred euros are \
    declined with error code 51 after the three domain secure redirect, only on the mobile app, \
    since the release of version 4.2, and assign it to the on-call engineer with a link to the \
    incident channel.";

fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn embed(c: &mut Criterion) {
    let models_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let embedder = match LocalEmbedder::new(LocalEmbedderConfig {
        models_dir,
        ..LocalEmbedderConfig::default()
    }) {
        Ok(embedder) => Arc::new(embedder),
        Err(e) => {
            eprintln!("embed bench skipped: {e}");
            return;
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");

    let mut group = c.benchmark_group("embed");
    group
        .sample_size(40)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("short_9_tokens", |b| {
        b.to_async(&runtime)
            .iter(|| async { embedder.embed(SHORT, far()).await.expect("embeds") })
    });
    group.bench_function("long_80_tokens", |b| {
        b.to_async(&runtime)
            .iter(|| async { embedder.embed(LONG, far()).await.expect("embeds") })
    });
    group.bench_function("16_concurrent_short", |b| {
        b.to_async(&runtime).iter(|| async {
            let calls = (0..16).map(|_| embedder.embed(SHORT, far()));
            for result in futures::future::join_all(calls).await {
                result.expect("embeds");
            }
        })
    });
    group.finish();
    drop(embedder);
    batches(c, &runtime);
}

/// Agent-like free text of 10-40 words, each distinct.
fn agent_texts(n: usize) -> Vec<String> {
    const WORDS: [&str; 24] = [
        "please",
        "send",
        "the",
        "quarterly",
        "report",
        "to",
        "finance",
        "team",
        "before",
        "friday",
        "and",
        "include",
        "latest",
        "numbers",
        "from",
        "billing",
        "database",
        "nightly",
        "backup",
        "summary",
        "with",
        "customer",
        "feedback",
        "notes",
    ];
    (0..n)
        .map(|i| {
            let len = 10 + (i * 7) % 31;
            (0..len)
                .map(|j| WORDS[(i * 13 + j * 5 + j * j) % WORDS.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Texts per second at batch sizes 1-16, per worker layout (workers x threads).
fn batches(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    let layouts = std::env::var("IDEM_BENCH_LAYOUTS").unwrap_or_else(|_| "1x2,2x1".into());
    let texts = agent_texts(64);
    for layout in layouts.split(',') {
        let Some((workers, threads)) = layout
            .split_once('x')
            .and_then(|(w, t)| Some((w.parse().ok()?, t.parse().ok()?)))
        else {
            eprintln!("bad layout {layout:?}: want WORKERSxTHREADS");
            continue;
        };
        let embedder = match LocalEmbedder::new(LocalEmbedderConfig {
            models_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
            workers,
            intra_threads: threads,
            ..LocalEmbedderConfig::default()
        }) {
            Ok(e) => Arc::new(e),
            Err(e) => {
                eprintln!("embed bench skipped: {e}");
                return;
            }
        };
        let mut group = c.benchmark_group(format!("embed_batch_{layout}"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
        for batch in [1usize, 4, 8, 16] {
            group.throughput(criterion::Throughput::Elements(batch as u64));
            let mut next = 0usize;
            group.bench_function(format!("batch_{batch}"), |b| {
                b.to_async(runtime).iter(|| {
                    let start = next;
                    next = (next + batch) % texts.len();
                    let embedder = Arc::clone(&embedder);
                    let texts = &texts;
                    async move {
                        let calls = (0..batch)
                            .map(|i| embedder.embed(&texts[(start + i) % texts.len()], far()));
                        for result in futures::future::join_all(calls).await {
                            result.expect("embeds");
                        }
                    }
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, embed);
criterion_main!(benches);
