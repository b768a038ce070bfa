//! The gRPC service: requests in, engine calls, statuses out. The only module (with `cli`)
//! that touches the wire.

mod convert;
mod status;

pub use convert::{check_response, session_config};

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::engine::{CheckRequest, CompleteRequest, Engine, Outcome};
use crate::proto;
use crate::proto::idem_server::{Idem, IdemServer};

/// The `idem.v1.Idem` service over an engine.
#[derive(Clone)]
pub struct IdemService {
    engine: Arc<Engine>,
}

impl IdemService {
    /// A service answering from `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
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
    async fn check_and_record(
        &self,
        request: Request<proto::CheckRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        let grpc_ms = grpc_timeout_ms(&request);
        let r = request.into_inner();
        let req = CheckRequest {
            tenant: r.tenant,
            session: r.session,
            tool: r.tool,
            arguments_json: r.arguments_json,
            idempotency_key: r.idempotency_key,
            deadline_ms: r.deadline_ms,
            retry: convert::retry(r.retry)?,
            retry_of: r.retry_of,
            transport_deadline_ms: grpc_ms,
        };
        let out = self.engine.check(req).await?;
        Ok(Response::new(convert::check_response(out)))
    }

    async fn complete(
        &self,
        request: Request<proto::CompleteRequest>,
    ) -> Result<Response<proto::CompleteResponse>, Status> {
        let r = request.into_inner();
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
        let rec = self
            .engine
            .complete(CompleteRequest {
                call_id: r.call_id,
                outcome,
                cost: r.cost,
                attempt: r.attempt,
                compensation_json: r.compensation_json,
            })
            .await?;
        Ok(Response::new(proto::CompleteResponse {
            call: Some(convert::call_record(rec)),
        }))
    }

    async fn configure_session(
        &self,
        request: Request<proto::ConfigureSessionRequest>,
    ) -> Result<Response<proto::SessionConfig>, Status> {
        let Some(c) = request.into_inner().config else {
            return Err(Status::invalid_argument("config is required"));
        };
        let o = convert::session_overrides(&c)?;
        let s = self
            .engine
            .configure_session(&c.tenant, &c.session, o)
            .await?;
        Ok(Response::new(convert::session_config(
            &c.tenant, &c.session, &s,
        )))
    }

    async fn get_session(
        &self,
        request: Request<proto::GetSessionRequest>,
    ) -> Result<Response<proto::SessionConfig>, Status> {
        let r = request.into_inner();
        let s = self.engine.get_session(&r.tenant, &r.session).await?;
        Ok(Response::new(convert::session_config(
            &r.tenant, &r.session, &s,
        )))
    }

    async fn get_call(
        &self,
        request: Request<proto::GetCallRequest>,
    ) -> Result<Response<proto::CallRecord>, Status> {
        let rec = self.engine.get_call(&request.into_inner().call_id).await?;
        Ok(Response::new(convert::call_record(rec)))
    }

    async fn wait_for_call(
        &self,
        request: Request<proto::WaitForCallRequest>,
    ) -> Result<Response<proto::CallRecord>, Status> {
        let r = request.into_inner();
        let timeout = match r.timeout_ms {
            0 => crate::engine::DEFAULT_WAIT,
            ms => std::time::Duration::from_millis(u64::from(ms)),
        };
        let rec = self.engine.wait_for_call(&r.call_id, timeout).await?;
        Ok(Response::new(convert::call_record(rec)))
    }

    async fn list_calls(
        &self,
        request: Request<proto::ListCallsRequest>,
    ) -> Result<Response<proto::ListCallsResponse>, Status> {
        let r = request.into_inner();
        let status = r.status.map(convert::status_from).transpose()?;
        let token = Some(r.page_token).filter(|t| !t.is_empty());
        let page = self
            .engine
            .list_calls(&r.tenant, &r.session, status, r.page_size as usize, token)
            .await?;
        Ok(Response::new(proto::ListCallsResponse {
            calls: page.records.into_iter().map(convert::call_record).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn get_stats(
        &self,
        request: Request<proto::GetStatsRequest>,
    ) -> Result<Response<proto::Stats>, Status> {
        let r = request.into_inner();
        let s = self
            .engine
            .stats(&r.tenant, r.session.as_deref().filter(|s| !s.is_empty()))
            .await?;
        Ok(Response::new(convert::stats(s)))
    }

    async fn report_feedback(
        &self,
        request: Request<proto::FeedbackRequest>,
    ) -> Result<Response<proto::FeedbackResponse>, Status> {
        let r = request.into_inner();
        self.engine
            .report_feedback(&r.call_id, r.correct, &r.note)
            .await?;
        Ok(Response::new(proto::FeedbackResponse {}))
    }

    async fn export_pairs(
        &self,
        request: Request<proto::ExportPairsRequest>,
    ) -> Result<Response<proto::ExportPairsResponse>, Status> {
        let r = request.into_inner();
        let e = self
            .engine
            .export_pairs(&r.tenant, r.since_ms.unwrap_or(0))
            .await?;
        Ok(Response::new(proto::ExportPairsResponse {
            pairs_jsonl: e.pairs.iter().map(|p| p.to_string()).collect(),
            skipped: e.skipped,
        }))
    }

    async fn get_version(
        &self,
        _request: Request<proto::GetVersionRequest>,
    ) -> Result<Response<proto::VersionInfo>, Status> {
        Ok(Response::new(proto::VersionInfo {
            version: crate::VERSION.to_string(),
            api: idem_client::API.to_string(),
        }))
    }
}

/// Serves the engine on `listener` (with gRPC health and reflection) until `shutdown` resolves.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let max = engine
        .config()
        .max_payload_bytes
        .saturating_mul(2)
        .saturating_add(64 * 1024);
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
    let svc = IdemServer::new(IdemService::new(engine))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let mut router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(svc);
    if let Ok(r) = reflection {
        router = router.add_service(r);
    }
    // TCP_NODELAY: without it small responses wait on delayed ACKs (~40 ms per call).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Binds `addr` (port 0 picks a free port) and returns the listener and its address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}
