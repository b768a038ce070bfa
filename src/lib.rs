//! idem: a semantic dedup engine for AI-agent tool calls.
//!
//! The funnel (`funnel`) decides whether a call repeats an earlier one; the store (`store`)
//! keeps records durably; the service (`service`) puts both on the wire. See
//! `docs/DESIGN.md` for the picture.

pub mod calibrate;
pub mod canonical;
pub mod cli;
pub mod clock;
pub mod config;
pub mod embed;
pub mod engine;
pub mod error;
pub mod funnel;
pub mod index;
pub mod metrics;
pub mod record;
pub mod service;
pub mod store;
pub mod telemetry;

/// Generated gRPC types for `idem.v1`, shared with the client crate (one copy of the wire).
pub use idem_client::proto;

/// The server's version: the workspace's, so always equal to [`idem_client::VERSION`] (one
/// version for the server, the API and the clients).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
