//! Typed errors of the library, one enum per concern; `service::status` maps them to gRPC codes.

use crate::embed::EmbedError;
use crate::store::StoreError;

/// Why a check, a completion or a configuration change was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdemError {
    /// The request is malformed; the message says what to fix.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is well-formed but conflicts with recorded state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The named record or session does not exist (or has expired).
    #[error("{0}")]
    NotFound(String),
    /// The server is at capacity; retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The request's deadline passed before a verdict could be reached.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The embedder failed in a way that is not the caller's fault.
    #[error("embedder: {0}")]
    Embed(EmbedError),
}

impl From<EmbedError> for IdemError {
    fn from(e: EmbedError) -> Self {
        match e {
            EmbedError::Overloaded => {
                IdemError::ResourceExhausted("embedding queue is full; retry with backoff".into())
            }
            EmbedError::DeadlineExceeded => IdemError::DeadlineExceeded(
                "the embedding could not finish before the request's deadline".into(),
            ),
            other => IdemError::Embed(other),
        }
    }
}

/// Shorthand for results of the library's request path.
pub type Result<T, E = IdemError> = std::result::Result<T, E>;
