//! Redis store (Redis 7 / Valkey, standalone or cluster): for several idem instances behind a
//! load balancer. Each scope's keys share one hash tag; a reservation is one Lua script that
//! inserts only if the scope's version is unchanged since the check read it. Record TTLs are
//! Redis expiries (the record's lifetime plus a grace, so a record is readable until swept).

mod conn;
mod keys;
mod log;
mod meta;
mod reserve;
mod scripts;
mod values;
mod vlog;

pub use conn::RedisOptions;
#[cfg(test)]
pub(crate) use keys::tag as tag_of;

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use self::conn::{Bound, Conn, timed};
use self::keys::{GlobalKeys, ScopeKeys};
use self::scripts::Scripts;
use self::values::{candidate_of, corrupt, decode, record_bytes, vector_bytes, vector_of};
use self::vlog::VECTOR_LOG_LEN;
use super::{
    Candidate, CheckLog, Feedback, ListQuery, LogCursor, Page, Quota, Reserved, ScopeVectors,
    StatsSnapshot, Store, StoreError, StoredVector, Usage, VectorLog,
};
use crate::clock::Millis;
use crate::config::SessionOverrides;
use crate::record::{Record, ResourceState};

/// A store on Redis.
pub struct RedisStore {
    conn: Conn,
    url: String,
    timeout: Duration,
    prefix: String,
    scripts: Scripts,
    /// This handle's writer id (random at connect), logged with each vector it stores, so
    /// the vector log tells this instance's own writes (already indexed) from other
    /// instances' (fetched and indexed, replacing an older vector of the same call).
    writer: String,
}

/// A fresh writer id: 12 hex digits of a v7 uuid's random part (48 bits: a clash between
/// the few instances sharing a Redis is out of reach, and each log entry stays short).
fn new_writer() -> String {
    let u = uuid::Uuid::now_v7().simple().to_string();
    u[u.len() - 12..].to_string()
}

impl RedisStore {
    /// Connects to Redis as `o` says (lazily for a standalone server: idem starts, and answers
    /// UNAVAILABLE, while Redis is down).
    pub async fn connect(o: &RedisOptions) -> Result<Self, StoreError> {
        Ok(Self {
            conn: conn::connect(o).await?,
            url: o.url.clone(),
            timeout: o.timeout,
            prefix: o.prefix.clone(),
            scripts: Scripts::new(),
            writer: new_writer(),
        })
    }

    /// The same connection with keys under another prefix (an empty store for a test).
    pub fn with_prefix(&self, prefix: &str) -> Self {
        Self {
            conn: self.conn.clone(),
            url: self.url.clone(),
            timeout: self.timeout,
            prefix: prefix.to_string(),
            scripts: Scripts::new(),
            writer: self.writer.clone(),
        }
    }

    /// Sends a command to Redis (PING), to fail at start when it cannot be reached.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        timed(&self.url, self.timeout, Bound::Timeout, async move {
            redis::cmd("PING").query_async::<String>(&mut c).await
        })
        .await
        .map(|_| ())
    }

    fn global(&self) -> GlobalKeys<'_> {
        GlobalKeys {
            prefix: &self.prefix,
        }
    }

    /// Runs a read (or a write nothing was decided on) until the check's deadline or the
    /// timeout, whichever comes first.
    async fn run<T>(
        &self,
        op: impl AsyncFnOnce(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut c = self.conn.clone();
        timed(&self.url, self.timeout, Bound::Deadline, async move {
            op(&mut c).await
        })
        .await
    }

    /// Runs the write of a decision (a reservation, a Complete) until the timeout: a check
    /// that reached it late still records what it decided on a Redis that answers.
    async fn run_write<T>(
        &self,
        op: impl AsyncFnOnce(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut c = self.conn.clone();
        timed(&self.url, self.timeout, Bound::Timeout, async move {
            op(&mut c).await
        })
        .await
    }

    /// The tag of the scope a call id belongs to.
    async fn scope_tag_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        let k = self.global().call_scope(id);
        self.run(async |c| c.get(&k).await).await
    }

    async fn get_record(&self, scope_tag: &str, id: &str) -> Result<Option<Record>, StoreError> {
        let k = ScopeKeys::of_tag(&self.prefix, scope_tag);
        // One script: the record, its vector and its view (free text) as of one instant.
        let mut inv = self.scripts.vectors_of.prepare_invoke();
        inv.key(k.record(id)).key(k.vector(id)).key(k.candidate(id));
        let got: Vec<Option<Vec<u8>>> = self.run(async |c| inv.invoke_async(c).await).await?;
        let [Some(bytes), vector, view] = <[Option<Vec<u8>>; 3]>::try_from(got)
            .map_err(|got| corrupt(id, format!("{} values for a record", got.len())))?
        else {
            return Ok(None);
        };
        let mut r = decode(id, &bytes, view.as_deref())?;
        r.embedding = vector.map(|b| vector_of(id, &b)).transpose()?;
        Ok(Some(r))
    }

    async fn latest(&self, scope: &str, index_key: String) -> Result<Option<Record>, StoreError> {
        let k = ScopeKeys::of_scope(&self.prefix, scope);
        let mut inv = self.scripts.latest.prepare_invoke();
        inv.key(&index_key).arg(k.base());
        let found: Vec<Option<Vec<u8>>> = self.run(async |c| inv.invoke_async(c).await).await?;
        match found.as_slice() {
            [] => Ok(None),
            [Some(bytes), view] => decode(&index_key, bytes, view.as_deref()).map(Some),
            _ => Err(corrupt(
                &index_key,
                format!("{} values for a record", found.len()),
            )),
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn scope_version(&self, scope: &str) -> Result<Option<u64>, StoreError> {
        let k = ScopeKeys::of_scope(&self.prefix, scope).version();
        let v: Option<u64> = self.run(async |c| c.get(&k).await).await?;
        Ok(Some(v.unwrap_or(0)))
    }

    async fn insert_if_unchanged(
        &self,
        r: &Record,
        quota: &Quota,
        seen: u64,
    ) -> Result<Reserved, StoreError> {
        self.insert_with(r, quota, Some(seen)).await
    }

    async fn insert(&self, r: &Record, quota: &Quota) -> Result<(), StoreError> {
        self.insert_with(r, quota, None).await.map(|_| ())
    }

    async fn usage(&self, tenant: &str) -> Result<Usage, StoreError> {
        self.usage_of(tenant).await
    }

    fn has_vector_log(&self) -> bool {
        true
    }

    async fn vector_log(
        &self,
        scope: &str,
        after: &LogCursor,
        limit: usize,
    ) -> Result<VectorLog, StoreError> {
        self.log_after(scope, after, limit).await
    }

    async fn scope_vectors(
        &self,
        scope: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScopeVectors, StoreError> {
        self.vector_page(scope, after, limit).await
    }

    async fn vectors_of(
        &self,
        scope: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Vec<f32>>>, StoreError> {
        self.stored_vectors(scope, ids).await
    }

    async fn update(&self, r: &Record) -> Result<(), StoreError> {
        let Some(scope_tag) = self.scope_tag_of(&r.id).await? else {
            return Err(StoreError::Missing(r.id.clone()));
        };
        let json = record_bytes(r);
        let k = ScopeKeys::of_tag(&self.prefix, &scope_tag);
        let vector = r.embedding.as_deref().map(vector_bytes).unwrap_or_default();
        let mut inv = self.scripts.update.prepare_invoke();
        inv.key(k.record(&r.id))
            .key(k.vector(&r.id))
            .key(k.vector_log())
            .key(k.vector_ids())
            .arg(json)
            .arg(vector)
            .arg(VECTOR_LOG_LEN)
            .arg(&r.id)
            .arg(&self.writer);
        let done: i64 = self.run_write(async |c| inv.invoke_async(c).await).await?;
        if done == 0 {
            return Err(StoreError::Missing(r.id.clone()));
        }
        Ok(())
    }

    async fn put_embedding(&self, id: &str, vector: &[f32]) -> Result<bool, StoreError> {
        let Some(scope_tag) = self.scope_tag_of(id).await? else {
            return Ok(false);
        };
        let k = ScopeKeys::of_tag(&self.prefix, &scope_tag);
        let mut inv = self.scripts.put_embedding.prepare_invoke();
        inv.key(k.record(id))
            .key(k.vector(id))
            .key(k.vector_log())
            .key(k.vector_ids())
            .arg(vector_bytes(vector))
            .arg(VECTOR_LOG_LEN)
            .arg(id)
            .arg(&self.writer);
        let done: i64 = self.run(async |c| inv.invoke_async(c).await).await?;
        Ok(done == 1)
    }

    async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        match self.scope_tag_of(id).await? {
            Some(scope_tag) => self.get_record(&scope_tag, id).await,
            None => Ok(None),
        }
    }

    async fn latest_by_key(&self, scope: &str, key: &str) -> Result<Option<Record>, StoreError> {
        let k = ScopeKeys::of_scope(&self.prefix, scope).by_key(key);
        self.latest(scope, k).await
    }

    async fn latest_by_exact(
        &self,
        scope: &str,
        exact_hash: &str,
    ) -> Result<Option<Record>, StoreError> {
        let k = ScopeKeys::of_scope(&self.prefix, scope).by_exact(exact_hash);
        self.latest(scope, k).await
    }

    async fn resource_state(
        &self,
        scope: &str,
        resource: &str,
    ) -> Result<Option<ResourceState>, StoreError> {
        let k = ScopeKeys::of_scope(&self.prefix, scope).resource(resource);
        let json: Option<String> = self.run(async |c| c.get(&k).await).await?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| corrupt(&k, e)))
            .transpose()
    }

    async fn candidates(
        &self,
        scope: &str,
        tool: &str,
        fingerprint: &str,
        since: Millis,
        limit: usize,
    ) -> Result<Vec<Candidate>, StoreError> {
        let k = ScopeKeys::of_scope(&self.prefix, scope);
        let mut inv = self.scripts.candidates.prepare_invoke();
        inv.key(k.candidates(tool, fingerprint))
            .arg(since)
            .arg(limit)
            .arg(k.base());
        let flat: Vec<String> = self.run(async |c| inv.invoke_async(c).await).await?;
        flat.chunks_exact(2)
            .map(|pair| candidate_of(&pair[0], &pair[1]))
            .collect()
    }

    async fn list(&self, q: &ListQuery) -> Result<Page, StoreError> {
        self.list_page(q).await
    }

    async fn sweep(&self, now: Millis) -> Result<Vec<(String, String)>, StoreError> {
        self.sweep_due(now).await
    }

    async fn vectors(&self, now: Millis) -> Result<Vec<StoredVector>, StoreError> {
        self.live_vectors(now).await
    }

    async fn put_session(
        &self,
        tenant: &str,
        session: &str,
        o: &SessionOverrides,
    ) -> Result<(), StoreError> {
        self.save_session(tenant, session, o).await
    }

    async fn get_session(
        &self,
        tenant: &str,
        session: &str,
    ) -> Result<Option<SessionOverrides>, StoreError> {
        self.load_session(tenant, session).await
    }

    async fn add_stats(
        &self,
        tenant: &str,
        session: &str,
        d: &StatsSnapshot,
    ) -> Result<(), StoreError> {
        self.add_counters(tenant, session, d).await
    }

    async fn stats(
        &self,
        tenant: &str,
        session: Option<&str>,
    ) -> Result<StatsSnapshot, StoreError> {
        self.counters(tenant, session).await
    }

    async fn put_checks(&self, logs: &[CheckLog]) -> Result<(), StoreError> {
        self.save_checks(logs).await
    }

    async fn get_check(&self, check_id: &str) -> Result<Option<CheckLog>, StoreError> {
        self.load_check(check_id).await
    }

    async fn put_feedback(&self, f: &Feedback) -> Result<(), StoreError> {
        self.save_feedback(f).await
    }

    async fn list_feedback(
        &self,
        tenant: &str,
        since: Millis,
    ) -> Result<Vec<Feedback>, StoreError> {
        self.feedback_since(tenant, since).await
    }
}
