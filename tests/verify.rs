//! VERIFY against a real OpenAI-compatible HTTP server started in the test.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use idem::proto::{self, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A chat-completions server answering `answer` after `delay`; counts requests.
async fn llm_server(answer: &'static str, delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read headers, then the body by Content-Length.
                let body_start = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..body_start]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while buf.len() < body_start + len {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let req: serde_json::Value =
                    serde_json::from_slice(&buf[body_start..]).unwrap_or_default();
                assert!(
                    req["messages"].as_array().is_some_and(|m| m.len() == 2),
                    "chat request: {req}"
                );
                assert!(head.starts_with("post /v1/chat/completions"), "{head}");
                h.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let body = serde_json::json!({
                    "id": "x", "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}]
                })
                .to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

const A: &str = r#"{"to": "bob@example.com", "body": "Reminder: the quarterly budget review meeting is tomorrow at the main office."}"#;
const B: &str = r#"{"to": "bob@example.com", "body": "Just a reminder that the quarterly budget review meeting takes place tomorrow at the main office."}"#;

/// Every semantic match is borderline (duplicate threshold 1.0), so the verifier decides.
async fn borderline_session(
    answer: &'static str,
    delay: Duration,
    deadline_ms: u32,
) -> (proto::CheckResponse, Arc<AtomicUsize>, Duration) {
    let (url, hits) = llm_server(answer, delay).await;
    let mut cfg = semantic_config();
    cfg.verifier.base_url = Some(url);
    let srv = start_semantic(cfg).await;
    let mut c = srv.client().await;
    let session = proto::SessionConfig {
        tenant: "t".into(),
        session: "s".into(),
        fuzzy_threshold: Some(1.0),
        semantic_duplicate: Some(1.0),
        semantic_borderline: Some(0.5),
        verifier_enabled: Some(true),
        deadline_ms: Some(5_000),
        ..Default::default()
    };
    c.configure_session(proto::ConfigureSessionRequest {
        config: Some(session),
    })
    .await
    .unwrap();
    let a = run(&mut c, check("send_email", A)).await;
    succeed(&mut c, &a.call_id, r#"{"sent": true}"#, None).await;
    let mut req = check("send_email", B);
    req.deadline_ms = Some(deadline_ms);
    // Warm the embedder so the deadline measures the verifier, not the first inference.
    run(
        &mut c,
        check(
            "send_email",
            r#"{"to": "z@example.com", "body": "warm up the embedding model please now"}"#,
        ),
    )
    .await;
    let t = std::time::Instant::now();
    let r = run(&mut c, req).await;
    (r, hits, t.elapsed())
}

#[tokio::test]
async fn verifier_yes_settles_a_borderline_pair_as_duplicate() {
    let (r, hits, _) = borderline_session("yes", Duration::ZERO, 5_000).await;
    assert_eq!(verdict(&r), Verdict::Duplicate, "{r:?}");
    assert_eq!(r.matched.unwrap().stage, proto::Stage::Verified as i32);
    assert!(r.replayed);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn verifier_no_makes_it_new() {
    let (r, hits, _) = borderline_session("no", Duration::ZERO, 5_000).await;
    assert_eq!(verdict(&r), Verdict::New, "{r:?}");
    assert!(
        r.stages
            .iter()
            .any(|s| s.name == "verify" && s.outcome == "no"),
        "{r:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_slow_verifier_never_pushes_a_check_past_its_deadline() {
    let (r, hits, took) = borderline_session("yes", Duration::from_secs(3), 300).await;
    assert!(took < Duration::from_millis(1_500), "took {took:?}");
    // No answer in time: the borderline policy (proceed) decides, and the response says so.
    assert_eq!(verdict(&r), Verdict::New, "{r:?}");
    assert_eq!(r.stop_reason, proto::StopReason::Policy as i32, "{r:?}");
    assert!(
        r.stages
            .iter()
            .any(|s| s.name == "verify" && s.outcome == "timeout"),
        "{r:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
