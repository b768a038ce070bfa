//! Shared state of the similarity stages (fuzzy, semantic, verify): the embedder, the
//! per-scope vector indexes and the verifier client.

use std::sync::Arc;

use tokio::time::Instant;

use crate::clock::Millis;
use crate::error::IdemError;
use crate::funnel::Stage;
use crate::record::Record;
use crate::store::{Store, StoreError};

/// Embedder, indexes and verifier, shared by the stages that use them.
pub struct Semantic {}

impl Semantic {
    /// The similarity stages, in funnel order.
    pub fn stages(self: &Arc<Self>) -> Vec<Arc<dyn Stage>> {
        Vec::new()
    }

    /// Embeds a call's free text before `deadline`.
    pub async fn embed(&self, _text: &str, _deadline: Instant) -> Result<Vec<f32>, IdemError> {
        Err(IdemError::DeadlineExceeded("no embedder".into()))
    }

    /// Adds a newly recorded call to its scope's index (embedding it later if needed).
    pub fn index_new(&self, _record: &Record, _store: Arc<dyn Store>) {}

    /// Rebuilds every scope's index from the stored embeddings.
    pub async fn rebuild(&self, store: &dyn Store, now: Millis) -> Result<usize, StoreError> {
        Ok(store.vectors(now).await?.len())
    }

    /// Drops swept records from the indexes.
    pub fn forget(&self, _swept: &[(String, String)]) {}
}

impl Semantic {
    /// Builds the similarity stages' state from the server config; `None` when disabled.
    pub fn from_config(
        _config: &crate::config::ServerConfig,
    ) -> Result<Option<Arc<Semantic>>, IdemError> {
        Ok(None)
    }
}
