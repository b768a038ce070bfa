//! `idem bench`: a gRPC load generator reporting throughput and latency per verdict.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::json;
use tokio::sync::Mutex;

use crate::proto;
use crate::proto::idem_client::IdemClient;

/// Arguments of `idem bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub conn: super::connect::ServerArgs,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// How long to run, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Open loop: start this many checks per second whatever the latency (sessions: one per
    /// `--concurrency`). Without it each of `--concurrency` clients waits for its answer.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Closed loop: a client's pause after RESOURCE_EXHAUSTED, doubled for each shed in a row
    /// (up to 16x) and jittered to 50-150%, as idem's clients back off (0: retry at once).
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub shed_backoff: Duration,
    /// Request mix in percent: exact repeats, paraphrased repeats, new calls.
    #[arg(long, default_value = "exact=40,paraphrase=30,new=30")]
    pub mix: String,
    /// Deadline per check in ms (server default when unset).
    #[arg(long)]
    pub deadline_ms: Option<u32>,
    /// Also time raw local embeddings of the paraphrase texts (needs the model files).
    #[arg(long)]
    pub models_dir: Option<PathBuf>,
    /// Calls to load with, one JSON object `{tool, args}` per line (e.g.
    /// benches/data/load_calls.jsonl). Each new call takes one and appends four random words to
    /// its longest string, so it is unique and, having identity-equal earlier calls, must be
    /// compared by embedding; `exact` resends one of the worker's earlier calls; `paraphrase`
    /// is read as `new`. Without it, the built-in email templates are used.
    #[arg(long, value_name = "FILE")]
    pub calls: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Reads `{tool, args}` lines.
fn read_calls(path: &std::path::Path) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let (Some(tool), Some(args)) = (v["tool"].as_str(), v.get("args")) else {
            anyhow::bail!("{}:{}: want {{\"tool\", \"args\"}}", path.display(), i + 1);
        };
        anyhow::ensure!(
            args.is_object(),
            "{}:{}: args must be an object",
            path.display(),
            i + 1
        );
        out.push((tool.to_string(), args.clone()));
    }
    anyhow::ensure!(!out.is_empty(), "{} holds no calls", path.display());
    Ok(out)
}

/// The `m`-th unique call of worker `w`: one of `calls` with four random words appended to its
/// longest string (the same `(w, m)` gives the same call, so an exact repeat regenerates it).
fn unique_call(calls: &[(String, serde_json::Value)], w: usize, m: u64) -> (String, String) {
    let mut rng = Rng(0xA076_1D64_78BD_642F ^ ((w as u64) << 40) ^ m.wrapping_mul(0x9E37_79B9));
    for _ in 0..4 {
        rng.next();
    }
    let (tool, args) = &calls[rng.below(calls.len())];
    let mut args = args.clone();
    let suffix: Vec<&str> = (0..4).map(|_| WORDS[rng.below(WORDS.len())]).collect();
    if let Some(obj) = args.as_object_mut() {
        let longest = obj
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.len())))
            .max_by_key(|(_, n)| *n)
            .map(|(k, _)| k);
        match longest {
            Some(k) => {
                let text = format!(
                    "{} {}",
                    obj[&k].as_str().unwrap_or_default(),
                    suffix.join(" ")
                );
                obj.insert(k, serde_json::Value::String(text));
            }
            None => {
                obj.insert("note".into(), serde_json::Value::String(suffix.join(" ")));
            }
        }
    }
    (tool.clone(), args.to_string())
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Exact,
    Paraphrase,
    New,
}

/// Originals and their paraphrases (same identity, other words).
const TEMPLATES: &[(&str, &str)] = &[
    (
        "Reminder: the {t} review meeting is tomorrow at the main office.",
        "Just a reminder that the {t} review meeting takes place tomorrow at the main office.",
    ),
    (
        "Please send me the signed contract for the {t} project by the end of the week.",
        "Could you send me the signed contract for the {t} project before the week is over?",
    ),
    (
        "Summarize the key findings of the {t} audit for the leadership team.",
        "Give the leadership team a summary of the main findings of the {t} audit.",
    ),
    (
        "Schedule a follow-up call with the vendor about the {t} delivery delays.",
        "Set up a follow-up call with the vendor regarding delays in the {t} delivery.",
    ),
];
const TOPICS: &[&str] = &[
    "budget",
    "hiring",
    "security",
    "marketing",
    "logistics",
    "pricing",
    "compliance",
    "migration",
];
const WORDS: &[&str] = &[
    "orchard", "lantern", "glacier", "velvet", "harbor", "meadow", "copper", "falcon", "prairie",
    "quartz", "saffron", "tundra", "willow", "zephyr", "basalt", "cobalt", "ember", "fjord",
    "garnet", "heron",
];

fn parse_mix(s: &str) -> anyhow::Result<Vec<(Kind, u32)>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("mix entry {part:?} is not name=percent"))?;
        let kind = match k.trim() {
            "exact" => Kind::Exact,
            "paraphrase" => Kind::Paraphrase,
            "new" => Kind::New,
            other => anyhow::bail!("unknown mix kind {other:?}; use exact, paraphrase, new"),
        };
        out.push((
            kind,
            v.trim()
                .parse()
                .with_context(|| format!("bad percent in {part:?}"))?,
        ));
    }
    anyhow::ensure!(
        out.iter().map(|(_, p)| p).sum::<u32>() > 0,
        "mix percentages sum to 0"
    );
    Ok(out)
}

fn body(template: &str, topic: &str) -> String {
    json!({"to": "team@example.com", "body": template.replace("{t}", topic)}).to_string()
}

/// A small deterministic generator (xorshift), so runs are repeatable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Default)]
struct Tally {
    by_verdict: BTreeMap<String, Vec<u64>>,
    by_kind: BTreeMap<String, Vec<u64>>,
    /// Server-side time (the response's `total_micros`) per request kind.
    server_by_kind: BTreeMap<String, Vec<u64>>,
    /// Server-side time per stage, over the checks that ran it.
    by_stage: BTreeMap<String, Vec<u64>>,
    /// Latency by what the check needed: `exact` (settled by key/exact), `embedded` (the
    /// semantic stage ran on a fresh embedding), `other`.
    by_path: BTreeMap<String, Vec<u64>>,
    deadline_stops: u64,
    shed: u64,
    /// Open loop: how late each check left its scheduled slot.
    generator_lag: Vec<u64>,
    /// The server's message on the first shed request.
    shed_sample: Option<String>,
    errors: BTreeMap<String, u64>,
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn summary(v: &mut [u64]) -> serde_json::Value {
    v.sort_unstable();
    json!({
        "count": v.len(),
        "p50_ms": pct(v, 0.5), "p90_ms": pct(v, 0.9), "p99_ms": pct(v, 0.99),
        "max_ms": v.last().map_or(0.0, |m| *m as f64 / 1000.0),
    })
}

fn summaries(m: &mut BTreeMap<String, Vec<u64>>) -> BTreeMap<String, serde_json::Value> {
    m.iter_mut().map(|(k, v)| (k.clone(), summary(v))).collect()
}

/// What a check needed: settled by key/exact, a fresh embedding searched, or something else
/// (no candidates, deadline before the semantic stage, mode).
fn path_of(r: &proto::CheckResponse) -> &'static str {
    let settled_by = |name: &str| {
        r.stages
            .iter()
            .any(|s| s.name == name && s.outcome == "match")
    };
    if settled_by("key") || settled_by("exact") {
        "exact"
    } else if r.stages.iter().any(|s| {
        s.name == "semantic"
            && !s.outcome.starts_with("deadline")
            && !s.outcome.starts_with("skipped")
    }) {
        "embedded"
    } else {
        "other"
    }
}

/// What every request of a run shares.
#[derive(Clone)]
struct Load {
    mix: Arc<Vec<(Kind, u32)>>,
    total: u32,
    deadline_ms: Option<u32>,
    tally: Arc<Mutex<Tally>>,
    /// `--calls`: what new calls are made of.
    calls: Option<Arc<Vec<(String, serde_json::Value)>>>,
}

impl Load {
    /// Draws the next request's kind and arguments for worker `w` (its `n`-th new call).
    fn draw(&self, rng: &mut Rng, w: usize, n: &mut u64) -> (Kind, String, String) {
        let mut roll = rng.below(self.total as usize) as u32;
        let kind = self
            .mix
            .iter()
            .find(|(_, p)| {
                if roll < *p {
                    true
                } else {
                    roll -= p;
                    false
                }
            })
            .map_or(Kind::New, |(k, _)| *k);
        if let Some(calls) = &self.calls {
            let m = match kind {
                Kind::Exact if *n > 0 => rng.below(*n as usize) as u64,
                _ => {
                    *n += 1;
                    *n
                }
            };
            let kind = if matches!(kind, Kind::Exact) && m != *n {
                Kind::Exact
            } else {
                Kind::New
            };
            let (tool, args) = unique_call(calls, w, m);
            return (kind, tool, args);
        }
        let (orig, para) = TEMPLATES[rng.below(TEMPLATES.len())];
        let topic = TOPICS[rng.below(TOPICS.len())];
        let args = match kind {
            Kind::Exact => body(orig, topic),
            Kind::Paraphrase => body(para, topic),
            Kind::New => {
                *n += 1;
                let words: Vec<&str> = (0..4).map(|_| WORDS[rng.below(WORDS.len())]).collect();
                json!({"to": "team@example.com",
                       "body": format!("Draft a short note about the {} {} initiative and the {} {} plan, item {w}-{n}.",
                                       words[0], words[1], words[2], words[3])})
                .to_string()
            }
        };
        (kind, "send_email".into(), args)
    }

    /// Sends one check and tallies it; latency counts from `since` (the scheduled send time
    /// in open loop, so a slow server cannot hide its queue: no coordinated omission).
    /// Returns whether the server shed it.
    async fn send(
        &self,
        c: &mut IdemClient<idem_client::Transport>,
        session: &str,
        (kind, tool, args): (Kind, String, String),
        since: Instant,
    ) -> bool {
        let res = c
            .check_and_record(proto::CheckRequest {
                tenant: "bench".into(),
                session: session.to_string(),
                tool,
                arguments_json: args,
                deadline_ms: self.deadline_ms,
                ..Default::default()
            })
            .await;
        let micros = since.elapsed().as_micros() as u64;
        let mut g = self.tally.lock().await;
        let kind_name = format!("{kind:?}").to_lowercase();
        g.by_kind.entry(kind_name.clone()).or_default().push(micros);
        let mut shed = false;
        match res {
            Ok(r) => {
                let r = r.into_inner();
                let v = proto::Verdict::try_from(r.verdict).map_or("UNKNOWN", |v| v.as_str_name());
                g.by_verdict.entry(v.to_string()).or_default().push(micros);
                g.server_by_kind
                    .entry(kind_name)
                    .or_default()
                    .push(r.total_micros);
                for st in &r.stages {
                    g.by_stage
                        .entry(st.name.clone())
                        .or_default()
                        .push(st.micros);
                }
                g.by_path
                    .entry(path_of(&r).into())
                    .or_default()
                    .push(micros);
                if r.stop_reason == proto::StopReason::Deadline as i32 {
                    g.deadline_stops += 1;
                }
            }
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                shed = true;
                g.shed += 1;
                if g.shed_sample.is_none() {
                    g.shed_sample = Some(s.message().to_string());
                }
            }
            Err(s) => *g.errors.entry(format!("{:?}", s.code())).or_default() += 1,
        }
        shed
    }
}

/// Each session's worker sends its next check as soon as the last one is answered.
async fn closed_loop(
    client: &IdemClient<idem_client::Transport>,
    sessions: Vec<String>,
    load: &Load,
    end: Instant,
    shed_backoff: Duration,
) -> anyhow::Result<()> {
    let mut workers = Vec::new();
    for (w, session) in sessions.into_iter().enumerate() {
        let (mut c, load) = (client.clone(), load.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1));
            let mut n = 0u64;
            let mut shed_in_a_row = 0u32;
            while Instant::now() < end {
                let call = load.draw(&mut rng, w, &mut n);
                if load.send(&mut c, &session, call, Instant::now()).await {
                    let jitter = 0.5 + (rng.next() % 1000) as f64 / 1000.0;
                    let pause = shed_backoff.saturating_mul(1 << shed_in_a_row.min(4));
                    tokio::time::sleep(pause.mul_f64(jitter)).await;
                    shed_in_a_row += 1;
                } else {
                    shed_in_a_row = 0;
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    Ok(())
}

/// Checks start at `rate` per second whatever the server does (sessions taken in turn), at
/// most `MAX_OUTSTANDING` at once. Latency counts from the send; how late sends left their
/// slot (timer granularity, a starved generator) is reported apart as `generator_lag`.
async fn open_loop(
    client: &IdemClient<idem_client::Transport>,
    sessions: Vec<String>,
    load: &Load,
    rate: f64,
    end: Instant,
) -> anyhow::Result<()> {
    const MAX_OUTSTANDING: usize = 4096;
    anyhow::ensure!(rate > 0.0, "--rate must be above 0");
    let gate = Arc::new(tokio::sync::Semaphore::new(MAX_OUTSTANDING));
    let start = Instant::now();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut counters = vec![0u64; sessions.len()];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0u64.. {
        let slot = start + Duration::from_secs_f64(i as f64 / rate);
        if slot >= end {
            break;
        }
        tokio::time::sleep_until(slot.into()).await;
        let w = (i as usize) % sessions.len();
        let call = load.draw(&mut rng, w, &mut counters[w]);
        let permit = gate.clone().acquire_owned().await?;
        let (mut c, load, session) = (client.clone(), load.clone(), sessions[w].clone());
        tasks.spawn(async move {
            let _permit = permit;
            let sent = Instant::now();
            let lag = sent.saturating_duration_since(slot).as_micros() as u64;
            load.tally.lock().await.generator_lag.push(lag);
            load.send(&mut c, &session, call, sent).await;
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Runs the load and prints the report.
pub async fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let mix = parse_mix(&a.mix)?;
    let total: u32 = mix.iter().map(|(_, p)| p).sum();
    let client = a.conn.raw().await?;
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let tally = Arc::new(Mutex::new(Tally::default()));
    // Seed: every worker's session holds completed originals of every template and topic.
    let mut seeders = Vec::new();
    for w in 0..a.concurrency {
        let mut c = client.clone();
        let session = format!("bench-{run_id}-{w}");
        seeders.push(tokio::spawn(async move {
            for (orig, _) in TEMPLATES {
                for topic in TOPICS {
                    let req = proto::CheckRequest {
                        tenant: "bench".into(),
                        session: session.clone(),
                        tool: "send_email".into(),
                        arguments_json: body(orig, topic),
                        deadline_ms: Some(5_000),
                        ..Default::default()
                    };
                    // Seeding must succeed: back off while the server sheds load.
                    let mut attempt = 0u32;
                    let r = loop {
                        match c.check_and_record(req.clone()).await {
                            Ok(r) => break r.into_inner(),
                            Err(s)
                                if s.code() == tonic::Code::ResourceExhausted && attempt < 100 =>
                            {
                                attempt += 1;
                                tokio::time::sleep(Duration::from_millis(
                                    20 * u64::from(attempt.min(10)),
                                ))
                                .await;
                            }
                            Err(s) => return Err(s.into()),
                        }
                    };
                    if r.verdict == proto::Verdict::New as i32 {
                        c.complete(proto::CompleteRequest {
                            call_id: r.call_id,
                            outcome: proto::CallStatus::Succeeded as i32,
                            result_json: Some("{\"sent\":true}".into()),
                            ..Default::default()
                        })
                        .await?;
                    }
                }
            }
            Ok::<_, anyhow::Error>(session)
        }));
    }
    let mut sessions = Vec::new();
    for s in seeders {
        sessions.push(s.await??);
    }
    let raw_embed_ms = match &a.models_dir {
        Some(dir) => Some(raw_embedding_median(dir).await?),
        None => None,
    };
    let started = Instant::now();
    let end = started + a.duration;
    let load = Load {
        mix: Arc::new(mix),
        total,
        deadline_ms: a.deadline_ms,
        tally: tally.clone(),
        calls: match &a.calls {
            Some(path) => Some(Arc::new(read_calls(path)?)),
            None => None,
        },
    };
    match a.rate {
        None => closed_loop(&client, sessions, &load, end, a.shed_backoff).await?,
        Some(rate) => open_loop(&client, sessions, &load, rate, end).await?,
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut g = tally.lock().await;
    let ok: usize = g.by_verdict.values().map(Vec::len).sum();
    let total_requests = ok as u64 + g.shed + g.errors.values().sum::<u64>();
    let by_verdict = summaries(&mut g.by_verdict);
    let by_kind = summaries(&mut g.by_kind);
    let server_by_kind = summaries(&mut g.server_by_kind);
    let by_stage = summaries(&mut g.by_stage);
    let by_path = summaries(&mut g.by_path);
    let para_p50 = by_kind.get("paraphrase").and_then(|v| v["p50_ms"].as_f64());
    let report = json!({
        "concurrency": a.concurrency,
        "rate_per_s": a.rate,
        "duration_s": elapsed,
        "requests": total_requests,
        "throughput_per_s": total_requests as f64 / elapsed,
        "by_verdict": by_verdict,
        "by_kind": by_kind,
        "by_path": by_path,
        "server_by_kind": server_by_kind,
        "server_by_stage": by_stage,
        "deadline_stops": g.deadline_stops,
        "shed_resource_exhausted": g.shed,
        "shed_sample": g.shed_sample,
        "generator_lag": (!g.generator_lag.is_empty()).then(|| summary(&mut g.generator_lag)),
        "errors": g.errors,
        "raw_embedding_p50_ms": raw_embed_ms,
        "paraphrase_check_to_raw_embedding_ratio": match (para_p50, raw_embed_ms) {
            (Some(p), Some(e)) if e > 0.0 => Some(p / e),
            _ => None,
        },
    });
    if a.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Median time of one local embedding of the paraphrase texts, in ms.
async fn raw_embedding_median(dir: &std::path::Path) -> anyhow::Result<f64> {
    use crate::embed::{Embedder, LocalEmbedder, LocalEmbedderConfig};
    let e = LocalEmbedder::new(LocalEmbedderConfig {
        models_dir: dir.to_path_buf(),
        ..Default::default()
    })?;
    let mut times = Vec::new();
    for round in 0..5 {
        for (_, para) in TEMPLATES {
            for topic in TOPICS {
                let text = para.replace("{t}", topic);
                let t = Instant::now();
                e.embed(&text, tokio::time::Instant::now() + Duration::from_secs(5))
                    .await?;
                if round > 0 {
                    times.push(t.elapsed().as_micros() as u64);
                }
            }
        }
    }
    times.sort_unstable();
    Ok(pct(&times, 0.5))
}
