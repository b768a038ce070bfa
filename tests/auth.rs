//! Tenants behind tokens, through a real server: a request without a token or with an unknown
//! one is UNAUTHENTICATED; tenant B's tokens can neither name tenant A, nor read, complete,
//! wait on or judge A's calls (NOT_FOUND, as for an unknown id, and A's record is unchanged); an agent
//! token is refused the operator RPCs; the CLI sends `--token` / `IDEM_TOKEN`.

mod common;

use std::sync::Arc;

use common::*;
use idem::config::{AuthConfig, Role, ServerConfig, TokenEntry};
use idem::proto;
use idem::proto::idem_client::IdemClient as RawClient;
use idem::store::MemoryStore;
use idem_client::{ClientOptions, IdemClient, Transport};
use sha2::{Digest, Sha256};
use tonic::Code;

const A_AGENT: &str = "tok-a-agent-7f3c";
const A_OPERATOR: &str = "tok-a-operator-91be";
const B_AGENT: &str = "tok-b-agent-2d40";
const B_OPERATOR: &str = "tok-b-operator-c5a1";

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn auth_config() -> ServerConfig {
    let entry = |t: &str, tenant: &str, role| TokenEntry {
        sha256: digest(t),
        tenant: tenant.into(),
        role,
    };
    ServerConfig {
        auth: AuthConfig {
            required: true,
            tokens: vec![
                entry(A_AGENT, "a", Role::Agent),
                entry(A_OPERATOR, "a", Role::Operator),
                entry(B_AGENT, "b", Role::Agent),
                entry(B_OPERATOR, "b", Role::Operator),
            ],
        },
        ..ServerConfig::default()
    }
}

async fn start() -> TestServer {
    TestServer::start_with(Arc::new(MemoryStore::new()), auth_config()).await
}

async fn client(s: &TestServer, token: Option<&str>) -> RawClient<Transport> {
    let opts = ClientOptions::with_token(token.map(String::from));
    IdemClient::connect_with(&format!("http://{}", s.addr), &opts)
        .await
        .expect("connects")
        .raw()
}

fn check_req(tenant: &str) -> proto::CheckRequest {
    proto::CheckRequest {
        tenant: tenant.into(),
        session: "s".into(),
        tool: "send_email".into(),
        arguments_json: r#"{"to": "alice@example.com", "body": "the invoice"}"#.into(),
        ..Default::default()
    }
}

/// A's call, recorded NEW by A's agent; its id and the check id of a DUPLICATE of it.
async fn a_call(s: &TestServer) -> (String, String) {
    let mut a = client(s, Some(A_AGENT)).await;
    let new = a
        .check_and_record(check_req(""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(new.verdict, proto::Verdict::New as i32);
    let repeat = a
        .check_and_record(check_req("a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeat.verdict, proto::Verdict::InFlight as i32);
    (new.call_id, repeat.check_id)
}

async fn a_record(s: &TestServer, call_id: &str) -> proto::CallRecord {
    let mut a = client(s, Some(A_AGENT)).await;
    a.get_call(proto::GetCallRequest {
        call_id: call_id.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test]
async fn no_token_and_an_unknown_token_are_unauthenticated() {
    let s = start().await;
    for token in [None, Some("not-a-token"), Some("")] {
        let mut c = client(&s, token).await;
        let e = c.check_and_record(check_req("a")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{token:?}: {e:?}");
        let e = c
            .get_version(proto::GetVersionRequest {})
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    // A malformed authorization value is refused too.
    let mut raw = s.client().await;
    let mut req = tonic::Request::new(check_req("a"));
    req.metadata_mut()
        .insert("authorization", "Basic YTpi".parse().unwrap());
    let e = raw.check_and_record(req).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // Nothing was recorded for tenant a.
    let mut op = client(&s, Some(A_OPERATOR)).await;
    let stats = op
        .get_stats(proto::GetStatsRequest {
            tenant: "a".into(),
            session: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.checks, 0);
    s.stop().await;
}

#[tokio::test]
async fn a_token_acts_for_its_own_tenant_only() {
    let s = start().await;
    let (call_id, _) = a_call(&s).await;
    let before = a_record(&s, &call_id).await;
    assert_eq!(before.tenant, "a", "an empty tenant means the token's");
    let mut b = client(&s, Some(B_AGENT)).await;
    let e = b.check_and_record(check_req("a")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("tenant \"b\""), "{}", e.message());
    let e = b
        .list_calls(proto::ListCallsRequest {
            tenant: "a".into(),
            session: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = b
        .get_session(proto::GetSessionRequest {
            tenant: "a".into(),
            session: "s".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let mut b_op = client(&s, Some(B_OPERATOR)).await;
    let e = b_op
        .get_stats(proto::GetStatsRequest {
            tenant: "a".into(),
            session: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = b_op
        .export_pairs(proto::ExportPairsRequest {
            tenant: "a".into(),
            since_ms: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // B's own listing does not show A's call.
    let mine = b
        .list_calls(proto::ListCallsRequest {
            tenant: String::new(),
            session: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(mine.calls.is_empty());
    assert_eq!(a_record(&s, &call_id).await, before);
    s.stop().await;
}

#[tokio::test]
async fn another_tenants_call_is_not_found_to_read_complete_wait_on_or_judge() {
    let s = start().await;
    let (call_id, check_id) = a_call(&s).await;
    let before = a_record(&s, &call_id).await;
    let mut b = client(&s, Some(B_AGENT)).await;
    let unknown = b
        .get_call(proto::GetCallRequest {
            call_id: "0190aaaa-0000-7000-8000-000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let e = b
        .get_call(proto::GetCallRequest {
            call_id: call_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(
        e.message().replace(&call_id, "ID"),
        unknown
            .message()
            .replace("0190aaaa-0000-7000-8000-000000000000", "ID"),
        "A's id must read exactly like an unknown one"
    );
    assert_eq!(a_record(&s, &call_id).await, before);

    let e = b
        .complete(proto::CompleteRequest {
            call_id: call_id.clone(),
            outcome: proto::CallStatus::Succeeded as i32,
            result_json: Some(r#"{"forged": true}"#.into()),
            error: None,
            cost: Some(1.0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(
        a_record(&s, &call_id).await,
        before,
        "A's call is still in progress"
    );

    let e = b
        .complete(proto::CompleteRequest {
            call_id: call_id.clone(),
            outcome: proto::CallStatus::Failed as i32,
            result_json: None,
            error: Some("forged".into()),
            cost: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(a_record(&s, &call_id).await, before);

    let e = b
        .wait_for_call(proto::WaitForCallRequest {
            call_id: call_id.clone(),
            timeout_ms: 50,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "waiting on A's call: {e:?}");
    assert_eq!(a_record(&s, &call_id).await, before);

    let mut b_op = client(&s, Some(B_OPERATOR)).await;
    for id in [&call_id, &check_id] {
        let e = b_op
            .report_feedback(proto::FeedbackRequest {
                call_id: id.clone(),
                correct: false,
                note: "forged".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{id}: {e:?}");
    }
    assert_eq!(a_record(&s, &call_id).await, before);
    // No feedback landed on A's verdicts.
    let mut a_op = client(&s, Some(A_OPERATOR)).await;
    let pairs = a_op
        .export_pairs(proto::ExportPairsRequest {
            tenant: "a".into(),
            since_ms: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(pairs.pairs_jsonl.is_empty() && pairs.skipped == 0);

    // A itself completes and judges its call.
    let mut a = client(&s, Some(A_AGENT)).await;
    a.complete(proto::CompleteRequest {
        call_id: call_id.clone(),
        outcome: proto::CallStatus::Succeeded as i32,
        result_json: Some(r#"{"message_id": "m-1"}"#.into()),
        error: None,
        cost: None,
        ..Default::default()
    })
    .await
    .unwrap();
    a_op.report_feedback(proto::FeedbackRequest {
        call_id: check_id,
        correct: true,
        note: String::new(),
    })
    .await
    .unwrap();
    s.stop().await;
}

#[tokio::test]
async fn operator_rpcs_are_refused_to_an_agent_token() {
    let s = start().await;
    let (call_id, check_id) = a_call(&s).await;
    let mut a = client(&s, Some(A_AGENT)).await;
    let denied = |r: Result<_, tonic::Status>, what: &str| {
        let e = r.err().unwrap_or_else(|| panic!("{what} was allowed"));
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
        assert!(e.message().contains("operator"), "{}", e.message());
    };
    denied(
        a.get_stats(proto::GetStatsRequest {
            tenant: "a".into(),
            session: None,
        })
        .await
        .map(|_| ()),
        "GetStats",
    );
    denied(
        a.configure_session(proto::ConfigureSessionRequest {
            config: Some(proto::SessionConfig {
                tenant: "a".into(),
                session: "s".into(),
                deadline_ms: Some(500),
                ..Default::default()
            }),
        })
        .await
        .map(|_| ()),
        "ConfigureSession",
    );
    denied(
        a.report_feedback(proto::FeedbackRequest {
            call_id: check_id,
            correct: false,
            note: String::new(),
        })
        .await
        .map(|_| ()),
        "ReportFeedback",
    );
    denied(
        a.export_pairs(proto::ExportPairsRequest {
            tenant: "a".into(),
            since_ms: None,
        })
        .await
        .map(|_| ()),
        "ExportPairs",
    );
    // The session kept its defaults; the operator may change them.
    let session = a
        .get_session(proto::GetSessionRequest {
            tenant: "a".into(),
            session: "s".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(session.deadline_ms, Some(50));
    let mut op = client(&s, Some(A_OPERATOR)).await;
    let set = op
        .configure_session(proto::ConfigureSessionRequest {
            config: Some(proto::SessionConfig {
                tenant: String::new(),
                session: "s".into(),
                deadline_ms: Some(500),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((set.tenant.as_str(), set.deadline_ms), ("a", Some(500)));
    assert_eq!(
        a_record(&s, &call_id).await.status,
        proto::CallStatus::InProgress as i32
    );
    s.stop().await;
}

/// The CLI takes the token from `--token` or `IDEM_TOKEN`, and the tenant from it.
#[tokio::test]
async fn the_cli_sends_its_token() {
    let s = start().await;
    let (call_id, _) = a_call(&s).await;
    let server = format!("http://{}", s.addr);
    let get = |token: Option<(&str, &str)>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_idem"));
        cmd.args(["get", "--server", &server, "--call-id", &call_id, "--json"])
            .env_remove("IDEM_TOKEN");
        match token {
            Some(("flag", t)) => {
                cmd.args(["--token", t]);
            }
            Some((_, t)) => {
                cmd.env("IDEM_TOKEN", t);
            }
            None => {}
        }
        cmd.output()
    };
    let out = get(Some(("flag", A_AGENT))).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tenant"], "a");
    let out = get(Some(("env", A_AGENT))).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = get(None).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));
    let out = get(Some(("env", B_AGENT))).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
    // `idem check` without --tenant acts for the token's tenant.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["check", "--server", &server, "--session", "cli"])
        .args(["--tool", "t", "--args", r#"{"x": 1}"#, "--json"])
        .env("IDEM_TOKEN", B_AGENT)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.stop().await;
}

/// With `required = false` a request without a token may name any tenant (a migration step),
/// one with a token is still bound to its tenant, and an unknown token is still refused.
#[tokio::test]
async fn optional_auth_binds_token_holders_and_lets_tokenless_requests_through() {
    let mut config = auth_config();
    config.auth.required = false;
    let s = TestServer::start_with(Arc::new(MemoryStore::new()), config).await;
    let mut anyone = client(&s, None).await;
    let r = anyone
        .check_and_record(check_req("c"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.verdict, proto::Verdict::New as i32);
    let mut b = client(&s, Some(B_AGENT)).await;
    let e = b.check_and_record(check_req("c")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = b
        .get_call(proto::GetCallRequest {
            call_id: r.call_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "tenant c's call is not b's");
    let mut wrong = client(&s, Some("nope")).await;
    let e = wrong.check_and_record(check_req("c")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    s.stop().await;
}
