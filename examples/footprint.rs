//! Memory and disk per stored call: starts a fresh release server on the embedded store, stores
//! N unique calls (10-40 words of free text each) through gRPC, and reports the server's RSS
//! growth (`VmRSS` in /proc/PID/status) and the data directory's growth per call.
//!
//! Both are measured from after a warm-up (the model's arenas, thread stacks and first pages are
//! not per-call costs) to after the last call. `--embedder stub` answers embeddings from a tiny
//! in-process HTTP endpoint (pseudo-random vectors of the same size) through the server's remote
//! embedder, so 100k calls take minutes, not the model's hour; the bytes stored are the same.
//! With `--redis-url` the server runs on that Redis instead (it should be empty), and the
//! report is Redis's `used_memory` growth per call, with `MEMORY USAGE` summed per key kind.
//! `--embedder none` stores calls without embeddings. Run through
//! `scripts/measure-footprint.sh` (embedded) or `scripts/measure-redis-memory.sh` (Redis).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use idem::proto;
use idem::proto::idem_client::IdemClient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tonic::Code;

#[derive(Debug, Parser)]
struct Args {
    /// The `idem` binary to start.
    #[arg(long, default_value = "target/release/idem")]
    idem: PathBuf,
    /// Calls to store after the warm-up.
    #[arg(long, default_value_t = 10_000)]
    calls: usize,
    /// Calls stored before the first reading (not counted).
    #[arg(long, default_value_t = 300)]
    warm_up: usize,
    /// Concurrent clients, each sequential.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Calls per session (a session is one match scope).
    #[arg(long, default_value_t = 1_000)]
    per_session: usize,
    /// `local` (the model), `stub` (pseudo-random vectors over HTTP) or `none` (no
    /// embeddings stored).
    #[arg(long, default_value = "local")]
    embedder: String,
    /// Model files for `local`.
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
    /// Data directory (must not exist; a fresh temporary one when unset).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also report each call's Complete (with a small result), as a real caller would.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    complete: bool,
    /// Seconds to wait after the last call before the final reading (background embeddings).
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// Extra flags for `idem serve`, e.g. "--embed-cache 0".
    #[arg(long, default_value = "")]
    server_args: String,
    /// Run the server on this Redis (empty) and report its memory instead of the disk.
    #[arg(long)]
    redis_url: Option<String>,
}

const WORDS: &[&str] = &[
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
    "include",
    "revenue",
    "figures",
    "and",
    "a",
    "short",
    "summary",
    "of",
    "risks",
    "schedule",
    "meeting",
    "with",
    "vendor",
    "about",
    "delivery",
    "delays",
    "in",
    "warehouse",
    "update",
    "ticket",
    "status",
    "customer",
    "asked",
    "for",
    "refund",
    "order",
    "shipped",
    "late",
    "draft",
    "reply",
    "explaining",
    "new",
    "policy",
    "on",
    "remote",
    "work",
    "book",
    "flight",
    "hotel",
    "conference",
    "next",
    "month",
    "review",
    "pull",
    "request",
    "fix",
    "login",
    "bug",
    "deploy",
    "staging",
    "cluster",
    "after",
    "tests",
    "pass",
    "notify",
    "channel",
    "when",
    "done",
    "budget",
    "hiring",
    "plan",
    "security",
    "audit",
    "findings",
    "leadership",
    "migration",
    "database",
];

/// splitmix64: the same calls every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Call `i`: a unique recipient and 10-40 words of body.
fn call(i: usize) -> String {
    let mut rng = Rng(i as u64);
    let n = 10 + rng.below(31);
    let body: Vec<&str> = (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect();
    serde_json::json!({
        "to": format!("user{i}@example.com"),
        "subject": format!("request {i}"),
        "body": body.join(" "),
    })
    .to_string()
}

/// Resident set size of `pid`, in bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(kb) = line.strip_prefix("VmRSS:") {
            let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse()?;
            return Ok(kb * 1024);
        }
    }
    bail!("no VmRSS in /proc/{pid}/status")
}

/// (apparent bytes, allocated bytes) of the files under `dir`.
fn disk(dir: &Path) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    for entry in std::fs::read_dir(dir)? {
        let m = entry?.metadata()?;
        if m.is_file() {
            total.0 += m.len();
            total.1 += m.blocks() * 512;
        }
    }
    Ok(total)
}

/// Answers `POST /v1/embeddings` with a pseudo-random 384-d vector per text (HTTP/1.1,
/// keep-alive); returns its base URL.
async fn stub_embedder() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = serve_stub(socket).await;
            });
        }
    });
    Ok(format!("http://{addr}"))
}

async fn serve_stub(socket: tokio::net::TcpStream) -> anyhow::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse()?;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await?;
        let request: serde_json::Value = serde_json::from_slice(&body)?;
        let text = request["input"][0].as_str().unwrap_or_default();
        let mut rng = Rng(u64::from_le_bytes(
            blake3::hash(text.as_bytes()).as_bytes()[..8]
                .try_into()
                .unwrap_or([0; 8]),
        ));
        let vector: Vec<f32> = (0..384)
            .map(|_| (rng.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect();
        let reply = serde_json::json!({"data": [{"embedding": vector, "index": 0}]}).to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        write.write_all(head.as_bytes()).await?;
        write.write_all(reply.as_bytes()).await?;
    }
}

/// Stores calls `from..to` over `concurrency` clients; retries shed, timed-out and unavailable
/// checks (a store that stalled past a check's deadline).
async fn store_calls(
    client: &IdemClient<tonic::transport::Channel>,
    range: std::ops::Range<usize>,
    a: &Args,
) -> anyhow::Result<usize> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let retries = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (mut client, next, retries) = (client.clone(), next.clone(), retries.clone());
        let (end, per_session, complete) = (range.end, a.per_session.max(1), a.complete);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<(), anyhow::Error>(());
                }
                let request = proto::CheckRequest {
                    tenant: "footprint".into(),
                    session: format!("s{}", i / per_session),
                    tool: "send_email".into(),
                    arguments_json: call(i),
                    ..Default::default()
                };
                let mut backoff = Duration::from_millis(5);
                let response = loop {
                    match client.check_and_record(request.clone()).await {
                        Ok(r) => break r.into_inner(),
                        Err(s)
                            if matches!(
                                s.code(),
                                Code::ResourceExhausted
                                    | Code::DeadlineExceeded
                                    | Code::Unavailable
                            ) =>
                        {
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_millis(200));
                        }
                        Err(s) => bail!("check {i}: {s}"),
                    }
                };
                // After a retry the first attempt may have been recorded (its answer lost):
                // the retry then names it, in flight.
                let retried = backoff > Duration::from_millis(5);
                let in_flight = response.verdict == proto::Verdict::InFlight as i32;
                if response.verdict != proto::Verdict::New as i32 && !(retried && in_flight) {
                    bail!("call {i} was not new: {response:?}");
                }
                if complete {
                    let request = proto::CompleteRequest {
                        call_id: response.call_id.clone(),
                        outcome: proto::CallStatus::Succeeded as i32,
                        result_json: Some(format!("{{\"message_id\":\"m{i}\"}}")),
                        ..Default::default()
                    };
                    let mut backoff = Duration::from_millis(5);
                    loop {
                        match client.complete(request.clone()).await {
                            Ok(_) => break,
                            Err(s) if s.code() == Code::Unavailable => {
                                retries.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_millis(200));
                            }
                            Err(s) => bail!("complete {i}: {s}"),
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(retries.load(Ordering::Relaxed))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let temp = tempfile::tempdir()?;
    let data = a
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().join("data"));
    if data.exists() {
        bail!("{} exists; give a fresh data directory", data.display());
    }
    let mut cmd = tokio::process::Command::new(&a.idem);
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--models-dir")
        .arg(&a.models_dir);
    let redis = match &a.redis_url {
        Some(url) => {
            cmd.args(["--store", "redis", "--redis-url", url]);
            let client = redis::Client::open(url.as_str())?;
            // Readings scan every key: no response timeout (the default cuts them short).
            let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
            Some(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            )
        }
        None => {
            cmd.args(["--store", "embedded", "--data-dir"]).arg(&data);
            None
        }
    };
    match a.embedder.as_str() {
        "local" => {}
        "none" => {
            cmd.args(["--embedder", "none"]);
        }
        "stub" => {
            cmd.args(["--embedder", "remote", "--remote-embed-url"])
                .arg(stub_embedder().await?);
        }
        other => bail!("unknown --embedder {other:?}; use local, stub or none"),
    }
    cmd.args(a.server_args.split_whitespace())
        .env("RUST_LOG", "idem=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut server = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", a.idem.display()))?;
    let pid = server.id().context("server exited at once")?;
    let mut lines = BufReader::new(server.stdout.take().context("no server stdout")?).lines();
    let addr = loop {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .context("server did not start within 120 s")??
            .context("server exited before listening")?;
        if let Some(addr) = line.strip_prefix("idem listening on ") {
            break addr.to_string();
        }
    };
    let client = IdemClient::connect(format!("http://{addr}")).await?;

    store_calls(&client, 0..a.warm_up, &a).await?;
    tokio::time::sleep(Duration::from_secs(a.settle_secs)).await;
    if let Some(mut redis) = redis {
        let before = used_memory(&mut redis).await?;
        let started = Instant::now();
        let retries = store_calls(&client, a.warm_up..a.warm_up + a.calls, &a).await?;
        let secs = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(a.settle_secs)).await;
        let after = used_memory(&mut redis).await?;
        let kinds = memory_by_kind(&mut redis).await?;
        let stored: u64 = redis::cmd("ZCARD")
            .arg("idem:sweep")
            .query_async(&mut redis)
            .await?;
        let n = a.calls.max(1) as f64;
        let total = (a.warm_up + a.calls).max(1) as f64;
        let report = serde_json::json!({
            "store": "redis",
            "calls": a.calls,
            "stored_calls": stored,
            "embedder": a.embedder,
            "concurrency": a.concurrency,
            "per_session": a.per_session,
            "complete": a.complete,
            "seconds": (secs * 10.0).round() / 10.0,
            "retries": retries,
            "used_memory_before": before,
            "used_memory_after": after,
            "used_memory_per_call": ((after as f64 - before as f64) / n).round(),
            "per_100k_calls_mib": ((after as f64 - before as f64) / n * 1e5 / 1048576.0 * 10.0)
                .round() / 10.0,
            // MEMORY USAGE over every key, per kind, divided by all calls stored (warm-up too).
            "memory_usage_per_call_by_kind": kinds
                .iter()
                .map(|(k, (keys, bytes))| (k.clone(), serde_json::json!({
                    "keys": keys, "bytes_per_call": (*bytes as f64 / total).round(),
                })))
                .collect::<serde_json::Map<_, _>>(),
        });
        server.start_kill()?;
        let _ = server.wait().await;
        println!("{report}");
        return Ok(());
    }
    let (rss0, disk0) = (rss(pid)?, disk(&data)?);
    let started = Instant::now();
    let retries = store_calls(&client, a.warm_up..a.warm_up + a.calls, &a).await?;
    let secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(a.settle_secs)).await;
    let (rss1, disk1) = (rss(pid)?, disk(&data)?);
    let n = a.calls.max(1) as f64;
    let report = serde_json::json!({
        "calls": a.calls,
        "embedder": a.embedder,
        "concurrency": a.concurrency,
        "per_session": a.per_session,
        "complete": a.complete,
        "server_args": a.server_args,
        "seconds": (secs * 10.0).round() / 10.0,
        "retries": retries,
        "rss_before": rss0,
        "rss_after": rss1,
        "rss_per_call": ((rss1 as f64 - rss0 as f64) / n).round(),
        "disk_before": disk0.0,
        "disk_after": disk1.0,
        "disk_per_call": ((disk1.0 as f64 - disk0.0 as f64) / n).round(),
        "disk_allocated_per_call": ((disk1.1 as f64 - disk0.1 as f64) / n).round(),
    });
    server.start_kill()?;
    let _ = server.wait().await;
    // Where the bytes went, table by table (the server is gone: the file is ours to open).
    let store = idem::store::EmbeddedStore::open(&data)?;
    let tables: Vec<serde_json::Value> = store
        .table_usage()?
        .into_iter()
        .filter(|t| t.entries > 0)
        .map(|t| {
            serde_json::json!({
                "table": t.name, "entries": t.entries, "stored_bytes": t.stored_bytes,
                "pages": t.pages, "fragmented_bytes": t.fragmented_bytes,
            })
        })
        .collect();
    // Calls stored with their embedding (an overloaded embedder leaves some without).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let with_vectors = idem::store::Store::vectors(&store, now_ms).await?.len();
    let mut report = report;
    report["stored_with_vector"] = with_vectors.into();
    report["tables"] = serde_json::Value::Array(tables);
    println!("{report}");
    Ok(())
}

/// Redis's `used_memory` (INFO memory).
async fn used_memory(c: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(c).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .context("no used_memory in INFO memory")?
        .trim()
        .parse()
        .context("used_memory")
}

/// A key's kind: the name after the hash tag up to the next `:` (`r`, `v`, `cd`, `ver`...),
/// or the name after the prefix for keys without a scope tag (`id`, `sweep`).
fn kind_of(key: &str) -> String {
    let rest = match key.find("}:") {
        Some(i) => &key[i + 2..],
        None => key.split_once(':').map_or(key, |(_, r)| r),
    };
    let kind = rest.split(':').next().unwrap_or(rest);
    // A session's keys share one tag; tell them by what follows it.
    match (key.contains(":{l"), key.contains(":{t")) {
        (true, _) => format!("session {kind}"),
        (_, true) => format!("tenant {kind}"),
        _ => kind.to_string(),
    }
}

/// `MEMORY USAGE` (all samples) summed per key kind: kind -> (keys, bytes).
async fn memory_by_kind(
    c: &mut redis::aio::MultiplexedConnection,
) -> anyhow::Result<std::collections::BTreeMap<String, (u64, u64)>> {
    let mut out: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await?;
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
        }
        let sizes: Vec<Option<u64>> = pipe.query_async(c).await?;
        for (k, size) in keys.iter().zip(sizes) {
            let e = out.entry(kind_of(k)).or_default();
            e.0 += 1;
            e.1 += size.unwrap_or(0);
        }
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}
