//! With the `otlp` feature, the server's spans reach an OTLP/HTTP receiver: a tiny one in this
//! test (axum, protobuf bodies decoded with the OTLP messages) sees the CheckAndRecord span
//! and its stage spans as children, and no argument value in any attribute.
#![cfg(feature = "otlp")]

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// Receives `/v1/traces`; the spans it was sent.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let got: Arc<Mutex<Vec<Span>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                let mut spans = sink.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        spans.extend(ss.spans);
                    }
                }
                // An empty ExportTraceServiceResponse.
                Vec::<u8>::new()
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", l.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(l, app).await.unwrap();
    });
    (url, got)
}

fn attr(s: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    s.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(v) => Some(v.clone()),
            other => Some(format!("{other:?}")),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_exports_an_rpc_span_with_stage_children_and_no_argument_values() {
    let (url, got) = receiver().await;
    let telemetry = idem::telemetry::init(idem::config::LogFormat::Text, Some(&url)).unwrap();
    let s = TestServer::start().await;
    let mut c = s.client().await;
    let secret = "alice-secret@example.com";
    run(
        &mut c,
        check("send_email", &format!(r#"{{"to":"{secret}"}}"#)),
    )
    .await;
    s.stop().await;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();
    let spans = got.lock().unwrap().clone();
    let rpc = spans
        .iter()
        .find(|s| attr(s, "rpc").as_deref() == Some("CheckAndRecord"))
        .unwrap_or_else(|| {
            let names: Vec<_> = spans.iter().map(|s| &s.name).collect();
            panic!("no CheckAndRecord span among {names:?}")
        });
    assert_eq!(rpc.name, "CheckAndRecord");
    let verdict = attr(rpc, "verdict").unwrap_or_default();
    assert!(verdict.eq_ignore_ascii_case("new"), "verdict {verdict:?}");
    let stages: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "stage" && s.trace_id == rpc.trace_id)
        .collect();
    assert!(!stages.is_empty(), "no stage span in the RPC's trace");
    assert!(
        stages.iter().all(|s| s.parent_span_id == rpc.span_id),
        "stage spans are children of the RPC span"
    );
    for s in &spans {
        for a in &s.attributes {
            assert!(
                !format!("{:?}", a.value).contains(secret),
                "an argument value in span {}: {a:?}",
                s.name
            );
        }
    }
}
