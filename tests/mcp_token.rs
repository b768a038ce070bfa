//! `idem mcp-proxy` passes its token on: against a server with `[auth] required = true`, a
//! proxy given `--token` dedups `tools/call` (the repeat is replayed, the MCP server runs the
//! tool once, the call is recorded in the token's tenant); without a token the call is refused
//! and the tool never runs (fail closed). A tools config needs ConfigureSession, which is
//! operator-only: with an agent token alone each call is refused with an error naming the role
//! and the option, and nothing runs; with `--operator-token` the modes reach the session. The
//! MCP server is a small stdio stub in Python.

mod common;

use std::process::Stdio;
use std::sync::Arc;

use common::*;
use idem::config::{AuthConfig, Role, ServerConfig, TokenEntry};
use idem::proto;
use idem::store::MemoryStore;
use idem_client::{ClientOptions, IdemClient};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const TOKEN: &str = "tok-mcp-agent-5e1d";
const OPERATOR: &str = "tok-mcp-operator-77c2";

/// A stdio MCP server: answers initialize and tools/call (appending a line to the counter
/// file per call it runs), `{}` to anything else with an id.
const STUB: &str = r#"
import json, sys
counter = sys.argv[1]
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg.get("method") == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                  "serverInfo": {"name": "stub", "version": "1"}}
    elif msg.get("method") == "tools/call":
        with open(counter, "a") as f:
            f.write("ran\n")
        result = {"content": [{"type": "text", "text": "sent"}], "isError": False}
    else:
        result = {}
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
"#;

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn server() -> TestServer {
    let config = ServerConfig {
        auth: AuthConfig {
            required: true,
            tokens: vec![
                TokenEntry {
                    sha256: digest(TOKEN),
                    tenant: "a".into(),
                    role: Role::Agent,
                },
                TokenEntry {
                    sha256: digest(OPERATOR),
                    tenant: "a".into(),
                    role: Role::Operator,
                },
            ],
        },
        ..ServerConfig::default()
    };
    TestServer::start_with(Arc::new(MemoryStore::new()), config).await
}

/// Runs the proxy over the stub, sends initialize and the same tools/call twice; the two
/// tools/call answers.
async fn proxy(s: &TestServer, dir: &std::path::Path, token: Option<&str>) -> Vec<Value> {
    proxy_with(s, dir, token, &[]).await
}

/// `proxy` with more proxy flags (before `--`).
async fn proxy_with(
    s: &TestServer,
    dir: &std::path::Path,
    token: Option<&str>,
    flags: &[&str],
) -> Vec<Value> {
    let stub = dir.join("stub.py");
    std::fs::write(&stub, STUB).unwrap();
    let counter = dir.join("ran.txt");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_idem"));
    cmd.args(["mcp-proxy", "--server", &format!("http://{}", s.addr)])
        .args([
            "--tenant",
            "a",
            "--session",
            "mcp",
            "--in-flight-wait-ms",
            "2000",
        ])
        .args(flags)
        .env_remove("IDEM_TOKEN")
        .env_remove("IDEM_OPERATOR_TOKEN");
    if let Some(t) = token {
        cmd.env("IDEM_TOKEN", t);
    }
    let mut child = cmd
        .arg("--")
        .arg("python3")
        .arg(&stub)
        .arg(&counter)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let call = |id: u32| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "send_email", "arguments": {"to": "alice@example.com"}}})
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                      "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                 "clientInfo": {"name": "t", "version": "1"}}});
    let mut answers = Vec::new();
    for msg in [init, call(2), call(3)] {
        let id = msg["id"].clone();
        stdin
            .write_all(format!("{msg}\n").as_bytes())
            .await
            .unwrap();
        loop {
            let line = tokio::time::timeout(std::time::Duration::from_secs(30), out.next_line())
                .await
                .expect("the proxy answers")
                .unwrap()
                .expect("a line");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                if id != 1 {
                    answers.push(v);
                }
                break;
            }
        }
    }
    drop(stdin);
    let _ = child.wait().await;
    answers
}

fn runs(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("ran.txt"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_proxy_sends_its_token_and_dedups_in_the_tokens_tenant() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let answers = proxy(&s, dir.path(), Some(TOKEN)).await;
    for a in &answers {
        assert_eq!(a["result"]["content"][0]["text"], "sent", "{a}");
    }
    assert_eq!(runs(dir.path()), 1, "the repeat was replayed, not run");
    let opts = ClientOptions::with_token(Some(TOKEN.into()));
    let mut c = IdemClient::connect_with(&format!("http://{}", s.addr), &opts)
        .await
        .unwrap()
        .raw();
    let calls = c
        .list_calls(proto::ListCallsRequest {
            tenant: "a".into(),
            session: "mcp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .calls;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].status, proto::CallStatus::Succeeded as i32);
    s.stop().await;
}

#[tokio::test]
async fn without_a_token_the_proxy_refuses_and_runs_nothing() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let answers = proxy(&s, dir.path(), None).await;
    for a in &answers {
        assert!(a.get("error").is_some(), "refused: {a}");
    }
    assert_eq!(runs(dir.path()), 0, "fail closed: the tool never ran");
    s.stop().await;
}

/// A tools config giving `send_email` mode exact; its path.
fn tools_config(dir: &std::path::Path) -> String {
    let p = dir.join("tools.toml");
    std::fs::write(&p, "send_email = \"exact\"\n").unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn a_tools_config_with_an_agent_token_alone_is_refused_naming_the_role_and_runs_nothing() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = tools_config(dir.path());
    let answers = proxy_with(&s, dir.path(), Some(TOKEN), &["--tools-config", &cfg]).await;
    assert_eq!(answers.len(), 2);
    for a in &answers {
        let msg = a["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("role operator") && msg.contains("--operator-token"),
            "{a}"
        );
        assert_eq!(a["error"]["data"]["needs_role"], "operator", "{a}");
    }
    assert_eq!(
        runs(dir.path()),
        0,
        "no tool ran under modes the session lacks"
    );
    s.stop().await;
}

#[tokio::test]
async fn with_an_operator_token_the_tools_config_reaches_the_session_and_calls_dedup() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = tools_config(dir.path());
    let answers = proxy_with(
        &s,
        dir.path(),
        Some(TOKEN),
        &["--tools-config", &cfg, "--operator-token", OPERATOR],
    )
    .await;
    for a in &answers {
        assert_eq!(a["result"]["content"][0]["text"], "sent", "{a}");
    }
    assert_eq!(runs(dir.path()), 1, "the repeat was replayed, not run");
    let opts = ClientOptions::with_token(Some(TOKEN.into()));
    let mut c = IdemClient::connect_with(&format!("http://{}", s.addr), &opts)
        .await
        .unwrap()
        .raw();
    let session = c
        .get_session(proto::GetSessionRequest {
            tenant: "a".into(),
            session: "mcp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(session.tools["send_email"].mode, "exact");
    s.stop().await;
}
