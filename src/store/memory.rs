//! In-memory store: for tests and throwaway runs. Nothing survives the process.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    Candidate, CheckLog, Feedback, ListQuery, Page, Quota, StatsSnapshot, Store, StoreError,
    StoredVector, Usage, key,
};
use crate::clock::Millis;
use crate::config::SessionOverrides;
use crate::record::{Record, ResourceState};

#[derive(Default)]
struct Inner {
    records: HashMap<String, Record>,
    by_key: HashMap<String, String>,
    by_exact: HashMap<String, String>,
    /// scope SEP resource -> the resource's state and when its last record expires.
    resources: HashMap<String, (ResourceState, Millis)>,
    candidates: HashMap<String, BTreeSet<String>>,
    by_session: HashMap<String, BTreeSet<String>>,
    expiry: BTreeSet<(Millis, String)>,
    sessions: HashMap<String, SessionOverrides>,
    stats: HashMap<String, StatsSnapshot>,
    checks: HashMap<String, CheckLog>,
    feedback: HashMap<String, Feedback>,
    /// Per tenant: records held and sessions holding any (`by_session` has the sessions).
    usage: HashMap<String, Usage>,
}

/// A store in process memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))
    }
}

fn cand_key(r: &Record) -> String {
    key(&[&r.match_scope, &r.tool, &r.identity_fingerprint])
}

fn session_key(tenant: &str, session: &str) -> String {
    key(&[tenant, session])
}

#[async_trait]
impl Store for MemoryStore {
    async fn insert(&self, r: &Record, quota: &Quota) -> Result<(), StoreError> {
        let mut g = self.lock()?;
        let usage = g.usage.get(&r.tenant).copied().unwrap_or_default();
        let in_session = g
            .by_session
            .get(&session_key(&r.tenant, &r.session))
            .map_or(0, |s| s.len() as u64);
        quota.admit(&r.tenant, &r.session, usage, in_session)?;
        let u = g.usage.entry(r.tenant.clone()).or_default();
        u.records += 1;
        u.sessions += u64::from(in_session == 0);
        if let Some(k) = &r.idempotency_key {
            g.by_key.insert(key(&[&r.match_scope, k]), r.id.clone());
        }
        g.by_exact
            .insert(key(&[&r.match_scope, &r.exact_hash]), r.id.clone());
        g.candidates
            .entry(cand_key(r))
            .or_default()
            .insert(r.id.clone());
        g.by_session
            .entry(session_key(&r.tenant, &r.session))
            .or_default()
            .insert(r.id.clone());
        if let Some((res, state)) = ResourceState::of(r) {
            let k = key(&[&r.match_scope, &res]);
            let until = g
                .resources
                .get(&k)
                .map_or(r.expires_at_ms, |(_, t)| (*t).max(r.expires_at_ms));
            g.resources.insert(k, (state, until));
        }
        g.expiry.insert((r.expires_at_ms, r.id.clone()));
        g.records.insert(r.id.clone(), r.clone());
        Ok(())
    }

    async fn usage(&self, tenant: &str) -> Result<Usage, StoreError> {
        Ok(self.lock()?.usage.get(tenant).copied().unwrap_or_default())
    }

    async fn update(&self, r: &Record) -> Result<(), StoreError> {
        let mut g = self.lock()?;
        let Some(old) = g.records.get_mut(&r.id) else {
            return Err(StoreError::Missing(r.id.clone()));
        };
        let embedding = old.embedding.take();
        *old = r.clone();
        if old.embedding.is_none() {
            old.embedding = embedding;
        }
        Ok(())
    }

    async fn put_embedding(&self, id: &str, vector: &[f32]) -> Result<bool, StoreError> {
        let mut g = self.lock()?;
        let Some(r) = g.records.get_mut(id) else {
            return Ok(false);
        };
        r.embedding = Some(vector.to_vec());
        Ok(true)
    }

    async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.lock()?.records.get(id).cloned())
    }

    async fn latest_by_key(&self, scope: &str, k: &str) -> Result<Option<Record>, StoreError> {
        let g = self.lock()?;
        Ok(g.by_key
            .get(&key(&[scope, k]))
            .and_then(|id| g.records.get(id))
            .cloned())
    }

    async fn latest_by_exact(&self, scope: &str, h: &str) -> Result<Option<Record>, StoreError> {
        let g = self.lock()?;
        Ok(g.by_exact
            .get(&key(&[scope, h]))
            .and_then(|id| g.records.get(id))
            .cloned())
    }

    async fn resource_state(
        &self,
        scope: &str,
        resource: &str,
    ) -> Result<Option<ResourceState>, StoreError> {
        let g = self.lock()?;
        Ok(g.resources
            .get(&key(&[scope, resource]))
            .map(|(s, _)| s.clone()))
    }

    async fn candidates(
        &self,
        scope: &str,
        tool: &str,
        fingerprint: &str,
        since: Millis,
        limit: usize,
    ) -> Result<Vec<Candidate>, StoreError> {
        let g = self.lock()?;
        let Some(ids) = g.candidates.get(&key(&[scope, tool, fingerprint])) else {
            return Ok(Vec::new());
        };
        Ok(ids
            .iter()
            .rev()
            .filter_map(|id| g.records.get(id))
            .take_while(|r| r.created_at_ms >= since)
            .take(limit)
            .map(Candidate::of)
            .collect())
    }

    async fn list(&self, q: &ListQuery) -> Result<Page, StoreError> {
        let g = self.lock()?;
        let Some(ids) = g.by_session.get(&session_key(&q.tenant, &q.session)) else {
            return Ok(Page::default());
        };
        let mut out = Vec::new();
        let iter: Box<dyn Iterator<Item = &String>> = match &q.page_token {
            Some(t) => Box::new(ids.range::<String, _>(..t.clone()).rev()),
            None => Box::new(ids.iter().rev()),
        };
        let mut last = None;
        for id in iter {
            let Some(r) = g.records.get(id) else { continue };
            if q.status.is_some_and(|s| s != r.status) {
                continue;
            }
            if out.len() == q.page_size {
                return Ok(Page {
                    records: out,
                    next: last,
                });
            }
            last = Some(r.id.clone());
            out.push(r.clone());
        }
        Ok(Page {
            records: out,
            next: None,
        })
    }

    async fn sweep(&self, now: Millis) -> Result<Vec<(String, String)>, StoreError> {
        let mut g = self.lock()?;
        let expired: Vec<(Millis, String)> = g
            .expiry
            .iter()
            .take_while(|(t, _)| *t <= now)
            .cloned()
            .collect();
        let mut swept = Vec::new();
        for (t, id) in &expired {
            g.expiry.remove(&(*t, id.clone()));
            let Some(r) = g.records.remove(id) else {
                continue;
            };
            swept.push((r.id.clone(), r.match_scope.clone()));
            if let Some(k) = &r.idempotency_key {
                let kk = key(&[&r.match_scope, k]);
                if g.by_key.get(&kk) == Some(id) {
                    g.by_key.remove(&kk);
                }
            }
            let ek = key(&[&r.match_scope, &r.exact_hash]);
            if g.by_exact.get(&ek) == Some(id) {
                g.by_exact.remove(&ek);
            }
            if let Some(set) = g.candidates.get_mut(&cand_key(&r)) {
                set.remove(id);
                if set.is_empty() {
                    g.candidates.remove(&cand_key(&r));
                }
            }
            let sk = session_key(&r.tenant, &r.session);
            let mut closed = false;
            if let Some(set) = g.by_session.get_mut(&sk) {
                set.remove(id);
                if set.is_empty() {
                    g.by_session.remove(&sk);
                    closed = true;
                }
            }
            if let Some(u) = g.usage.get_mut(&r.tenant) {
                u.records = u.records.saturating_sub(1);
                u.sessions = u.sessions.saturating_sub(u64::from(closed));
                if u.records == 0 {
                    g.usage.remove(&r.tenant);
                }
            }
        }
        g.checks.retain(|_, c| c.expires_at_ms > now);
        g.resources.retain(|_, (_, until)| *until > now);
        Ok(swept)
    }

    async fn vectors(&self, now: Millis) -> Result<Vec<StoredVector>, StoreError> {
        let g = self.lock()?;
        Ok(g.records
            .values()
            .filter(|r| !r.is_expired(now))
            .filter_map(|r| {
                r.embedding.as_ref().map(|v| StoredVector {
                    id: r.id.clone(),
                    match_scope: r.match_scope.clone(),
                    vector: v.clone(),
                })
            })
            .collect())
    }

    async fn put_session(
        &self,
        tenant: &str,
        session: &str,
        o: &SessionOverrides,
    ) -> Result<(), StoreError> {
        self.lock()?
            .sessions
            .insert(session_key(tenant, session), o.clone());
        Ok(())
    }

    async fn get_session(
        &self,
        tenant: &str,
        session: &str,
    ) -> Result<Option<SessionOverrides>, StoreError> {
        Ok(self
            .lock()?
            .sessions
            .get(&session_key(tenant, session))
            .cloned())
    }

    async fn add_stats(
        &self,
        tenant: &str,
        session: &str,
        d: &StatsSnapshot,
    ) -> Result<(), StoreError> {
        self.lock()?
            .stats
            .entry(session_key(tenant, session))
            .or_default()
            .merge(d);
        Ok(())
    }

    async fn stats(
        &self,
        tenant: &str,
        session: Option<&str>,
    ) -> Result<StatsSnapshot, StoreError> {
        let g = self.lock()?;
        if let Some(s) = session {
            return Ok(g
                .stats
                .get(&session_key(tenant, s))
                .cloned()
                .unwrap_or_default());
        }
        let prefix = format!("{tenant}{}", super::SEP);
        let mut total = StatsSnapshot::default();
        for (k, v) in &g.stats {
            if k.starts_with(&prefix) {
                total.merge(v);
            }
        }
        Ok(total)
    }

    async fn put_checks(&self, logs: &[CheckLog]) -> Result<(), StoreError> {
        let mut g = self.lock()?;
        for l in logs {
            g.checks.insert(l.check_id.clone(), l.clone());
        }
        Ok(())
    }

    async fn get_check(&self, check_id: &str) -> Result<Option<CheckLog>, StoreError> {
        Ok(self.lock()?.checks.get(check_id).cloned())
    }

    async fn put_feedback(&self, f: &Feedback) -> Result<(), StoreError> {
        self.lock()?
            .feedback
            .insert(key(&[&f.tenant, &f.check_id]), f.clone());
        Ok(())
    }

    async fn list_feedback(
        &self,
        tenant: &str,
        since: Millis,
    ) -> Result<Vec<Feedback>, StoreError> {
        let g = self.lock()?;
        let mut v: Vec<Feedback> = g
            .feedback
            .values()
            .filter(|f| f.tenant == tenant && f.at_ms >= since)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.at_ms, &a.check_id).cmp(&(b.at_ms, &b.check_id)));
        Ok(v)
    }
}
