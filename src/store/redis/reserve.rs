//! Reserving a call: the entries outside the scope's slot first, then the one script that
//! inserts the record into its scope if the scope's version is unchanged.

use super::RedisStore;
use super::keys::{ScopeKeys, tag};
use super::log::SweepEntry;
use super::values::{corrupt, ttl_ms, vector_bytes, view_of};
use super::vlog::VECTOR_LOG_LEN;
use crate::record::Record;
use crate::store::{Reserved, SEP, StoreError};

impl RedisStore {
    /// Inserts a record (with `seen`, only if its scope is still at that version).
    pub(super) async fn insert_with(
        &self,
        r: &Record,
        seen: Option<u64>,
    ) -> Result<Reserved, StoreError> {
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
        let view = view_of(r);
        let mut inv = self.scripts.reserve.prepare_invoke();
        inv.key(k.version())
            .key(k.record(&r.id))
            .key(k.vector(&r.id))
            .key(k.candidate(&r.id))
            .key(k.candidates(&r.tool, &r.identity_fingerprint))
            .key(k.by_exact(&r.exact_hash))
            .key(k.vector_log())
            .key(k.vector_ids());
        if let Some(key) = &r.idempotency_key {
            inv.key(k.by_key(key));
        }
        inv.arg(seen.map(|v| v.to_string()).unwrap_or_default())
            .arg(&r.id)
            .arg(json)
            .arg(vector)
            .arg(view)
            .arg(r.created_at_ms)
            .arg(ttl)
            .arg(VECTOR_LOG_LEN);
        let version: i64 = self.run_write(async |c| inv.invoke_async(c).await).await?;
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
        self.run_write(async |c| {
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
}
