//! Command-line interface: `idem serve` and client commands that talk to a running server.

mod bench;
mod calibrate;
mod client;
mod connect;
mod doctor;
mod inspect;
mod json;
mod mcp_proxy;
mod serve;
mod train_scorer;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use client::{CheckArgs, CompleteArgs, GetArgs};
pub use connect::ServerArgs;
pub use mcp_proxy::McpProxyArgs;
pub use serve::ServeArgs;

/// idem: semantic dedup for AI-agent tool calls.
#[derive(Debug, Parser)]
#[command(name = "idem", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(Box<ServeArgs>),
    /// Ask a running server whether a call repeats an earlier one (and record it if new).
    Check(CheckArgs),
    /// Report the outcome of a call that was answered NEW.
    Complete(CompleteArgs),
    /// Show one recorded call.
    Get(GetArgs),
    /// Wait until an in-flight call finishes (or the timeout), then show it.
    Wait(client::WaitArgs),
    /// A session's intent log (`idem calls list`).
    #[command(subcommand)]
    Calls(inspect::CallsCommand),
    /// Counters of a tenant or session: checks by verdict and stage, replays, cost avoided.
    Stats(inspect::StatsArgs),
    /// Read or set a session's settings.
    #[command(subcommand)]
    Session(inspect::SessionCommand),
    /// Check the model files, the store and the server, and say what to fix.
    Doctor(doctor::DoctorArgs),
    /// Mark a verdict right or wrong (feeds calibration on real traffic).
    Feedback(client::FeedbackArgs),
    /// Write a tenant's judged verdicts as calibration pairs (JSON Lines).
    ExportPairs(client::ExportPairsArgs),
    /// Measure the funnel on labelled pairs and recommend thresholds.
    Calibrate(Box<calibrate::CalibrateArgs>),
    /// Fit the judge's coefficients on labelled text pairs (deterministic).
    TrainScorer(train_scorer::TrainScorerArgs),
    /// Load-test a running server: throughput and latency per verdict.
    Bench(bench::BenchArgs),
    /// Stdio MCP proxy: dedups `tools/call` of the MCP server it starts.
    McpProxy(McpProxyArgs),
}

/// Runs a parsed command line; `anyhow` lives only at this edge.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => serve::run(*a).await,
            Command::Check(a) => client::check(a).await,
            Command::Complete(a) => client::complete(a).await,
            Command::Get(a) => client::get(a).await,
            Command::Bench(a) => bench::run(a).await,
            Command::Calibrate(a) => calibrate::run(*a).await,
            Command::TrainScorer(a) => train_scorer::run(a).await,
            Command::Feedback(a) => client::feedback(a).await,
            Command::Wait(a) => client::wait(a).await,
            Command::Calls(c) => inspect::calls(c).await,
            Command::Stats(a) => inspect::stats(a).await,
            Command::Session(c) => inspect::session(c).await,
            Command::Doctor(a) => doctor::run(a).await,
            Command::ExportPairs(a) => client::export_pairs(a).await,
            Command::McpProxy(a) => mcp_proxy::run(a).await,
        }
    })
}
