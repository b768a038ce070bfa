//! `idem train-scorer`: fits the judge's coefficients on labelled text pairs, deterministically.
//!
//! Pairs without a cosine are embedded once with the local model (`--models-dir`) and, with
//! `--write-cosines`, written back, so retraining after a feature change needs no model. The
//! report gives the held-out split's figures at the thresholds the session defaults use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use serde_json::json;

use crate::calibrate::train::{TextPair, train};
use crate::calibrate::{Confusion, wilson_upper};
use crate::config::SessionSettings;
use crate::embed::{Embedder, LocalEmbedder, LocalEmbedderConfig};
use crate::funnel::Judge;
use crate::funnel::alignment::{WordSims, align};
use crate::funnel::features::measure;

/// Arguments of `idem train-scorer`.
#[derive(Debug, Args)]
pub struct TrainScorerArgs {
    /// Labelled text pairs, JSON Lines of {"a", "b", "duplicate", "split", "cosine"?, "kind"?}.
    #[arg(long)]
    pub pairs: PathBuf,
    /// Where to write the model (JSON); stdout when absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the pairs back with their cosines and word cosines filled in (only then are the
    /// word cosines computed for pairs that lack them).
    #[arg(long)]
    pub write_cosines: Option<PathBuf>,
    /// Directory of the local model files (to embed pairs without a cosine).
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    /// Print the held-out report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write every pair's features and probability under the fitted model here (JSON Lines):
    /// where recall is lost, and which features decide.
    #[arg(long)]
    pub scores_out: Option<PathBuf>,
}

/// Each pair with its text features, hard conflict and probability under `judge`.
fn write_scores(judge: &Judge, pairs: &[TextPair], path: &Path) -> anyhow::Result<()> {
    let lines: Vec<String> = pairs
        .iter()
        .map(|p| {
            let t = measure(&p.a, &p.b);
            let features: serde_json::Map<String, serde_json::Value> =
                crate::funnel::features::TEXT_FEATURES
                    .iter()
                    .zip(t.x)
                    .map(|(n, x)| ((*n).to_string(), json!(x)))
                    .collect();
            let al = p.word_sims.as_ref().map(align);
            let j = p.cosine.map(|c| judge.judge_aligned(&t, c, al.as_ref()));
            json!({
                "kind": p.kind, "split": p.split, "duplicate": p.duplicate, "a": p.a, "b": p.b,
                "cosine": p.cosine, "conflict": t.conflict.map(|c| c.as_str()),
                "probability": j.as_ref().map(|j| j.probability),
                "explain": j.as_ref().map(crate::funnel::Judgement::explain),
                "features": features,
                "alignment": al.as_ref().map(|a| json!({"x": a.x, "worst": a.worst})),
            })
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Embeds, once, the pairs that lack a cosine (or, with `words`, their word cosines), with
/// the local model; returns how many were embedded. A cosine already there is kept (the base
/// model is refitted on the very cosines it was fitted on); the word cosines come from the
/// same model call. Without `words`, a file whose pairs all have cosines is fitted as it is
/// (the fixture: the base model only, no model files needed).
async fn fill_cosines(
    pairs: &mut [TextPair],
    models_dir: &Path,
    words: bool,
) -> anyhow::Result<usize> {
    let missing: Vec<usize> = (0..pairs.len())
        .filter(|&i| pairs[i].cosine.is_none() || (words && pairs[i].word_sims.is_none()))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let embedder = LocalEmbedder::new(LocalEmbedderConfig {
        models_dir: models_dir.to_path_buf(),
        intra_threads: cores,
        queue_capacity: 64,
        nice: 0,
        ..LocalEmbedderConfig::default()
    })?;
    let bar = indicatif::ProgressBar::new(missing.len() as u64);
    let (embedder, bar_ref) = (&embedder, &bar);
    let texts: Vec<(usize, String, String)> = missing
        .iter()
        .map(|&i| (i, pairs[i].a.clone(), pairs[i].b.clone()))
        .collect();
    type Filled = (usize, f64, Option<WordSims>);
    let done: Vec<Filled> = futures::stream::iter(texts)
        .map(|(i, a, b)| async move {
            let deadline = || tokio::time::Instant::now() + Duration::from_secs(600);
            let (va, wa) = embedder.embed_words(&a, deadline()).await?;
            let (vb, wb) = embedder.embed_words(&b, deadline()).await?;
            bar_ref.inc(1);
            let sims = wa
                .zip(wb)
                .map(|(wa, wb)| rounded(WordSims::between(&wa, &wb)));
            Ok::<_, anyhow::Error>((i, f64::from(crate::embed::cosine(&va, &vb)), sims))
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    bar.finish_and_clear();
    for (i, c, sims) in done {
        // Six decimals: the file stays readable and training stays reproducible.
        let p = &mut pairs[i];
        p.cosine = p.cosine.or(Some((c * 1e6).round() / 1e6));
        p.word_sims = p.word_sims.take().or(sims);
    }
    Ok(missing.len())
}

/// Word cosines to four decimals (the file stays small; the int8 word vectors are no more
/// precise than that).
fn rounded(mut s: WordSims) -> WordSims {
    for x in &mut s.sims {
        *x = (*x * 1e4).round() / 1e4;
    }
    s
}

/// Figures of `judge` on the pairs of `split` at the default thresholds, per kind.
pub fn split_report(judge: &Judge, pairs: &[TextPair], split: &str) -> serde_json::Value {
    let s = SessionSettings::default();
    let items: Vec<(&TextPair, f64)> = pairs
        .iter()
        .filter(|p| p.split == split)
        .filter_map(|p| {
            p.cosine.map(|c| {
                let al = p.word_sims.as_ref().map(align);
                (
                    p,
                    judge.probability_aligned(&measure(&p.a, &p.b), c, al.as_ref()),
                )
            })
        })
        .collect();
    let figures = |sel: &[&(&TextPair, f64)]| {
        let c = Confusion::from_labels(
            sel.iter()
                .map(|(p, prob)| (p.duplicate, *prob >= s.semantic_duplicate)),
        );
        let mut v = c.report();
        v["pairs"] = json!(sel.len());
        v["false_duplicate_rate_upper95"] = json!(wilson_upper(c.fp, c.fp + c.tn));
        v
    };
    let all: Vec<&(&TextPair, f64)> = items.iter().collect();
    let mut kinds: std::collections::BTreeMap<&str, Vec<&(&TextPair, f64)>> = Default::default();
    for it in &items {
        kinds.entry(it.0.kind.as_str()).or_default().push(it);
    }
    let sweep: Vec<serde_json::Value> = (6..100)
        .step_by(3)
        .map(|i| {
            let t = f64::from(i) / 100.0;
            let c = Confusion::from_labels(all.iter().map(|(p, prob)| (p.duplicate, *prob >= t)));
            json!({"threshold": t, "recall": c.recall(), "false_duplicate_rate": c.false_duplicate_rate(), "fp": c.fp})
        })
        .collect();
    json!({
        "split": split,
        "semantic_duplicate": s.semantic_duplicate,
        "sweep": sweep,
        "all": figures(&all),
        "per_kind": kinds.iter().map(|(k, v)| (k.to_string(), figures(v))).collect::<serde_json::Map<_, _>>(),
    })
}

/// Runs the training and prints the held-out report.
pub async fn run(a: TrainScorerArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.pairs)
        .with_context(|| format!("cannot read {}", a.pairs.display()))?;
    let mut pairs: Vec<TextPair> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a text pair", a.pairs.display(), i + 1))
        })
        .collect::<anyhow::Result<_>>()?;
    let filled = fill_cosines(&mut pairs, &a.models_dir, a.write_cosines.is_some()).await?;
    if let Some(p) = &a.write_cosines {
        let lines: Vec<String> = pairs
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?;
        std::fs::write(p, lines.join("\n") + "\n")?;
        eprintln!(
            "{filled} cosines computed; pairs written to {}",
            p.display()
        );
    }
    let model = train(&pairs)?;
    let model_json = serde_json::to_string_pretty(&model)? + "\n";
    match &a.out {
        Some(p) => std::fs::write(p, &model_json)?,
        None => print!("{model_json}"),
    }
    let judge = Judge::from_model(&model)?;
    if let Some(p) = &a.scores_out {
        write_scores(&judge, &pairs, p)?;
    }
    let mut report = split_report(&judge, &pairs, "heldout");
    if model.aligned.is_some() {
        // The same split judged without the word alignment (a cache miss at run time).
        let base = Judge::from_model(&crate::funnel::judge::Model {
            aligned: None,
            ..model.clone()
        })?;
        report["without_alignment"] = split_report(&base, &pairs, "heldout");
    }
    if a.json || a.out.is_none() {
        eprintln!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}
