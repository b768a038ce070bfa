//! The one place errors become gRPC statuses.

use tonic::Status;

use crate::error::IdemError;

impl From<IdemError> for Status {
    fn from(e: IdemError) -> Self {
        match e {
            IdemError::InvalidArgument(m) => Status::invalid_argument(m),
            IdemError::FailedPrecondition(m) => Status::failed_precondition(m),
            IdemError::NotFound(m) => Status::not_found(m),
            IdemError::ResourceExhausted(m) => Status::resource_exhausted(m),
            IdemError::Shed(_, m) => Status::resource_exhausted(m),
            IdemError::DeadlineExceeded(m) => Status::deadline_exceeded(m),
            IdemError::Store(crate::store::StoreError::Quota(q)) => {
                Status::resource_exhausted(q.to_string())
            }
            IdemError::Store(e) => {
                tracing::error!(%e, "store failure");
                Status::unavailable(format!("store unavailable: {e}"))
            }
            IdemError::Embed(e) => {
                tracing::error!(%e, "embedder failure");
                Status::unavailable(format!("embedder unavailable: {e}"))
            }
        }
    }
}
