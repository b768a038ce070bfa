//! Client commands: `idem check`, `idem complete`, `idem get`, `idem feedback`,
//! `idem export-pairs`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::connect::ServerArgs;
use super::json;
use crate::proto;

/// Arguments of `idem check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub conn: ServerArgs,
    /// Tenant; empty means the token's.
    #[arg(long, env = "IDEM_TENANT", default_value = "")]
    pub tenant: String,
    #[arg(long)]
    pub session: String,
    /// Tool name.
    #[arg(long)]
    pub tool: String,
    /// Tool arguments, a JSON object.
    #[arg(long)]
    pub args: String,
    /// Client idempotency key.
    #[arg(long)]
    pub key: Option<String>,
    /// Deadline in milliseconds.
    #[arg(long)]
    pub deadline_ms: Option<u32>,
    /// Re-do a call whose result failed validation (always NEW, linked to it).
    #[arg(long, value_name = "CALL_ID")]
    pub resample_of: Option<String>,
    /// Print the response as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `idem complete`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("outcome").required(true).args(["succeeded", "failed"])))]
pub struct CompleteArgs {
    #[command(flatten)]
    pub conn: ServerArgs,
    #[arg(long)]
    pub call_id: String,
    /// The call succeeded (give --result).
    #[arg(long, requires = "result")]
    pub succeeded: bool,
    /// The call failed (give --error).
    #[arg(long, requires = "error")]
    pub failed: bool,
    /// The tool's result, JSON.
    #[arg(long)]
    pub result: Option<String>,
    /// What went wrong.
    #[arg(long)]
    pub error: Option<String>,
    /// Cost of the execution, in your unit.
    #[arg(long)]
    pub cost: Option<f64>,
    /// The attempt being completed (the check's `attempt`): refused if it was taken over.
    #[arg(long)]
    pub attempt: Option<u32>,
    /// How to undo the call, JSON (saga compensation).
    #[arg(long)]
    pub compensation: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `idem get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub conn: ServerArgs,
    #[arg(long)]
    pub call_id: String,
    #[arg(long)]
    pub json: bool,
}

/// An error status as the CLI reports it: `Code: message`.
pub(super) fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// Prints one JSON value: compact with `--json`, indented otherwise.
pub(super) fn print(value: serde_json::Value, as_json: bool) {
    if as_json {
        println!("{value}");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    }
}

/// `idem check`.
pub async fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut c = a.conn.raw().await?;
    let req = proto::CheckRequest {
        tenant: a.tenant,
        session: a.session,
        tool: a.tool,
        arguments_json: a.args,
        idempotency_key: a.key,
        deadline_ms: a.deadline_ms,
        retry: if a.resample_of.is_some() {
            proto::RetryIntent::Resample as i32
        } else {
            0
        },
        retry_of: a.resample_of,
    };
    let resp = c
        .check_and_record(req)
        .await
        .map_err(status_err)?
        .into_inner();
    print(json::check_response(&resp), a.json);
    Ok(ExitCode::SUCCESS)
}

/// `idem complete`.
pub async fn complete(a: CompleteArgs) -> anyhow::Result<ExitCode> {
    let mut c = a.conn.raw().await?;
    let outcome = if a.succeeded {
        proto::CallStatus::Succeeded
    } else {
        proto::CallStatus::Failed
    };
    let req = proto::CompleteRequest {
        call_id: a.call_id,
        outcome: outcome as i32,
        result_json: a.result,
        error: a.error,
        cost: a.cost,
        attempt: a.attempt,
        compensation_json: a.compensation,
    };
    let resp = c.complete(req).await.map_err(status_err)?.into_inner();
    let call = resp.call.map(|r| json::call_record(&r)).unwrap_or_default();
    print(serde_json::json!({ "call": call }), a.json);
    Ok(ExitCode::SUCCESS)
}

/// `idem get`.
pub async fn get(a: GetArgs) -> anyhow::Result<ExitCode> {
    let mut c = a.conn.raw().await?;
    let resp = c
        .get_call(proto::GetCallRequest { call_id: a.call_id })
        .await
        .map_err(status_err)?
        .into_inner();
    print(json::call_record(&resp), a.json);
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `idem feedback`.
#[derive(Debug, Args)]
pub struct FeedbackArgs {
    #[command(flatten)]
    pub conn: ServerArgs,
    /// The check_id of the verdict (for a NEW verdict, its call_id).
    #[arg(long, alias = "call-id")]
    pub check_id: String,
    /// The verdict was right.
    #[arg(long, conflicts_with = "wrong", required_unless_present = "wrong")]
    pub correct: bool,
    /// The verdict was wrong (a false duplicate, or a missed one).
    #[arg(long)]
    pub wrong: bool,
    #[arg(long, default_value = "")]
    pub note: String,
}

/// Arguments of `idem export-pairs`.
#[derive(Debug, Args)]
pub struct ExportPairsArgs {
    #[command(flatten)]
    pub conn: ServerArgs,
    /// Tenant; empty means the token's.
    #[arg(long, env = "IDEM_TENANT", default_value = "")]
    pub tenant: String,
    /// Only feedback at or after this time: RFC 3339 (2026-11-26T00:00:00Z) or Unix milliseconds.
    #[arg(long)]
    pub since: Option<String>,
    /// Write here instead of stdout.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

/// `idem feedback`.
pub async fn feedback(a: FeedbackArgs) -> anyhow::Result<ExitCode> {
    let mut c = a.conn.raw().await?;
    c.report_feedback(proto::FeedbackRequest {
        call_id: a.check_id,
        correct: a.correct && !a.wrong,
        note: a.note,
    })
    .await
    .map_err(status_err)?;
    Ok(ExitCode::SUCCESS)
}

fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s)
        .with_context(|| format!("--since {s:?}: use RFC 3339 or Unix ms"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0))
}

/// `idem export-pairs`: judged verdicts as calibration pairs (JSON Lines).
pub async fn export_pairs(a: ExportPairsArgs) -> anyhow::Result<ExitCode> {
    let mut c = a.conn.raw().await?;
    let since_ms = a.since.as_deref().map(parse_since).transpose()?;
    let r = c
        .export_pairs(proto::ExportPairsRequest {
            tenant: a.tenant,
            since_ms,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    let mut text = r.pairs_jsonl.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    match &a.out {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => print!("{text}"),
    }
    eprintln!(
        "{} pair(s) exported, {} judgement(s) skipped",
        r.pairs_jsonl.len(),
        r.skipped
    );
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `idem wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub conn: ServerArgs,
    /// The in-flight call to wait for.
    #[arg(long)]
    pub call_id: String,
    /// Longest wait in milliseconds (the server caps it).
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u32,
    #[arg(long)]
    pub json: bool,
}

/// `idem wait`: long-polls until the call is no longer in progress (or the timeout), then
/// prints its record.
pub async fn wait(a: WaitArgs) -> anyhow::Result<ExitCode> {
    let slack = std::time::Duration::from_secs(5);
    let mut c = a
        .conn
        .raw_with_timeout(std::time::Duration::from_millis(u64::from(a.timeout_ms)) + slack)
        .await?;
    let resp = c
        .wait_for_call(proto::WaitForCallRequest {
            call_id: a.call_id,
            timeout_ms: a.timeout_ms,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    print(json::call_record(&resp), a.json);
    Ok(ExitCode::SUCCESS)
}
