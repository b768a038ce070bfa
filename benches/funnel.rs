//! Per-stage and whole-check benches: canonicalise, exact lookup, fuzzy over 1,000
//! candidates, and whole checks (exact repeat; a paraphrase needing an embedding, in a session
//! whose window is full: 1,000 identity-equal candidates).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use idem::canonical::{CanonPolicy, CanonicalCall};
use idem::config::{EmbedderKind, ServerConfig};
use idem::engine::{CheckRequest, Engine};
use idem::funnel::{Judge, MatchFilter, PreparedText, TextCache, features, may_match, text};
use idem::store::{Candidate, EmbeddedStore, MemoryStore, Store};
use serde_json::json;

fn email(body: &str) -> String {
    json!({"to": "bob@example.com", "subject": "Budget", "request_id": "r-1", "body": body})
        .to_string()
}

fn req(args: String) -> CheckRequest {
    CheckRequest {
        tenant: "bench".into(),
        session: "s".into(),
        tool: "send_email".into(),
        arguments_json: args,
        deadline_ms: Some(5_000),
        ..Default::default()
    }
}

fn canonicalise(c: &mut Criterion) {
    let v: serde_json::Value = serde_json::from_str(&email(
        "Reminder: the quarterly budget review meeting is tomorrow at the main office.",
    ))
    .unwrap();
    let p = CanonPolicy {
        ignored_names: ["request_id".to_string()].into(),
        ..Default::default()
    };
    c.bench_function("canonicalise/email", |b| {
        b.iter(|| CanonicalCall::build("send_email", &v, &p).unwrap())
    });
}

fn fuzzy_1000(c: &mut Criterion) {
    let query = "Reminder: the quarterly budget review meeting is tomorrow at the main office.";
    let cands: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "Note {i}: the team offsite planning session moves to the north building next week."
            )
        })
        .collect();
    let q = text::fuzzy_form(query);
    c.bench_function("fuzzy/1000_candidates", |b| {
        b.iter(|| {
            let mut best = 0.0f64;
            for cand in &cands {
                let f = text::fuzzy_form(cand);
                if text::similarity_bound(&q, &f) >= 0.9 {
                    best = best.max(text::similarity(&q, &f));
                }
            }
            best
        })
    });
}

/// The judge on one pair (text features + calibrated probability) and `may_match` (what the
/// engine runs before an embedding): the semantic stage judges at most 8 neighbours a check.
fn judge_pair(c: &mut Criterion) {
    let judge = Judge::shipped().unwrap();
    let a = "Please send me the final report for the Q3 audit by Friday, and copy the finance team";
    let b = "Please send me the Q3 audit final report by Friday and cc the finance team";
    c.bench_function("judge/pair", |bench| {
        bench.iter(|| judge.judge(&features::measure(a, b), 0.97))
    });
    let settings = idem::config::SessionSettings::default();
    c.bench_function("judge/may_match", |bench| {
        bench.iter(|| may_match(a, b, &settings))
    });
}

/// The pre-embedding filter over a window of 1,000 candidates that name other values, with the
/// candidates' texts kept prepared (the text cache) and prepared afresh per check (cache off).
fn filter_1000(c: &mut Criterion) {
    let settings = idem::config::SessionSettings::default();
    let query = PreparedText::new("Please send me the Q3 audit final report by Friday.");
    let cands: Vec<Candidate> = (0..1000)
        .map(|i| Candidate {
            id: format!("call-{i}"),
            created_at_ms: 0,
            expires_at_ms: i64::MAX,
            free_text: format!(
                "Draft note {i} about the {} initiative for the {} team.",
                ["orchard", "lantern", "glacier", "velvet", "harbor"][i % 5],
                ["design", "sales", "support", "legal", "ops"][i % 5]
            ),
        })
        .collect();
    let filter = MatchFilter::new(&query, &settings);
    for (name, entries) in [("text_cache", 2048), ("no_cache", 0)] {
        let texts = TextCache::new(entries);
        c.bench_function(&format!("filter/1000_candidates/{name}"), |b| {
            b.iter(|| {
                cands
                    .iter()
                    .filter(|c| filter.may_match(&texts.get(c).text))
                    .count()
            })
        });
    }
}

fn exact_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<(&str, Arc<dyn Store>)> = vec![
        ("memory", Arc::new(MemoryStore::new())),
        (
            "embedded",
            Arc::new(EmbeddedStore::open(dir.path()).unwrap()),
        ),
    ];
    for (name, store) in stores {
        let cfg = ServerConfig {
            semantic: idem::config::SemanticConfig {
                embedder: EmbedderKind::None,
                ..Default::default()
            },
            ..Default::default()
        };
        let engine = Engine::new(store, cfg);
        let args =
            email("Reminder: the quarterly budget review meeting is tomorrow at the main office.");
        rt.block_on(engine.check(req(args.clone()))).unwrap();
        c.bench_function(&format!("check/exact_repeat/{name}"), |b| {
            b.iter(|| rt.block_on(engine.check(req(args.clone()))).unwrap())
        });
    }
}

fn semantic_check(c: &mut Criterion) {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut cfg = ServerConfig::default();
    cfg.semantic.models_dir = models;
    cfg.semantic.embed_cache = 0;
    let Ok(Some(sem)) = idem::engine::Similarity::from_config(&cfg) else {
        eprintln!("model files missing (run `make models`): skipping the semantic bench");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine = rt.block_on(async {
        Engine::with_parts(
            Arc::new(MemoryStore::new()),
            cfg.clone(),
            Arc::new(idem::clock::SystemClock),
            Some(sem.clone()),
        )
    });
    // A rewording the shipped judge calls a repeat (a noun compound made of a prepositional
    // phrase): the check must go through embedding, search and judge to answer DUPLICATE.
    let original = "Please send me the final report for the Q3 audit by Friday.";
    let para = "Please send me the Q3 audit final report by Friday.";
    rt.block_on(async {
        // A full window: 999 other calls of the same identity, then the original.
        for i in 0..999 {
            let other = format!(
                "Draft note {i} about the {} initiative for the {} team.",
                ["orchard", "lantern", "glacier", "velvet", "harbor"][i % 5],
                [
                    "design", "sales", "support", "legal", "ops", "data", "infra"
                ][i % 7]
            );
            engine.check(req(email(&other))).await.unwrap();
        }
        let r = engine.check(req(email(original))).await.unwrap();
        engine
            .complete(idem::engine::CompleteRequest {
                call_id: r.call_id,
                outcome: idem::engine::Outcome::Succeeded {
                    result_json: "{}".into(),
                },
                cost: None,
                attempt: None,
                compensation_json: None,
            })
            .await
            .unwrap();
        // Steady state: every call recorded without an embedding has its backfill done, so
        // the check embeds its own text only (as when calls arrive slower than the model).
        let waited = std::time::Instant::now();
        while sem.backfills_pending() > 0 && waited.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Every measured embedding and check must embed: the cache is emptied before each.
    let Some(embedder) = sem.embedder().cloned() else {
        eprintln!("no embedder configured: skipping the semantic bench");
        return;
    };
    let mut g = c.benchmark_group("semantic");
    g.sample_size(50);
    g.bench_function("raw_embedding/paraphrase_text", |b| {
        b.iter(|| {
            embedder.clear_cache();
            rt.block_on(embedder.embed(para, tokio::time::Instant::now() + Duration::from_secs(5)))
                .unwrap()
        })
    });
    g.bench_function("check/paraphrase_duplicate_1000_candidates", |b| {
        b.iter(|| {
            embedder.clear_cache();
            let r = rt.block_on(engine.check(req(email(para)))).unwrap();
            assert_eq!(r.verdict, idem::engine::Verdict::Duplicate);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = canonicalise, fuzzy_1000, judge_pair, filter_1000, exact_path, semantic_check
}
criterion_main!(benches);
