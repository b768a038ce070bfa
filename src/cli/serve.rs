//! `idem serve`: config file, then `IDEM_*` env, then flags; then the store, engine and server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::clock::SystemClock;
use crate::config::{BorderlinePolicy, EmbedderKind, LogFormat, ServerConfig, StoreKind};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::service::ServeOptions;
use crate::store::{EmbeddedStore, MemoryStore, Store};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Flags of `idem serve`. Each overrides the config file; each reads `IDEM_<NAME>` from the env.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (see config/idem.example.toml).
    #[arg(long, env = "IDEM_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "IDEM_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory of the embedded store [default: ./data].
    #[arg(long, env = "IDEM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Store backend [default: embedded].
    #[arg(long, env = "IDEM_STORE", value_enum)]
    pub store: Option<StoreKind>,
    /// Redis URL of the redis store: redis://HOST:PORT, rediss:// (TLS), redis+cluster://.
    #[arg(long, env = "IDEM_REDIS_URL")]
    pub redis_url: Option<String>,
    /// The Redis URL is a cluster seed.
    #[arg(long, env = "IDEM_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// Longest wait for one Redis command in milliseconds [default: 250].
    #[arg(long, env = "IDEM_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,
    /// Page cache of the embedded store in MiB [default: 4].
    #[arg(long, env = "IDEM_STORE_CACHE_MB")]
    pub store_cache_mb: Option<usize>,
    /// Largest accepted payload in bytes [default: 1048576].
    #[arg(long, env = "IDEM_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Comma-separated metadata field names dropped before matching.
    #[arg(long, env = "IDEM_IGNORED_METADATA_FIELDS", value_delimiter = ',')]
    pub ignored_metadata_fields: Option<Vec<String>>,
    /// Seconds between sweeps of expired records [default: 60].
    #[arg(long, env = "IDEM_SWEEP_INTERVAL_SECS")]
    pub sweep_interval_secs: Option<u64>,
    /// Checks allowed at once [default: 1024].
    #[arg(long, env = "IDEM_MAX_CONCURRENT_CHECKS")]
    pub max_concurrent_checks: Option<usize>,
    /// Embedder for the semantic stage [default: local].
    #[arg(long, env = "IDEM_EMBEDDER", value_enum)]
    pub embedder: Option<EmbedderKind>,
    /// Directory of the local model files [default: ./models].
    #[arg(long, env = "IDEM_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Embedding worker threads [default: 1].
    #[arg(long, env = "IDEM_EMBED_WORKERS")]
    pub embed_workers: Option<usize>,
    /// Pending embeddings allowed before shedding [default: 256].
    #[arg(long, env = "IDEM_EMBED_QUEUE")]
    pub embed_queue: Option<usize>,
    /// Free texts whose embedding is cached [default: 1024].
    #[arg(long, env = "IDEM_EMBED_CACHE")]
    pub embed_cache: Option<usize>,
    /// Candidates' free texts kept prepared for comparison; 0 turns it off [default: 2048].
    #[arg(long, env = "IDEM_TEXT_CACHE")]
    pub text_cache: Option<usize>,
    /// Recent calls whose word vectors are kept for the judge's word alignment; 0 turns the
    /// alignment off [default: 512].
    #[arg(long, env = "IDEM_WORD_CACHE")]
    pub word_cache: Option<usize>,
    /// Longest expected embedder wait a check is admitted with, as a share of its budget
    /// [default: 1.0].
    #[arg(long, env = "IDEM_MAX_EMBED_WAIT_SHARE")]
    pub max_embed_wait_share: Option<f64>,
    /// Niceness added to the local embedding threads [default: 5].
    #[arg(long, env = "IDEM_EMBED_NICE")]
    pub embed_nice: Option<i32>,
    /// Remote embedder base URL (OpenAI-compatible).
    #[arg(long, env = "IDEM_REMOTE_EMBED_URL")]
    pub remote_embed_url: Option<String>,
    /// Remote embedder model.
    #[arg(long, env = "IDEM_REMOTE_EMBED_MODEL")]
    pub remote_embed_model: Option<String>,
    /// Live vectors per scope above which HNSW replaces the flat scan [default: 50000].
    #[arg(long, env = "IDEM_HNSW_THRESHOLD")]
    pub hnsw_threshold: Option<usize>,
    /// Verifier base URL (OpenAI-compatible chat completions).
    #[arg(long, env = "IDEM_VERIFIER_URL")]
    pub verifier_url: Option<String>,
    /// Verifier model.
    #[arg(long, env = "IDEM_VERIFIER_MODEL")]
    pub verifier_model: Option<String>,
    /// Default record TTL in seconds [default: 86400].
    #[arg(long, env = "IDEM_TTL_SECS")]
    pub ttl_secs: Option<u64>,
    /// Default in-progress lease in seconds [default: 300].
    #[arg(long, env = "IDEM_LEASE_SECS")]
    pub lease_secs: Option<u64>,
    /// Default matching window in seconds [default: 86400].
    #[arg(long, env = "IDEM_WINDOW_SECS")]
    pub window_secs: Option<u64>,
    /// Default matching window in calls [default: 1000].
    #[arg(long, env = "IDEM_WINDOW_CALLS")]
    pub window_calls: Option<u32>,
    /// Default check deadline in milliseconds [default: 50].
    #[arg(long, env = "IDEM_DEADLINE_MS")]
    pub deadline_ms: Option<u32>,
    /// Default fuzzy duplicate threshold.
    #[arg(long, env = "IDEM_FUZZY_THRESHOLD")]
    pub fuzzy_threshold: Option<f64>,
    /// Default semantic duplicate threshold.
    #[arg(long, env = "IDEM_SEMANTIC_DUPLICATE")]
    pub semantic_duplicate: Option<f64>,
    /// Default semantic borderline threshold.
    #[arg(long, env = "IDEM_SEMANTIC_BORDERLINE")]
    pub semantic_borderline: Option<f64>,
    /// Default borderline policy: proceed, block or ask.
    #[arg(long, env = "IDEM_BORDERLINE_POLICY", value_parser = parse_policy)]
    pub borderline_policy: Option<BorderlinePolicy>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464) [default: off].
    #[arg(long, env = "IDEM_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain; with --tls-key the server speaks TLS only.
    #[arg(long, env = "IDEM_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "IDEM_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Log line format on stderr [default: text].
    #[arg(long, env = "IDEM_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Export spans to this OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces (a
    /// build with `--features otlp`) [default: off].
    #[arg(long, env = "IDEM_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// At shutdown, milliseconds health answers NOT_SERVING before the listener closes [default: 0].
    #[arg(long, env = "IDEM_SHUTDOWN_DRAIN_MS")]
    pub shutdown_drain_ms: Option<u64>,
    /// At shutdown, seconds in-flight requests may take to finish [default: 30].
    #[arg(long, env = "IDEM_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Records each tenant may hold (`limits.max_records`) [default: no limit].
    #[arg(long, env = "IDEM_MAX_RECORDS")]
    pub max_records: Option<u64>,
    /// Sessions with records each tenant may have (`limits.max_sessions`) [default: no limit].
    #[arg(long, env = "IDEM_MAX_SESSIONS")]
    pub max_sessions: Option<u64>,
}

fn parse_policy(s: &str) -> Result<BorderlinePolicy, String> {
    match s {
        "proceed" => Ok(BorderlinePolicy::Proceed),
        "block" => Ok(BorderlinePolicy::Block),
        "ask" => Ok(BorderlinePolicy::Ask),
        _ => Err(format!("expected proceed, block or ask, got {s:?}")),
    }
}

impl ServeArgs {
    /// The effective server config: file, then env and flags.
    pub fn resolve(&self) -> anyhow::Result<ServerConfig> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<ServerConfig>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => ServerConfig::default(),
        };
        macro_rules! set {
            ($($flag:ident => $($field:ident).+),* $(,)?) => {
                $( if let Some(v) = self.$flag.clone() { c.$($field).+ = v; } )*
            };
        }
        set!(
            listen => listen, data_dir => data_dir, store => store,
            store_cache_mb => store_cache_mb,
            redis_url => redis.url, redis_timeout_ms => redis.timeout_ms,
            max_payload_bytes => max_payload_bytes, ignored_metadata_fields => ignored_metadata_fields,
            sweep_interval_secs => sweep_interval_secs, max_concurrent_checks => max_concurrent_checks,
            embedder => semantic.embedder, models_dir => semantic.models_dir,
            embed_workers => semantic.embed_workers, embed_queue => semantic.embed_queue,
            embed_cache => semantic.embed_cache, text_cache => semantic.text_cache,
            word_cache => semantic.word_cache,
            max_embed_wait_share => semantic.max_embed_wait_share,
            embed_nice => semantic.embed_nice,
            hnsw_threshold => semantic.hnsw_threshold, verifier_model => verifier.model,
            ttl_secs => defaults.ttl_secs, lease_secs => defaults.lease_secs,
            window_secs => defaults.window_secs, window_calls => defaults.window_calls,
            deadline_ms => defaults.deadline_ms, fuzzy_threshold => defaults.fuzzy_threshold,
            semantic_duplicate => defaults.semantic_duplicate,
            semantic_borderline => defaults.semantic_borderline,
            borderline_policy => defaults.borderline_policy,
            log_format => log_format, shutdown_drain_ms => shutdown_drain_ms,
            shutdown_grace_secs => shutdown_grace_secs,
        );
        c.redis.cluster |= self.redis_cluster;
        if let Some(a) = self.metrics_listen {
            c.metrics_listen = Some(a);
        }
        if let Some(p) = &self.tls_cert {
            c.tls_cert = Some(p.clone());
        }
        if let Some(p) = &self.tls_key {
            c.tls_key = Some(p.clone());
        }
        if let Some(u) = &self.remote_embed_url {
            c.semantic.remote_url = Some(u.clone());
        }
        if let Some(m) = &self.remote_embed_model {
            c.semantic.remote_model = Some(m.clone());
        }
        if let Some(u) = &self.verifier_url {
            c.verifier.base_url = Some(u.clone());
        }
        if let Some(u) = &self.otlp_endpoint {
            c.otlp_endpoint = Some(u.clone());
        }
        if let Some(n) = self.max_records {
            c.limits.max_records = Some(n);
        }
        if let Some(n) = self.max_sessions {
            c.limits.max_sessions = Some(n);
        }
        c.validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        Ok(c)
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. A handler that cannot be installed is logged and
/// waited on no further: it never stops the server by itself.
async fn stop_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(%e, "cannot install the Ctrl-C handler; stop with SIGTERM");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(%e, "cannot install the SIGTERM handler; stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Starts the server and runs until SIGINT or SIGTERM; then drains: health NOT_SERVING, the
/// listener closed, in-flight requests answered, background work finished, counters and the
/// verdict log written, the store closed.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.resolve()?;
    let telemetry = crate::telemetry::init(config.log_format, config.otlp_endpoint.as_deref())?;
    let store: Arc<dyn Store> = match config.store {
        StoreKind::Embedded => Arc::new(EmbeddedStore::open_with_cache(
            &config.data_dir,
            config.store_cache_mb.saturating_mul(1024 * 1024),
        )?),
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::Redis => {
            Arc::new(crate::store::RedisStore::connect(&(&config.redis).into()).await?)
        }
    };
    let semantic = crate::engine::Similarity::from_config(&config)?;
    if let Some(s) = &semantic {
        s.warm_up().await;
    }
    let listen = config.listen;
    let metrics_listen = config.metrics_listen;
    let mut options = ServeOptions {
        metrics: None,
        drain_delay: Duration::from_millis(config.shutdown_drain_ms),
        grace: Some(Duration::from_secs(config.shutdown_grace_secs)),
    };
    let tls = config.tls_cert.is_some();
    let engine = Arc::new(Engine::with_parts(
        store,
        config,
        Arc::new(SystemClock),
        semantic,
    ));
    let vectors = engine.rebuild_indexes().await?;
    engine.spawn_maintenance();
    let (listener, addr) = crate::service::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let stop = CancellationToken::new();
    // The metrics endpoint outlives the drain (its progress stays visible), then stops.
    let metrics_stop = CancellationToken::new();
    let mut metrics_task = None;
    let mut metrics_addr = None;
    if let Some(m) = metrics_listen {
        let metrics = Metrics::new(&engine);
        let (l, maddr) = crate::service::bind(m)
            .await
            .with_context(|| format!("cannot listen on {m} for metrics"))?;
        tracing::info!(addr = %maddr, "metrics on http://{maddr}/metrics");
        let done = metrics_stop.clone().cancelled_owned();
        metrics_task = Some(tokio::spawn(crate::metrics::serve(
            metrics.clone(),
            l,
            done,
        )));
        options.metrics = Some(metrics);
        metrics_addr = Some(maddr);
    }
    tracing::info!(%addr, vectors, tls, "idem listening");
    // One line on stdout that scripts and tests can wait for (the first), then the metrics one.
    println!("idem listening on {addr}");
    if let Some(m) = metrics_addr {
        println!("idem metrics on http://{m}/metrics");
    }
    let signal = tokio::spawn({
        let stop = stop.clone();
        async move {
            stop_signal().await;
            stop.cancel();
        }
    });
    let served = crate::service::serve_with(
        engine.clone(),
        listener,
        options,
        stop.clone().cancelled_owned(),
    )
    .await;
    stop.cancel();
    signal.abort();
    let drained = engine.drain().await;
    metrics_stop.cancel();
    if let Some(t) = metrics_task {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(%e, "metrics endpoint failed"),
            Err(e) => tracing::warn!(%e, "metrics task failed"),
        }
    }
    // The last handle on the engine closes the store (the embedded store's writer thread is
    // joined there): off the tokio workers.
    match Arc::try_unwrap(engine) {
        Ok(engine) => tokio::task::spawn_blocking(move || drop(engine)).await?,
        Err(_) => tracing::warn!("engine still shared at exit; the store closes with the process"),
    }
    tracing::info!("idem stopped");
    // Buffered spans are sent before exit (a blocking flush: off the tokio workers).
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    served?;
    drained?;
    println!("idem stopped");
    Ok(ExitCode::SUCCESS)
}
