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
    /// A limit of the request was passed (payload size); the message names it.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The server is at capacity and shed the check; retry later with backoff.
    #[error("{1}")]
    Shed(ShedReason, String),
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
            EmbedError::Overloaded => IdemError::Shed(
                ShedReason::EmbedQueue,
                "embedding queue is full; retry with backoff".into(),
            ),
            EmbedError::DeadlineExceeded => IdemError::DeadlineExceeded(
                "the embedding could not finish before the request's deadline".into(),
            ),
            other => IdemError::Embed(other),
        }
    }
}

/// Why a check was shed (the `reason` label of `idem_shed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShedReason {
    /// `max_concurrent_checks` checks were already running.
    Concurrency,
    /// The embedder's queue was full.
    EmbedQueue,
    /// The embedder's expected wait was longer than the check may wait.
    EmbedWait,
}

impl ShedReason {
    /// Snake-case name, as in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::Concurrency => "concurrency",
            ShedReason::EmbedQueue => "embed_queue",
            ShedReason::EmbedWait => "embed_wait",
        }
    }
}

/// Shorthand for results of the library's request path.
pub type Result<T, E = IdemError> = std::result::Result<T, E>;
