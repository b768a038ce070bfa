//! Reserving a call: its tenant's quota (one script in the tenant's slot) and the entries
//! outside the scope's slot at once, then the one script that inserts the record into its
//! scope if the scope's version is unchanged. A quota refusal undoes those entries before the
//! record is ever written; a reservation that does not happen gives its quota share back.

use super::RedisStore;
use super::keys::{ScopeKeys, tag};
use super::log::SweepEntry;
use super::values::{EXPIRY_GRACE_MS, corrupt, record_bytes, ttl_ms, vector_bytes, view_of};
use super::vlog::VECTOR_LOG_LEN;
use crate::record::{Record, ResourceState};
use crate::store::{Quota, QuotaExceeded, QuotaLimit, Reserved, SEP, StoreError, Usage};

impl RedisStore {
    /// Inserts a record (with `seen`, only if its scope is still at that version).
    pub(super) async fn insert_with(
        &self,
        r: &Record,
        quota: &Quota,
        seen: Option<u64>,
    ) -> Result<Reserved, StoreError> {
        let out = self.reserve_counted(r, quota, seen).await;
        if !matches!(out, Ok(Reserved::Inserted) | Err(StoreError::Quota(_))) {
            // Not stored (a conflict, or a failure that may or may not have stored it: then
            // the sweep entry, if written, gives the share back again, which is a no-op).
            let share = [(r.session.as_str(), r.id.as_str())];
            if let Err(e) = self.give_shares(&r.tenant, &share).await {
                tracing::debug!(%e, "giving back the quota share of an unstored call failed");
            }
        }
        out
    }

    /// Counts `r` against its tenant's quota (`QUOTA_TAKE`), or refuses it.
    async fn take_share(&self, r: &Record, quota: &Quota) -> Result<(), StoreError> {
        let g = self.global();
        let limit = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        let mut inv = self.scripts.quota_take.prepare_invoke();
        inv.key(g.held(&r.tenant))
            .key(g.held_sessions(&r.tenant))
            .arg(format!("{}{SEP}{}", r.session, r.id))
            .arg(&r.session)
            .arg(r.expires_at_ms)
            .arg(limit(quota.max_records))
            .arg(limit(quota.max_sessions))
            .arg(r.created_at_ms.saturating_sub(EXPIRY_GRACE_MS));
        let (code, count): (i64, u64) = self.run_write(async |c| inv.invoke_async(c).await).await?;
        let (limit, max) = match code {
            0 => return Ok(()),
            1 => (QuotaLimit::Records, quota.max_records),
            _ => (QuotaLimit::Sessions, quota.max_sessions),
        };
        Err(StoreError::Quota(QuotaExceeded {
            tenant: r.tenant.clone(),
            session: r.session.clone(),
            limit,
            max: max.unwrap_or_default(),
            count,
        }))
    }

    /// Gives back the quota shares of `tenant`'s records (session, id) in one step
    /// (`QUOTA_GIVE`; each once, however often called).
    pub(super) async fn give_shares(
        &self,
        tenant: &str,
        records: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let g = self.global();
        let mut inv = self.scripts.quota_give.prepare_invoke();
        inv.key(g.held(tenant)).key(g.held_sessions(tenant));
        for (session, id) in records {
            inv.arg(format!("{session}{SEP}{id}")).arg(*session);
        }
        self.run_write(async |c| inv.invoke_async::<i64>(c).await)
            .await
            .map(|_| ())
    }

    /// What `tenant` holds (`Store::usage`).
    pub(super) async fn usage_of(&self, tenant: &str) -> Result<Usage, StoreError> {
        let g = self.global();
        let (held, sessions) = (g.held(tenant), g.held_sessions(tenant));
        let (records, sessions): (u64, u64) = self
            .run(async |c| {
                redis::pipe()
                    .zcard(&held)
                    .hlen(&sessions)
                    .query_async(c)
                    .await
            })
            .await?;
        Ok(Usage { records, sessions })
    }

    /// The reservation of a call, counted against its quota.
    async fn reserve_counted(
        &self,
        r: &Record,
        quota: &Quota,
        seen: Option<u64>,
    ) -> Result<Reserved, StoreError> {
        let json = record_bytes(r);
        let ttl = ttl_ms(r.created_at_ms, r.expires_at_ms);
        let g = self.global();
        let scope_tag = tag(&r.match_scope);
        let sweep_member = SweepEntry::of(r).member();
        let log = g.session_log(&r.tenant, &r.session);
        let log_member = format!("{}{SEP}{scope_tag}", r.id);
        // Written before the reservation, so no acknowledged record lacks them; undone on a
        // conflict or a quota refusal (a leftover only names a record that does not exist,
        // which readers skip). The quota is taken meanwhile: no round trip of its own.
        let (taken, written) = tokio::join!(
            self.take_share(r, quota),
            self.pre_write(r, &scope_tag, ttl, &log, &log_member, &sweep_member)
        );
        if let Err(e) = taken {
            if written.is_ok() {
                self.undo_pre_write(r, &log, &log_member, &sweep_member)
                    .await;
            }
            return Err(e);
        }
        written?;
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
            // Unused keys still name the scope's slot (a cluster routes by them).
            .key(k.by_key(r.idempotency_key.as_deref().unwrap_or_default()));
        let resource = match ResourceState::of(r) {
            Some((res, state)) => {
                inv.key(k.resource(&res));
                serde_json::to_string(&state).map_err(|e| corrupt(&r.id, e))?
            }
            None => {
                inv.key(k.resource(""));
                String::new()
            }
        };
        inv.key(k.vector_log()).key(k.vector_ids());
        inv.arg(seen.map(|v| v.to_string()).unwrap_or_default())
            .arg(&r.id)
            .arg(json)
            .arg(vector)
            .arg(view)
            .arg(r.created_at_ms)
            .arg(ttl)
            .arg(if r.idempotency_key.is_some() { "1" } else { "" })
            .arg(resource)
            .arg(VECTOR_LOG_LEN)
            .arg(&self.writer);
        let version: i64 = self.run_write(async |c| inv.invoke_async(c).await).await?;
        if version >= 0 {
            return Ok(Reserved::Inserted);
        }
        self.undo_pre_write(r, &log, &log_member, &sweep_member)
            .await;
        Ok(Reserved::Conflict)
    }

    /// Removes the entries `pre_write` wrote for a call that was not stored.
    async fn undo_pre_write(&self, r: &Record, log: &str, log_member: &str, sweep_member: &str) {
        let g = self.global();
        let (id_key, sweep) = (g.call_scope(&r.id), g.sweep());
        let undo = self
            .run(async |c| {
                redis::pipe()
                    .del(&id_key)
                    .ignore()
                    .query_async::<()>(c)
                    .await?;
                redis::pipe()
                    .zrem(log, log_member)
                    .ignore()
                    .query_async::<()>(c)
                    .await?;
                redis::pipe()
                    .zrem(&sweep, sweep_member)
                    .ignore()
                    .query_async::<()>(c)
                    .await
            })
            .await;
        if let Err(e) = undo {
            tracing::debug!(%e, "undoing the entries of an unstored reservation failed");
        }
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
