//! Every bad input gets its gRPC status and a message that says what to fix.

mod common;

use common::*;
use idem::config::ServerConfig;
use idem::proto;
use idem::store::MemoryStore;
use std::sync::Arc;
use tonic::Code;

async fn status_of(req: proto::CheckRequest) -> tonic::Status {
    let cfg = ServerConfig {
        max_payload_bytes: 1024,
        ..Default::default()
    };
    let srv = TestServer::start_with(Arc::new(MemoryStore::new()), cfg).await;
    let mut c = srv.client().await;
    c.check_and_record(req).await.unwrap_err()
}

#[tokio::test]
async fn arguments_that_are_not_a_json_object() {
    for args in ["[1,2]", "\"text\"", "42", "null", "{not json"] {
        let s = status_of(check("t", args)).await;
        assert_eq!(s.code(), Code::InvalidArgument, "{args}");
        assert!(s.message().contains("arguments_json"), "{}", s.message());
    }
}

#[tokio::test]
async fn empty_names() {
    let mut r = check("tool", "{}");
    r.tenant = String::new();
    let s = status_of(r).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("tenant"));
    let mut r = check("tool", "{}");
    r.session = "  ".into();
    assert!(status_of(r).await.message().contains("session"));
    let s = status_of(check("", "{}")).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("tool"));
}

#[tokio::test]
async fn payload_over_the_limit() {
    let big = format!(r#"{{"body": "{}"}}"#, "x".repeat(2000));
    let s = status_of(check("t", &big)).await;
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(s.message().contains("max_payload_bytes"), "{}", s.message());
}

#[tokio::test]
async fn unknown_call_ids() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let s = c
        .get_call(proto::GetCallRequest {
            call_id: "0000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let s = c
        .complete(proto::CompleteRequest {
            call_id: "0000".into(),
            outcome: proto::CallStatus::Succeeded as i32,
            result_json: Some("1".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let mut r = check("t", "{}");
    r.retry = proto::RetryIntent::Resample as i32;
    r.retry_of = Some("nope".into());
    assert_eq!(
        c.check_and_record(r).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn bad_completions() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let n = run(&mut c, check("t", "{}")).await;
    let s = c
        .complete(proto::CompleteRequest {
            call_id: n.call_id.clone(),
            outcome: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let s = c
        .complete(proto::CompleteRequest {
            call_id: n.call_id.clone(),
            outcome: proto::CallStatus::Succeeded as i32,
            result_json: Some("{oops".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("result_json"));
    let s = c
        .complete(proto::CompleteRequest {
            call_id: n.call_id.clone(),
            outcome: proto::CallStatus::Succeeded as i32,
            result_json: Some("1".into()),
            cost: Some(f64::NAN),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn invalid_session_config_values() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let base = proto::SessionConfig {
        tenant: "t".into(),
        session: "s".into(),
        ..Default::default()
    };
    let cases = vec![
        (
            proto::SessionConfig {
                fuzzy_threshold: Some(f64::NAN),
                ..base.clone()
            },
            "fuzzy_threshold",
        ),
        (
            proto::SessionConfig {
                semantic_duplicate: Some(1.2),
                ..base.clone()
            },
            "semantic_duplicate",
        ),
        (
            proto::SessionConfig {
                semantic_duplicate: Some(0.8),
                semantic_borderline: Some(0.9),
                ..base.clone()
            },
            "semantic_borderline",
        ),
        (
            proto::SessionConfig {
                ttl_seconds: Some(0),
                ..base.clone()
            },
            "ttl_secs",
        ),
        (
            proto::SessionConfig {
                borderline_policy: Some("maybe".into()),
                ..base.clone()
            },
            "borderline_policy",
        ),
        (
            proto::SessionConfig {
                scope: Some("galaxy".into()),
                ..base.clone()
            },
            "scope",
        ),
        (
            proto::SessionConfig {
                tenant: String::new(),
                ..base.clone()
            },
            "tenant",
        ),
    ];
    for (cfg, field) in cases {
        let s = c
            .configure_session(proto::ConfigureSessionRequest { config: Some(cfg) })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{field}");
        assert!(
            s.message().contains(field),
            "{} should name {field}",
            s.message()
        );
    }
    let mut cfg = base.clone();
    cfg.tools.insert(
        "x".into(),
        proto::ToolPolicy {
            mode: "sometimes".into(),
            ..Default::default()
        },
    );
    let s = c
        .configure_session(proto::ConfigureSessionRequest { config: Some(cfg) })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    // A valid one is accepted and read back.
    let ok = proto::SessionConfig {
        ttl_seconds: Some(60),
        ..base.clone()
    };
    c.configure_session(proto::ConfigureSessionRequest { config: Some(ok) })
        .await
        .unwrap();
    let got = c
        .get_session(proto::GetSessionRequest {
            tenant: "t".into(),
            session: "s".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.ttl_seconds, Some(60));
    assert_eq!(got.lease_seconds, Some(300));
}

#[tokio::test]
async fn a_deadline_that_already_passed() {
    let mut r = check("t", "{}");
    r.deadline_ms = Some(0);
    assert_eq!(status_of(r).await.code(), Code::DeadlineExceeded);
    // The standard gRPC deadline header, already spent.
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let mut req = tonic::Request::new(check("t", "{}"));
    req.metadata_mut()
        .insert("grpc-timeout", "0m".parse().unwrap());
    // tonic's own timeout layer may answer before the handler runs; it says CANCELLED.
    let code = c.check_and_record(req).await.unwrap_err().code();
    assert!(
        matches!(code, Code::DeadlineExceeded | Code::Cancelled),
        "{code:?}"
    );
}

#[tokio::test]
async fn bad_page_tokens() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let s = c
        .list_calls(proto::ListCallsRequest {
            tenant: "t".into(),
            session: "s".into(),
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
}
