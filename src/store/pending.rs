//! Inserts whose commit is still running, visible to this instance's lookups.
//!
//! A NEW is decided under its scope's lock, but its durable write (an fsync) need not hold the
//! lock: the engine registers the record here, lets go of the lock and then commits. Checks of
//! the same scope that run meanwhile must still see it, or two of them would both answer NEW.
//! So lookups through [`PendingInserts`] see registered records, but never answer from one that
//! is not durable: a lookup that hits one waits for its commit and then reads the store (where
//! it now is, or is not, if the commit failed). Candidate lists include registered records
//! without waiting (they are only compared; the one that matches is loaded with `get`, which
//! waits). Concurrent NEWs of one scope so share one group commit instead of queueing behind
//! each other's fsync.

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use tokio::sync::watch;

use super::{
    Candidate, CheckLog, Feedback, ListQuery, LogCursor, Page, Quota, Reserved, ScopeVectors,
    StatsSnapshot, Store, StoreError, StoredVector, Usage, VectorLog,
};
use crate::clock::Millis;
use crate::config::SessionOverrides;
use crate::record::{Record, ResourceState};

/// A registered insert: the record, and whether its commit has finished.
struct Entry {
    record: Record,
    committed: watch::Receiver<bool>,
}

/// A store whose registered inserts are visible to lookups while they commit (module docs).
pub struct PendingInserts {
    inner: Arc<dyn Store>,
    /// Per match scope, the inserts registered and not yet finished (a handful at most: one
    /// per check of the scope between its decision and its commit).
    scopes: DashMap<String, Vec<Arc<Entry>>>,
}

/// A registered insert; [`Ticket::commit`] writes it. Dropped without a commit, the
/// registration is withdrawn (a cancelled check records nothing).
pub struct Ticket<'a> {
    owner: &'a PendingInserts,
    entry: Arc<Entry>,
    done: watch::Sender<bool>,
}

impl PendingInserts {
    /// Lookups over `inner` that see registered inserts.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            scopes: DashMap::new(),
        }
    }

    /// Registers `record`: from now on lookups of its scope see it. The caller holds the
    /// scope's lock while registering, so no check of the scope decides without it.
    pub fn register(&self, record: Record) -> Ticket<'_> {
        let (done, committed) = watch::channel(false);
        let entry = Arc::new(Entry { record, committed });
        self.scopes
            .entry(entry.record.match_scope.clone())
            .or_default()
            .push(entry.clone());
        Ticket {
            owner: self,
            entry,
            done,
        }
    }

    /// Inserts registered in `scope` that satisfy `pick`.
    fn registered(&self, scope: &str, pick: impl Fn(&Record) -> bool) -> Vec<Arc<Entry>> {
        self.scopes
            .get(scope)
            .map(|v| v.iter().filter(|e| pick(&e.record)).cloned().collect())
            .unwrap_or_default()
    }

    /// Waits until each of `entries` has committed or failed (then it is in the store, or not).
    async fn settle(entries: Vec<Arc<Entry>>) {
        for e in entries {
            let mut rx = e.committed.clone();
            // An error means the ticket is gone: the commit finished either way.
            let _ = rx.wait_for(|done| *done).await;
        }
    }

    fn withdraw(&self, entry: &Arc<Entry>) {
        let scope = &entry.record.match_scope;
        if let Some(mut v) = self.scopes.get_mut(scope) {
            v.retain(|e| !Arc::ptr_eq(e, entry));
        }
        self.scopes.remove_if(scope, |_, v| v.is_empty());
    }

    /// Inserts registered and not finished (for tests and metrics).
    pub fn in_flight(&self) -> usize {
        self.scopes.iter().map(|v| v.len()).sum()
    }
}

impl Ticket<'_> {
    /// Writes the record durably unless it passes `quota`; lookups that waited for it then
    /// read the store.
    pub async fn commit(self, quota: &Quota) -> Result<(), StoreError> {
        self.owner.inner.insert(&self.entry.record, quota).await
        // Drop withdraws the registration and wakes the waiters.
    }

    /// Writes the record if its scope's version is still `seen` (a store several instances
    /// share; `None`: unconditionally) and it fits `quota`. `ScopeChanged` when another
    /// insert came first: nothing is written and the registration is withdrawn.
    pub async fn commit_unless_changed(
        self,
        seen: Option<u64>,
        quota: &Quota,
    ) -> Result<(), StoreError> {
        let Some(v) = seen else {
            return self.commit(quota).await;
        };
        match self
            .owner
            .inner
            .insert_if_unchanged(&self.entry.record, quota, v)
            .await?
        {
            Reserved::Inserted => Ok(()),
            Reserved::Conflict => Err(StoreError::ScopeChanged),
        }
    }

    /// The registered record.
    pub fn record(&self) -> &Record {
        &self.entry.record
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        // Withdrawn before the waiters wake, so what they read next is the store alone.
        self.owner.withdraw(&self.entry);
        self.done.send_replace(true);
    }
}

#[async_trait]
impl Store for PendingInserts {
    async fn scope_version(&self, scope: &str) -> Result<Option<u64>, StoreError> {
        self.inner.scope_version(scope).await
    }

    async fn insert_if_unchanged(
        &self,
        record: &Record,
        quota: &Quota,
        seen: u64,
    ) -> Result<Reserved, StoreError> {
        match self
            .register(record.clone())
            .commit_unless_changed(Some(seen), quota)
            .await
        {
            Ok(()) => Ok(Reserved::Inserted),
            Err(StoreError::ScopeChanged) => Ok(Reserved::Conflict),
            Err(e) => Err(e),
        }
    }

    async fn insert(&self, record: &Record, quota: &Quota) -> Result<(), StoreError> {
        self.register(record.clone()).commit(quota).await
    }

    async fn usage(&self, tenant: &str) -> Result<Usage, StoreError> {
        self.inner.usage(tenant).await
    }

    async fn update(&self, record: &Record) -> Result<(), StoreError> {
        Self::settle(self.registered(&record.match_scope, |r| r.id == record.id)).await;
        self.inner.update(record).await
    }

    async fn put_embedding(&self, id: &str, vector: &[f32]) -> Result<bool, StoreError> {
        Self::settle(self.by_id(id)).await;
        self.inner.put_embedding(id, vector).await
    }

    async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        Self::settle(self.by_id(id)).await;
        self.inner.get(id).await
    }

    async fn latest_by_key(&self, scope: &str, key: &str) -> Result<Option<Record>, StoreError> {
        Self::settle(self.registered(scope, |r| r.idempotency_key.as_deref() == Some(key))).await;
        self.inner.latest_by_key(scope, key).await
    }

    async fn latest_by_exact(
        &self,
        scope: &str,
        exact_hash: &str,
    ) -> Result<Option<Record>, StoreError> {
        Self::settle(self.registered(scope, |r| r.exact_hash == exact_hash)).await;
        self.inner.latest_by_exact(scope, exact_hash).await
    }

    async fn resource_state(
        &self,
        scope: &str,
        resource: &str,
    ) -> Result<Option<ResourceState>, StoreError> {
        Self::settle(self.registered(scope, |r| {
            r.resource.as_ref().is_some_and(|m| m.key == resource)
        }))
        .await;
        self.inner.resource_state(scope, resource).await
    }

    async fn candidates(
        &self,
        scope: &str,
        tool: &str,
        fingerprint: &str,
        since: Millis,
        limit: usize,
    ) -> Result<Vec<Candidate>, StoreError> {
        // Registered first: one that commits meanwhile is then also in the store's answer
        // (and dropped below as a repeat) rather than in neither.
        let registered = self.registered(scope, |r| {
            r.tool == tool && r.identity_fingerprint == fingerprint && r.created_at_ms >= since
        });
        let mut out = self
            .inner
            .candidates(scope, tool, fingerprint, since, limit)
            .await?;
        if registered.is_empty() {
            return Ok(out);
        }
        let mut fresh: Vec<Candidate> = registered
            .iter()
            .map(|e| Candidate::of(&e.record))
            .filter(|c| !out.iter().any(|o| o.id == c.id))
            .collect();
        fresh.sort_by_key(|c| std::cmp::Reverse(c.created_at_ms));
        fresh.append(&mut out);
        fresh.truncate(limit);
        Ok(fresh)
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.inner.list(query).await
    }

    async fn sweep(&self, now: Millis) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.sweep(now).await
    }

    async fn vectors(&self, now: Millis) -> Result<Vec<StoredVector>, StoreError> {
        self.inner.vectors(now).await
    }

    fn has_vector_log(&self) -> bool {
        self.inner.has_vector_log()
    }

    async fn vector_log(
        &self,
        scope: &str,
        after: &LogCursor,
        limit: usize,
    ) -> Result<VectorLog, StoreError> {
        self.inner.vector_log(scope, after, limit).await
    }

    async fn scope_vectors(
        &self,
        scope: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScopeVectors, StoreError> {
        self.inner.scope_vectors(scope, after, limit).await
    }

    async fn vectors_of(
        &self,
        scope: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Vec<f32>>>, StoreError> {
        self.inner.vectors_of(scope, ids).await
    }

    async fn put_session(
        &self,
        tenant: &str,
        session: &str,
        o: &SessionOverrides,
    ) -> Result<(), StoreError> {
        self.inner.put_session(tenant, session, o).await
    }

    async fn get_session(
        &self,
        tenant: &str,
        session: &str,
    ) -> Result<Option<SessionOverrides>, StoreError> {
        self.inner.get_session(tenant, session).await
    }

    async fn add_stats(
        &self,
        tenant: &str,
        session: &str,
        delta: &StatsSnapshot,
    ) -> Result<(), StoreError> {
        self.inner.add_stats(tenant, session, delta).await
    }

    async fn stats(
        &self,
        tenant: &str,
        session: Option<&str>,
    ) -> Result<StatsSnapshot, StoreError> {
        self.inner.stats(tenant, session).await
    }

    async fn put_checks(&self, logs: &[CheckLog]) -> Result<(), StoreError> {
        self.inner.put_checks(logs).await
    }

    async fn get_check(&self, check_id: &str) -> Result<Option<CheckLog>, StoreError> {
        self.inner.get_check(check_id).await
    }

    async fn put_feedback(&self, f: &Feedback) -> Result<(), StoreError> {
        self.inner.put_feedback(f).await
    }

    async fn list_feedback(
        &self,
        tenant: &str,
        since: Millis,
    ) -> Result<Vec<Feedback>, StoreError> {
        self.inner.list_feedback(tenant, since).await
    }
}

impl PendingInserts {
    /// The registered insert with record id `id`, in whatever scope (ids are unique; the
    /// map holds a handful of entries).
    fn by_id(&self, id: &str) -> Vec<Arc<Entry>> {
        self.scopes
            .iter()
            .flat_map(|v| {
                v.iter()
                    .filter(|e| e.record.id == id)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::MemoryStore;

    fn record(id: &str, hash: &str) -> Record {
        Record {
            id: id.into(),
            match_scope: "scope".into(),
            exact_hash: hash.into(),
            created_at_ms: 10,
            ..crate::store::conformance::rec("s", 1, 10)
        }
    }

    fn overlay() -> Arc<PendingInserts> {
        Arc::new(PendingInserts::new(Arc::new(MemoryStore::new())))
    }

    #[tokio::test]
    async fn a_lookup_that_hits_a_registered_insert_waits_for_its_commit() {
        let store = overlay();
        let ticket = store.register(record("a", "h1"));
        let lookup = tokio::spawn({
            let store = store.clone();
            async move { store.latest_by_exact("scope", "h1").await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(
            !lookup.is_finished(),
            "answered from a record not yet durable"
        );
        ticket.commit(&Quota::UNLIMITED).await.unwrap();
        let found = lookup
            .await
            .unwrap()
            .unwrap()
            .expect("the committed record");
        assert_eq!(found.id, "a");
        assert_eq!(store.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_withdrawn_insert_is_not_found_by_those_that_waited_for_it() {
        let store = overlay();
        let ticket = store.register(record("a", "h1"));
        let get = tokio::spawn({
            let store = store.clone();
            async move { store.get("a").await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!get.is_finished());
        drop(ticket);
        assert!(get.await.unwrap().unwrap().is_none());
        assert!(
            store
                .latest_by_exact("scope", "h1")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn candidates_include_registered_inserts_at_once_without_duplicates() {
        let store = overlay();
        let (old_id, new_id) = (
            uuid::Uuid::now_v7().to_string(),
            uuid::Uuid::now_v7().to_string(),
        );
        store
            .insert(&record(&old_id, "h0"), &Quota::UNLIMITED)
            .await
            .unwrap();
        let ticket = store.register(Record {
            created_at_ms: 20,
            ..record(&new_id, "h1")
        });
        let ids = |c: Vec<Candidate>| c.into_iter().map(|c| c.id).collect::<Vec<_>>();
        let c = store
            .candidates("scope", "send", "fp", 0, 10)
            .await
            .unwrap();
        assert_eq!(
            ids(c),
            [new_id.clone(), old_id.clone()],
            "registered first (newest), then stored"
        );
        let other = store
            .candidates("scope", "send", "fp2", 0, 10)
            .await
            .unwrap();
        assert!(other.is_empty(), "another identity is not a candidate");
        assert_eq!(
            ids(store.candidates("scope", "send", "fp", 0, 1).await.unwrap()),
            std::slice::from_ref(&new_id),
            "the limit holds"
        );
        ticket.commit(&Quota::UNLIMITED).await.unwrap();
        let c = store
            .candidates("scope", "send", "fp", 0, 10)
            .await
            .unwrap();
        assert_eq!(
            ids(c),
            [new_id.clone(), old_id.clone()],
            "committed: once, from the store"
        );
    }
}
