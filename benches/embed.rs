//! Local embedding latency: one short text, one ~80-token text, and 16 concurrent texts
//! (batched by the worker into one model call), through the real queue and worker pool.
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
}

criterion_group!(benches, embed);
criterion_main!(benches);
