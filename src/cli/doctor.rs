//! `idem doctor`: checks what a deployment needs (the model files, the store's directory, the
//! server's health, version and token) and says for each failure what to fix.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::client::print;
use super::connect::ServerArgs;
use crate::store::EmbeddedStore;

/// Arguments of `idem doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub conn: ServerArgs,
    /// Directory of the local model files.
    #[arg(long, env = "IDEM_MODELS_DIR", default_value = "./models")]
    pub models_dir: PathBuf,
    /// Data directory of the embedded store.
    #[arg(long, env = "IDEM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Skip the model check (a server with `embedder = none` or `remote`).
    #[arg(long)]
    pub no_models: bool,
    /// Skip the server checks.
    #[arg(long)]
    pub no_server: bool,
    #[arg(long)]
    pub json: bool,
}

/// One finding: what was checked, whether it is fine, what was seen, what to do.
struct Finding {
    check: &'static str,
    ok: bool,
    detail: String,
    fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check,
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn bad(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

fn models(a: &DoctorArgs) -> Finding {
    match crate::embed::local::check_model_files(&a.models_dir) {
        Ok(lib) => Finding::ok(
            "models",
            format!("model files and {} present", lib.display()),
        ),
        Err(e) => Finding::bad(
            "models",
            e.to_string(),
            "run `make models` (scripts/fetch-models.sh), or pass --models-dir",
        ),
    }
}

/// Opens the embedded store (in a blocking thread); a store a running server holds is fine.
async fn store(a: &DoctorArgs) -> Finding {
    let dir = a.data_dir.clone();
    let opened = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        EmbeddedStore::open(&dir)
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    match opened {
        Ok(Ok(())) => Finding::ok("store", format!("{} opens cleanly", a.data_dir.display())),
        Ok(Err(e)) if e.contains("already open") || e.contains("lock") => Finding::ok(
            "store",
            format!("{} is held by a running server ({e})", a.data_dir.display()),
        ),
        Ok(Err(e)) => Finding::bad(
            "store",
            e,
            "check the directory's permissions and free space; a corrupt file: restore a backup",
        ),
        Err(e) => Finding::bad("store", e.to_string(), "report this as a bug"),
    }
}

async fn server(a: &DoctorArgs, out: &mut Vec<Finding>) {
    let client = match a.conn.client().await {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::bad(
                "server",
                format!("{e:#}"),
                "start it with `idem serve` (or `make run`), or pass --server; for TLS give --ca-file",
            ));
            return;
        }
    };
    let channel = match idem_client::endpoint(&a.conn.server, &a.conn.options()) {
        Ok(e) => e.connect_lazy(),
        Err(e) => {
            out.push(Finding::bad("server", e.to_string(), "fix --server"));
            return;
        }
    };
    match HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
    {
        Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => {
            out.push(Finding::ok("health", "SERVING"))
        }
        Ok(r) => out.push(Finding::bad(
            "health",
            format!("status {}", r.get_ref().status),
            "the server is shutting down or not ready; wait or restart it",
        )),
        Err(s) => out.push(Finding::bad(
            "health",
            format!("{:?}: {}", s.code(), s.message()),
            "the server does not answer gRPC health; is this an idem server?",
        )),
    }
    match client.server_version().await {
        Ok(v) if v.is_compatible_with(crate::VERSION) => out.push(Finding::ok(
            "version",
            format!("server {} ({}), this CLI {}", v.version, v.api, crate::VERSION),
        )),
        Ok(v) => out.push(Finding::bad(
            "version",
            format!("server {}, this CLI {}", v.version, crate::VERSION),
            "use a CLI of the server's release line",
        )),
        Err(idem_client::ClientError::Rpc { status, .. })
            if status.code() == tonic::Code::Unauthenticated =>
        {
            out.push(Finding::bad(
                "token",
                status.message().to_string(),
                "the server requires a token (or this one is unknown): pass --token or set IDEM_TOKEN",
            ))
        }
        Err(e) => out.push(Finding::bad("version", e.to_string(), "check the server's log")),
    }
}

/// `idem doctor`: exit 0 when every check passed, 1 otherwise.
pub async fn run(a: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut findings = Vec::new();
    if !a.no_models {
        findings.push(models(&a));
    }
    findings.push(store(&a).await);
    if !a.no_server {
        server(&a, &mut findings).await;
    }
    let ok = findings.iter().all(|f| f.ok);
    if a.json {
        let list: Vec<Value> = findings
            .iter()
            .map(|f| json!({"check": f.check, "ok": f.ok, "detail": f.detail, "fix": f.fix}))
            .collect();
        print(json!({"ok": ok, "checks": list}), true);
    } else {
        for f in &findings {
            println!(
                "{} {:8} {}",
                if f.ok { "ok  " } else { "FAIL" },
                f.check,
                f.detail
            );
            if let Some(fix) = &f.fix {
                println!("              fix: {fix}");
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
