//! Embedded durable store: one redb file under the data directory.
//!
//! Every acknowledged insert or update is committed with immediate durability (fsync) before
//! the call returns, so a `NEW` the client saw survives `kill -9`. Counters are committed
//! without fsync (they ride along with the next durable commit): they are advisory. Writes go
//! through one writer thread that commits the writes waiting together (`writer`: group
//! commit, one fsync for many); reads run on tokio's blocking pool, never on a worker thread.
//! Records are stored in `codec`'s binary form with the embedding inline (int8); a store of the
//! older JSON format is converted once when opened, and a newer format is refused.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};

use super::codec;
use super::writer::Writer;
use super::{
    Candidate, CheckLog, Feedback, ListQuery, Page, Quota, SEP, StatsSnapshot, Store, StoreError,
    StoredVector, Usage, key,
};
use crate::clock::Millis;
use crate::config::SessionOverrides;
use crate::record::{Record, ResourceState};

/// id -> `codec` record, embedding inline. The name is format 1's, with another value type: an
/// older idem opening this store fails on the type (redb checks it) instead of seeing no
/// records.
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// Store format 1: id -> JSON record, and id -> f32 embedding; converted at open.
const RECORDS_V1: TableDefinition<&str, &str> = TableDefinition::new("records");
const EMBEDDINGS_V1: TableDefinition<&str, &[u8]> = TableDefinition::new("embeddings");
/// Where format-1 records wait, converted, while their table is replaced.
const CONVERTING: TableDefinition<&str, &[u8]> = TableDefinition::new("records.converting");
/// "format" -> the store format.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The store format this code writes: the tenants' usage counts and the resource table.
const STORE_FORMAT: u64 = 4;
/// Format 2 and 3 records read as they are (the codec reads every format since 2); the
/// resource table is created at open and the usage is counted from `by_session`, so such a
/// store needs only its mark changed.
const STORE_FORMAT_2: u64 = 2;
const STORE_FORMAT_3: u64 = 3;
const BY_KEY: TableDefinition<&str, &str> = TableDefinition::new("by_key");
const BY_EXACT: TableDefinition<&str, &str> = TableDefinition::new("by_exact");
/// scope SEP resource -> `ResourceEntry` (JSON): the state the newest call on it left.
const BY_RESOURCE: TableDefinition<&str, &str> = TableDefinition::new("by_resource");
/// scope SEP tool SEP fingerprint SEP id -> `candidate_value`: the similarity stages read only
/// this table, never the records.
const CANDIDATES: TableDefinition<&str, &str> = TableDefinition::new("candidates.v2");
const BY_SESSION: TableDefinition<&str, ()> = TableDefinition::new("by_session");
const EXPIRY: TableDefinition<&str, ()> = TableDefinition::new("expiry");
const SESSIONS: TableDefinition<&str, &str> = TableDefinition::new("sessions");
const STATS: TableDefinition<&str, &str> = TableDefinition::new("stats");
const CHECKS: TableDefinition<&str, &str> = TableDefinition::new("checks");
const CHECK_EXPIRY: TableDefinition<&str, ()> = TableDefinition::new("check_expiry");
const FEEDBACK: TableDefinition<&str, &str> = TableDefinition::new("feedback");
/// tenant -> (records, sessions holding any): what quotas are checked against.
const TENANT_USAGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("tenant_usage");
/// tenant SEP session -> records the session holds (absent at 0).
const SESSION_USAGE: TableDefinition<&str, u64> = TableDefinition::new("session_usage");

/// What one table of the embedded store holds on disk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableUsage {
    pub name: String,
    pub entries: u64,
    /// Bytes of keys and values, without the B-tree's own.
    pub stored_bytes: u64,
    /// Leaf and branch pages (4 KiB each).
    pub pages: u64,
    /// Bytes of those pages left unused.
    pub fragmented_bytes: u64,
}

/// The redb-backed store.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// Every write goes through it: writes waiting together share one commit.
    writer: Arc<Writer>,
}

fn be<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The character after `SEP`: `[prefix SEP, prefix END)` is every key under `prefix`.
const END: char = '\u{20}';

fn prefix_range(prefix: &str) -> (String, String) {
    (format!("{prefix}{SEP}"), format!("{prefix}{END}"))
}

fn expiry_key(at: Millis, id: &str) -> String {
    format!("{:020}{SEP}{id}", at.max(0))
}

fn decode<T: serde::de::DeserializeOwned>(id: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        id: id.to_string(),
        reason: e.to_string(),
    })
}

fn candidate_key(r: &Record) -> String {
    key(&[&r.match_scope, &r.tool, &r.identity_fingerprint, &r.id])
}

/// `created SEP expires SEP free text`.
fn candidate_value(r: &Record) -> String {
    format!(
        "{}{SEP}{}{SEP}{}",
        r.created_at_ms, r.expires_at_ms, r.free_text
    )
}

fn decode_candidate(id: &str, v: &str) -> Result<Candidate, StoreError> {
    let corrupt = || StoreError::Corrupt {
        id: id.to_string(),
        reason: "bad candidate index entry".into(),
    };
    let mut parts = v.splitn(3, SEP);
    let mut millis = || -> Result<Millis, StoreError> {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(corrupt)
    };
    let (created_at_ms, expires_at_ms) = (millis()?, millis()?);
    Ok(Candidate {
        id: id.to_string(),
        created_at_ms,
        expires_at_ms,
        free_text: parts.next().ok_or_else(corrupt)?.to_string(),
    })
}

fn bytes_to_vec(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Checks the store's format; converts a format-1 store (JSON records, f32 embeddings) in the
/// same transaction, so a crash midway leaves the old store as it was.
fn check_format(tx: &redb::WriteTransaction, path: &Path) -> Result<(), StoreError> {
    let mut meta = tx.open_table(META).map_err(be)?;
    let format = meta.get("format").map_err(be)?.map(|v| v.value());
    match format {
        Some(STORE_FORMAT) => return Ok(()),
        Some(STORE_FORMAT_2 | STORE_FORMAT_3) => {
            meta.insert("format", STORE_FORMAT).map_err(be)?;
            let n = count_usage(tx)?;
            tracing::info!(tenants = n, path = %path.display(), "store usage counted (format 4)");
            return Ok(());
        }
        Some(newer) => {
            return Err(StoreError::Backend(format!(
                "{} is store format {newer}, written by a newer idem; this one reads format \
                 {STORE_FORMAT}: run the newer idem, or start this one on an empty --data-dir",
                path.display()
            )));
        }
        None => {}
    }
    let old = tx
        .list_tables()
        .map_err(be)?
        .any(|t| t.name() == RECORDS_V1.name());
    if old {
        let n = convert_v1(tx)?;
        tracing::info!(records = n, path = %path.display(), "store converted from format 1");
    }
    meta.insert("format", STORE_FORMAT).map_err(be)?;
    count_usage(tx)?;
    Ok(())
}

/// Counts every tenant's records and sessions from `by_session` (a store written before the
/// counts were kept); returns the tenants counted.
fn count_usage(tx: &redb::WriteTransaction) -> Result<usize, StoreError> {
    let mut tenants: std::collections::BTreeMap<String, Usage> = Default::default();
    let mut sessions: std::collections::BTreeMap<String, u64> = Default::default();
    {
        let by_session = tx.open_table(BY_SESSION).map_err(be)?;
        for entry in by_session.iter().map_err(be)? {
            let (k, _) = entry.map_err(be)?;
            let mut parts = k.value().splitn(3, SEP);
            let (Some(tenant), Some(session)) = (parts.next(), parts.next()) else {
                continue;
            };
            let n = sessions.entry(key(&[tenant, session])).or_default();
            *n += 1;
            let u = tenants.entry(tenant.to_string()).or_default();
            u.records += 1;
            u.sessions += u64::from(*n == 1);
        }
    }
    let mut t = tx.open_table(TENANT_USAGE).map_err(be)?;
    for (tenant, u) in &tenants {
        t.insert(tenant.as_str(), (u.records, u.sessions))
            .map_err(be)?;
    }
    let mut s = tx.open_table(SESSION_USAGE).map_err(be)?;
    for (k, n) in &sessions {
        s.insert(k.as_str(), *n).map_err(be)?;
    }
    Ok(tenants.len())
}

fn read_usage(
    t: &impl ReadableTable<&'static str, (u64, u64)>,
    tenant: &str,
) -> Result<Usage, StoreError> {
    Ok(t.get(tenant)
        .map_err(be)?
        .map(|v| {
            let (records, sessions) = v.value();
            Usage { records, sessions }
        })
        .unwrap_or_default())
}

/// Counts a new record of `r`'s tenant and session, in the insert's transaction, or refuses
/// it (writing nothing) when it would pass `quota`.
fn take_share(tx: &redb::WriteTransaction, r: &Record, quota: &Quota) -> Result<(), StoreError> {
    let mut tenants = tx.open_table(TENANT_USAGE).map_err(be)?;
    let mut sessions = tx.open_table(SESSION_USAGE).map_err(be)?;
    let sk = key(&[&r.tenant, &r.session]);
    let held = sessions
        .get(sk.as_str())
        .map_err(be)?
        .map_or(0, |v| v.value());
    let mut u = read_usage(&tenants, &r.tenant)?;
    quota.admit(&r.tenant, &r.session, u, held)?;
    u.records += 1;
    u.sessions += u64::from(held == 0);
    tenants
        .insert(r.tenant.as_str(), (u.records, u.sessions))
        .map_err(be)?;
    sessions.insert(sk.as_str(), held + 1).map_err(be)?;
    Ok(())
}

/// Gives back a swept record's share of its tenant's and session's counts.
fn give_share(
    tenants: &mut redb::Table<&str, (u64, u64)>,
    sessions: &mut redb::Table<&str, u64>,
    r: &Record,
) -> Result<(), StoreError> {
    let sk = key(&[&r.tenant, &r.session]);
    let held = sessions
        .get(sk.as_str())
        .map_err(be)?
        .map_or(0, |v| v.value());
    let closed = held <= 1;
    if closed {
        sessions.remove(sk.as_str()).map_err(be)?;
    } else {
        sessions.insert(sk.as_str(), held - 1).map_err(be)?;
    }
    let mut u = read_usage(tenants, &r.tenant)?;
    u.records = u.records.saturating_sub(1);
    u.sessions = u.sessions.saturating_sub(u64::from(closed));
    if u.records == 0 {
        tenants.remove(r.tenant.as_str()).map_err(be)?;
    } else {
        tenants
            .insert(r.tenant.as_str(), (u.records, u.sessions))
            .map_err(be)?;
    }
    Ok(())
}

/// Rewrites every format-1 record (and its embedding) in format 2 and drops the old tables.
/// A record that does not decode stops the conversion: nothing is dropped silently.
fn convert_v1(tx: &redb::WriteTransaction) -> Result<usize, StoreError> {
    let mut n = 0;
    {
        let old = tx.open_table(RECORDS_V1).map_err(be)?;
        let embs = tx.open_table(EMBEDDINGS_V1).map_err(be)?;
        let mut new = tx.open_table(CONVERTING).map_err(be)?;
        for entry in old.iter().map_err(be)? {
            let (k, v) = entry.map_err(be)?;
            let mut r: Record = decode(k.value(), v.value()).map_err(|e| {
                StoreError::Backend(format!(
                    "cannot convert the store from format 1: {e}; back up the data dir and \
                     start on an empty one"
                ))
            })?;
            if r.action_key.is_empty() {
                r.action_key = r.id.clone();
            }
            r.embedding = embs
                .get(k.value())
                .map_err(be)?
                .map(|e| bytes_to_vec(e.value()));
            new.insert(k.value(), codec::encode(&r, None).as_slice())
                .map_err(be)?;
            n += 1;
        }
    }
    tx.delete_table(RECORDS_V1).map_err(be)?;
    tx.delete_table(EMBEDDINGS_V1).map_err(be)?;
    {
        let converted = tx.open_table(CONVERTING).map_err(be)?;
        let mut records = tx.open_table(RECORDS).map_err(be)?;
        for entry in converted.iter().map_err(be)? {
            let (k, v) = entry.map_err(be)?;
            records.insert(k.value(), v.value()).map_err(be)?;
        }
    }
    tx.delete_table(CONVERTING).map_err(be)?;
    Ok(n)
}

/// redb's page cache when none is configured (`store_cache_mb`); redb's own default is 1 GiB,
/// which lets the cache grow with the store until it holds most of the file.
pub const DEFAULT_CACHE_BYTES: usize = 4 * 1024 * 1024;

impl EmbeddedStore {
    /// Opens (or creates) `dir/idem.redb` with the default page cache.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) `dir/idem.redb`; redb's page cache (reads and the write buffer) holds
    /// at most `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join("idem.redb");
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(be)?;
        check_format(&tx, &path)?;
        {
            tx.open_table(RECORDS).map_err(be)?;
            tx.open_table(BY_KEY).map_err(be)?;
            tx.open_table(BY_EXACT).map_err(be)?;
            tx.open_table(BY_RESOURCE).map_err(be)?;
            tx.open_table(CANDIDATES).map_err(be)?;
            tx.open_table(BY_SESSION).map_err(be)?;
            tx.open_table(EXPIRY).map_err(be)?;
            tx.open_table(SESSIONS).map_err(be)?;
            tx.open_table(STATS).map_err(be)?;
            tx.open_table(CHECKS).map_err(be)?;
            tx.open_table(CHECK_EXPIRY).map_err(be)?;
            tx.open_table(FEEDBACK).map_err(be)?;
            tx.open_table(TENANT_USAGE).map_err(be)?;
            tx.open_table(SESSION_USAGE).map_err(be)?;
        }
        tx.commit().map_err(be)?;
        let db = Arc::new(db);
        let writer = Arc::new(Writer::spawn(db.clone())?);
        Ok(Self { db, writer })
    }

    /// Write transactions committed so far: with group commit, fewer than the writes made.
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// What each table holds on disk (entries, bytes of keys and values, pages), for
    /// measuring where the bytes of a stored call go. Blocking.
    pub fn table_usage(&self) -> Result<Vec<TableUsage>, StoreError> {
        fn usage<K: redb::Key + 'static, V: redb::Value + 'static>(
            tx: &redb::ReadTransaction,
            def: TableDefinition<K, V>,
        ) -> Result<TableUsage, StoreError> {
            let t = tx.open_table(def).map_err(be)?;
            let stats = t.stats().map_err(be)?;
            Ok(TableUsage {
                name: def.name().to_string(),
                entries: t.len().map_err(be)?,
                stored_bytes: stats.stored_bytes(),
                pages: stats.leaf_pages() + stats.branch_pages(),
                fragmented_bytes: stats.fragmented_bytes(),
            })
        }
        let tx = self.db.begin_read().map_err(be)?;
        Ok(vec![
            usage(&tx, RECORDS)?,
            usage(&tx, CANDIDATES)?,
            usage(&tx, BY_KEY)?,
            usage(&tx, BY_EXACT)?,
            usage(&tx, BY_SESSION)?,
            usage(&tx, EXPIRY)?,
            usage(&tx, SESSIONS)?,
            usage(&tx, STATS)?,
            usage(&tx, CHECKS)?,
            usage(&tx, CHECK_EXPIRY)?,
            usage(&tx, FEEDBACK)?,
            usage(&tx, TENANT_USAGE)?,
            usage(&tx, SESSION_USAGE)?,
        ])
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(be)?
    }
}

/// Keys of an expiry index below `hi` (everything expired by then).
fn keys_before(
    table: &impl ReadableTable<&'static str, ()>,
    hi: &str,
) -> Result<Vec<String>, StoreError> {
    table
        .range(..hi)
        .map_err(be)?
        .map(|e| e.map(|(k, _)| k.value().to_string()))
        .collect::<Result<_, _>>()
        .map_err(be)
}

/// The JSON value stored under `k` in `table`, decoded.
fn read_json<T: serde::de::DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &str>,
    k: &str,
) -> Result<Option<T>, StoreError> {
    let tx = db.begin_read().map_err(be)?;
    let t = tx.open_table(table).map_err(be)?;
    let Some(v) = t.get(k).map_err(be)? else {
        return Ok(None);
    };
    decode(k, v.value()).map(Some)
}

fn read_record(db: &Database, id: &str) -> Result<Option<Record>, StoreError> {
    let tx = db.begin_read().map_err(be)?;
    let t = tx.open_table(RECORDS).map_err(be)?;
    let Some(v) = t.get(id).map_err(be)? else {
        return Ok(None);
    };
    codec::decode(id, v.value()).map(|(r, _)| Some(r))
}

/// A resource's state and when the last record on it expires.
#[derive(serde::Serialize, serde::Deserialize)]
struct ResourceEntry {
    state: ResourceState,
    until: Millis,
}

/// Writes the state `r` leaves its resource in (if it carries a mark), keeping the latest
/// expiry of the records on it.
fn put_resource(tx: &redb::WriteTransaction, r: &Record) -> Result<(), StoreError> {
    let Some((res, state)) = ResourceState::of(r) else {
        return Ok(());
    };
    let k = key(&[&r.match_scope, &res]);
    let mut t = tx.open_table(BY_RESOURCE).map_err(be)?;
    let until = match t.get(k.as_str()).map_err(be)? {
        Some(v) => serde_json::from_str::<ResourceEntry>(v.value())
            .map_err(|e| StoreError::Corrupt {
                id: k.clone(),
                reason: format!("resource entry: {e}"),
            })?
            .until
            .max(r.expires_at_ms),
        None => r.expires_at_ms,
    };
    let v = serde_json::to_string(&ResourceEntry { state, until })
        .map_err(|e| StoreError::Backend(format!("cannot encode a resource entry: {e}")))?;
    t.insert(k.as_str(), v.as_str()).map_err(be)?;
    Ok(())
}

fn read_pointer(
    db: &Database,
    table: TableDefinition<&str, &str>,
    k: &str,
) -> Result<Option<Record>, StoreError> {
    let id = {
        let tx = db.begin_read().map_err(be)?;
        let t = tx.open_table(table).map_err(be)?;
        match t.get(k).map_err(be)? {
            Some(v) => v.value().to_string(),
            None => return Ok(None),
        }
    };
    read_record(db, &id)
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn insert(&self, r: &Record, quota: &Quota) -> Result<(), StoreError> {
        let (r, quota) = (r.clone(), *quota);
        self.writer
            .write(true, move |tx| {
                // First: a refused insert returns before it writes anything.
                take_share(tx, &r, &quota)?;
                let bytes = codec::encode(&r, None);
                {
                    tx.open_table(RECORDS)
                        .map_err(be)?
                        .insert(r.id.as_str(), bytes.as_slice())
                        .map_err(be)?;
                    if let Some(k) = &r.idempotency_key {
                        tx.open_table(BY_KEY)
                            .map_err(be)?
                            .insert(key(&[&r.match_scope, k]).as_str(), r.id.as_str())
                            .map_err(be)?;
                    }
                    tx.open_table(BY_EXACT)
                        .map_err(be)?
                        .insert(
                            key(&[&r.match_scope, &r.exact_hash]).as_str(),
                            r.id.as_str(),
                        )
                        .map_err(be)?;
                    tx.open_table(CANDIDATES)
                        .map_err(be)?
                        .insert(candidate_key(&r).as_str(), candidate_value(&r).as_str())
                        .map_err(be)?;
                    put_resource(tx, &r)?;
                    let sk = key(&[&r.tenant, &r.session, &r.id]);
                    tx.open_table(BY_SESSION)
                        .map_err(be)?
                        .insert(sk.as_str(), ())
                        .map_err(be)?;
                    tx.open_table(EXPIRY)
                        .map_err(be)?
                        .insert(expiry_key(r.expires_at_ms, &r.id).as_str(), ())
                        .map_err(be)?;
                }
                Ok(())
            })
            .await
    }

    async fn usage(&self, tenant: &str) -> Result<Usage, StoreError> {
        let tenant = tenant.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(be)?;
            read_usage(&tx.open_table(TENANT_USAGE).map_err(be)?, &tenant)
        })
        .await
    }

    async fn update(&self, r: &Record) -> Result<(), StoreError> {
        let r = r.clone();
        self.writer
            .write(true, move |tx| {
                {
                    let mut t = tx.open_table(RECORDS).map_err(be)?;
                    // An update without an embedding keeps the stored one.
                    let (old_expiry, bytes) = match t.get(r.id.as_str()).map_err(be)? {
                        Some(v) => {
                            let (old, emb) = codec::decode(&r.id, v.value())?;
                            let keep = emb.filter(|_| r.embedding.is_none());
                            (old.expires_at_ms, codec::encode(&r, keep))
                        }
                        None => return Err(StoreError::Missing(r.id.clone())),
                    };
                    t.insert(r.id.as_str(), bytes.as_slice()).map_err(be)?;
                    if old_expiry != r.expires_at_ms {
                        let mut e = tx.open_table(EXPIRY).map_err(be)?;
                        e.remove(expiry_key(old_expiry, &r.id).as_str())
                            .map_err(be)?;
                        e.insert(expiry_key(r.expires_at_ms, &r.id).as_str(), ())
                            .map_err(be)?;
                        tx.open_table(CANDIDATES)
                            .map_err(be)?
                            .insert(candidate_key(&r).as_str(), candidate_value(&r).as_str())
                            .map_err(be)?;
                    }
                }
                Ok(())
            })
            .await
    }

    async fn put_embedding(&self, id: &str, vector: &[f32]) -> Result<bool, StoreError> {
        let (id, vector) = (id.to_string(), vector.to_vec());
        self.writer
            .write(true, move |tx| {
                {
                    // Read and write in one transaction: nothing (a Complete, a sweep) slips in
                    // between, and only the embedding changes.
                    let mut t = tx.open_table(RECORDS).map_err(be)?;
                    let bytes = match t.get(id.as_str()).map_err(be)? {
                        Some(v) => {
                            let (mut r, _) = codec::decode(&id, v.value())?;
                            r.embedding = Some(vector);
                            codec::encode(&r, None)
                        }
                        None => return Ok(false),
                    };
                    t.insert(id.as_str(), bytes.as_slice()).map_err(be)?;
                }
                Ok(true)
            })
            .await
    }

    async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        let id = id.to_string();
        self.blocking(move |db| read_record(db, &id)).await
    }

    async fn latest_by_key(&self, scope: &str, k: &str) -> Result<Option<Record>, StoreError> {
        let k = key(&[scope, k]);
        self.blocking(move |db| read_pointer(db, BY_KEY, &k)).await
    }

    async fn latest_by_exact(&self, scope: &str, h: &str) -> Result<Option<Record>, StoreError> {
        let k = key(&[scope, h]);
        self.blocking(move |db| read_pointer(db, BY_EXACT, &k))
            .await
    }

    async fn resource_state(
        &self,
        scope: &str,
        resource: &str,
    ) -> Result<Option<ResourceState>, StoreError> {
        let k = key(&[scope, resource]);
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(be)?;
            let t = tx.open_table(BY_RESOURCE).map_err(be)?;
            let Some(v) = t.get(k.as_str()).map_err(be)? else {
                return Ok(None);
            };
            let e: ResourceEntry =
                serde_json::from_str(v.value()).map_err(|e| StoreError::Corrupt {
                    id: k.clone(),
                    reason: format!("resource entry: {e}"),
                })?;
            Ok(Some(e.state))
        })
        .await
    }

    async fn candidates(
        &self,
        scope: &str,
        tool: &str,
        fingerprint: &str,
        since: Millis,
        limit: usize,
    ) -> Result<Vec<Candidate>, StoreError> {
        let prefix = key(&[scope, tool, fingerprint]);
        self.blocking(move |db| {
            let (lo, hi) = prefix_range(&prefix);
            let tx = db.begin_read().map_err(be)?;
            let idx = tx.open_table(CANDIDATES).map_err(be)?;
            let mut out = Vec::new();
            for entry in idx.range(lo.as_str()..hi.as_str()).map_err(be)?.rev() {
                let (k, v) = entry.map_err(be)?;
                let id = k.value().rsplit(SEP).next().unwrap_or_default();
                let c = decode_candidate(id, v.value())?;
                if c.created_at_ms < since || out.len() >= limit {
                    break;
                }
                out.push(c);
            }
            Ok(out)
        })
        .await
    }

    async fn list(&self, q: &ListQuery) -> Result<Page, StoreError> {
        let q = q.clone();
        self.blocking(move |db| {
            let prefix = key(&[&q.tenant, &q.session]);
            let (lo, hi) = prefix_range(&prefix);
            let hi = match &q.page_token {
                Some(t) => key(&[&q.tenant, &q.session, t]),
                None => hi,
            };
            let tx = db.begin_read().map_err(be)?;
            let idx = tx.open_table(BY_SESSION).map_err(be)?;
            let recs = tx.open_table(RECORDS).map_err(be)?;
            let mut out: Vec<Record> = Vec::new();
            for entry in idx.range(lo.as_str()..hi.as_str()).map_err(be)?.rev() {
                let (k, _) = entry.map_err(be)?;
                let id = k.value().rsplit(SEP).next().unwrap_or_default().to_string();
                let Some(v) = recs.get(id.as_str()).map_err(be)? else {
                    continue;
                };
                let (r, _) = codec::decode(&id, v.value())?;
                if q.status.is_some_and(|s| s != r.status) {
                    continue;
                }
                if out.len() == q.page_size {
                    let next = out.last().map(|r| r.id.clone());
                    return Ok(Page { records: out, next });
                }
                out.push(r);
            }
            Ok(Page {
                records: out,
                next: None,
            })
        })
        .await
    }

    async fn sweep(&self, now: Millis) -> Result<Vec<(String, String)>, StoreError> {
        self.writer
            .write(true, move |tx| {
                let hi = expiry_key(now.saturating_add(1), "");
                let mut swept = Vec::new();
                {
                    let mut exp = tx.open_table(EXPIRY).map_err(be)?;
                    let mut recs = tx.open_table(RECORDS).map_err(be)?;
                    let mut by_key = tx.open_table(BY_KEY).map_err(be)?;
                    let mut by_exact = tx.open_table(BY_EXACT).map_err(be)?;
                    let mut by_resource = tx.open_table(BY_RESOURCE).map_err(be)?;
                    let mut cands = tx.open_table(CANDIDATES).map_err(be)?;
                    let mut by_session = tx.open_table(BY_SESSION).map_err(be)?;
                    let mut tenants = tx.open_table(TENANT_USAGE).map_err(be)?;
                    let mut sessions = tx.open_table(SESSION_USAGE).map_err(be)?;
                    let expired = keys_before(&exp, &hi)?;
                    let mut checks = tx.open_table(CHECKS).map_err(be)?;
                    let mut check_exp = tx.open_table(CHECK_EXPIRY).map_err(be)?;
                    let old_checks = keys_before(&check_exp, &hi)?;
                    for ck in old_checks {
                        check_exp.remove(ck.as_str()).map_err(be)?;
                        let id = ck.rsplit(SEP).next().unwrap_or_default();
                        checks.remove(id).map_err(be)?;
                    }
                    for ek in expired {
                        exp.remove(ek.as_str()).map_err(be)?;
                        let id = ek.rsplit(SEP).next().unwrap_or_default().to_string();
                        let r = match recs.remove(id.as_str()).map_err(be)? {
                            Some(v) => codec::decode(&id, v.value())?.0,
                            None => continue,
                        };
                        if let Some(k) = &r.idempotency_key {
                            let kk = key(&[&r.match_scope, k]);
                            if by_key
                                .get(kk.as_str())
                                .map_err(be)?
                                .is_some_and(|v| v.value() == id)
                            {
                                by_key.remove(kk.as_str()).map_err(be)?;
                            }
                        }
                        let xk = key(&[&r.match_scope, &r.exact_hash]);
                        if by_exact
                            .get(xk.as_str())
                            .map_err(be)?
                            .is_some_and(|v| v.value() == id)
                        {
                            by_exact.remove(xk.as_str()).map_err(be)?;
                        }
                        cands.remove(candidate_key(&r).as_str()).map_err(be)?;
                        if let Some(m) = &r.resource {
                            let rk = key(&[&r.match_scope, &m.key]);
                            let due = match by_resource.get(rk.as_str()).map_err(be)? {
                                Some(v) => serde_json::from_str::<ResourceEntry>(v.value())
                                    .map_or(true, |e| e.until <= now),
                                None => false,
                            };
                            if due {
                                by_resource.remove(rk.as_str()).map_err(be)?;
                            }
                        }
                        by_session
                            .remove(key(&[&r.tenant, &r.session, &id]).as_str())
                            .map_err(be)?;
                        give_share(&mut tenants, &mut sessions, &r)?;
                        swept.push((id, r.match_scope));
                    }
                }
                Ok(swept)
            })
            .await
    }

    async fn vectors(&self, now: Millis) -> Result<Vec<StoredVector>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(be)?;
            let recs = tx.open_table(RECORDS).map_err(be)?;
            let mut out = Vec::new();
            for entry in recs.iter().map_err(be)? {
                let (k, v) = entry.map_err(be)?;
                let (r, emb) = codec::decode(k.value(), v.value())?;
                let Some(emb) = emb.filter(|_| !r.is_expired(now)) else {
                    continue;
                };
                out.push(StoredVector {
                    id: r.id,
                    match_scope: r.match_scope,
                    vector: emb.to_vec(),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn put_session(
        &self,
        tenant: &str,
        session: &str,
        o: &SessionOverrides,
    ) -> Result<(), StoreError> {
        let k = key(&[tenant, session]);
        let json = serde_json::to_string(o).map_err(be)?;
        self.writer
            .write(true, move |tx| {
                tx.open_table(SESSIONS)
                    .map_err(be)?
                    .insert(k.as_str(), json.as_str())
                    .map_err(be)?;
                Ok(())
            })
            .await
    }

    async fn get_session(
        &self,
        tenant: &str,
        session: &str,
    ) -> Result<Option<SessionOverrides>, StoreError> {
        let k = key(&[tenant, session]);
        self.blocking(move |db| read_json(db, SESSIONS, &k)).await
    }

    async fn add_stats(
        &self,
        tenant: &str,
        session: &str,
        d: &StatsSnapshot,
    ) -> Result<(), StoreError> {
        let k = key(&[tenant, session]);
        let d = d.clone();
        self.writer
            .write(false, move |tx| {
                {
                    let mut t = tx.open_table(STATS).map_err(be)?;
                    let mut s: StatsSnapshot = match t.get(k.as_str()).map_err(be)? {
                        // Corrupt counters are reported, not silently restarted from zero.
                        Some(v) => {
                            serde_json::from_str(v.value()).map_err(|e| StoreError::Corrupt {
                                id: format!("stats {}", k.replace(SEP, "/")),
                                reason: e.to_string(),
                            })?
                        }
                        None => StatsSnapshot::default(),
                    };
                    s.merge(&d);
                    let json = serde_json::to_string(&s).map_err(be)?;
                    t.insert(k.as_str(), json.as_str()).map_err(be)?;
                }
                Ok(())
            })
            .await
    }

    async fn stats(
        &self,
        tenant: &str,
        session: Option<&str>,
    ) -> Result<StatsSnapshot, StoreError> {
        let tenant = tenant.to_string();
        let session = session.map(str::to_string);
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(be)?;
            let t = tx.open_table(STATS).map_err(be)?;
            let parse = |s: &str| serde_json::from_str::<StatsSnapshot>(s).unwrap_or_default();
            if let Some(s) = session {
                return Ok(t
                    .get(key(&[&tenant, &s]).as_str())
                    .map_err(be)?
                    .map(|v| parse(v.value()))
                    .unwrap_or_default());
            }
            let (lo, hi) = prefix_range(&tenant);
            let mut total = StatsSnapshot::default();
            for entry in t.range(lo.as_str()..hi.as_str()).map_err(be)? {
                let (_, v) = entry.map_err(be)?;
                total.merge(&parse(v.value()));
            }
            Ok(total)
        })
        .await
    }

    async fn put_checks(&self, logs: &[CheckLog]) -> Result<(), StoreError> {
        let logs = logs.to_vec();
        self.writer
            .write(false, move |tx| {
                {
                    let mut t = tx.open_table(CHECKS).map_err(be)?;
                    let mut e = tx.open_table(CHECK_EXPIRY).map_err(be)?;
                    for l in &logs {
                        let json = serde_json::to_string(l).map_err(be)?;
                        t.insert(l.check_id.as_str(), json.as_str()).map_err(be)?;
                        e.insert(expiry_key(l.expires_at_ms, &l.check_id).as_str(), ())
                            .map_err(be)?;
                    }
                }
                Ok(())
            })
            .await
    }

    async fn get_check(&self, check_id: &str) -> Result<Option<CheckLog>, StoreError> {
        let id = check_id.to_string();
        self.blocking(move |db| read_json(db, CHECKS, &id)).await
    }

    async fn put_feedback(&self, f: &Feedback) -> Result<(), StoreError> {
        let f = f.clone();
        self.writer
            .write(true, move |tx| {
                let json = serde_json::to_string(&f).map_err(be)?;
                tx.open_table(FEEDBACK)
                    .map_err(be)?
                    .insert(key(&[&f.tenant, &f.check_id]).as_str(), json.as_str())
                    .map_err(be)?;
                Ok(())
            })
            .await
    }

    async fn list_feedback(
        &self,
        tenant: &str,
        since: Millis,
    ) -> Result<Vec<Feedback>, StoreError> {
        let tenant = tenant.to_string();
        self.blocking(move |db| {
            let (lo, hi) = prefix_range(&tenant);
            let tx = db.begin_read().map_err(be)?;
            let t = tx.open_table(FEEDBACK).map_err(be)?;
            let mut out = Vec::new();
            for entry in t.range(lo.as_str()..hi.as_str()).map_err(be)? {
                let (k, v) = entry.map_err(be)?;
                let f: Feedback =
                    serde_json::from_str(v.value()).map_err(|e| StoreError::Corrupt {
                        id: k.value().to_string(),
                        reason: e.to_string(),
                    })?;
                if f.at_ms >= since {
                    out.push(f);
                }
            }
            out.sort_by(|a, b| (a.at_ms, &a.check_id).cmp(&(b.at_ms, &b.check_id)));
            Ok(out)
        })
        .await
    }
}
