//! Rust client of an idem server, and [`Guard`], which wraps a tool call in the whole protocol.
//!
//! [`IdemClient`] speaks the gRPC API with the crate's own typed answers ([`Verdict`],
//! [`CallInfo`]); the generated protobuf types stay inside this module. [`Guard`] is what an
//! adapter uses: check before the tool runs, run it on NEW and report the outcome, replay on
//! DUPLICATE, wait on IN_FLIGHT, and apply a fail-open or fail-closed policy when idem is down.
//!
//! ```no_run
//! use idem::client::{FailurePolicy, Guard, IdemClient};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = IdemClient::connect("http://127.0.0.1:50051").await?;
//! let guard = Guard::new(client, "acme", "run-42").on_unavailable(FailurePolicy::FailClosed);
//! let args = json!({"to": "alice@example.com", "body": "Hi Alice, the invoice is attached."});
//! let out = guard
//!     .run("send_email", &args, || async {
//!         // The side effect runs at most once per distinct call, however often this is retried.
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

pub use connection::{CheckOptions, IdemClient};
pub use error::{ClientError, GuardError};
pub use guard::{
    BorderlineCase, BorderlineDecision, Execution, FailurePolicy, Guard, GuardOutcome,
    InFlightWait, OverloadRetry,
};
pub use types::{CallInfo, CallStatus, Check, Outcome, Verdict};
