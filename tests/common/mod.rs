//! Shared helpers of the end-to-end tests: a real gRPC server on 127.0.0.1:0.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use idem::clock::{Clock, ManualClock};
use idem::config::ServerConfig;
use idem::engine::Engine;
use idem::proto;
use idem::proto::idem_client::IdemClient;
use idem::store::{MemoryStore, Store};
use tonic::transport::Channel;

/// A running in-process server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    pub clock: ManualClock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server over the memory store with a manual clock.
    pub async fn start() -> Self {
        Self::start_with(Arc::new(MemoryStore::new()), ServerConfig::default()).await
    }

    /// Starts a server over `store` with `config` and a manual clock.
    pub async fn start_with(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        let clock = ManualClock::new(1_700_000_000_000);
        let c: Arc<dyn Clock> = Arc::new(clock.clone());
        let engine = Arc::new(Engine::with_parts(store, config, c, None));
        Self::start_engine(engine, clock).await
    }

    /// Starts a server over a prepared engine.
    pub async fn start_engine(engine: Arc<Engine>, clock: ManualClock) -> Self {
        let (listener, addr) = idem::service::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let e = engine.clone();
        let task = tokio::spawn(async move {
            idem::service::serve(e, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            engine,
            clock,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and waits until it has let go of the engine.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// A connected client.
    pub async fn client(&self) -> IdemClient<Channel> {
        let url = format!("http://{}", self.addr);
        for _ in 0..50 {
            if let Ok(c) = IdemClient::connect(url.clone()).await {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("server at {url} did not come up");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A check request in tenant `t`, session `s`.
pub fn check(tool: &str, args: &str) -> proto::CheckRequest {
    proto::CheckRequest {
        tenant: "t".into(),
        session: "s".into(),
        tool: tool.into(),
        arguments_json: args.into(),
        ..Default::default()
    }
}

/// Runs a check and returns the response.
pub async fn run(c: &mut IdemClient<Channel>, req: proto::CheckRequest) -> proto::CheckResponse {
    c.check_and_record(req).await.expect("check").into_inner()
}

/// The verdict of a response.
pub fn verdict(r: &proto::CheckResponse) -> proto::Verdict {
    proto::Verdict::try_from(r.verdict).unwrap()
}

/// Completes a call as succeeded with `result`.
pub async fn succeed(c: &mut IdemClient<Channel>, call_id: &str, result: &str, cost: Option<f64>) {
    c.complete(proto::CompleteRequest {
        call_id: call_id.into(),
        outcome: proto::CallStatus::Succeeded as i32,
        result_json: Some(result.into()),
        error: None,
        cost,
        ..Default::default()
    })
    .await
    .expect("complete");
}

/// Completes a call as failed.
pub async fn fail(c: &mut IdemClient<Channel>, call_id: &str, error: &str) {
    c.complete(proto::CompleteRequest {
        call_id: call_id.into(),
        outcome: proto::CallStatus::Failed as i32,
        result_json: None,
        error: Some(error.into()),
        cost: None,
        ..Default::default()
    })
    .await
    .expect("complete");
}

/// The model directory of this checkout (`make models` fills it).
pub fn models_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// Server config with the local embedder over this checkout's models.
pub fn semantic_config() -> ServerConfig {
    let mut c = ServerConfig::default();
    c.semantic.models_dir = models_dir();
    c.semantic.embedder = idem::config::EmbedderKind::Local;
    c
}

/// An engine with the whole funnel over `store`, a manual clock and `config`.
pub fn semantic_engine(store: Arc<dyn Store>, config: ServerConfig) -> (Arc<Engine>, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    let semantic = idem::engine::Similarity::from_config(&config)
        .unwrap_or_else(|e| panic!("model files missing? run `make models`: {e}"));
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    (
        Arc::new(Engine::with_parts(store, config, c, semantic)),
        clock,
    )
}

/// Starts a server with the whole funnel on the memory store.
pub async fn start_semantic(config: ServerConfig) -> TestServer {
    let (engine, clock) = semantic_engine(Arc::new(MemoryStore::new()), config);
    TestServer::start_engine(engine, clock).await
}
