//! What is kept beside the records: session overrides, counters, the verdict log and
//! feedback, each under the tag of its session or tenant.

use futures::future::join_all;
use redis::AsyncCommands;

use super::RedisStore;
use super::values::{corrupt, ttl_ms};
use crate::clock::Millis;
use crate::config::SessionOverrides;
use crate::store::{CheckLog, Feedback, SEP, StatsSnapshot, StoreError};

impl RedisStore {
    /// A session's overrides (`Store::put_session`).
    pub(super) async fn save_session(
        &self,
        tenant: &str,
        session: &str,
        o: &SessionOverrides,
    ) -> Result<(), StoreError> {
        let k = self.global().session(tenant, session);
        let json = serde_json::to_string(o).map_err(|e| corrupt(&k, e))?;
        self.run(async |c| c.set(&k, json).await).await
    }

    /// A session's overrides, if any (`Store::get_session`).
    pub(super) async fn load_session(
        &self,
        tenant: &str,
        session: &str,
    ) -> Result<Option<SessionOverrides>, StoreError> {
        let k = self.global().session(tenant, session);
        let json: Option<String> = self.run(async |c| c.get(&k).await).await?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| corrupt(&k, e)))
            .transpose()
    }

    /// Adds to a session's counters, in one transaction (`Store::add_stats`).
    pub(super) async fn add_counters(
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
        for (warning, n) in &d.warnings {
            p.hincr(&k, f(&format!("w{SEP}{warning}")), *n).ignore();
        }
        for (stage, n) in &d.by_stage {
            p.hincr(&k, f(&format!("s{SEP}{stage}")), *n).ignore();
        }
        self.run(async |c| p.query_async(c).await).await
    }

    /// Counters of a session or a whole tenant (`Store::stats`).
    pub(super) async fn counters(
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
                Some(("w", w)) => *s.warnings.entry(w.to_string()).or_default() += count()?,
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

    /// Verdict log entries, expiring with their original (`Store::put_checks`).
    pub(super) async fn save_checks(&self, logs: &[CheckLog]) -> Result<(), StoreError> {
        let writes = logs.iter().map(|l| async move {
            let k = self.global().check(&l.check_id);
            let json = serde_json::to_string(l).map_err(|e| corrupt(&l.check_id, e))?;
            let ttl = ttl_ms(l.created_at_ms, l.expires_at_ms) as u64;
            self.run(async |c| c.pset_ex(&k, json, ttl).await).await
        });
        join_all(writes).await.into_iter().collect()
    }

    /// One verdict log entry (`Store::get_check`).
    pub(super) async fn load_check(&self, check_id: &str) -> Result<Option<CheckLog>, StoreError> {
        let k = self.global().check(check_id);
        let json: Option<String> = self.run(async |c| c.get(&k).await).await?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| corrupt(check_id, e)))
            .transpose()
    }

    /// A judgement; a later one of the same check replaces it (`Store::put_feedback`).
    pub(super) async fn save_feedback(&self, f: &Feedback) -> Result<(), StoreError> {
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

    /// A tenant's judgements since a time, oldest first (`Store::list_feedback`).
    pub(super) async fn feedback_since(
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
