//! Rust client of an idem server, and [`Guard`], which wraps a tool call in the whole protocol.
//!
//! [`IdemClient`] speaks the gRPC API with the crate's own typed answers ([`Verdict`],
//! [`CallInfo`]); the generated protobuf types are in [`proto`], for callers who need an RPC the
//! typed client does not wrap (the server itself uses them, with the `server` feature). [`Guard`]
//! is what an adapter uses: check before the tool runs, run it on NEW and report the outcome,
//! replay on DUPLICATE, wait on IN_FLIGHT, and apply a fail-open or fail-closed policy when idem
//! is down. The crate depends on tonic and prost only, none of the server's dependencies.
//!
//! ```no_run
//! use idem_client::{FailurePolicy, Guard, IdemClient};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = IdemClient::connect("http://127.0.0.1:50051").await?;
//! let guard = Guard::new(client, "acme", "run-42").on_unavailable(FailurePolicy::FailClosed);
//! let args = json!({"to": "alice@example.com", "body": "Hi Alice, the invoice is attached."});
//! let out = guard
//!     .run("send_email", &args, |action| async move {
//!         // The side effect runs at most once per distinct call, however often this is retried;
//!         // `action.key` goes to the email API as its idempotency key, for the crash window.
//!         let _idempotency_key = action.key;
//!         Ok::<_, std::io::Error>(json!({"message_id": "m-1"}))
//!     })
//!     .await?;
//! println!("{} ({:?})", out.value, out.execution);
//! # Ok(())
//! # }
//! ```

mod connection;
mod error;
mod guard;
mod types;

pub use connection::{BearerToken, CheckOptions, ClientOptions, IdemClient, Transport, endpoint};
pub use error::{ClientError, GuardError};
pub use guard::{
    BorderlineCase, BorderlineDecision, Execution, FailurePolicy, Guard, GuardOutcome,
    InFlightWait, OverloadRetry,
};
pub use types::{Action, CallInfo, CallStatus, Check, Outcome, ServerVersion, ToolMode, Verdict};

/// The version of this crate, which is also the server's and the API's: one version for the
/// server, `idem.v1` and both client packages (see [`IdemClient::server_version`]).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The API package of [`proto`], which the server reports in `GetVersion`.
pub const API: &str = "idem.v1";

pub mod proto {
    //! Generated gRPC types for `idem.v1` (client; the server trait with the `server` feature).
    #![allow(missing_docs, clippy::all, rustdoc::all)]
    tonic::include_proto!("idem.v1");
    /// Encoded file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("idem_descriptor");
}
