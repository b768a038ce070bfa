//! Server configuration, session settings and tool policies, with validation.
//!
//! Server defaults come from a TOML file (every key also settable by flag and `IDEM_*` env in
//! the CLI); a session overrides any of them with `ConfigureSession`. The effective settings of
//! a session are the server defaults with the session's overrides laid on top.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::{CanonPolicy, normalize};

mod ops;
pub use ops::{AuthConfig, LimitsConfig, LogFormat, Role, TenantLimits, TokenEntry, parse_digest};

/// Which store backend holds records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// Single-file ACID store under `data_dir` (redb): the durable default.
    Embedded,
    /// In memory: for tests and throwaway runs.
    Memory,
    /// Redis (standalone or cluster), shared by several idem instances (`[redis]`).
    Redis,
}

/// What a borderline semantic match becomes when no verifier settles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BorderlinePolicy {
    /// Treat as new: run the tool (the safe side for not dropping work).
    Proceed,
    /// Treat as duplicate.
    Block,
    /// Return BORDERLINE and let the caller decide.
    Ask,
}

/// What a repeated idempotency key with a different call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMismatch {
    /// FAILED_PRECONDITION: the client reused a key by mistake (Stripe, the IETF draft).
    #[default]
    Reject,
    /// The key decides alone: the stored call's verdict and result, whatever the body.
    Replay,
}

/// Where a session's records are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeMode {
    /// Only within the session.
    Session,
    /// Across every tenant-wide session of the tenant.
    Tenant,
}

/// How far the funnel goes for a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolMode {
    /// Pure reads: never deduplicated, always NEW and not recorded.
    Off,
    /// Only the client idempotency key matches.
    KeyOnly,
    /// Key and exact canonical match.
    Exact,
    /// The whole funnel (default).
    Semantic,
}

/// Per-tool policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolPolicy {
    pub mode: ToolMode,
    /// Dotted paths that decide the action (inferred from values when empty).
    pub identity_fields: Vec<String>,
    /// Dotted paths of prose (inferred from values when empty).
    pub free_text_fields: Vec<String>,
    /// Dotted paths dropped before comparison.
    pub ignored_fields: Vec<String>,
    /// Paths the tool's schema types as numbers (`[]` for array elements): a string there that
    /// is a number literal reads as that number (`"2.0"` = `2`); elsewhere strings stay strings.
    pub numeric_fields: Vec<String>,
    /// Schema defaults: a top-level field equal to its default is dropped.
    pub defaults: Map<String, Value>,
    /// Record TTL for this tool, overriding the session's.
    pub ttl_secs: Option<u64>,
    /// What a repeat gets after the original's lease expired without a Complete.
    pub on_lease_expiry: LeaseExpiry,
    /// Dotted paths naming the thing the call acts on (`["user_id"]`): with `inverse_of`, the
    /// window of a call follows that resource's state. Compared exactly (identity fields).
    pub resource_fields: Vec<String>,
    /// The tool that undoes this one (`disable_2fa` for `enable_2fa`, either way round): a
    /// later call of it on the same resource ends the window of this tool's earlier calls.
    pub inverse_of: Option<String>,
}

/// What a repeat gets when the original's lease expired without a Complete: it may or may not
/// have run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseExpiry {
    /// The repeat takes over as a new attempt of the same action (NEW, previous attempt
    /// unknown, same action key): the downstream API dedups a second execution by that key.
    #[default]
    TakeOver,
    /// The repeat is held (IN_FLIGHT, previous attempt unknown) until an operator completes
    /// the call, for tools where a second execution must never happen (money).
    Hold,
}

impl LeaseExpiry {
    /// The policy's name in config and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::TakeOver => "take_over",
            Self::Hold => "hold",
        }
    }

    /// The policy named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "take_over" => Some(Self::TakeOver),
            "hold" => Some(Self::Hold),
            _ => None,
        }
    }
}

impl Default for ToolPolicy {
    fn default() -> Self {
        Self {
            mode: ToolMode::Semantic,
            identity_fields: Vec::new(),
            free_text_fields: Vec::new(),
            ignored_fields: Vec::new(),
            numeric_fields: Vec::new(),
            defaults: Map::new(),
            ttl_secs: None,
            on_lease_expiry: LeaseExpiry::TakeOver,
            resource_fields: Vec::new(),
            inverse_of: None,
        }
    }
}

/// Effective settings of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// Record time to live.
    pub ttl_secs: u64,
    /// In-progress lease: after it, a repeat takes over.
    pub lease_secs: u64,
    /// Matching window: only calls this recent can be fuzzy/semantic duplicates.
    pub window_secs: u64,
    /// Matching window: only this many most recent calls of a tool can be candidates.
    pub window_calls: u32,
    /// Deadline of a check.
    pub deadline_ms: u32,
    /// Fuzzy similarity at or above which free text is a duplicate.
    pub fuzzy_threshold: f64,
    /// The judge's probability (that b repeats a's action) at or above which free text is a
    /// duplicate (`funnel::judge`).
    pub semantic_duplicate: f64,
    /// The judge's probability at or above which (and below `semantic_duplicate`) a match is
    /// borderline.
    pub semantic_borderline: f64,
    pub borderline_policy: BorderlinePolicy,
    pub verifier_enabled: bool,
    pub scope: ScopeMode,
    /// Tool policies by tool name.
    pub tools: BTreeMap<String, ToolPolicy>,
    /// An idempotency key seen again with a different call.
    pub key_mismatch: KeyMismatch,
    /// Repeats (or near-repeats) of one tool in the loop window at which a check carries the
    /// `loop_suspected` warning (0: never).
    pub loop_threshold: u32,
    /// The loop advisory's window.
    pub loop_window_secs: u64,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            ttl_secs: 24 * 3600,
            lease_secs: 300,
            window_secs: 24 * 3600,
            window_calls: 1000,
            deadline_ms: 50,
            // Chosen with `idem calibrate` on the judge's calib split plus the train split of
            // benches/data/pairs.jsonl (see README, Calibration): best recall with the
            // false-duplicate rate <= 0.5% at 95% confidence. The semantic thresholds are on
            // the judge's probability, not on the cosine.
            fuzzy_threshold: 0.84,
            semantic_duplicate: 0.895,
            semantic_borderline: 0.645,
            borderline_policy: BorderlinePolicy::Proceed,
            verifier_enabled: false,
            scope: ScopeMode::Session,
            tools: BTreeMap::new(),
            key_mismatch: KeyMismatch::Reject,
            loop_threshold: 5,
            loop_window_secs: 60,
        }
    }
}

/// A session's overrides of the server defaults (unset fields inherit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionOverrides {
    pub ttl_secs: Option<u64>,
    pub lease_secs: Option<u64>,
    pub window_secs: Option<u64>,
    pub window_calls: Option<u32>,
    pub deadline_ms: Option<u32>,
    pub fuzzy_threshold: Option<f64>,
    pub semantic_duplicate: Option<f64>,
    pub semantic_borderline: Option<f64>,
    pub borderline_policy: Option<BorderlinePolicy>,
    pub verifier_enabled: Option<bool>,
    pub scope: Option<ScopeMode>,
    /// Replaces the server's policy for each tool named.
    pub tools: BTreeMap<String, ToolPolicy>,
    pub key_mismatch: Option<KeyMismatch>,
    pub loop_threshold: Option<u32>,
    pub loop_window_secs: Option<u64>,
}

impl SessionSettings {
    /// The settings with `o` laid on top.
    pub fn with_overrides(&self, o: &SessionOverrides) -> SessionSettings {
        let mut s = self.clone();
        macro_rules! take {
            ($($f:ident),*) => { $( if let Some(v) = o.$f { s.$f = v; } )* };
        }
        take!(
            ttl_secs,
            lease_secs,
            window_secs,
            window_calls,
            deadline_ms,
            fuzzy_threshold
        );
        take!(
            semantic_duplicate,
            semantic_borderline,
            borderline_policy,
            verifier_enabled,
            scope
        );
        take!(key_mismatch, loop_threshold, loop_window_secs);
        for (name, policy) in &o.tools {
            s.tools.insert(name.clone(), policy.clone());
        }
        s
    }

    /// Checks every value; the error says which one is wrong and why.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("fuzzy_threshold", self.fuzzy_threshold),
            ("semantic_duplicate", self.semantic_duplicate),
            ("semantic_borderline", self.semantic_borderline),
        ] {
            if !v.is_finite() || !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be a number in [0, 1], got {v}"));
            }
        }
        if self.semantic_borderline > self.semantic_duplicate {
            return Err(format!(
                "semantic_borderline ({}) must be <= semantic_duplicate ({})",
                self.semantic_borderline, self.semantic_duplicate
            ));
        }
        if self.ttl_secs == 0 {
            return Err("ttl_secs must be > 0".into());
        }
        if self.lease_secs == 0 {
            return Err("lease_secs must be > 0".into());
        }
        if self.loop_window_secs == 0 {
            return Err("loop_window_secs must be > 0".into());
        }
        if self.window_secs == 0 || self.window_calls == 0 {
            return Err("window_secs and window_calls must be > 0".into());
        }
        if self.deadline_ms == 0 || self.deadline_ms > 60_000 {
            return Err(format!(
                "deadline_ms must be in 1..=60000, got {}",
                self.deadline_ms
            ));
        }
        for (tool, p) in &self.tools {
            if tool.trim().is_empty() {
                return Err("tool policy names must not be empty".into());
            }
            if p.ttl_secs == Some(0) {
                return Err(format!("tools.{tool}.ttl_secs must be > 0"));
            }
            let both: Vec<&String> = p
                .identity_fields
                .iter()
                .filter(|f| p.free_text_fields.contains(f))
                .collect();
            if let Some(f) = both.first() {
                return Err(format!(
                    "tools.{tool}: field `{f}` is named both identity and free text"
                ));
            }
            if let Some(f) = p
                .resource_fields
                .iter()
                .find(|f| p.free_text_fields.contains(f))
            {
                return Err(format!(
                    "tools.{tool}: resource field `{f}` is also named free text; resource \
                     fields compare exactly"
                ));
            }
            self.validate_inverse(tool, p)?;
        }
        Ok(())
    }

    /// The rules of `inverse_of`: another tool, named by no other policy, with the resource
    /// fields set on this side.
    fn validate_inverse(&self, tool: &str, p: &ToolPolicy) -> Result<(), String> {
        let Some(inv) = &p.inverse_of else {
            return Ok(());
        };
        if inv.trim().is_empty() {
            return Err(format!("tools.{tool}.inverse_of must name a tool"));
        }
        if inv == tool {
            return Err(format!(
                "tools.{tool}.inverse_of names the tool itself; name the tool that undoes it"
            ));
        }
        if p.resource_fields.is_empty() {
            return Err(format!(
                "tools.{tool}.inverse_of needs resource_fields: the argument fields naming \
                 the thing acted on (e.g. [\"user_id\"])"
            ));
        }
        if let Some((other, _)) = self
            .tools
            .iter()
            .find(|(n, o)| n.as_str() != tool && o.inverse_of.as_deref() == Some(inv.as_str()))
        {
            return Err(format!(
                "tools.{tool} and tools.{other} both name {inv:?} as inverse_of; a tool has one \
                 inverse"
            ));
        }
        if let Some(back) = self.tools.get(inv).and_then(|o| o.inverse_of.as_deref())
            && back != tool
        {
            return Err(format!(
                "tools.{tool}.inverse_of is {inv:?}, whose inverse_of is {back:?}; a pair names \
                 each other or only one side names the other"
            ));
        }
        if self
            .tools
            .iter()
            .any(|(n, o)| n.as_str() != inv.as_str() && o.inverse_of.as_deref() == Some(tool))
        {
            return Err(format!(
                "tools.{tool} has inverse_of {inv:?} and is itself named as inverse_of by \
                 another tool; a tool has one inverse"
            ));
        }
        Ok(())
    }

    /// The inverse of `tool` and the resource fields of its calls, when `tool` is one side of
    /// an `inverse_of` pair (named on either side). The fields are `tool`'s own, else the
    /// other side's.
    pub fn inverse_pair(&self, tool: &str) -> Option<(String, Vec<String>)> {
        let own = self.tools.get(tool);
        if let Some(p) = own
            && let Some(inv) = &p.inverse_of
        {
            return Some((inv.clone(), p.resource_fields.clone()));
        }
        let (name, other) = self
            .tools
            .iter()
            .find(|(_, o)| o.inverse_of.as_deref() == Some(tool))?;
        let fields = match own {
            Some(p) if !p.resource_fields.is_empty() => p.resource_fields.clone(),
            _ => other.resource_fields.clone(),
        };
        Some((name.clone(), fields))
    }

    /// The policy of `tool` (the default policy when none is configured).
    pub fn tool_policy(&self, tool: &str) -> ToolPolicy {
        self.tools.get(tool).cloned().unwrap_or_default()
    }

    /// TTL for a record of `tool`, in milliseconds.
    pub fn ttl_ms_for(&self, tool: &str) -> i64 {
        let secs = self
            .tools
            .get(tool)
            .and_then(|p| p.ttl_secs)
            .unwrap_or(self.ttl_secs);
        (secs as i64).saturating_mul(1000)
    }
}

/// Builds the canonicaliser's policy for a tool.
pub fn canon_policy(tool: &ToolPolicy, ignored_metadata: &[String]) -> CanonPolicy {
    let set = |v: &[String]| v.iter().cloned().collect::<HashSet<_>>();
    CanonPolicy {
        ignored_names: ignored_metadata.iter().map(|s| s.to_lowercase()).collect(),
        ignored_paths: set(&tool.ignored_fields),
        identity_fields: set(&tool.identity_fields),
        free_text_fields: set(&tool.free_text_fields),
        numeric_fields: set(&tool.numeric_fields),
        defaults: tool
            .defaults
            .iter()
            .map(|(k, v)| (k.clone(), normalize(v)))
            .collect(),
    }
}

/// The server's configuration file (TOML). Every key has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    pub store: StoreKind,
    /// Page cache of the embedded store, in MiB: the bound on what the store keeps in memory
    /// (reads and the write buffer).
    pub store_cache_mb: usize,
    /// Largest accepted `arguments_json` / `result_json`, in bytes.
    pub max_payload_bytes: usize,
    /// Field names frameworks stamp afresh on every attempt; dropped before matching.
    pub ignored_metadata_fields: Vec<String>,
    /// How often expired records are swept.
    pub sweep_interval_secs: u64,
    /// Checks allowed to run at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_concurrent_checks: usize,
    /// Semantic stage: embedder and vector index settings.
    pub semantic: SemanticConfig,
    /// Optional LLM verifier for borderline pairs.
    pub verifier: VerifierConfig,
    /// The Redis store, when `store = "redis"`.
    pub redis: RedisConfig,
    /// Default session settings.
    pub defaults: SessionSettings,
    /// PEM certificate chain: with `tls_key`, the server speaks TLS (rustls) only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Where Prometheus metrics are served (`/metrics`); off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// Format of log lines on stderr.
    pub log_format: LogFormat,
    /// OTLP/HTTP traces URL (e.g. `http://127.0.0.1:4318/v1/traces`) the spans are exported
    /// to; needs a build with the `otlp` cargo feature. Off when unset.
    pub otlp_endpoint: Option<String>,
    /// At shutdown, how long health answers NOT_SERVING before the listener closes (so a load
    /// balancer stops sending first); requests are still served meanwhile.
    pub shutdown_drain_ms: u64,
    /// At shutdown, how long in-flight requests may take to finish before the server stops.
    pub shutdown_grace_secs: u64,
    /// Tenants behind tokens.
    pub auth: AuthConfig,
    /// Per-tenant quotas (records, sessions).
    pub limits: LimitsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("./data"),
            store: StoreKind::Embedded,
            store_cache_mb: crate::store::DEFAULT_CACHE_BYTES / (1024 * 1024),
            max_payload_bytes: 1024 * 1024,
            ignored_metadata_fields: default_ignored_metadata(),
            sweep_interval_secs: 60,
            max_concurrent_checks: 1024,
            semantic: SemanticConfig::default(),
            verifier: VerifierConfig::default(),
            redis: RedisConfig::default(),
            defaults: SessionSettings::default(),
            tls_cert: None,
            tls_key: None,
            metrics_listen: None,
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            shutdown_drain_ms: 0,
            shutdown_grace_secs: 30,
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_payload_bytes == 0 {
            return Err("max_payload_bytes must be > 0".into());
        }
        if self.max_concurrent_checks == 0 {
            return Err("max_concurrent_checks must be > 0".into());
        }
        if self.store_cache_mb == 0 {
            return Err("store_cache_mb must be > 0".into());
        }
        if self.sweep_interval_secs == 0 {
            return Err("sweep_interval_secs must be > 0".into());
        }
        if self.store == StoreKind::Redis && self.redis.url.is_empty() {
            return Err("store = redis needs redis.url (--redis-url redis://HOST:PORT)".into());
        }
        if self.redis.timeout_ms == 0 {
            return Err("redis.timeout_ms must be > 0".into());
        }
        let share = self.semantic.max_embed_wait_share;
        if !(share > 0.0 && share <= 1.0) {
            return Err(format!(
                "semantic.max_embed_wait_share must be in (0, 1], got {share}"
            ));
        }
        ops::validate_transport(
            self.listen,
            &self.tls_cert,
            &self.tls_key,
            &self.metrics_listen,
        )?;
        self.auth.validate()?;
        self.limits.validate()?;
        self.defaults
            .validate()
            .map_err(|e| format!("defaults: {e}"))
    }
}

/// Metadata names dropped by default.
pub fn default_ignored_metadata() -> Vec<String> {
    [
        "request_id",
        "requestId",
        "trace_id",
        "traceId",
        "span_id",
        "spanId",
        "correlation_id",
        "correlationId",
        "timestamp",
        "nonce",
        "attempt",
        "retry_count",
        "_meta",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Which embedder the semantic stage uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EmbedderKind {
    /// No embedder: the semantic stage is skipped.
    None,
    /// all-MiniLM-L6-v2 in process (ONNX Runtime).
    Local,
    /// An OpenAI-compatible `/v1/embeddings` endpoint.
    Remote,
}

/// Semantic stage settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SemanticConfig {
    pub embedder: EmbedderKind,
    /// Where the local model files live (fetched by `make models`).
    pub models_dir: PathBuf,
    /// Embedding worker threads.
    pub embed_workers: usize,
    /// Pending embeddings allowed; more are shed with RESOURCE_EXHAUSTED.
    pub embed_queue: usize,
    /// Recent free texts whose embedding is kept (about 1.6 KB each, plus 2-8 KB of word
    /// vectors for the judge's alignment with the local model), so a text seen again
    /// (a retried paraphrase, the same body to another recipient) is not embedded twice. At
    /// least 64 are kept whatever this says: the same table lets concurrent checks of one
    /// text share one embedding.
    pub embed_cache: usize,
    /// Candidates' free texts kept prepared (split into words, values and roles; about
    /// 0.5-1 KB each), so a check compares with its window's candidates without splitting
    /// their texts again; 0 turns it off.
    pub text_cache: usize,
    /// Recent calls whose content words' vectors are kept for the judge's word alignment
    /// (int8, about 400 bytes a content word: 2-6 KB a call, 1-3 MB at the default 512). A
    /// candidate not kept is judged without the alignment; 0 turns the alignment off.
    pub word_cache: usize,
    /// Longest expected wait for the embedder a check is admitted with, as a share of its own
    /// budget; a longer backlog answers RESOURCE_EXHAUSTED at once. The embedding deadline
    /// (the budget less a reserve for the stages after it) bounds the wait too, so the default
    /// 1.0 sheds only what could not be embedded in time; lower it to bound queueing tighter.
    pub max_embed_wait_share: f64,
    /// Niceness added to the local embedding threads (Linux): cheap checks get the CPU first.
    /// Higher starves embeddings sooner when cheap requests flood the server; 0 turns it off.
    pub embed_nice: i32,
    /// Remote embedder base URL.
    pub remote_url: Option<String>,
    /// Remote embedder model name.
    pub remote_model: Option<String>,
    /// Environment variable holding the remote embedder's API key.
    pub remote_api_key_env: Option<String>,
    /// Live vectors in a scope above which the index switches from flat scan to HNSW.
    pub hnsw_threshold: usize,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        Self {
            embedder: EmbedderKind::Local,
            models_dir: PathBuf::from("./models"),
            embed_workers: 1,
            embed_queue: 256,
            embed_cache: 1024,
            text_cache: 2048,
            word_cache: 512,
            max_embed_wait_share: 1.0,
            embed_nice: 5,
            remote_url: None,
            remote_model: None,
            remote_api_key_env: None,
            // Below ~50k vectors an exact flat scan is as fast as hnsw_rs and costs no graph
            // builds (benches/index.rs).
            hnsw_threshold: 50_000,
        }
    }
}

/// LLM verifier settings (any OpenAI-compatible `/v1/chat/completions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifierConfig {
    pub base_url: Option<String>,
    pub model: String,
    /// Environment variable holding the API key.
    pub api_key_env: String,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            model: "gpt-4o-mini".into(),
            api_key_env: "IDEM_VERIFIER_API_KEY".into(),
        }
    }
}

/// Redis store settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://HOST:PORT`, `rediss://` for TLS, `redis+cluster://H1:P1,H2:P2` for a cluster.
    pub url: String,
    /// The URL names a cluster seed even with a plain `redis://` scheme.
    pub cluster: bool,
    /// Longest wait for one Redis command before the check fails as UNAVAILABLE.
    pub timeout_ms: u64,
    /// Prefix of every key idem writes.
    pub prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            cluster: false,
            timeout_ms: 250,
            prefix: "idem".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embed_wait_share_must_be_a_fraction_of_the_budget() {
        let mut c = ServerConfig::default();
        assert!(c.validate().is_ok());
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            c.semantic.max_embed_wait_share = bad;
            let err = c.validate().unwrap_err();
            assert!(err.contains("max_embed_wait_share"), "{err}");
        }
        c.semantic.max_embed_wait_share = 1.0;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn defaults_are_valid() {
        ServerConfig::default().validate().unwrap();
    }

    #[test]
    fn invalid_values_are_named() {
        let base = SessionSettings::default();
        let cases: Vec<(SessionOverrides, &str)> = vec![
            (
                SessionOverrides {
                    fuzzy_threshold: Some(f64::NAN),
                    ..Default::default()
                },
                "fuzzy_threshold",
            ),
            (
                SessionOverrides {
                    semantic_duplicate: Some(1.5),
                    ..Default::default()
                },
                "semantic_duplicate",
            ),
            (
                SessionOverrides {
                    semantic_borderline: Some(0.99),
                    semantic_duplicate: Some(0.9),
                    ..Default::default()
                },
                "semantic_borderline",
            ),
            (
                SessionOverrides {
                    ttl_secs: Some(0),
                    ..Default::default()
                },
                "ttl_secs",
            ),
            (
                SessionOverrides {
                    deadline_ms: Some(0),
                    ..Default::default()
                },
                "deadline_ms",
            ),
        ];
        for (o, field) in cases {
            let err = base.with_overrides(&o).validate().unwrap_err();
            assert!(err.contains(field), "{err} should name {field}");
        }
    }

    #[test]
    fn overrides_inherit_unset_fields() {
        let base = SessionSettings::default();
        let s = base.with_overrides(&SessionOverrides {
            ttl_secs: Some(60),
            ..Default::default()
        });
        assert_eq!(s.ttl_secs, 60);
        assert_eq!(s.lease_secs, base.lease_secs);
    }

    #[test]
    fn example_config_parses_and_matches_defaults() {
        let cfg: ServerConfig =
            toml::from_str(include_str!("../config/idem.example.toml")).unwrap();
        cfg.validate().unwrap();
        let d = ServerConfig::default();
        assert_eq!(cfg.ignored_metadata_fields, d.ignored_metadata_fields);
        assert_eq!(cfg.defaults.ttl_secs, d.defaults.ttl_secs);
        assert_eq!(cfg.listen, d.listen);
    }

    #[test]
    fn config_file_parses_from_toml() {
        let cfg: ServerConfig = toml::from_str(
            r#"
            listen = "0.0.0.0:6000"
            store = "memory"
            [defaults]
            ttl_secs = 3600
            [defaults.tools.search]
            mode = "off"
            [defaults.tools.pay]
            identity_fields = ["amount", "to"]
            ttl_secs = 604800
            "#,
        )
        .unwrap();
        assert_eq!(cfg.store, StoreKind::Memory);
        assert_eq!(cfg.defaults.tool_policy("search").mode, ToolMode::Off);
        assert_eq!(cfg.defaults.ttl_ms_for("pay"), 604_800_000);
        assert!(toml::from_str::<ServerConfig>("bogus = 1").is_err());
    }

    #[test]
    fn inverse_pairs_parse_and_their_rules_are_checked() {
        let cfg: ServerConfig = toml::from_str(
            r#"
            [defaults.tools.disable_2fa]
            resource_fields = ["user_id"]
            inverse_of = "enable_2fa"
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        let d = &cfg.defaults;
        assert_eq!(
            d.inverse_pair("disable_2fa"),
            Some(("enable_2fa".into(), vec!["user_id".into()]))
        );
        // Symmetric: the other side finds its inverse and borrows the fields.
        assert_eq!(
            d.inverse_pair("enable_2fa"),
            Some(("disable_2fa".into(), vec!["user_id".into()]))
        );
        assert_eq!(d.inverse_pair("search"), None);

        let with = |name: &str, p: ToolPolicy| {
            let mut s = SessionSettings::default();
            s.tools.insert(name.into(), p);
            s
        };
        let own = with(
            "a",
            ToolPolicy {
                inverse_of: Some("a".into()),
                resource_fields: vec!["id".into()],
                ..Default::default()
            },
        );
        assert!(own.validate().unwrap_err().contains("itself"));
        let bare = with(
            "a",
            ToolPolicy {
                inverse_of: Some("b".into()),
                ..Default::default()
            },
        );
        assert!(bare.validate().unwrap_err().contains("resource_fields"));
        let mut twice = bare.clone();
        for n in ["a", "c"] {
            twice.tools.insert(
                n.into(),
                ToolPolicy {
                    inverse_of: Some("b".into()),
                    resource_fields: vec!["id".into()],
                    ..Default::default()
                },
            );
        }
        assert!(twice.validate().unwrap_err().contains("one inverse"));
    }
}
