//! Errors of the client and of the guard. A [`ClientError`] says whether idem was unreachable
//! (the guard's failure policy applies) or answered with an error (it never does).

/// What went wrong talking to an idem server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL does not parse.
    #[error("invalid idem server URL {url:?}: {source}")]
    InvalidUrl {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The token or the TLS settings cannot be used (the message says why).
    #[error("invalid client options: {0}")]
    Options(String),
    /// No connection could be made.
    #[error("cannot connect to idem at {url} (is `idem serve` running?): {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The server (or the transport) answered an RPC with an error status.
    #[error("idem {rpc} failed: {}: {}", status.code(), status.message())]
    Rpc {
        rpc: &'static str,
        #[source]
        status: Box<tonic::Status>,
    },
    /// The tool arguments or result could not be turned into JSON text.
    #[error("cannot encode {what} as JSON: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The server sent JSON text that does not parse.
    #[error("idem sent malformed JSON in {field}: {source}")]
    Decode {
        field: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The server sent an enum value this client does not know (a newer server?).
    #[error("idem sent an unknown {what} value {value}")]
    UnknownEnum { what: &'static str, value: i32 },
}

impl ClientError {
    /// Wraps an RPC error status.
    pub(crate) fn rpc(rpc: &'static str, status: tonic::Status) -> Self {
        Self::Rpc {
            rpc,
            status: Box::new(status),
        }
    }

    /// True when idem shed the check because it is overloaded (RESOURCE_EXHAUSTED): worth
    /// retrying after a short, jittered pause.
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Self::Rpc { status, .. } if status.code() == tonic::Code::ResourceExhausted)
    }

    /// True when the token may not make this call (PERMISSION_DENIED): an agent token on an
    /// operator-only RPC, or a request naming another tenant. Retrying does not help.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Self::Rpc { status, .. } if status.code() == tonic::Code::PermissionDenied)
    }

    /// True when the server does not have the RPC (an older server).
    pub fn is_unimplemented(&self) -> bool {
        matches!(self, Self::Rpc { status, .. } if status.code() == tonic::Code::Unimplemented)
    }

    /// True when idem could not answer at all (down, unreachable, timed out, overloaded): the
    /// case a fail-open or fail-closed policy decides. False when idem answered with a verdict
    /// about the request itself (invalid arguments, key reuse, ...).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Rpc { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Unknown
            ),
            Self::InvalidUrl { .. }
            | Self::Options(_)
            | Self::Encode { .. }
            | Self::Decode { .. }
            | Self::UnknownEnum { .. } => false,
        }
    }
}

/// Why [`Guard::run`](crate::Guard::run) returned no result. `E` is the tool's own error type.
#[derive(Debug, thiserror::Error)]
pub enum GuardError<E> {
    /// The tool ran and failed; the call is recorded FAILED, so a retry may run it again.
    #[error("tool failed: {0}")]
    Tool(E),
    /// idem was unreachable and the policy is fail-closed: the tool did not run.
    #[error("idem is unavailable and the policy is fail-closed, so the tool did not run: {0}")]
    Unavailable(#[source] ClientError),
    /// idem answered with an error about this call (for example arguments not a JSON object).
    #[error(transparent)]
    Idem(ClientError),
    /// The original call was still running when the bounded wait ended; the tool did not run.
    #[error(
        "call {call_id} is still in flight after waiting {waited:?}; the tool did not run again \
         (retry later)"
    )]
    StillInFlight {
        call_id: String,
        waited: std::time::Duration,
    },
    /// A borderline match the borderline callback (or the default, reject) refused to decide.
    #[error("call may repeat {call_id} (borderline match): {reason}; the tool did not run")]
    Borderline { call_id: String, reason: String },
}
