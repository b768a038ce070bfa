//! kill -9 right after NEW loses nothing: the embedded store is durable before the answer.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use idem::proto::{self, Verdict, idem_client::IdemClient};

/// A server process that is killed when dropped, so a failed assertion leaves nothing running.
struct Server(Child);

impl Server {
    /// kill -9, and wait for it to be gone.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `idem serve` on the embedded store in `dir`; returns the child and its URL.
fn spawn_server(dir: &std::path::Path) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "embedded",
            "--embedder",
            "none",
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn idem serve");
    let stdout = child.stdout.take().expect("stdout");
    let child = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read banner");
    let addr = line
        .trim()
        .strip_prefix("idem listening on ")
        .unwrap_or_else(|| panic!("banner: {line:?}"));
    (child, format!("http://{addr}"))
}

fn req(n: usize) -> proto::CheckRequest {
    proto::CheckRequest {
        tenant: "t".into(),
        session: "crash".into(),
        tool: "charge".into(),
        arguments_json: format!(r#"{{"order": {n}, "amount": 10}}"#),
        ..Default::default()
    }
}

#[tokio::test]
async fn acknowledged_new_calls_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = spawn_server(dir.path());
    let mut c = IdemClient::connect(url).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..100 {
        let r = c.check_and_record(req(n)).await.unwrap().into_inner();
        assert_eq!(r.verdict, Verdict::New as i32);
        ids.push(r.call_id);
    }
    // Complete a few so both IN_FLIGHT and DUPLICATE are seen after the restart.
    for id in &ids[..10] {
        c.complete(proto::CompleteRequest {
            call_id: id.clone(),
            outcome: proto::CallStatus::Succeeded as i32,
            result_json: Some("{\"ok\": true}".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    child.kill(); // SIGKILL

    let (mut child, url) = spawn_server(dir.path());
    let mut c = IdemClient::connect(url).await.unwrap();
    for (n, id) in ids.iter().enumerate() {
        let r = c.check_and_record(req(n)).await.unwrap().into_inner();
        let expected = if n < 10 {
            Verdict::Duplicate
        } else {
            Verdict::InFlight
        };
        assert_eq!(r.verdict, expected as i32, "call {n}");
        assert_eq!(&r.call_id, id);
    }
    // The intent log shows the 90 calls that were started and never completed.
    let mut unfinished = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_calls(proto::ListCallsRequest {
                tenant: "t".into(),
                session: "crash".into(),
                status: Some(proto::CallStatus::InProgress as i32),
                page_size: 40,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        unfinished.extend(page.calls.into_iter().map(|c| c.call_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<String> = ids[10..].to_vec();
    expected.reverse();
    assert_eq!(unfinished, expected);
    child.kill();
}
