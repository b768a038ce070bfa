//! TLS with rustls: a server given a certificate (made here with rcgen) and its key answers a
//! check over TLS to a client that trusts the certificate, and refuses a plaintext client.

mod common;

use std::sync::Arc;

use common::*;
use idem::config::ServerConfig;
use idem::proto;
use idem::store::MemoryStore;
use idem_client::{ClientOptions, IdemClient};

#[tokio::test]
async fn a_check_over_tls_with_a_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let config = ServerConfig {
        tls_cert: Some(cert.clone()),
        tls_key: Some(key),
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(Arc::new(MemoryStore::new()), config).await;
    let url = format!("https://localhost:{}", s.addr.port());
    let opts = ClientOptions {
        ca_file: Some(cert.clone()),
        ..ClientOptions::default()
    };
    let client = IdemClient::connect_with(&url, &opts)
        .await
        .expect("TLS handshake with the generated certificate");
    let mut raw = client.raw();
    let r = raw
        .check_and_record(check("send_email", r#"{"to": "a@example.com"}"#))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&r), proto::Verdict::New);
    let again = raw
        .check_and_record(check("send_email", r#"{"to": "a@example.com"}"#))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&again), proto::Verdict::InFlight);

    // The same certificate by IP, through the CLI's --ca-file.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_idem"))
        .args([
            "get",
            "--server",
            &format!("https://127.0.0.1:{}", s.addr.port()),
        ])
        .args(["--call-id", &r.call_id, "--json", "--ca-file"])
        .arg(&cert)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A plaintext client gets no answer from a TLS server.
    let mut plain = IdemClient::connect_lazy(&format!("http://{}", s.addr))
        .unwrap()
        .raw();
    let e = plain
        .check_and_record(check("send_email", r#"{"to": "b@example.com"}"#))
        .await
        .unwrap_err();
    assert_ne!(e.code(), tonic::Code::Ok);
    // A client that does not trust the certificate fails the handshake.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let untrusting = ClientOptions {
        ca_file: Some(other_ca),
        ..ClientOptions::default()
    };
    assert!(IdemClient::connect_with(&url, &untrusting).await.is_err());
    s.stop().await;
}
