//! Record storage: one async trait, several backends, one conformance suite.
//!
//! Stores know nothing of stages: they keep records, look them up by idempotency key, exact
//! hash and identity fingerprint, page the intent log, sweep expired records and keep
//! per-session settings and counters. Atomicity of a check across lookups and insert is the
//! engine's job (it serialises checks per match scope, and [`PendingInserts`] shows its
//! decided NEWs to lookups while they commit); a store several instances share adds a
//! per-scope version so a reservation fails when another instance recorded a call in the scope
//! since the check read it (`scope_version`, `insert_if_unchanged`). Every write a store
//! acknowledges is durable where the backend is.

mod codec;
pub mod deadline;
mod embedded;
mod feedback;
mod memory;
mod pending;
mod quota;
mod redis;
mod stats;
mod writer;

#[cfg(test)]
mod conformance;

pub use embedded::{DEFAULT_CACHE_BYTES, EmbeddedStore, TableUsage};
pub use feedback::{CheckLog, Feedback};
pub use memory::MemoryStore;
pub use pending::{PendingInserts, Ticket};
pub use quota::{Quota, QuotaExceeded, QuotaLimit, Usage};
pub use redis::{RedisOptions, RedisStore};
pub use stats::{StatsDelta, StatsSnapshot};

use async_trait::async_trait;

use crate::clock::Millis;
use crate::config::SessionOverrides;
use crate::record::{CallStatus, Record, ResourceState};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend's I/O or database failed.
    #[error("backend: {0}")]
    Backend(String),
    /// A shared backend did not answer in time or could not be reached (the message names it).
    #[error("{0}")]
    Unavailable(String),
    /// Another instance recorded a call in the scope since this check read it: decide again.
    #[error("another instance recorded a call in this scope while this check decided; retry")]
    ScopeChanged,
    /// Stored data could not be decoded.
    #[error("corrupt record {id}: {reason}")]
    Corrupt { id: String, reason: String },
    /// A record to update does not exist.
    #[error("no record {0}")]
    Missing(String),
    /// An insert would pass the tenant's quota: nothing was written.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
}

/// A page of the intent log.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Records, newest first.
    pub records: Vec<Record>,
    /// Token of the next page; `None` at the end.
    pub next: Option<String>,
}

/// Which records `list` returns.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub tenant: String,
    pub session: String,
    pub status: Option<CallStatus>,
    pub page_size: usize,
    /// Opaque token from a previous page.
    pub page_token: Option<String>,
}

/// An earlier call that may be an original: what the similarity stages compare, without the
/// rest of the record (loaded only for the one that matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub created_at_ms: Millis,
    pub expires_at_ms: Millis,
    /// The call's canonical free text.
    pub free_text: String,
}

impl Candidate {
    /// The candidate view of a record.
    pub fn of(r: &Record) -> Self {
        Self {
            id: r.id.clone(),
            created_at_ms: r.created_at_ms,
            expires_at_ms: r.expires_at_ms,
            free_text: r.free_text.clone(),
        }
    }

    /// Whether the call's record has expired at `now`.
    pub fn is_expired(&self, now: Millis) -> bool {
        now >= self.expires_at_ms
    }
}

/// A stored embedding, for rebuilding vector indexes at start.
#[derive(Debug, Clone)]
pub struct StoredVector {
    pub id: String,
    pub match_scope: String,
    pub vector: Vec<f32>,
}

/// A position in a scope's vector log (opaque to the engine; the store's own format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCursor(pub String);

/// One change to a scope's stored vectors, as its vector log has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VectorChange {
    /// The call's embedding was stored (perhaps replacing an earlier one). `own`: by this
    /// store handle (this instance), which indexed it when it wrote it; otherwise by another
    /// instance (or one that did not log its writer), whose vector replaces the indexed one.
    Added { id: String, own: bool },
    /// The call was swept.
    Removed(String),
}

/// What a scope's vector log holds after a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VectorLog {
    /// The changes after the cursor, oldest first (at most the limit asked for), and the
    /// cursor after the last of them.
    Changes {
        changes: Vec<VectorChange>,
        next: LogCursor,
    },
    /// Entries past the cursor were trimmed (or the log is gone): rebuild the scope.
    Gap,
}

/// A page of a scope's stored vectors, for rebuilding the scope's index.
#[derive(Debug, Clone)]
pub struct ScopeVectors {
    /// The log's head, read before the page (on the first page only): changes after it are
    /// replayed from the log.
    pub head: Option<LogCursor>,
    /// The last id the page read (with or without a vector): the next page starts after it.
    pub last: Option<String>,
    /// Ids the page read: fewer than the limit asked for on the last page.
    pub read: usize,
    /// (call id, embedding), in id order.
    pub vectors: Vec<(String, Vec<f32>)>,
}

/// What a conditional insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// The record is stored.
    Inserted,
    /// The scope's version moved since it was read: nothing was stored.
    Conflict,
}

/// A record store.
///
/// Contract: an acknowledged write is durable where the backend is; `insert_if_unchanged`
/// stores a record only if no record was inserted into its scope since `scope_version` was
/// read, in one atomic step (so two instances sharing the store never both reserve). Every
/// insert keeps the tenant's [`Usage`] in the same atomic step and is refused
/// ([`StoreError::Quota`], nothing written) when the record would pass its [`Quota`]; the
/// sweep gives each swept record's share back.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The scope's insert version, read before a check reads the scope's records; `None` for
    /// a backend only this process writes (the engine's per-scope lock then suffices).
    async fn scope_version(&self, _scope: &str) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// Adds a new record if its scope's version is still `seen` (atomically, for backends
    /// several instances share); `Conflict` when another insert came first.
    async fn insert_if_unchanged(
        &self,
        record: &Record,
        quota: &Quota,
        _seen: u64,
    ) -> Result<Reserved, StoreError> {
        self.insert(record, quota)
            .await
            .map(|()| Reserved::Inserted)
    }
    /// Whether the store keeps a per-scope vector log (a store several instances share):
    /// each instance then feeds its indexes from the log, scope by scope, instead of loading
    /// every vector at start.
    fn has_vector_log(&self) -> bool {
        false
    }
    /// The changes to `scope`'s stored vectors after `after`, at most `limit`.
    async fn vector_log(
        &self,
        _scope: &str,
        _after: &LogCursor,
        _limit: usize,
    ) -> Result<VectorLog, StoreError> {
        Err(StoreError::Backend("this store keeps no vector log".into()))
    }
    /// A page of `scope`'s stored vectors with ids after `after` (`None`: the first page,
    /// which also carries the log's head), at most `limit`.
    async fn scope_vectors(
        &self,
        _scope: &str,
        _after: Option<&str>,
        _limit: usize,
    ) -> Result<ScopeVectors, StoreError> {
        Err(StoreError::Backend("this store keeps no vector log".into()))
    }
    /// The stored embeddings of calls of `scope`, in the order asked (`None`: none stored).
    async fn vectors_of(
        &self,
        _scope: &str,
        _ids: &[String],
    ) -> Result<Vec<Option<Vec<f32>>>, StoreError> {
        Err(StoreError::Backend("this store keeps no vector log".into()))
    }
    /// Adds a new record (and its embedding, if any) unless it would pass the tenant's
    /// `quota`; durable when this returns.
    async fn insert(&self, record: &Record, quota: &Quota) -> Result<(), StoreError>;
    /// What `tenant` holds now (the counts quotas are checked against).
    async fn usage(&self, tenant: &str) -> Result<Usage, StoreError>;
    /// Replaces an existing record by id; durable when this returns.
    async fn update(&self, record: &Record) -> Result<(), StoreError>;
    /// Stores the embedding of an existing record, touching nothing else of it (a background
    /// embedding must not undo a `Complete` made since the record was read); durable when this
    /// returns. `Ok(false)` when the record is gone (swept): the caller then indexes nothing.
    async fn put_embedding(&self, id: &str, vector: &[f32]) -> Result<bool, StoreError>;
    /// One record by id (expired records are returned until swept).
    async fn get(&self, id: &str) -> Result<Option<Record>, StoreError>;
    /// The newest record of `scope` that carried idempotency key `key`.
    async fn latest_by_key(&self, scope: &str, key: &str) -> Result<Option<Record>, StoreError>;
    /// The newest record of `scope` with canonical hash `exact_hash`.
    async fn latest_by_exact(
        &self,
        scope: &str,
        exact_hash: &str,
    ) -> Result<Option<Record>, StoreError>;
    /// The state the newest call on resource `resource` (`ResourceMark::key`) left in
    /// `scope`: written with every insert of a record that carries a mark, in the same atomic
    /// step, and kept until the last record on the resource expires.
    async fn resource_state(
        &self,
        scope: &str,
        resource: &str,
    ) -> Result<Option<ResourceState>, StoreError>;
    /// Calls of `scope` and `tool` with identity `fingerprint` created at or after `since`,
    /// newest first, at most `limit`. Hot: read on every similarity check, so backends keep
    /// it cheap (no full record decoding).
    async fn candidates(
        &self,
        scope: &str,
        tool: &str,
        fingerprint: &str,
        since: Millis,
        limit: usize,
    ) -> Result<Vec<Candidate>, StoreError>;
    /// The intent log of a session, newest first.
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError>;
    /// Deletes records expired at `now`; returns each one's (id, match scope).
    async fn sweep(&self, now: Millis) -> Result<Vec<(String, String)>, StoreError>;
    /// Every stored embedding of a record not expired at `now`.
    async fn vectors(&self, now: Millis) -> Result<Vec<StoredVector>, StoreError>;
    /// Stores a session's overrides.
    async fn put_session(
        &self,
        tenant: &str,
        session: &str,
        o: &SessionOverrides,
    ) -> Result<(), StoreError>;
    /// A session's overrides, if it set any.
    async fn get_session(
        &self,
        tenant: &str,
        session: &str,
    ) -> Result<Option<SessionOverrides>, StoreError>;
    /// Adds to a session's counters (not necessarily durable: counters are advisory).
    async fn add_stats(
        &self,
        tenant: &str,
        session: &str,
        delta: &StatsSnapshot,
    ) -> Result<(), StoreError>;
    /// Counters of one session, or of the whole tenant.
    async fn stats(&self, tenant: &str, session: Option<&str>)
    -> Result<StatsSnapshot, StoreError>;
    /// Adds verdict log entries (not necessarily durable); expired ones go with `sweep`.
    async fn put_checks(&self, logs: &[CheckLog]) -> Result<(), StoreError>;
    /// One verdict log entry.
    async fn get_check(&self, check_id: &str) -> Result<Option<CheckLog>, StoreError>;
    /// Records a judgement (durable); a later one for the same check replaces it.
    async fn put_feedback(&self, f: &Feedback) -> Result<(), StoreError>;
    /// A tenant's judgements given at or after `since`, oldest first.
    async fn list_feedback(&self, tenant: &str, since: Millis)
    -> Result<Vec<Feedback>, StoreError>;
}

/// Key separator in composite keys; names may not contain control characters.
pub(crate) const SEP: char = '\u{1f}';

/// `a SEP b SEP c ...`
pub(crate) fn key(parts: &[&str]) -> String {
    let mut s = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push(SEP);
        }
        s.push_str(p);
    }
    s
}
