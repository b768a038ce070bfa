//! idem: a semantic dedup engine for AI-agent tool calls.
//!
//! The funnel (`funnel`) decides whether a call repeats an earlier one; the store (`store`)
//! keeps records durably; the service (`service`) puts both on the wire. See
//! `docs/DESIGN.md` for the picture.

pub mod calibrate;
pub mod canonical;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod embed;
pub mod engine;
pub mod error;
pub mod funnel;
pub mod index;
pub mod record;
pub mod service;
pub mod store;

pub mod proto {
    //! Generated gRPC types for `idem.v1`.
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("idem.v1");
    /// Encoded file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("idem_descriptor");
}
