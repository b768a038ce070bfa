//! The intent log of a session (`ListCalls`), the sweep schedule and what is read through it
//! (expired records to delete, live embeddings to index at start).

use futures::future::join_all;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::RedisStore;
use super::keys::{ScopeKeys, tag};
use super::values::{corrupt, decode, vector_of};
use super::vlog::VECTOR_LOG_LEN;
use crate::clock::Millis;
use crate::record::Record;
use crate::store::{ListQuery, Page, SEP, StoreError, StoredVector};

/// Sweep entries read per round.
const SWEEP_BATCH: isize = 1000;
/// Sweep entries handled per sweep at most (the rest wait for the next one).
const SWEEP_MAX: usize = 100_000;
/// Records deleted at once.
const SWEEP_PARALLEL: usize = 32;
/// Intent-log entries read per round while filling a page.
const LIST_BATCH: isize = 64;

/// Separates a sweep entry's fields: no name, digest or id holds it (names may not hold
/// control characters), and the idempotency key, which may, comes last.
const FIELD: char = '\u{1d}';

/// What the sweep needs to find a record's index entries after Redis expired the record.
/// Stored as its fields joined by `FIELD` (an earlier version wrote JSON: still read).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct SweepEntry {
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
    pub(super) fn of(r: &Record) -> Self {
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

    /// The sweep schedule's member: the fields joined, the key last (`-` none, `+key`).
    pub(super) fn member(&self) -> String {
        let key = match &self.key {
            Some(k) => format!("+{k}"),
            None => "-".to_string(),
        };
        [
            self.id.as_str(),
            &self.scope,
            &self.tool,
            &self.fingerprint,
            &self.exact,
            &self.tenant,
            &self.session,
            &key,
        ]
        .join(&FIELD.to_string())
    }

    /// Reads a member `member` wrote (or an earlier version's JSON).
    pub(super) fn parse(member: &str) -> Result<Self, StoreError> {
        if member.starts_with('{') {
            return serde_json::from_str(member).map_err(|e| corrupt("sweep entry", e));
        }
        let f: Vec<&str> = member.splitn(8, FIELD).collect();
        let [id, scope, tool, fingerprint, exact, tenant, session, key] = f[..] else {
            return Err(corrupt("sweep entry", format!("{} fields", f.len())));
        };
        let key = match key.split_at_checked(1) {
            Some(("+", k)) => Some(k.to_string()),
            Some(("-", "")) => None,
            _ => return Err(corrupt("sweep entry", "idempotency key field")),
        };
        Ok(Self {
            id: id.into(),
            scope: scope.into(),
            tool: tool.into(),
            fingerprint: fingerprint.into(),
            exact: exact.into(),
            key,
            tenant: tenant.into(),
            session: session.into(),
        })
    }
}

impl RedisStore {
    /// Deletes one swept record's keys; its entry if this call removed its sweep entry (so
    /// several instances sweeping at once report each record once, and give its quota share
    /// back once).
    async fn forget(&self, member: &str) -> Result<Option<SweepEntry>, StoreError> {
        let g = self.global();
        let sweep = g.sweep();
        let removed: i64 = self.run(async |c| c.zrem(&sweep, member).await).await?;
        if removed == 0 {
            return Ok(None);
        }
        let e = SweepEntry::parse(member)?;
        let scope_tag = tag(&e.scope);
        let k = ScopeKeys::of_tag(&self.prefix, &scope_tag);
        let mut inv = self.scripts.forget.prepare_invoke();
        inv.key(k.record(&e.id))
            .key(k.vector(&e.id))
            .key(k.candidate(&e.id))
            .key(k.candidates(&e.tool, &e.fingerprint))
            .key(k.by_exact(&e.exact))
            .key(k.vector_log())
            .key(k.vector_ids());
        if let Some(key) = &e.key {
            inv.key(k.by_key(key));
        }
        inv.arg(&e.id).arg(VECTOR_LOG_LEN);
        self.run(async |c| inv.invoke_async::<i64>(c).await).await?;
        let (log, id_key) = (g.session_log(&e.tenant, &e.session), g.call_scope(&e.id));
        let log_member = format!("{}{SEP}{scope_tag}", e.id);
        self.run(async |c| {
            let _: () = c.zrem(&log, &log_member).await?;
            c.del::<_, ()>(&id_key).await
        })
        .await?;
        Ok(Some(e))
    }

    /// Fetches the records of intent-log members (`id SEP scope tag`), in order.
    async fn records_of(&self, members: &[String]) -> Result<Vec<Option<Record>>, StoreError> {
        let reads = members.iter().map(|m| async move {
            let (id, scope_tag) = m.split_once(SEP).ok_or_else(|| StoreError::Corrupt {
                id: m.clone(),
                reason: "intent-log entry without a scope".into(),
            })?;
            let k = ScopeKeys::of_tag(&self.prefix, scope_tag);
            // The record and its view (free text) as of one instant.
            let mut inv = self.scripts.vectors_of.prepare_invoke();
            inv.key(k.record(id)).key(k.candidate(id));
            let got: Vec<Option<Vec<u8>>> = self.run(async |c| inv.invoke_async(c).await).await?;
            match got.as_slice() {
                [None, _] => Ok(None),
                [Some(bytes), view] => decode(id, bytes, view.as_deref()).map(Some),
                _ => Err(corrupt(id, format!("{} values for a record", got.len()))),
            }
        });
        join_all(reads).await.into_iter().collect()
    }

    /// A page of a session's intent log, newest first (`Store::list`).
    pub(super) async fn list_page(&self, q: &ListQuery) -> Result<Page, StoreError> {
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

    /// Deletes the records expired at `now`, a batch at a time, up to `SWEEP_MAX` per sweep
    /// (`Store::sweep`); entries several instances race for are deleted once.
    pub(super) async fn sweep_due(&self, now: Millis) -> Result<Vec<(String, String)>, StoreError> {
        let sweep = self.global().sweep();
        let mut swept = Vec::new();
        let mut seen = 0;
        while seen < SWEEP_MAX {
            let due: Vec<String> = self
                .run(async |c| {
                    c.zrangebyscore_limit(&sweep, "-inf", now, 0, SWEEP_BATCH)
                        .await
                })
                .await?;
            seen += due.len();
            for chunk in due.chunks(SWEEP_PARALLEL) {
                let mut gone = Vec::new();
                for e in join_all(chunk.iter().map(|m| self.forget(m))).await {
                    gone.extend(e?);
                }
                // Quota shares go back per tenant, one script each.
                let mut by_tenant: std::collections::BTreeMap<&str, Vec<(&str, &str)>> =
                    Default::default();
                for e in &gone {
                    by_tenant
                        .entry(e.tenant.as_str())
                        .or_default()
                        .push((e.session.as_str(), e.id.as_str()));
                }
                for (tenant, records) in &by_tenant {
                    self.give_shares(tenant, records).await?;
                }
                swept.extend(gone.into_iter().map(|e| (e.id, e.scope)));
            }
            if (due.len() as isize) < SWEEP_BATCH {
                break;
            }
        }
        Ok(swept)
    }

    /// Every stored embedding of a record live at `now` (`Store::vectors`).
    pub(super) async fn live_vectors(&self, now: Millis) -> Result<Vec<StoredVector>, StoreError> {
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
                let e = SweepEntry::parse(m)?;
                let k = ScopeKeys::of_scope(&self.prefix, &e.scope).vector(&e.id);
                let bytes: Option<Vec<u8>> = self.run(async |c| c.get(&k).await).await?;
                bytes
                    .map(|b| {
                        Ok::<_, StoreError>(StoredVector {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_entry_round_trips_and_earlier_json_is_read() {
        let mut r = crate::store::conformance::rec("s1", 1, 1000);
        for key in [
            None,
            Some(String::new()),
            Some(format!("k{FIELD}with{SEP}sep")),
        ] {
            r.idempotency_key = key;
            let e = SweepEntry::of(&r);
            assert_eq!(SweepEntry::parse(&e.member()).unwrap(), e);
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(SweepEntry::parse(&json).unwrap(), e);
            assert!(e.member().len() < json.len());
        }
        assert!(SweepEntry::parse("a\u{1d}b").is_err());
    }
}
