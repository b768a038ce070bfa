//! Redis store (Redis 7 / Valkey, standalone or cluster): for several idem instances behind a
//! load balancer. Each scope's keys share one hash tag; a reservation is one Lua script that
//! inserts only if the scope's version is unchanged since the check read it. Record TTLs are
//! Redis expiries (the record's lifetime plus a grace, so a record is readable until swept).

mod conn;
mod keys;
mod scripts;

pub use conn::RedisOptions;

use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use self::conn::{Conn, timed};
use self::keys::{GlobalKeys, ScopeKeys, tag};
use self::scripts::Scripts;
use super::{
    Candidate, CheckLog, Feedback, ListQuery, Page, Reserved, SEP, StatsSnapshot, Store,
    StoreError, StoredVector,
};
use crate::clock::Millis;
use crate::config::SessionOverrides;
use crate::record::Record;

/// How long Redis keeps a record past its expiry, so the sweep (which also drops it from
/// the vector indexes) finds it; Redis deletes it then even when no instance sweeps.
const EXPIRY_GRACE_MS: i64 = 10 * 60 * 1000;
/// Sweep entries handled per sweep (the rest wait for the next one).
const SWEEP_BATCH: isize = 1000;
/// Intent-log entries read per round while filling a page.
const LIST_BATCH: isize = 64;

/// A store on Redis.
pub struct RedisStore {
    conn: Conn,
    url: String,
    timeout: Duration,
    prefix: String,
    scripts: Scripts,
}

/// What the sweep needs to find a record's index entries after Redis expired the record.
#[derive(Debug, Serialize, Deserialize)]
struct SweepEntry {
    id: String,
    scope: String,
    tool: String,
    fingerprint: String,
    exact: String,
    key: Option<String>,
    tenant: String,
    session: String,
}

impl SweepEntry {
    fn of(r: &Record) -> Self {
        Self {
            id: r.id.clone(),
            scope: r.match_scope.clone(),
            tool: r.tool.clone(),
            fingerprint: r.identity_fingerprint.clone(),
            exact: r.exact_hash.clone(),
            key: r.idempotency_key.clone(),
            tenant: r.tenant.clone(),
            session: r.session.clone(),
        }
    }
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
        }
    }

    /// Sends a command to Redis (PING), to fail at start when it cannot be reached.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        timed(&self.url, self.timeout, async move {
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

    async fn run<T>(
        &self,
        op: impl AsyncFnOnce(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut c = self.conn.clone();
        timed(&self.url, self.timeout, async move { op(&mut c).await }).await
    }

    /// The tag of the scope a call id belongs to.
    async fn scope_tag_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        let k = self.global().call_scope(id);
        self.run(async |c| c.get(&k).await).await
    }

    async fn insert_with(&self, r: &Record, seen: Option<u64>) -> Result<Reserved, StoreError> {
        let json = serde_json::to_string(r).map_err(|e| corrupt(&r.id, e))?;
        let ttl = ttl_ms(r.created_at_ms, r.expires_at_ms);
        let g = self.global();
        let scope_tag = tag(&r.match_scope);
        let sweep_member =
            serde_json::to_string(&SweepEntry::of(r)).map_err(|e| corrupt(&r.id, e))?;
        let log = g.session_log(&r.tenant, &r.session);
        let log_member = format!("{}{SEP}{scope_tag}", r.id);
        // Written before the reservation, so no acknowledged record lacks them; undone on a
        // conflict (a leftover only names a record that does not exist, which readers skip).
        self.pre_write(r, &scope_tag, ttl, &log, &log_member, &sweep_member)
            .await?;
        let k = ScopeKeys::of_tag(&self.prefix, &scope_tag);
        let vector = r.embedding.as_deref().map(vector_bytes).unwrap_or_default();
        let view = format!(
            "{}{SEP}{}{SEP}{}",
            r.created_at_ms, r.expires_at_ms, r.free_text
        );
        let mut inv = self.scripts.reserve.prepare_invoke();
        inv.key(k.version())
            .key(k.record(&r.id))
            .key(k.vector(&r.id))
            .key(k.candidate(&r.id))
            .key(k.candidates(&r.tool, &r.identity_fingerprint))
            .key(k.by_exact(&r.exact_hash));
        if let Some(key) = &r.idempotency_key {
            inv.key(k.by_key(key));
        }
        inv.arg(seen.map(|v| v.to_string()).unwrap_or_default())
            .arg(&r.id)
            .arg(json)
            .arg(vector)
            .arg(view)
            .arg(r.created_at_ms)
            .arg(ttl);
        let version: i64 = self.run(async |c| inv.invoke_async(c).await).await?;
        if version >= 0 {
            return Ok(Reserved::Inserted);
        }
        let (id_key, sweep) = (g.call_scope(&r.id), g.sweep());
        let undo = self
            .run(async |c| {
                redis::pipe()
                    .del(&id_key)
                    .ignore()
                    .query_async::<()>(c)
                    .await?;
                redis::pipe()
                    .zrem(&log, &log_member)
                    .ignore()
                    .query_async::<()>(c)
                    .await?;
                redis::pipe()
                    .zrem(&sweep, &sweep_member)
                    .ignore()
                    .query_async::<()>(c)
                    .await
            })
            .await;
        if let Err(e) = undo {
            tracing::debug!(%e, "undoing the entries of a conflicting reservation failed");
        }
        Ok(Reserved::Conflict)
    }

    /// The entries outside the scope's slot: call id to scope, the session's intent log, the
    /// sweep schedule. Each is in a slot of its own, so they are sent one by one.
    async fn pre_write(
        &self,
        r: &Record,
        scope_tag: &str,
        ttl: i64,
        log: &str,
        log_member: &str,
        sweep_member: &str,
    ) -> Result<(), StoreError> {
        let g = self.global();
        let (id_key, sweep) = (g.call_scope(&r.id), g.sweep());
        self.run(async |c| {
            let mut ic = c.clone();
            let set = async move {
                redis::pipe()
                    .set_options(
                        &id_key,
                        scope_tag,
                        redis::SetOptions::default()
                            .with_expiration(redis::SetExpiry::PX(ttl as u64)),
                    )
                    .ignore()
                    .query_async::<()>(&mut ic)
                    .await
            };
            let mut lc = c.clone();
            let add = async move {
                redis::pipe()
                    .zadd(log, log_member, 0)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(log)
                    .arg(ttl)
                    .arg("NX")
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(log)
                    .arg(ttl)
                    .arg("GT")
                    .ignore()
                    .query_async::<()>(&mut lc)
                    .await
            };
            let mut sc = c.clone();
            let schedule = async move {
                redis::pipe()
                    .zadd(&sweep, sweep_member, r.expires_at_ms)
                    .ignore()
                    .query_async::<()>(&mut sc)
                    .await
            };
            let (a, b, d) = tokio::join!(set, add, schedule);
            a.and(b).and(d)
        })
        .await
    }

    async fn get_record(&self, scope_tag: &str, id: &str) -> Result<Option<Record>, StoreError> {
        let k = ScopeKeys::of_tag(&self.prefix, scope_tag);
        let (rk, vk) = (k.record(id), k.vector(id));
        let (json, vector): (Option<String>, Option<Vec<u8>>) = self
            .run(async |c| redis::pipe().get(&rk).get(&vk).query_async(c).await)
            .await?;
        let Some(json) = json else { return Ok(None) };
        let mut r = decode(id, &json)?;
        r.embedding = vector.map(|b| vector_of(id, &b)).transpose()?;
        Ok(Some(r))
    }

    async fn latest(&self, scope: &str, index_key: String) -> Result<Option<Record>, StoreError> {
        let k = ScopeKeys::of_scope(&self.prefix, scope);
        let mut inv = self.scripts.latest.prepare_invoke();
        inv.key(&index_key).arg(k.base());
        let found: Vec<String> = self.run(async |c| inv.invoke_async(c).await).await?;
        found
            .first()
            .map(|json| decode(&index_key, json))
            .transpose()
    }

    /// Deletes one swept record's keys; `true` if this call removed its sweep entry (so
    /// several instances sweeping at once report each record once).
    async fn forget(&self, member: &str) -> Result<Option<(String, String)>, StoreError> {
        let g = self.global();
        let sweep = g.sweep();
        let removed: i64 = self.run(async |c| c.zrem(&sweep, member).await).await?;
        if removed == 0 {
            return Ok(None);
        }
        let e: SweepEntry =
            serde_json::from_str(member).map_err(|err| corrupt("sweep entry", err))?;
        let scope_tag = tag(&e.scope);
        let k = ScopeKeys::of_tag(&self.prefix, &scope_tag);
        let mut inv = self.scripts.forget.prepare_invoke();
        inv.key(k.record(&e.id))
            .key(k.vector(&e.id))
            .key(k.candidate(&e.id))
            .key(k.candidates(&e.tool, &e.fingerprint))
            .key(k.by_exact(&e.exact));
        if let Some(key) = &e.key {
            inv.key(k.by_key(key));
        }
        inv.arg(&e.id);
        self.run(async |c| inv.invoke_async::<i64>(c).await).await?;
        let (log, id_key) = (g.session_log(&e.tenant, &e.session), g.call_scope(&e.id));
        let log_member = format!("{}{SEP}{scope_tag}", e.id);
        self.run(async |c| {
            let _: () = c.zrem(&log, &log_member).await?;
            c.del::<_, ()>(&id_key).await
        })
        .await?;
        Ok(Some((e.id, e.scope)))
    }

    /// Fetches the records of intent-log members (`id SEP scope tag`), in order.
    async fn records_of(&self, members: &[String]) -> Result<Vec<Option<Record>>, StoreError> {
        let reads = members.iter().map(|m| async move {
            let (id, scope_tag) = m.split_once(SEP).ok_or_else(|| StoreError::Corrupt {
                id: m.clone(),
                reason: "intent-log entry without a scope".into(),
            })?;
            let k = ScopeKeys::of_tag(&self.prefix, scope_tag).record(id);
            let json: Option<String> = self.run(async |c| c.get(&k).await).await?;
            json.map(|j| decode(id, &j)).transpose()
        });
        join_all(reads).await.into_iter().collect()
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn scope_version(&self, scope: &str) -> Result<Option<u64>, StoreError> {
        let k = ScopeKeys::of_scope(&self.prefix, scope).version();
        let v: Option<u64> = self.run(async |c| c.get(&k).await).await?;
        Ok(Some(v.unwrap_or(0)))
    }

    async fn insert_if_unchanged(&self, r: &Record, seen: u64) -> Result<Reserved, StoreError> {
        self.insert_with(r, Some(seen)).await
    }

    async fn insert(&self, r: &Record) -> Result<(), StoreError> {
        self.insert_with(r, None).await.map(|_| ())
    }

    async fn update(&self, r: &Record) -> Result<(), StoreError> {
        let Some(scope_tag) = self.scope_tag_of(&r.id).await? else {
            return Err(StoreError::Missing(r.id.clone()));
        };
        let json = serde_json::to_string(r).map_err(|e| corrupt(&r.id, e))?;
        let k = ScopeKeys::of_tag(&self.prefix, &scope_tag);
        let vector = r.embedding.as_deref().map(vector_bytes).unwrap_or_default();
        let mut inv = self.scripts.update.prepare_invoke();
        inv.key(k.record(&r.id))
            .key(k.vector(&r.id))
            .arg(json)
            .arg(vector);
        let done: i64 = self.run(async |c| inv.invoke_async(c).await).await?;
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
            .arg(vector_bytes(vector));
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
        let log = self.global().session_log(&q.tenant, &q.session);
        let mut upper = match &q.page_token {
            Some(t) => format!("({t}"),
            None => "+".to_string(),
        };
        let mut out = Vec::new();
        loop {
            let members: Vec<String> = self
                .run(async |c| {
                    c.zrevrangebylex_limit(&log, &upper, "-", 0, LIST_BATCH)
                        .await
                })
                .await?;
            let records = self.records_of(&members).await?;
            for r in records.into_iter().flatten() {
                if q.status.is_some_and(|s| s != r.status) {
                    continue;
                }
                if out.len() == q.page_size {
                    let next = out.last().map(|r: &Record| r.id.clone());
                    return Ok(Page { records: out, next });
                }
                out.push(r);
            }
            match members.last() {
                Some(last) if members.len() as isize == LIST_BATCH => upper = format!("({last}"),
                _ => {
                    return Ok(Page {
                        records: out,
                        next: None,
                    });
                }
            }
        }
    }

    async fn sweep(&self, now: Millis) -> Result<Vec<(String, String)>, StoreError> {
        let sweep = self.global().sweep();
        let due: Vec<String> = self
            .run(async |c| {
                c.zrangebyscore_limit(&sweep, "-inf", now, 0, SWEEP_BATCH)
                    .await
            })
            .await?;
        let mut swept = Vec::new();
        for member in &due {
            swept.extend(self.forget(member).await?);
        }
        Ok(swept)
    }

    async fn vectors(&self, now: Millis) -> Result<Vec<StoredVector>, StoreError> {
        let sweep = self.global().sweep();
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let live: Vec<String> = self
                .run(async |c| {
                    c.zrangebyscore_limit(&sweep, format!("({now}"), "+inf", offset, SWEEP_BATCH)
                        .await
                })
                .await?;
            let reads = live.iter().map(|m| async move {
                let e: SweepEntry =
                    serde_json::from_str(m).map_err(|err| corrupt("sweep entry", err))?;
                let k = ScopeKeys::of_scope(&self.prefix, &e.scope).vector(&e.id);
                let bytes: Option<Vec<u8>> = self.run(async |c| c.get(&k).await).await?;
                bytes
                    .map(|b| {
                        Ok(StoredVector {
                            vector: vector_of(&e.id, &b)?,
                            id: e.id,
                            match_scope: e.scope,
                        })
                    })
                    .transpose()
            });
            for v in join_all(reads).await {
                out.extend(v?);
            }
            if (live.len() as isize) < SWEEP_BATCH {
                return Ok(out);
            }
            offset += SWEEP_BATCH;
        }
    }

    async fn put_session(
        &self,
        tenant: &str,
        session: &str,
        o: &SessionOverrides,
    ) -> Result<(), StoreError> {
        let k = self.global().session(tenant, session);
        let json = serde_json::to_string(o).map_err(|e| corrupt(&k, e))?;
        self.run(async |c| c.set(&k, json).await).await
    }

    async fn get_session(
        &self,
        tenant: &str,
        session: &str,
    ) -> Result<Option<SessionOverrides>, StoreError> {
        let k = self.global().session(tenant, session);
        let json: Option<String> = self.run(async |c| c.get(&k).await).await?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| corrupt(&k, e)))
            .transpose()
    }

    async fn add_stats(
        &self,
        tenant: &str,
        session: &str,
        d: &StatsSnapshot,
    ) -> Result<(), StoreError> {
        let k = self.global().stats(tenant);
        let f = |name: &str| format!("{session}{SEP}{name}");
        let mut p = redis::pipe();
        p.atomic()
            .hincr(&k, f("checks"), d.checks)
            .ignore()
            .hincr(&k, f("replays"), d.replays_served)
            .ignore()
            .hincr(&k, f("prevented"), d.duplicates_prevented)
            .ignore()
            .cmd("HINCRBYFLOAT")
            .arg(&k)
            .arg(f("cost"))
            .arg(d.cost_avoided)
            .ignore();
        for (verdict, n) in &d.by_verdict {
            p.hincr(&k, f(&format!("v{SEP}{verdict}")), *n).ignore();
        }
        for (stage, n) in &d.by_stage {
            p.hincr(&k, f(&format!("s{SEP}{stage}")), *n).ignore();
        }
        self.run(async |c| p.query_async(c).await).await
    }

    async fn stats(
        &self,
        tenant: &str,
        session: Option<&str>,
    ) -> Result<StatsSnapshot, StoreError> {
        let k = self.global().stats(tenant);
        let all: Vec<(String, String)> = self.run(async |c| c.hgetall(&k).await).await?;
        let mut s = StatsSnapshot::default();
        for (field, value) in all {
            let Some((sess, name)) = field.split_once(SEP) else {
                return Err(corrupt(&k, format!("counter field {field:?}")));
            };
            if session.is_some_and(|want| want != sess) {
                continue;
            }
            let count = || {
                value
                    .parse::<u64>()
                    .map_err(|e| corrupt(&k, format!("counter {field:?}: {e}")))
            };
            match name.split_once(SEP) {
                Some(("v", v)) => *s.by_verdict.entry(v.to_string()).or_default() += count()?,
                Some(("s", st)) => *s.by_stage.entry(st.to_string()).or_default() += count()?,
                _ => match name {
                    "checks" => s.checks += count()?,
                    "replays" => s.replays_served += count()?,
                    "prevented" => s.duplicates_prevented += count()?,
                    "cost" => {
                        s.cost_avoided += value
                            .parse::<f64>()
                            .map_err(|e| corrupt(&k, format!("counter {field:?}: {e}")))?
                    }
                    _ => return Err(corrupt(&k, format!("counter field {field:?}"))),
                },
            }
        }
        Ok(s)
    }

    async fn put_checks(&self, logs: &[CheckLog]) -> Result<(), StoreError> {
        let writes = logs.iter().map(|l| async move {
            let k = self.global().check(&l.check_id);
            let json = serde_json::to_string(l).map_err(|e| corrupt(&l.check_id, e))?;
            let ttl = ttl_ms(l.created_at_ms, l.expires_at_ms) as u64;
            self.run(async |c| c.pset_ex(&k, json, ttl).await).await
        });
        join_all(writes).await.into_iter().collect()
    }

    async fn get_check(&self, check_id: &str) -> Result<Option<CheckLog>, StoreError> {
        let k = self.global().check(check_id);
        let json: Option<String> = self.run(async |c| c.get(&k).await).await?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| corrupt(check_id, e)))
            .transpose()
    }

    async fn put_feedback(&self, f: &Feedback) -> Result<(), StoreError> {
        let g = self.global();
        let (by_id, times) = (g.feedback(&f.tenant), g.feedback_times(&f.tenant));
        let json = serde_json::to_string(f).map_err(|e| corrupt(&f.check_id, e))?;
        self.run(async |c| {
            redis::pipe()
                .atomic()
                .hset(&by_id, &f.check_id, json)
                .ignore()
                .zadd(&times, &f.check_id, f.at_ms)
                .ignore()
                .query_async(c)
                .await
        })
        .await
    }

    async fn list_feedback(
        &self,
        tenant: &str,
        since: Millis,
    ) -> Result<Vec<Feedback>, StoreError> {
        let g = self.global();
        let (by_id, times) = (g.feedback(tenant), g.feedback_times(tenant));
        let ids: Vec<String> = self
            .run(async |c| c.zrangebyscore(&times, since, "+inf").await)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let jsons: Vec<Option<String>> = self
            .run(async |c| {
                redis::cmd("HMGET")
                    .arg(&by_id)
                    .arg(&ids)
                    .query_async(c)
                    .await
            })
            .await?;
        let mut out: Vec<Feedback> = jsons
            .into_iter()
            .flatten()
            .map(|j| serde_json::from_str(&j).map_err(|e| corrupt(&by_id, e)))
            .collect::<Result<_, _>>()?;
        out.sort_by(|a, b| (a.at_ms, &a.check_id).cmp(&(b.at_ms, &b.check_id)));
        Ok(out)
    }
}

/// Redis's expiry for a record: its lifetime plus the grace.
fn ttl_ms(created: Millis, expires: Millis) -> i64 {
    expires
        .saturating_sub(created)
        .max(1)
        .saturating_add(EXPIRY_GRACE_MS)
}

fn corrupt(id: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id: id.to_string(),
        reason: e.to_string(),
    }
}

fn decode(id: &str, json: &str) -> Result<Record, StoreError> {
    serde_json::from_str(json).map_err(|e| corrupt(id, e))
}

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn vector_of(id: &str, b: &[u8]) -> Result<Vec<f32>, StoreError> {
    if b.len() % 4 != 0 {
        return Err(corrupt(id, format!("embedding of {} bytes", b.len())));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn candidate_of(id: &str, view: &str) -> Result<Candidate, StoreError> {
    let mut parts = view.splitn(3, SEP);
    let mut num = || {
        parts
            .next()
            .and_then(|p| p.parse::<Millis>().ok())
            .ok_or_else(|| corrupt(id, "candidate view"))
    };
    let created_at_ms = num()?;
    let expires_at_ms = num()?;
    let free_text = parts
        .next()
        .ok_or_else(|| corrupt(id, "candidate view without free text"))?
        .to_string();
    Ok(Candidate {
        id: id.to_string(),
        created_at_ms,
        expires_at_ms,
        free_text,
    })
}
