//! The gRPC service: requests in, engine calls, statuses out. The only module (with `cli`)
//! that touches the wire. With auth on, the tenant of every request comes from its token
//! (`auth`), and records named by id are checked against it.

mod auth;
mod convert;
mod status;
mod tls;

pub use auth::{Authenticator, Caller, Principal};

pub use convert::{check_response, session_config};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::engine::{
    CheckRequest, CompleteRequest, Engine, Outcome, unknown_call, unknown_verdict,
};
use crate::error::IdemError;
use crate::metrics::Metrics;
use crate::proto;
use crate::proto::idem_server::{Idem, IdemServer};
use crate::record::Record;

/// The `idem.v1.Idem` service over an engine: authenticates each request, checks that it
/// acts only for its caller's tenant, counts what it answered, and calls the engine.
#[derive(Clone)]
pub struct IdemService {
    engine: Arc<Engine>,
    auth: Arc<Authenticator>,
    metrics: Option<Arc<Metrics>>,
}

impl IdemService {
    /// A service answering from `engine`, with the tokens of its config and no metrics.
    pub fn new(engine: Arc<Engine>) -> Result<Self, ServeError> {
        let auth = Authenticator::from_config(&engine.config().auth).map_err(ServeError::Auth)?;
        Ok(Self {
            engine,
            auth: Arc::new(auth),
            metrics: None,
        })
    }

    /// The same service, counting into `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// An engine result as a status, counting the failures that are the server's doing.
    fn answer<T>(&self, r: Result<T, IdemError>) -> Result<T, Status> {
        if let (Err(e), Some(m)) = (&r, &self.metrics) {
            m.error(e);
        }
        r.map_err(Status::from)
    }

    /// The record `call_id` names, if it is the caller's; NOT_FOUND (the same answer as for
    /// an unknown id) if it belongs to another tenant.
    async fn owned_call(&self, caller: &Caller, call_id: &str) -> Result<Record, Status> {
        let rec = self.answer(self.engine.get_call(call_id).await)?;
        if caller.owns(&rec.tenant) {
            Ok(rec)
        } else {
            Err(unknown_call(call_id).into())
        }
    }
}

/// The `grpc-timeout` header in milliseconds, if the client set one.
fn grpc_timeout_ms<T>(req: &Request<T>) -> Option<u64> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => n.saturating_mul(3_600_000),
        "M" => n.saturating_mul(60_000),
        "S" => n.saturating_mul(1000),
        "m" => n,
        "u" => n / 1000,
        "n" => n / 1_000_000,
        _ => return None,
    })
}

#[tonic::async_trait]
impl Idem for IdemService {
    #[instrument(skip_all, fields(otel.name = "CheckAndRecord", rpc = "CheckAndRecord", verdict))]
    async fn check_and_record(
        &self,
        request: Request<proto::CheckRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        let caller = self.auth.caller(request.metadata())?;
        let grpc_ms = grpc_timeout_ms(&request);
        let r = request.into_inner();
        let req = CheckRequest {
            tenant: caller.tenant(&r.tenant)?,
            session: r.session,
            tool: r.tool,
            arguments_json: r.arguments_json,
            idempotency_key: r.idempotency_key,
            deadline_ms: r.deadline_ms,
            retry: convert::retry(r.retry)?,
            retry_of: r.retry_of,
            transport_deadline_ms: grpc_ms,
        };
        let out = self.answer(self.engine.check(req).await)?;
        tracing::Span::current().record("verdict", out.verdict.name());
        if let Some(m) = &self.metrics {
            m.check(&out);
        }
        Ok(Response::new(convert::check_response(out)))
    }

    #[instrument(skip_all, fields(otel.name = "Complete", rpc = "Complete"))]
    async fn complete(
        &self,
        request: Request<proto::CompleteRequest>,
    ) -> Result<Response<proto::CompleteResponse>, Status> {
        let caller = self.auth.caller(request.metadata())?;
        let r = request.into_inner();
        if caller != Caller::Anyone {
            self.owned_call(&caller, &r.call_id).await?;
        }
        let outcome = match proto::CallStatus::try_from(r.outcome) {
            Ok(proto::CallStatus::Succeeded) => Outcome::Succeeded {
                result_json: r.result_json.unwrap_or_else(|| "null".into()),
            },
            Ok(proto::CallStatus::Failed) => Outcome::Failed {
                error: r.error.unwrap_or_default(),
            },
            _ => {
                return Err(Status::invalid_argument(
                    "outcome must be SUCCEEDED (with result_json) or FAILED (with error)",
                ));
            }
        };
        let rec = self.answer(
            self.engine
                .complete(CompleteRequest {
                    call_id: r.call_id,
                    outcome,
                    cost: r.cost,
                    attempt: r.attempt,
                    compensation_json: r.compensation_json,
                })
                .await,
        )?;
        Ok(Response::new(proto::CompleteResponse {
            call: Some(convert::call_record(rec)),
        }))
    }

    #[instrument(skip_all, fields(otel.name = "ConfigureSession", rpc = "ConfigureSession"))]
    async fn configure_session(
        &self,
        request: Request<proto::ConfigureSessionRequest>,
    ) -> Result<Response<proto::SessionConfig>, Status> {
        let caller = self.auth.caller(request.metadata())?;
        caller.require_operator("ConfigureSession")?;
        let Some(c) = request.into_inner().config else {
            return Err(Status::invalid_argument("config is required"));
        };
        let tenant = caller.tenant(&c.tenant)?;
        let o = convert::session_overrides(&c)?;
        let s = self.answer(self.engine.configure_session(&tenant, &c.session, o).await)?;
        Ok(Response::new(convert::session_config(
            &tenant, &c.session, &s,
        )))
    }

    #[instrument(skip_all, fields(otel.name = "GetSession", rpc = "GetSession"))]
    async fn get_session(
        &self,
        request: Request<proto::GetSessionRequest>,
    ) -> Result<Response<proto::SessionConfig>, Status> {
        let caller = self.auth.caller(request.metadata())?;
        let r = request.into_inner();
        let tenant = caller.tenant(&r.tenant)?;
        let s = self.answer(self.engine.get_session(&tenant, &r.session).await)?;
        Ok(Response::new(convert::session_config(
            &tenant, &r.session, &s,
        )))
    }

    #[instrument(skip_all, fields(otel.name = "GetCall", rpc = "GetCall"))]
    async fn get_call(
        &self,
        request: Request<proto::GetCallRequest>,
    ) -> Result<Response<proto::CallRecord>, Status> {
        let caller = self.auth.caller(request.metadata())?;
        let rec = self
            .owned_call(&caller, &request.into_inner().call_id)
            .await?;
        Ok(Response::new(convert::call_record(rec)))
    }

    #[instrument(skip_all, fields(otel.name = "WaitForCall", rpc = "WaitForCall"))]
    async fn wait_for_call(
        &self,
        request: Request<proto::WaitForCallRequest>,
    ) -> Result<Response<proto::CallRecord>, Status> {
        let caller = self.auth.caller(request.metadata())?;
        let r = request.into_inner();
        if caller != Caller::Anyone {
            self.owned_call(&caller, &r.call_id).await?;
        }
        let timeout = match r.timeout_ms {
            0 => crate::engine::DEFAULT_WAIT,
            ms => std::time::Duration::from_millis(u64::from(ms)),
        };
        let rec = self.answer(self.engine.wait_for_call(&r.call_id, timeout).await)?;
        Ok(Response::new(convert::call_record(rec)))
    }

    #[instrument(skip_all, fields(otel.name = "ListCalls", rpc = "ListCalls"))]
    async fn list_calls(
        &self,
        request: Request<proto::ListCallsRequest>,
    ) -> Result<Response<proto::ListCallsResponse>, Status> {
        let caller = self.auth.caller(request.metadata())?;
        let r = request.into_inner();
        let tenant = caller.tenant(&r.tenant)?;
        let status = r.status.map(convert::status_from).transpose()?;
        let token = Some(r.page_token).filter(|t| !t.is_empty());
        let page = self.answer(
            self.engine
                .list_calls(&tenant, &r.session, status, r.page_size as usize, token)
                .await,
        )?;
        Ok(Response::new(proto::ListCallsResponse {
            calls: page.records.into_iter().map(convert::call_record).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    #[instrument(skip_all, fields(otel.name = "GetStats", rpc = "GetStats"))]
    async fn get_stats(
        &self,
        request: Request<proto::GetStatsRequest>,
    ) -> Result<Response<proto::Stats>, Status> {
        let caller = self.auth.caller(request.metadata())?;
        caller.require_operator("GetStats")?;
        let r = request.into_inner();
        let tenant = caller.tenant(&r.tenant)?;
        let s = self.answer(
            self.engine
                .stats(&tenant, r.session.as_deref().filter(|s| !s.is_empty()))
                .await,
        )?;
        Ok(Response::new(convert::stats(s)))
    }

    #[instrument(skip_all, fields(otel.name = "ReportFeedback", rpc = "ReportFeedback"))]
    async fn report_feedback(
        &self,
        request: Request<proto::FeedbackRequest>,
    ) -> Result<Response<proto::FeedbackResponse>, Status> {
        let caller = self.auth.caller(request.metadata())?;
        caller.require_operator("ReportFeedback")?;
        let r = request.into_inner();
        if caller != Caller::Anyone {
            let owner = self.answer(self.engine.verdict_tenant(&r.call_id).await)?;
            if !owner.is_some_and(|t| caller.owns(&t)) {
                return Err(unknown_verdict(&r.call_id).into());
            }
        }
        self.answer(
            self.engine
                .report_feedback(&r.call_id, r.correct, &r.note)
                .await,
        )?;
        Ok(Response::new(proto::FeedbackResponse {}))
    }

    #[instrument(skip_all, fields(otel.name = "ExportPairs", rpc = "ExportPairs"))]
    async fn export_pairs(
        &self,
        request: Request<proto::ExportPairsRequest>,
    ) -> Result<Response<proto::ExportPairsResponse>, Status> {
        let caller = self.auth.caller(request.metadata())?;
        caller.require_operator("ExportPairs")?;
        let r = request.into_inner();
        let tenant = caller.tenant(&r.tenant)?;
        let e = self.answer(
            self.engine
                .export_pairs(&tenant, r.since_ms.unwrap_or(0))
                .await,
        )?;
        Ok(Response::new(proto::ExportPairsResponse {
            pairs_jsonl: e.pairs.iter().map(|p| p.to_string()).collect(),
            skipped: e.skipped,
        }))
    }

    #[instrument(skip_all, fields(otel.name = "GetVersion", rpc = "GetVersion"))]
    async fn get_version(
        &self,
        request: Request<proto::GetVersionRequest>,
    ) -> Result<Response<proto::VersionInfo>, Status> {
        self.auth.caller(request.metadata())?;
        Ok(Response::new(proto::VersionInfo {
            version: crate::VERSION.to_string(),
            api: idem_client::API.to_string(),
        }))
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The `[auth]` section is unusable.
    #[error("auth: {0}")]
    Auth(String),
    /// The TLS certificate or key could not be read.
    #[error("tls: cannot read {path}: {source}")]
    TlsFile {
        /// The file named by `tls_cert` or `tls_key`.
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The transport failed (including a TLS identity rustls refuses).
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What `serve_with` adds to the bare service.
#[derive(Default)]
pub struct ServeOptions {
    /// Counters fed by every RPC (`metrics::serve` exposes them).
    pub metrics: Option<Arc<Metrics>>,
    /// Once shutdown begins, how long health answers NOT_SERVING while requests are still
    /// accepted (so load balancers take the instance out first).
    pub drain_delay: Duration,
    /// How long in-flight requests may take to finish after the listener closes.
    pub grace: Option<Duration>,
}

/// Serves the engine on `listener` (with gRPC health and reflection) until `shutdown` resolves,
/// then lets in-flight requests finish. TLS when the engine's config names a certificate.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(engine, listener, ServeOptions::default(), shutdown).await
}

/// `serve` with metrics and a drain: once `shutdown` resolves, health answers NOT_SERVING,
/// requests are still accepted for `drain_delay`, then the listener closes and in-flight
/// requests get up to `grace` to finish.
pub async fn serve_with(
    engine: Arc<Engine>,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let max = engine
        .config()
        .max_payload_bytes
        .saturating_mul(2)
        .saturating_add(64 * 1024);
    let tls = tls::server_config(engine.config())?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<IdemServer<IdemService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| {
            tracing::error!(%e, "reflection setup failed");
            e
        });
    let service = IdemService::new(engine)?.with_metrics(options.metrics);
    let svc = IdemServer::new(service)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let mut router = builder.add_service(health_service).add_service(svc);
    if let Ok(r) = reflection {
        router = router.add_service(r);
    }
    // TCP_NODELAY: without it small responses wait on delayed ACKs (~40 ms per call).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return Ok(r?),
        _ = shutdown => {}
    }
    health_reporter
        .set_not_serving::<IdemServer<IdemService>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    tracing::info!(
        drain_delay_ms = options.drain_delay.as_millis() as u64,
        "shutting down: health NOT_SERVING"
    );
    tokio::select! {
        r = &mut server => return Ok(r?),
        _ = tokio::time::sleep(options.drain_delay) => {}
    }
    let _ = stop.send(());
    match options.grace {
        Some(grace) => match tokio::time::timeout(grace, &mut server).await {
            Ok(r) => Ok(r?),
            Err(_) => {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "requests still in flight after the grace period; stopping without them"
                );
                Ok(())
            }
        },
        None => Ok(server.await?),
    }
}

/// Binds `addr` (port 0 picks a free port) and returns the listener and its address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}
