//! `idem calibrate`: precision, recall and false-duplicate rate of the funnel on labelled pairs,
//! a threshold sweep, and recommended thresholds for a target false-duplicate rate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::calibrate::{Calibrator, Confusion, Scored, read_pairs, recommend, sweep, write_plot};
use crate::config::{EmbedderKind, ServerConfig, ToolPolicy};

/// Baselines the bench can measure beside the funnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    /// One cosine threshold on embeddings of the whole canonical call.
    NaiveCosine,
}

/// Arguments of `idem calibrate`.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Labelled pairs, JSON Lines.
    #[arg(long)]
    pub pairs: PathBuf,
    /// Server config (TOML) whose thresholds and tool policies are measured.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Tool schemas (JSON Lines of {"tool", "parameters"}): schema defaults and number-typed
    /// fields become tool policy.
    #[arg(long)]
    pub tools: Option<PathBuf>,
    /// Directory of the local model files (overrides the config).
    #[arg(long)]
    pub models_dir: Option<PathBuf>,
    /// Embedder (overrides the config); `none` measures key, exact and fuzzy only.
    #[arg(long, value_enum)]
    pub embedder: Option<EmbedderKind>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write the plot (.svg or .png).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The false-duplicate rate the recommendation must stay within.
    #[arg(long, default_value_t = 0.005)]
    pub target_false_dup_rate: f64,
    /// Report per value of this pair field.
    #[arg(long, default_value = "kind")]
    pub group_by: String,
    /// Malformed lines are fatal.
    #[arg(long)]
    pub strict: bool,
    /// Also measure a baseline.
    #[arg(long, value_enum)]
    pub baseline: Option<Baseline>,
    /// Pairs scored at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Write every pair's scores here (JSON Lines).
    #[arg(long)]
    pub scores_out: Option<PathBuf>,
    /// List the pairs judged wrongly at the recommended thresholds, with the features that
    /// decided each (the judge's explanation).
    #[arg(long)]
    pub explain: bool,
}

fn schema_policies(path: &PathBuf) -> anyhow::Result<BTreeMap<String, ToolPolicy>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let Some(tool) = v["tool"].as_str() else {
            continue;
        };
        let mut defaults = serde_json::Map::new();
        if let Some(props) = v["parameters"]["properties"].as_object() {
            for (k, p) in props {
                if let Some(d) = p.get("default").filter(|d| !d.is_null()) {
                    defaults.insert(k.clone(), d.clone());
                }
            }
        }
        let numeric_fields = crate::canonical::numeric_paths(&v["parameters"]);
        if !defaults.is_empty() || !numeric_fields.is_empty() {
            out.insert(
                tool.to_string(),
                ToolPolicy {
                    defaults,
                    numeric_fields,
                    ..ToolPolicy::default()
                },
            );
        }
    }
    Ok(out)
}

fn at_config(scored: &[&Scored]) -> Confusion {
    Confusion::of(scored.iter().map(|s| (*s, s.predicted)))
}

/// Runs the calibration and prints the report.
pub async fn run(a: CalibrateArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.pairs)
        .with_context(|| format!("cannot read {}", a.pairs.display()))?;
    let (pairs, malformed) = read_pairs(&text);
    for m in &malformed {
        eprintln!(
            "{}:{}: malformed pair: {}",
            a.pairs.display(),
            m.line,
            m.error
        );
    }
    if a.strict && !malformed.is_empty() {
        anyhow::bail!(
            "{} malformed line(s) in {} (--strict)",
            malformed.len(),
            a.pairs.display()
        );
    }
    anyhow::ensure!(!pairs.is_empty(), "no pairs in {}", a.pairs.display());
    let mut config = match &a.config {
        Some(p) => toml::from_str::<ServerConfig>(&std::fs::read_to_string(p)?)
            .with_context(|| format!("invalid config {}", p.display()))?,
        None => ServerConfig::default(),
    };
    if let Some(d) = &a.models_dir {
        config.semantic.models_dir = d.clone();
    }
    if let Some(e) = a.embedder {
        config.semantic.embedder = e;
    }
    if let Some(t) = &a.tools {
        for (name, p) in schema_policies(t)? {
            config.defaults.tools.entry(name).or_insert(p);
        }
    }
    let current = (
        config.defaults.fuzzy_threshold,
        config.defaults.semantic_duplicate,
    );
    let cal = Calibrator::new(config.clone())?;
    let naive = a.baseline == Some(Baseline::NaiveCosine);
    let bar = indicatif::ProgressBar::new(pairs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} pairs {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let group_by = a.group_by.clone();
    let mut results: Vec<(usize, Scored)> = futures::stream::iter(pairs.iter().enumerate())
        .map(|(i, p)| {
            let group = p
                .extra
                .get(&group_by)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string));
            let cal = &cal;
            let bar = &bar;
            async move {
                let r = cal.score(p, group, naive).await;
                bar.inc(1);
                r.map(|s| (i, s))
                    .map_err(|e| anyhow::anyhow!("pair {}: {e}", p.id))
            }
        })
        .buffer_unordered(a.concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    bar.finish_and_clear();
    results.sort_by_key(|(i, _)| *i);
    let scored: Vec<Scored> = results.into_iter().map(|(_, s)| s).collect();
    if let Some(out) = &a.scores_out {
        let lines: Vec<String> = scored
            .iter()
            .map(|s| serde_json::to_string(s).unwrap_or_default())
            .collect();
        std::fs::write(out, lines.join("\n") + "\n")?;
    }

    let all: Vec<&Scored> = scored.iter().collect();
    let overall = at_config(&all);
    let points = sweep(&scored);
    let rec = recommend(&points, a.target_false_dup_rate);
    let mut groups: BTreeMap<String, Vec<&Scored>> = BTreeMap::new();
    for s in &scored {
        groups
            .entry(s.group.clone().unwrap_or_else(|| "(none)".into()))
            .or_default()
            .push(s);
    }
    let per_group: BTreeMap<String, Value> = groups
        .iter()
        .map(|(g, items)| {
            let mut v = at_config(items).report();
            if let Some(r) = rec {
                let c = Confusion::of(
                    items
                        .iter()
                        .map(|s| (*s, s.at(r.fuzzy_threshold, r.semantic_duplicate))),
                );
                v["at_recommended"] = c.report();
            }
            v["pairs"] = json!(items.len());
            (g.clone(), v)
        })
        .collect();
    let by_stage: BTreeMap<&str, u64> =
        scored
            .iter()
            .filter(|s| s.predicted)
            .fold(BTreeMap::new(), |mut m, s| {
                *m.entry(s.stage.unwrap_or("?")).or_default() += 1;
                m
            });
    let recommended = rec.map(|r| {
        let borderline = borderline_for(r.semantic_duplicate);
        json!({
            "fuzzy_threshold": r.fuzzy_threshold,
            "semantic_duplicate": r.semantic_duplicate,
            "semantic_borderline": (borderline * 1000.0).round() / 1000.0,
            "precision": r.precision, "recall": r.recall, "f1": r.f1,
            "false_duplicate_rate": r.false_duplicate_rate,
            "false_duplicate_rate_upper95": r.false_duplicate_rate_upper95,
        })
    });
    let snippet = rec.map(|r| {
        format!(
            "[defaults]\nfuzzy_threshold = {}\nsemantic_duplicate = {}\nsemantic_borderline = {:.3}\n",
            r.fuzzy_threshold,
            r.semantic_duplicate,
            borderline_for(r.semantic_duplicate)
        )
    });
    let explained = a.explain.then(|| {
        let (f, s) = rec.map_or(current, |r| (r.fuzzy_threshold, r.semantic_duplicate));
        scored
            .iter()
            .filter(|x| x.at(f, s) != x.duplicate)
            .map(|x| {
                json!({
                    "id": x.id, "group": x.group, "duplicate": x.duplicate,
                    "error": if x.duplicate { "missed" } else { "false_duplicate" },
                    "fuzzy": x.fuzzy, "cosine": x.cosine, "probability": x.semantic,
                    "explain": x.explain,
                })
            })
            .collect::<Vec<_>>()
    });
    let baseline = naive.then(|| naive_report(&scored, a.target_false_dup_rate));
    let report = json!({
        "pairs": scored.len(),
        "malformed": malformed,
        "thresholds": {"fuzzy_threshold": current.0, "semantic_duplicate": current.1},
        "precision": overall.precision(),
        "recall": overall.recall(),
        "f1": overall.f1(),
        "false_duplicate_rate": overall.false_duplicate_rate(),
        "confusion": overall.report(),
        "matched_by_stage": by_stage,
        "target_false_dup_rate": a.target_false_dup_rate,
        "recommended": recommended,
        "config_snippet": snippet,
        "per_group": per_group,
        "baseline": baseline,
        "explained": explained,
        "sweep": points,
    });
    if let Some(p) = &a.plot {
        let chosen = rec.map_or(current, |r| (r.fuzzy_threshold, r.semantic_duplicate));
        write_plot(p, &scored, chosen)?;
    }
    if a.json {
        println!("{report}");
    } else {
        print_human(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// The borderline band under a recommended duplicate threshold: pairs the verifier (or the
/// session's borderline policy) decides. A quarter of probability below the threshold.
fn borderline_for(duplicate: f64) -> f64 {
    ((duplicate - 0.25).max(0.0) * 1000.0).round() / 1000.0
}

fn naive_report(scored: &[Scored], target: f64) -> Value {
    let pts: Vec<(bool, f64)> = scored
        .iter()
        .filter_map(|s| s.naive_cosine.map(|c| (s.duplicate, c)))
        .collect();
    let tuned = crate::calibrate::best_single_threshold(&pts, target);
    json!({
        "rule": "cosine(embed(tool + canonical args of a), embed(... of b)) >= threshold",
        "at_0_90": crate::calibrate::at_threshold(&pts, 0.90).report(),
        "tuned": tuned.map(|(t, c)| { let mut v = c.report(); v["threshold"] = json!(t); v }),
    })
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("-".into(), |x| format!("{:.1}%", 100.0 * x))
}

fn num(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.3}"))
}

fn print_human(r: &Value) {
    println!(
        "pairs: {}   malformed: {}",
        r["pairs"],
        r["malformed"].as_array().map_or(0, Vec::len)
    );
    println!(
        "at the configured thresholds (fuzzy {}, semantic {}): precision {}  recall {}  F1 {}  false-duplicate rate {}",
        r["thresholds"]["fuzzy_threshold"],
        r["thresholds"]["semantic_duplicate"],
        pct(&r["precision"]),
        pct(&r["recall"]),
        pct(&r["f1"]),
        pct(&r["false_duplicate_rate"])
    );
    println!("matched by stage: {}", r["matched_by_stage"]);
    println!(
        "\n{:<32} {:>6} {:>10} {:>8} {:>8} {:>10}",
        "group", "pairs", "precision", "recall", "F1", "false-dup"
    );
    if let Some(groups) = r["per_group"].as_object() {
        for (g, v) in groups {
            println!(
                "{:<32} {:>6} {:>10} {:>8} {:>8} {:>10}",
                g,
                v["pairs"],
                pct(&v["precision"]),
                pct(&v["recall"]),
                pct(&v["f1"]),
                pct(&v["false_duplicate_rate"])
            );
        }
    }
    match r["recommended"].as_object() {
        Some(rec) => {
            println!(
                "\nrecommended for a false-duplicate rate <= {}: fuzzy {} semantic {} -> recall {} precision {} false-dup {}",
                pct(&r["target_false_dup_rate"]),
                rec["fuzzy_threshold"],
                rec["semantic_duplicate"],
                pct(&rec["recall"]),
                pct(&rec["precision"]),
                pct(&rec["false_duplicate_rate"])
            );
            println!("\n{}", r["config_snippet"].as_str().unwrap_or_default());
        }
        None => println!("\nno swept thresholds reach the target false-duplicate rate"),
    }
    if let Some(items) = r["explained"].as_array() {
        println!(
            "\n{} pairs judged wrongly at the recommended thresholds:",
            items.len()
        );
        for x in items {
            println!(
                "  {:<28} {:<16} fuzzy {:<6} cosine {:<6} p {:<6} {}",
                x["id"].as_str().unwrap_or_default(),
                x["error"].as_str().unwrap_or_default(),
                num(&x["fuzzy"]),
                num(&x["cosine"]),
                num(&x["probability"]),
                x["explain"].as_str().unwrap_or("(not judged)")
            );
        }
    }
    if let Some(b) = r["baseline"].as_object() {
        println!(
            "naive cosine baseline at 0.90: precision {} recall {} false-dup {}",
            pct(&b["at_0_90"]["precision"]),
            pct(&b["at_0_90"]["recall"]),
            pct(&b["at_0_90"]["false_duplicate_rate"])
        );
        if let Some(t) = b["tuned"].as_object() {
            println!(
                "naive cosine tuned to the target (threshold {}): recall {} false-dup {}",
                t["threshold"],
                pct(&t["recall"]),
                pct(&t["false_duplicate_rate"])
            );
        }
    }
}
