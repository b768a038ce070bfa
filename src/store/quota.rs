//! Per-tenant quotas: how many records a tenant may hold and in how many sessions. Every
//! backend keeps a tenant's counts beside its records, changed in the same atomic step as the
//! insert that adds a record and the sweep that removes it, and refuses an insert past a
//! quota before writing anything. A record counts from its insert until it is swept; a
//! session counts while it holds a record.

use serde::Serialize;

/// The limits a new record of a tenant is checked against (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Records the tenant may hold at once.
    pub max_records: Option<u64>,
    /// Sessions with records the tenant may have at once.
    pub max_sessions: Option<u64>,
}

impl Quota {
    /// No limit.
    pub const UNLIMITED: Quota = Quota {
        max_records: None,
        max_sessions: None,
    };

    /// Whether a new record of `tenant` in `session` fits: `usage` is the tenant's, and
    /// `session_records` the records the session holds now (0: the record opens a session).
    pub fn admit(
        &self,
        tenant: &str,
        session: &str,
        usage: Usage,
        session_records: u64,
    ) -> Result<(), QuotaExceeded> {
        let over = |limit, max, count| QuotaExceeded {
            tenant: tenant.to_string(),
            session: session.to_string(),
            limit,
            max,
            count,
        };
        if let Some(max) = self.max_records
            && usage.records >= max
        {
            return Err(over(QuotaLimit::Records, max, usage.records));
        }
        if session_records == 0
            && let Some(max) = self.max_sessions
            && usage.sessions >= max
        {
            return Err(over(QuotaLimit::Sessions, max, usage.sessions));
        }
        Ok(())
    }
}

/// What a tenant holds: its stored records (until swept) and the sessions holding any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub records: u64,
    pub sessions: u64,
}

/// Which quota a refused insert would have passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaLimit {
    /// `limits.max_records`.
    Records,
    /// `limits.max_sessions`.
    Sessions,
}

impl QuotaLimit {
    /// The config key of the limit (also the `limit` label of `idem_quota_refusals_total`).
    pub fn key(self) -> &'static str {
        match self {
            QuotaLimit::Records => "max_records",
            QuotaLimit::Sessions => "max_sessions",
        }
    }
}

/// An insert refused by a quota: nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct QuotaExceeded {
    pub tenant: String,
    /// The session the refused call was for.
    pub session: String,
    pub limit: QuotaLimit,
    /// The quota.
    pub max: u64,
    /// What the tenant holds now.
    pub count: u64,
}

impl QuotaExceeded {
    fn message(&self) -> String {
        match self.limit {
            QuotaLimit::Records => format!(
                "tenant {:?} holds {} records, its quota (limits.max_records = {}): no new call \
                 is recorded until some expire and are swept, or the quota is raised",
                self.tenant, self.count, self.max
            ),
            QuotaLimit::Sessions => format!(
                "tenant {:?} has records in {} sessions, its quota (limits.max_sessions = {}): \
                 session {:?} cannot start until a session's records expire and are swept, or \
                 the quota is raised",
                self.tenant, self.count, self.max, self.session
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_refuses_at_the_limit_and_names_it_with_the_count() {
        let q = Quota {
            max_records: Some(3),
            max_sessions: Some(2),
        };
        let u = |records, sessions| Usage { records, sessions };
        assert!(q.admit("t", "s", u(2, 2), 1).is_ok());
        let e = q.admit("t", "s", u(3, 1), 1).unwrap_err();
        assert_eq!((e.limit, e.count, e.max), (QuotaLimit::Records, 3, 3));
        assert!(e.to_string().contains("limits.max_records = 3"), "{e}");
        assert!(e.to_string().contains("holds 3 records"), "{e}");
        // A record of a session the tenant already has opens no session.
        assert!(q.admit("t", "s", u(2, 2), 1).is_ok());
        let e = q.admit("t", "new", u(2, 2), 0).unwrap_err();
        assert_eq!((e.limit, e.count), (QuotaLimit::Sessions, 2));
        assert!(e.to_string().contains("\"new\""), "{e}");
        assert!(Quota::UNLIMITED.admit("t", "s", u(u64::MAX, 9), 0).is_ok());
    }
}
