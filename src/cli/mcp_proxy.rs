//! `idem mcp-proxy`: a stdio proxy between an MCP client (our stdin/stdout) and an MCP server
//! (a child process) that puts every `tools/call` through idem's guard.
//!
//! Messages are newline-delimited JSON-RPC 2.0 and pass unchanged both ways, except client
//! `tools/call` requests: NEW is forwarded and its response completes the record; DUPLICATE is
//! answered here with the stored `CallToolResult`; IN_FLIGHT waits (bounded), then replays.
//! Tools whose mode is `off` (tools config, or `readOnlyHint`/`idempotentHint` learned from
//! `tools/list` responses) are forwarded without asking idem.
//!
//! The tools config's other modes reach the server with `ConfigureSession`, an operator-only
//! RPC on a server with `[auth]`: the proxy sends it with `--operator-token` when given, else
//! with `--token`. If the server refuses it (PERMISSION_DENIED: an agent token), every guarded
//! `tools/call` is answered with an error naming the fix and no tool runs, rather than
//! deduplicating under modes the session does not have.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{OnceCell, mpsc, oneshot};

use idem_client::ToolMode;
use idem_client::{Action, Execution, FailurePolicy, Guard, GuardError, IdemClient, InFlightWait};

/// Default server address, as for the other client commands.
/// Messages buffered per direction before a reader waits for the writer.
const CHANNEL_CAPACITY: usize = 64;
/// How long to wait, after the child exited, for its last messages to reach the client.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// JSON-RPC error codes of the proxy's own answers (the server-error range).
const ERR_IDEM_UNAVAILABLE: i64 = -32001;
const ERR_IN_FLIGHT: i64 = -32002;
const ERR_BORDERLINE: i64 = -32003;
const ERR_IDEM_REJECTED: i64 = -32004;
const ERR_SERVER_GONE: i64 = -32603;

/// Arguments of `idem mcp-proxy`.
#[derive(Debug, Args)]
pub struct McpProxyArgs {
    #[command(flatten)]
    pub conn: super::connect::ServerArgs,
    #[arg(long, env = "IDEM_TENANT")]
    pub tenant: String,
    #[arg(long, env = "IDEM_SESSION")]
    pub session: String,
    /// TOML or JSON file (by extension) mapping tool name to mode: off, key_only, exact,
    /// semantic. It wins over the server's tool annotations.
    #[arg(long, value_name = "FILE")]
    pub tools_config: Option<PathBuf>,
    /// When idem is unreachable, run tools without dedup (default: answer an error, run nothing).
    #[arg(long)]
    pub fail_open: bool,
    /// Longest wait for an identical call still in flight, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub in_flight_wait_ms: u64,
    /// Do not treat `readOnlyHint`/`idempotentHint` tools as mode off.
    #[arg(long)]
    pub ignore_annotations: bool,
    /// Operator token that sends the tools config (`ConfigureSession`, operator-only) to a
    /// server with `[auth]`, when --token is an agent's [default: --token].
    #[arg(long, env = "IDEM_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,
    /// The MCP server command and its arguments (after `--`).
    #[arg(last = true, required = true, num_args = 1.., value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Reads a tools config: a map of tool name to mode, TOML unless the file ends in `.json`.
fn load_tools_config(path: &Path) -> anyhow::Result<BTreeMap<String, ToolMode>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read tools config {}", path.display()))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let modes = if is_json {
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: expected a JSON object of tool name to mode (off, key_only, exact, semantic)",
                path.display()
            )
        })?
    } else {
        toml::from_str(&text).with_context(|| {
            format!(
                "{}: expected TOML `tool = \"mode\"` lines (off, key_only, exact, semantic)",
                path.display()
            )
        })?
    };
    Ok(modes)
}

/// Which tools skip idem: the config first, then what `tools/list` annotations said.
struct Modes {
    configured: BTreeMap<String, ToolMode>,
    /// Tools the server annotated `readOnlyHint` or `idempotentHint`.
    hinted_off: RwLock<HashMap<String, bool>>,
    use_annotations: bool,
}

impl Modes {
    fn is_off(&self, tool: &str) -> bool {
        if let Some(mode) = self.configured.get(tool) {
            return *mode == ToolMode::Off;
        }
        self.use_annotations
            && self
                .hinted_off
                .read()
                .is_ok_and(|m| m.get(tool).copied().unwrap_or(false))
    }

    /// Learns annotations from a `tools/list` result.
    fn learn(&self, result: &Value) {
        let Some(tools) = result.get("tools").and_then(Value::as_array) else {
            return;
        };
        let Ok(mut map) = self.hinted_off.write() else {
            return;
        };
        for t in tools {
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                continue;
            };
            let hint = |k: &str| {
                t.pointer(&format!("/annotations/{k}"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            };
            map.insert(
                name.to_string(),
                hint("readOnlyHint") || hint("idempotentHint"),
            );
        }
    }
}

/// What a forwarded client request waits for.
enum Pending {
    /// A `tools/list`: its result teaches annotations.
    ToolsList,
    /// A guarded `tools/call`: its response goes to the waiting task.
    ToolsCall(oneshot::Sender<Reply>),
}

/// How a guarded `tools/call` ended on the server side.
enum Reply {
    /// The server's response message and its original line.
    Response(Value, String),
    /// The client cancelled the request (`notifications/cancelled`).
    Cancelled,
}

/// Why the forwarded call counts as failed.
#[derive(Debug)]
enum CallFailure {
    /// The server answered with a JSON-RPC error or `isError: true`: passed on unchanged.
    Answered(String),
    /// The client cancelled the request: no answer is owed.
    Cancelled,
    /// The server exited (or closed its stdout) before answering.
    ServerGone,
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Answered(line) => write!(f, "MCP server answered an error: {line}"),
            Self::Cancelled => f.write_str("cancelled by the MCP client"),
            Self::ServerGone => f.write_str("MCP server exited before answering"),
        }
    }
}

/// State shared by the proxy's tasks.
struct Shared {
    guard: Guard,
    /// The client that sends the tools config (the operator token's, else the guard's).
    configurer: IdemClient,
    tenant: String,
    session: String,
    modes: Modes,
    pending: Mutex<HashMap<String, Pending>>,
    /// Set once the configured tool modes reached the server.
    modes_sent: OnceCell<()>,
    /// Set when the server refused the tools config for good (the token's role): why.
    modes_refused: std::sync::OnceLock<String>,
}

impl Shared {
    fn insert_pending(&self, id: &Value, p: Pending) {
        if let Ok(mut m) = self.pending.lock() {
            m.insert(id_key(id), p);
        }
    }

    fn take_pending(&self, id: &Value) -> Option<Pending> {
        self.pending.lock().ok()?.remove(&id_key(id))
    }

    /// Sends the configured non-off modes to the server, once; retried on the next call after
    /// a failure (the server may come up after the proxy). `Err` (why, and the fix) when the
    /// server refused them for the token's role: guarded calls then fail closed.
    async fn send_modes(&self) -> Result<(), String> {
        if let Some(why) = self.modes_refused.get() {
            return Err(why.clone());
        }
        let modes: BTreeMap<String, ToolMode> = self
            .modes
            .configured
            .iter()
            .filter(|(_, m)| **m != ToolMode::Off)
            .map(|(k, m)| (k.clone(), *m))
            .collect();
        if modes.is_empty() {
            return Ok(());
        }
        let r = self
            .modes_sent
            .get_or_try_init(|| async {
                self.configurer
                    .set_tool_modes(&self.tenant, &self.session, &modes)
                    .await
            })
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.is_permission_denied() => {
                let why = format!(
                    "idem refused the tools config ({e}): setting a session's tool modes                      (ConfigureSession) needs a token with role operator; give the proxy                      --operator-token (IDEM_OPERATOR_TOKEN), or set the modes on the server                      (`idem session set`, or the server's [defaults.tools]) and drop                      --tools-config. No tool runs until then"
                );
                tracing::error!("{why}");
                Err(self.modes_refused.get_or_init(|| why).clone())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot send the tools config to idem; will retry");
                Ok(())
            }
        }
    }
}

/// A JSON-RPC id as a map key (ids are numbers or strings; their JSON text tells them apart).
fn id_key(id: &Value) -> String {
    id.to_string()
}

fn rpc_error(id: &Value, code: i64, message: String, data: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message, "data": data}})
        .to_string()
}

/// `idem mcp-proxy`.
pub async fn run(a: McpProxyArgs) -> anyhow::Result<ExitCode> {
    // stdout carries the protocol: logs go to stderr only.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("idem=info")),
        )
        .try_init();
    let configured = match &a.tools_config {
        Some(p) => load_tools_config(p)?,
        None => BTreeMap::new(),
    };
    let client = IdemClient::connect_lazy_with(&a.conn.server, &a.conn.options())?;
    let configurer = match a.operator_token.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => IdemClient::connect_lazy_with(
            &a.conn.server,
            &idem_client::ClientOptions {
                token: Some(t.to_string()),
                ..a.conn.options()
            },
        )?,
        None => client.clone(),
    };
    let policy = if a.fail_open {
        FailurePolicy::FailOpen
    } else {
        FailurePolicy::FailClosed
    };
    let guard = Guard::new(client, a.tenant.clone(), a.session.clone())
        .on_unavailable(policy)
        .in_flight_wait(InFlightWait {
            max_wait: Duration::from_millis(a.in_flight_wait_ms),
            ..InFlightWait::default()
        });
    let shared = Arc::new(Shared {
        guard,
        configurer,
        tenant: a.tenant,
        session: a.session,
        modes: Modes {
            configured,
            hinted_off: RwLock::new(HashMap::new()),
            use_annotations: !a.ignore_annotations,
        },
        pending: Mutex::new(HashMap::new()),
        modes_sent: OnceCell::new(),
        modes_refused: std::sync::OnceLock::new(),
    });

    let (program, args) = a
        .command
        .split_first()
        .context("the MCP server command is missing (give it after `--`)")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start MCP server {program:?}"))?;
    let child_in = child.stdin.take().context("child stdin is not piped")?;
    let child_out = child.stdout.take().context("child stdout is not piped")?;

    let (to_child, to_child_rx) = mpsc::channel::<String>(CHANNEL_CAPACITY);
    let (to_client, to_client_rx) = mpsc::channel::<String>(CHANNEL_CAPACITY);
    tokio::spawn(async move {
        // Ends when every sender is gone (our stdin closed): the child's stdin closes with it.
        if let Err(e) = write_lines(child_in, to_child_rx).await {
            tracing::debug!(error = %e, "MCP server stdin closed");
        }
    });
    let client_writer = tokio::spawn(write_lines(tokio::io::stdout(), to_client_rx));
    tokio::spawn(client_to_server(
        shared.clone(),
        to_child,
        to_client.clone(),
    ));
    let server_reader = tokio::spawn(server_to_client(
        shared.clone(),
        child_out,
        to_client.clone(),
    ));
    drop(to_client);

    let status = child.wait().await.context("waiting for the MCP server")?;
    // Pass on what the server wrote before it exited, answer calls it left open, then flush.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, server_reader).await;
    drop(shared);
    if let Ok(Err(e)) = tokio::time::timeout(DRAIN_TIMEOUT, client_writer)
        .await
        .map(|j| j.unwrap_or(Ok(())))
    {
        tracing::debug!(error = %e, "MCP client stdout closed");
    }
    let code = status.code().unwrap_or(1);
    tracing::debug!(code, "MCP server exited");
    // Our stdin reader may be parked in a blocking read; leave without waiting for it.
    std::process::exit(code);
}

/// Writes each message as one line, flushing when no more are queued.
async fn write_lines<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<String>,
) -> std::io::Result<()> {
    while let Some(line) = rx.recv().await {
        w.write_all(line.as_bytes()).await?;
        w.write_all(b"\n").await?;
        if rx.is_empty() {
            w.flush().await?;
        }
    }
    w.flush().await
}

/// Reads client messages from our stdin; forwards all but guarded `tools/call` requests.
async fn client_to_server(
    shared: Arc<Shared>,
    to_child: mpsc::Sender<String>,
    to_client: mpsc::Sender<String>,
) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the MCP client's messages");
                break;
            }
        };
        let msg: Option<Value> = serde_json::from_str(&line).ok();
        let method = msg
            .as_ref()
            .and_then(|m| m.get("method"))
            .and_then(Value::as_str);
        let id = msg
            .as_ref()
            .and_then(|m| m.get("id"))
            .filter(|i| !i.is_null());
        match (method, id) {
            (Some("tools/call"), Some(id)) => {
                let params = msg.as_ref().and_then(|m| m.get("params"));
                if let Some(tool) = params.and_then(|p| p.get("name")).and_then(Value::as_str) {
                    let args = params
                        .and_then(|p| p.get("arguments"))
                        .cloned()
                        .unwrap_or_else(|| json!({}));
                    tokio::spawn(guarded_call(
                        shared.clone(),
                        id.clone(),
                        tool.to_string(),
                        args,
                        line,
                        to_child.clone(),
                        to_client.clone(),
                    ));
                    continue;
                }
            }
            (Some("tools/list"), Some(id)) => shared.insert_pending(id, Pending::ToolsList),
            (Some("notifications/cancelled"), None) => {
                let req = msg.as_ref().and_then(|m| m.pointer("/params/requestId"));
                if let Some(req) = req
                    && let Some(Pending::ToolsCall(tx)) = shared.take_pending(req)
                {
                    let _ = tx.send(Reply::Cancelled);
                }
            }
            _ => {}
        }
        if to_child.send(line).await.is_err() {
            break;
        }
    }
    tracing::debug!("MCP client closed its input; closing the server's");
}

/// Reads server messages from the child's stdout; routes responses of guarded calls and
/// learns from `tools/list`; forwards everything else.
async fn server_to_client(
    shared: Arc<Shared>,
    child_out: tokio::process::ChildStdout,
    to_client: mpsc::Sender<String>,
) {
    let mut lines = BufReader::new(child_out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let msg: Option<Value> = serde_json::from_str(&line).ok();
        let response_id = msg
            .as_ref()
            .filter(|m| m.get("method").is_none())
            .and_then(|m| m.get("id"))
            .filter(|i| !i.is_null());
        match response_id.and_then(|id| shared.take_pending(id)) {
            Some(Pending::ToolsCall(tx)) => {
                if let Some(m) = msg {
                    // The waiting task forwards the response after Complete.
                    let _ = tx.send(Reply::Response(m, line));
                }
                continue;
            }
            Some(Pending::ToolsList) => {
                if let Some(result) = msg.as_ref().and_then(|m| m.get("result")) {
                    shared.modes.learn(result);
                }
            }
            None => {}
        }
        if to_client.send(line).await.is_err() {
            break;
        }
    }
    // Calls the server never answered: their senders drop and their tasks answer an error.
    if let Ok(mut m) = shared.pending.lock() {
        m.clear();
    }
}

/// The forwarded `tools/call` with the action's key and attempt in `params._meta`
/// (`idem/action_key`, `idem/attempt`), for a server that passes them to a downstream API as
/// its idempotency key. A line that is not a JSON object with object params goes as it is.
fn with_action_meta(line: String, action: &Action) -> String {
    let Some(key) = &action.key else {
        return line;
    };
    let Ok(mut msg) = serde_json::from_str::<Value>(&line) else {
        return line;
    };
    let Some(params) = msg.get_mut("params").and_then(Value::as_object_mut) else {
        return line;
    };
    let meta = params
        .entry("_meta")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(meta) = meta.as_object_mut() else {
        return line;
    };
    meta.insert("idem/action_key".into(), Value::String(key.clone()));
    meta.insert("idem/attempt".into(), Value::from(action.attempt));
    msg.to_string()
}

/// One client `tools/call`, through the guard; answers the client in every case but a cancel.
async fn guarded_call(
    shared: Arc<Shared>,
    id: Value,
    tool: String,
    args: Value,
    line: String,
    to_child: mpsc::Sender<String>,
    to_client: mpsc::Sender<String>,
) {
    if shared.modes.is_off(&tool) {
        let _ = to_child.send(line).await;
        return;
    }
    if let Err(why) = shared.send_modes().await {
        let _ = to_client
            .send(rpc_error(
                &id,
                ERR_IDEM_REJECTED,
                why,
                json!({"needs_role": "operator", "rpc": "ConfigureSession"}),
            ))
            .await;
        return;
    }
    let (shared, id) = (&shared, &id);
    let forward = |action: Action| async move {
        let line = with_action_meta(line, &action);
        let (tx, rx) = oneshot::channel();
        shared.insert_pending(id, Pending::ToolsCall(tx));
        if to_child.send(line).await.is_err() {
            shared.take_pending(id);
            return Err(CallFailure::ServerGone);
        }
        match rx.await {
            Ok(Reply::Response(msg, line)) => {
                let is_error = msg.get("error").is_some()
                    || msg.pointer("/result/isError").and_then(Value::as_bool) == Some(true);
                match msg.get("result") {
                    Some(result) if !is_error => Ok(result.clone()),
                    _ => Err(CallFailure::Answered(line)),
                }
            }
            Ok(Reply::Cancelled) => Err(CallFailure::Cancelled),
            Err(_) => Err(CallFailure::ServerGone),
        }
    };
    let answer = match shared.guard.run(&tool, &args, forward).await {
        Ok(out) => {
            if let Execution::Replayed { call_id, waited } = &out.execution {
                tracing::info!(%tool, %call_id, waited, "tools/call answered from idem; the tool did not run");
            }
            json!({"jsonrpc": "2.0", "id": id, "result": out.value}).to_string()
        }
        Err(GuardError::Tool(CallFailure::Answered(line))) => line,
        Err(GuardError::Tool(CallFailure::Cancelled)) => return,
        Err(GuardError::Tool(CallFailure::ServerGone)) => rpc_error(
            id,
            ERR_SERVER_GONE,
            "the MCP server exited before answering this tools/call".into(),
            Value::Null,
        ),
        Err(e) => {
            let (code, data) = error_code(&e);
            rpc_error(id, code, e.to_string(), data)
        }
    };
    let _ = to_client.send(answer).await;
}

/// The JSON-RPC error code and data of a guard error the proxy answers itself.
fn error_code(e: &GuardError<CallFailure>) -> (i64, Value) {
    match e {
        GuardError::Tool(_) => (ERR_SERVER_GONE, Value::Null),
        GuardError::Unavailable(_) => (ERR_IDEM_UNAVAILABLE, Value::Null),
        GuardError::Idem(_) => (ERR_IDEM_REJECTED, Value::Null),
        GuardError::StillInFlight { call_id, .. } => (ERR_IN_FLIGHT, json!({"call_id": call_id})),
        GuardError::Borderline { call_id, .. } => (ERR_BORDERLINE, json!({"call_id": call_id})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modes(configured: &[(&str, ToolMode)], use_annotations: bool) -> Modes {
        Modes {
            configured: configured
                .iter()
                .map(|(k, m)| (k.to_string(), *m))
                .collect(),
            hinted_off: RwLock::new(HashMap::new()),
            use_annotations,
        }
    }

    fn tools_list() -> Value {
        json!({"tools": [
            {"name": "read", "annotations": {"readOnlyHint": true}},
            {"name": "put", "annotations": {"idempotentHint": true}},
            {"name": "send", "annotations": {"destructiveHint": true}},
            {"name": "plain"}
        ]})
    }

    #[test]
    fn read_only_and_idempotent_hints_turn_dedup_off() {
        let m = modes(&[], true);
        m.learn(&tools_list());
        assert!(m.is_off("read"));
        assert!(m.is_off("put"));
        assert!(!m.is_off("send"));
        assert!(!m.is_off("plain"));
        assert!(!m.is_off("unknown"), "unknown tools are deduplicated");
    }

    #[test]
    fn tools_config_wins_over_annotations() {
        let m = modes(&[("read", ToolMode::Exact), ("send", ToolMode::Off)], true);
        m.learn(&tools_list());
        assert!(!m.is_off("read"));
        assert!(m.is_off("send"));
    }

    #[test]
    fn annotations_can_be_ignored() {
        let m = modes(&[], false);
        m.learn(&tools_list());
        assert!(!m.is_off("read"));
    }

    #[test]
    fn tools_config_reads_toml_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("tools.toml");
        std::fs::write(&toml_path, "read_file = \"off\"\nsend = \"key_only\"\n").unwrap();
        let json_path = dir.path().join("tools.json");
        std::fs::write(&json_path, r#"{"read_file": "off", "send": "exact"}"#).unwrap();
        let t = load_tools_config(&toml_path).unwrap();
        assert_eq!(t.get("send"), Some(&ToolMode::KeyOnly));
        let j = load_tools_config(&json_path).unwrap();
        assert_eq!(j.get("read_file"), Some(&ToolMode::Off));
        std::fs::write(&json_path, r#"{"send": "sometimes"}"#).unwrap();
        assert!(load_tools_config(&json_path).is_err());
    }

    #[test]
    fn the_forwarded_call_carries_the_action_key_in_meta_and_keeps_its_own_meta() {
        let action = Action {
            key: Some("act-1".into()),
            attempt: 2,
        };
        let line = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"pay","arguments":{"amount":5},"_meta":{"progressToken":"p"}}}"#;
        let out: Value = serde_json::from_str(&with_action_meta(line.into(), &action)).unwrap();
        assert_eq!(out["params"]["_meta"]["idem/action_key"], "act-1");
        assert_eq!(out["params"]["_meta"]["idem/attempt"], 2);
        assert_eq!(out["params"]["_meta"]["progressToken"], "p");
        assert_eq!(out["params"]["arguments"]["amount"], 5);
        let bare = r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"pay"}}"#;
        let out: Value = serde_json::from_str(&with_action_meta(bare.into(), &action)).unwrap();
        assert_eq!(out["params"]["_meta"]["idem/action_key"], "act-1");
        // Nothing recorded, or not an object: forwarded as it is.
        let none = Action {
            key: None,
            attempt: 0,
        };
        assert_eq!(with_action_meta(bare.into(), &none), bare);
        assert_eq!(with_action_meta("not json".into(), &action), "not json");
    }
}
