//! One version for the server, the API and the clients: `GetVersion` reports it, `idem
//! --version` prints it, and the client crate was built with the same.

mod common;

use common::TestServer;
use idem_client::{IdemClient, VERSION};

#[tokio::test]
async fn server_reports_the_workspace_version_and_api() {
    let server = TestServer::start().await;
    let client = IdemClient::connect(&format!("http://{}", server.addr))
        .await
        .expect("connect");
    let v = client.server_version().await.expect("GetVersion");
    assert_eq!(v.version, idem::VERSION);
    assert_eq!(
        v.version, VERSION,
        "server and client crate share one version"
    );
    assert_eq!(v.api, "idem.v1");
    assert!(v.is_compatible_with(VERSION));
    server.stop().await;
}

#[test]
fn cli_version_is_the_same_version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_idem"))
        .arg("--version")
        .output()
        .expect("run idem --version");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("idem {VERSION}")
    );
}
