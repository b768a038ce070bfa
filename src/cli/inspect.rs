//! Client commands that read or set server state: `idem calls list`, `idem stats`,
//! `idem session get` / `idem session set`.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use super::client::{print, status_err};
use super::connect::ServerArgs;
use super::json;
use crate::proto;

/// Status filter of `idem calls list`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusFilter {
    InProgress,
    Succeeded,
    Failed,
}

impl From<StatusFilter> for proto::CallStatus {
    fn from(s: StatusFilter) -> Self {
        match s {
            StatusFilter::InProgress => proto::CallStatus::InProgress,
            StatusFilter::Succeeded => proto::CallStatus::Succeeded,
            StatusFilter::Failed => proto::CallStatus::Failed,
        }
    }
}

/// `idem calls ...`.
#[derive(Debug, Subcommand)]
pub enum CallsCommand {
    /// A session's intent log, newest first (ListCalls).
    List(CallsListArgs),
}

/// Arguments of `idem calls list`.
#[derive(Debug, Args)]
pub struct CallsListArgs {
    #[command(flatten)]
    pub conn: ServerArgs,
    /// Tenant; empty means the token's.
    #[arg(long, env = "IDEM_TENANT", default_value = "")]
    pub tenant: String,
    #[arg(long, env = "IDEM_SESSION")]
    pub session: String,
    /// Only calls in this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusFilter>,
    /// Calls per page (the server caps it at 1000).
    #[arg(long, default_value_t = 100)]
    pub page_size: u32,
    /// Follow next_page_token until the log ends.
    #[arg(long)]
    pub all: bool,
    /// next_page_token of an earlier page.
    #[arg(long, default_value = "")]
    pub page_token: String,
    #[arg(long)]
    pub json: bool,
}

/// `idem calls list`.
pub async fn calls(cmd: CallsCommand) -> anyhow::Result<ExitCode> {
    let CallsCommand::List(a) = cmd;
    let mut c = a.conn.raw().await?;
    let mut token = a.page_token.clone();
    let mut calls = Vec::new();
    loop {
        let page = c
            .list_calls(proto::ListCallsRequest {
                tenant: a.tenant.clone(),
                session: a.session.clone(),
                status: a.status.map(|s| proto::CallStatus::from(s) as i32),
                page_size: a.page_size,
                page_token: token,
            })
            .await
            .map_err(status_err)?
            .into_inner();
        calls.extend(page.calls.iter().map(json::call_record));
        token = page.next_page_token;
        if !a.all || token.is_empty() {
            break;
        }
    }
    print(
        serde_json::json!({ "calls": calls, "next_page_token": token }),
        a.json,
    );
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `idem stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub conn: ServerArgs,
    /// Tenant; empty means the token's.
    #[arg(long, env = "IDEM_TENANT", default_value = "")]
    pub tenant: String,
    /// One session only (default: the whole tenant).
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// `idem stats` (GetStats; an operator token on a server with auth).
pub async fn stats(a: StatsArgs) -> anyhow::Result<ExitCode> {
    let mut c = a.conn.raw().await?;
    let s = c
        .get_stats(proto::GetStatsRequest {
            tenant: a.tenant,
            session: a.session,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    print(json::stats(&s), a.json);
    Ok(ExitCode::SUCCESS)
}

/// `idem session ...`.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// A session's effective settings (GetSession).
    Get(SessionGetArgs),
    /// Override settings of a session; unset flags keep theirs (ConfigureSession, operators).
    Set(Box<SessionSetArgs>),
}

/// Arguments of `idem session get`.
#[derive(Debug, Args)]
pub struct SessionGetArgs {
    #[command(flatten)]
    pub conn: ServerArgs,
    /// Tenant; empty means the token's.
    #[arg(long, env = "IDEM_TENANT", default_value = "")]
    pub tenant: String,
    #[arg(long, env = "IDEM_SESSION")]
    pub session: String,
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `idem session set`.
#[derive(Debug, Args)]
pub struct SessionSetArgs {
    #[command(flatten)]
    pub get: SessionGetArgs,
    #[arg(long)]
    pub ttl_secs: Option<u64>,
    #[arg(long)]
    pub lease_secs: Option<u64>,
    #[arg(long)]
    pub window_secs: Option<u64>,
    #[arg(long)]
    pub window_calls: Option<u32>,
    #[arg(long)]
    pub deadline_ms: Option<u32>,
    #[arg(long)]
    pub fuzzy_threshold: Option<f64>,
    #[arg(long)]
    pub semantic_duplicate: Option<f64>,
    #[arg(long)]
    pub semantic_borderline: Option<f64>,
    /// proceed, block or ask.
    #[arg(long)]
    pub borderline_policy: Option<String>,
    #[arg(long)]
    pub verifier_enabled: Option<bool>,
    /// session or tenant.
    #[arg(long)]
    pub scope: Option<String>,
    /// A reused idempotency key with different arguments: reject or replay.
    #[arg(long)]
    pub key_mismatch: Option<String>,
    /// Repeats of one tool within --loop-window-seconds that warn loop_suspected (0: off).
    #[arg(long)]
    pub loop_threshold: Option<u32>,
    #[arg(long)]
    pub loop_window_seconds: Option<u64>,
    /// A tool's mode, TOOL=MODE (off, key_only, exact, semantic); repeatable.
    #[arg(long = "tool-mode", value_name = "TOOL=MODE", value_parser = parse_tool_mode)]
    pub tool_modes: Vec<(String, String)>,
    /// The tool that undoes a tool, TOOL=INVERSE (e.g. disable_2fa=enable_2fa): a call of
    /// the inverse on the same resource ends the window of the tool's earlier calls; needs
    /// --tool-resource-fields for TOOL. Repeatable.
    #[arg(long = "tool-inverse", value_name = "TOOL=INVERSE", value_parser = parse_tool_mode)]
    pub tool_inverses: Vec<(String, String)>,
    /// The fields naming what a tool acts on, TOOL=FIELD[,FIELD...] (e.g.
    /// disable_2fa=user_id). Repeatable.
    #[arg(
        long = "tool-resource-fields",
        value_name = "TOOL=FIELDS",
        value_parser = parse_tool_mode
    )]
    pub tool_resource_fields: Vec<(String, String)>,
    /// What a repeat after an expired lease gets, TOOL=take_over|hold. Repeatable.
    #[arg(
        long = "tool-on-lease-expiry",
        value_name = "TOOL=POLICY",
        value_parser = parse_tool_mode
    )]
    pub tool_on_lease_expiry: Vec<(String, String)>,
}

/// `TOOL=VALUE`, both sides non-empty.
fn parse_tool_mode(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((t, m)) if !t.trim().is_empty() && !m.trim().is_empty() => {
            Ok((t.trim().to_string(), m.trim().to_string()))
        }
        _ => Err(format!("expected TOOL=VALUE, got {s:?}")),
    }
}

/// The tool policies `session set` sends: one per tool named by any --tool-* flag (the
/// server replaces each named tool's policy with it).
fn tool_policies(a: &SessionSetArgs) -> std::collections::HashMap<String, proto::ToolPolicy> {
    let mut tools: std::collections::HashMap<String, proto::ToolPolicy> = Default::default();
    for (tool, mode) in &a.tool_modes {
        tools.entry(tool.clone()).or_default().mode = mode.clone();
    }
    for (tool, inverse) in &a.tool_inverses {
        tools.entry(tool.clone()).or_default().inverse_of = Some(inverse.clone());
    }
    for (tool, policy) in &a.tool_on_lease_expiry {
        tools.entry(tool.clone()).or_default().on_lease_expiry = Some(policy.clone());
    }
    for (tool, fields) in &a.tool_resource_fields {
        tools.entry(tool.clone()).or_default().resource_fields = fields
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect();
    }
    tools
}

/// `idem session get` / `idem session set`.
pub async fn session(cmd: SessionCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SessionCommand::Get(a) => {
            let mut c = a.conn.raw().await?;
            let s = c
                .get_session(proto::GetSessionRequest {
                    tenant: a.tenant,
                    session: a.session,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            print(json::session_config(&s), a.json);
        }
        SessionCommand::Set(a) => {
            let a = *a;
            let mut c = a.get.conn.raw().await?;
            let tools = tool_policies(&a).into_iter().collect();
            let config = proto::SessionConfig {
                tenant: a.get.tenant,
                session: a.get.session,
                ttl_seconds: a.ttl_secs,
                lease_seconds: a.lease_secs,
                window_seconds: a.window_secs,
                window_calls: a.window_calls,
                deadline_ms: a.deadline_ms,
                fuzzy_threshold: a.fuzzy_threshold,
                semantic_duplicate: a.semantic_duplicate,
                semantic_borderline: a.semantic_borderline,
                borderline_policy: a.borderline_policy,
                verifier_enabled: a.verifier_enabled,
                scope: a.scope,
                key_mismatch: a.key_mismatch,
                loop_threshold: a.loop_threshold,
                loop_window_seconds: a.loop_window_seconds,
                tools,
            };
            let s = c
                .configure_session(proto::ConfigureSessionRequest {
                    config: Some(config),
                })
                .await
                .map_err(status_err)?
                .into_inner();
            print(json::session_config(&s), a.get.json);
        }
    }
    Ok(ExitCode::SUCCESS)
}
