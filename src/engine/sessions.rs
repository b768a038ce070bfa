//! Session settings: server defaults with the session's overrides on top, cached.

use std::sync::Arc;

use super::{Engine, SESSION_CACHE_MAX, validate};
use crate::config::{SessionOverrides, SessionSettings};
use crate::error::IdemError;
use crate::store::SEP;

impl Engine {
    /// Effective settings of a session, for GetSession (names validated).
    pub async fn get_session(
        &self,
        tenant: &str,
        session: &str,
    ) -> Result<Arc<SessionSettings>, IdemError> {
        validate::name("tenant", tenant)?;
        validate::name("session", session)?;
        self.settings(tenant, session).await
    }

    /// Effective settings of a session.
    pub async fn settings(
        &self,
        tenant: &str,
        session: &str,
    ) -> Result<Arc<SessionSettings>, IdemError> {
        let k = format!("{tenant}{SEP}{session}");
        if let Some(s) = self.sessions.get(&k) {
            return Ok(s.clone());
        }
        let o = self
            .store
            .get_session(tenant, session)
            .await?
            .unwrap_or_default();
        let s = Arc::new(self.config.defaults.with_overrides(&o));
        if self.sessions.len() >= SESSION_CACHE_MAX {
            self.sessions.clear();
        }
        self.sessions.insert(k, s.clone());
        Ok(s)
    }

    /// Lays `changes` over a session's overrides, validates the result, stores it.
    pub async fn configure_session(
        &self,
        tenant: &str,
        session: &str,
        changes: SessionOverrides,
    ) -> Result<Arc<SessionSettings>, IdemError> {
        validate::name("tenant", tenant)?;
        validate::name("session", session)?;
        let mut o = self
            .store
            .get_session(tenant, session)
            .await?
            .unwrap_or_default();
        macro_rules! take {
            ($($f:ident),*) => { $( if changes.$f.is_some() { o.$f = changes.$f; } )* };
        }
        take!(
            ttl_secs,
            lease_secs,
            window_secs,
            window_calls,
            deadline_ms,
            fuzzy_threshold
        );
        take!(
            semantic_duplicate,
            semantic_borderline,
            borderline_policy,
            verifier_enabled,
            scope
        );
        take!(key_mismatch, loop_threshold, loop_window_secs);
        for (name, policy) in changes.tools {
            o.tools.insert(name, policy);
        }
        let effective = self.config.defaults.with_overrides(&o);
        effective
            .validate()
            .map_err(|e| IdemError::InvalidArgument(format!("invalid session config: {e}")))?;
        if effective.verifier_enabled && self.config.verifier.base_url.is_none() {
            return Err(IdemError::FailedPrecondition(
                "verifier_enabled needs a verifier endpoint: set verifier.base_url in the server config".into(),
            ));
        }
        self.store.put_session(tenant, session, &o).await?;
        let s = Arc::new(effective);
        self.sessions
            .insert(format!("{tenant}{SEP}{session}"), s.clone());
        Ok(s)
    }
}
