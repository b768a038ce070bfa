//! Guards a pretend `send_email` tool with idem: the first run sends, the retry is replayed.
//!
//! Start a server (`idem serve --store memory`, or `make run`), then:
//!
//! ```sh
//! cargo run -p idem-client --example guard -- http://127.0.0.1:50051
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

use idem_client::{Execution, FailurePolicy, Guard, IdemClient, VERSION};
use serde_json::{Value, json};

/// The side effect: counts how often it really ran.
static SENT: AtomicUsize = AtomicUsize::new(0);

async fn send_email(args: &Value) -> Result<Value, std::io::Error> {
    let n = SENT.fetch_add(1, Ordering::SeqCst) + 1;
    println!("  sending to {} (send #{n})", args["to"]);
    Ok(json!({"message_id": format!("m-{n}")}))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_string());
    let client = IdemClient::connect(&url).await?;
    let server = client.server_version().await?;
    println!(
        "idem {} ({}) at {url}; this client {VERSION}: {}",
        server.version,
        server.api,
        if server.is_compatible_with(VERSION) {
            "compatible"
        } else {
            "NOT compatible"
        }
    );

    // A fresh session per run, so the example starts from nothing every time.
    let session = format!("example-{}", std::process::id());
    let guard = Guard::new(client, "example", session).on_unavailable(FailurePolicy::FailClosed);
    let args = json!({"to": "alice@example.com", "body": "Hi Alice, the invoice is attached."});
    for attempt in ["first try", "retry"] {
        let out = guard
            .run("send_email", &args, |_| send_email(&args))
            .await?;
        let how = match out.execution {
            Execution::Ran { .. } => "ran the tool",
            Execution::Replayed { .. } => "replayed the stored result",
            Execution::Untracked => "ran the tool (mode off, not recorded)",
            Execution::RanUnrecorded { .. } => "ran the tool (its result was not recorded)",
            Execution::FailedOpen => "ran the tool without dedup (idem unavailable)",
        };
        println!("{attempt}: {how}: {}", out.value);
    }
    let sent = SENT.load(Ordering::SeqCst);
    println!("the email was sent {sent} time(s)");
    if sent != 1 {
        return Err(format!("expected exactly one send, got {sent}").into());
    }
    Ok(())
}
