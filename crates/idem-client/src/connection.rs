//! [`IdemClient`]: a cheap-to-clone handle on one gRPC channel to an idem server.
//! `connect` fails fast when the server is down; `connect_lazy` defers that to each call, which
//! is what a long-lived adapter wants (the guard's failure policy then decides per call).
//! [`ClientOptions`] add a bearer token (sent on every RPC) and, with the `tls` feature, the CA
//! that signed the server's certificate.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::error::ClientError;
use crate::proto;
use crate::proto::idem_client::IdemClient as RawClient;
use crate::types::{CallInfo, CallStatus, Check, Outcome, ServerVersion, ToolMode};

/// How long to wait for a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound on one RPC, including the server's own check deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest single WaitForCall RPC: inside `REQUEST_TIMEOUT`, which caps every RPC.
const MAX_WAIT_SLICE: Duration = Duration::from_secs(5);

/// Per-check options beyond tenant, session, tool and arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckOptions {
    /// Client idempotency key, matched exactly in the scope.
    pub idempotency_key: Option<String>,
    /// Deadline of this check in milliseconds (overrides the session's).
    pub deadline_ms: Option<u32>,
    /// Ask for a genuinely new execution that supersedes this call id (retry intent RESAMPLE).
    pub resample_of: Option<String>,
}

/// How to reach a server beyond its URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// API token, sent as `authorization: Bearer TOKEN` on every RPC (servers with `[auth]`).
    pub token: Option<String>,
    /// PEM file of the CA that signed the server's certificate, for `https://` URLs (needs the
    /// crate's `tls` feature). Without it, an `https://` URL fails to connect.
    pub ca_file: Option<PathBuf>,
    /// Name the server's certificate must carry, when it differs from the URL's host.
    pub tls_domain: Option<String>,
}

impl ClientOptions {
    /// Options with `token` (`None` sends none).
    pub fn with_token(token: Option<String>) -> Self {
        Self {
            token,
            ..Self::default()
        }
    }
}

/// Adds the bearer token of [`ClientOptions`] to every request.
#[derive(Debug, Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    /// The interceptor for `token` (`None`: adds nothing).
    pub fn new(token: Option<&str>) -> Result<Self, ClientError> {
        token
            .map(|t| {
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| {
                        ClientError::Options(
                            "the token must be printable ASCII without spaces or newlines".into(),
                        )
                    })
            })
            .transpose()
            .map(Self)
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The transport of every client: a channel with the bearer token added.
pub type Transport = InterceptedService<Channel, BearerToken>;

/// Typed client of the idem gRPC API. Clones share one channel.
#[derive(Debug, Clone)]
pub struct IdemClient {
    raw: RawClient<Transport>,
}

/// The endpoint of `url` with the client's timeouts and, for `options.ca_file`, TLS.
pub fn endpoint(url: &str, options: &ClientOptions) -> Result<Endpoint, ClientError> {
    let e = Endpoint::from_shared(url.to_string())
        .map_err(|source| ClientError::InvalidUrl {
            url: url.to_string(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    tls(e, options)
}

#[cfg(feature = "tls")]
fn tls(e: Endpoint, options: &ClientOptions) -> Result<Endpoint, ClientError> {
    let Some(ca) = &options.ca_file else {
        return Ok(e);
    };
    let pem = std::fs::read(ca).map_err(|err| {
        ClientError::Options(format!("cannot read CA file {}: {err}", ca.display()))
    })?;
    let mut config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem));
    if let Some(d) = &options.tls_domain {
        config = config.domain_name(d.clone());
    }
    e.tls_config(config)
        .map_err(|err| ClientError::Options(format!("TLS settings refused: {err}")))
}

#[cfg(not(feature = "tls"))]
fn tls(e: Endpoint, options: &ClientOptions) -> Result<Endpoint, ClientError> {
    match options.ca_file {
        Some(_) => Err(ClientError::Options(
            "a CA file needs idem-client's `tls` feature".into(),
        )),
        None => Ok(e),
    }
}

impl IdemClient {
    /// Connects to `url` (for example `http://127.0.0.1:50051`); fails when it is unreachable.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        Self::connect_with(url, &ClientOptions::default()).await
    }

    /// [`connect`](Self::connect) with a token and TLS settings.
    pub async fn connect_with(url: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        let channel =
            endpoint(url, options)?
                .connect()
                .await
                .map_err(|source| ClientError::Connect {
                    url: url.to_string(),
                    source,
                })?;
        Self::from_channel_with(channel, options.token.as_deref())
    }

    /// A client that connects on first use and reconnects after failures; an unreachable
    /// server shows up as an unavailable error on each call instead of here.
    pub fn connect_lazy(url: &str) -> Result<Self, ClientError> {
        Self::connect_lazy_with(url, &ClientOptions::default())
    }

    /// [`connect_lazy`](Self::connect_lazy) with a token and TLS settings.
    pub fn connect_lazy_with(url: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        let channel = endpoint(url, options)?.connect_lazy();
        Self::from_channel_with(channel, options.token.as_deref())
    }

    /// A client over an existing channel, without a token.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            raw: RawClient::with_interceptor(channel, BearerToken::default()),
        }
    }

    /// A client over an existing channel that sends `token` on every RPC.
    pub fn from_channel_with(channel: Channel, token: Option<&str>) -> Result<Self, ClientError> {
        Ok(Self {
            raw: RawClient::with_interceptor(channel, BearerToken::new(token)?),
        })
    }

    /// The generated client on the same channel and token, for RPCs this client does not wrap.
    pub fn raw(&self) -> RawClient<Transport> {
        self.raw.clone()
    }

    /// Asks whether `tool(args)` repeats an earlier call in the scope; records it when NEW.
    pub async fn check(
        &self,
        tenant: &str,
        session: &str,
        tool: &str,
        args: &Value,
        options: &CheckOptions,
    ) -> Result<Check, ClientError> {
        let arguments_json = serde_json::to_string(args).map_err(|source| ClientError::Encode {
            what: "tool arguments",
            source,
        })?;
        let req = proto::CheckRequest {
            tenant: tenant.to_string(),
            session: session.to_string(),
            tool: tool.to_string(),
            arguments_json,
            idempotency_key: options.idempotency_key.clone(),
            deadline_ms: options.deadline_ms,
            retry: if options.resample_of.is_some() {
                proto::RetryIntent::Resample as i32
            } else {
                proto::RetryIntent::Transient as i32
            },
            retry_of: options.resample_of.clone(),
        };
        let resp = self
            .raw
            .clone()
            .check_and_record(req)
            .await
            .map_err(|s| ClientError::rpc("CheckAndRecord", s))?;
        Check::try_from(resp.into_inner())
    }

    /// Reports the outcome of a call answered NEW. The same outcome twice is harmless.
    pub async fn complete(&self, call_id: &str, outcome: Outcome) -> Result<CallInfo, ClientError> {
        self.complete_attempt(call_id, None, outcome).await
    }

    /// [`IdemClient::complete`] naming the attempt (the check's `attempt`): refused
    /// (FAILED_PRECONDITION, nothing changed) when that attempt was taken over meanwhile.
    pub async fn complete_attempt(
        &self,
        call_id: &str,
        attempt: Option<u32>,
        outcome: Outcome,
    ) -> Result<CallInfo, ClientError> {
        let mut req = match outcome {
            Outcome::Succeeded { result, cost } => proto::CompleteRequest {
                call_id: call_id.to_string(),
                outcome: proto::CallStatus::Succeeded as i32,
                result_json: Some(serde_json::to_string(&result).map_err(|source| {
                    ClientError::Encode {
                        what: "tool result",
                        source,
                    }
                })?),
                error: None,
                cost,
                attempt: None,
                compensation_json: None,
            },
            Outcome::Failed { error } => proto::CompleteRequest {
                call_id: call_id.to_string(),
                outcome: proto::CallStatus::Failed as i32,
                result_json: None,
                error: Some(error),
                cost: None,
                attempt: None,
                compensation_json: None,
            },
        };
        req.attempt = attempt;
        let resp = self
            .raw
            .clone()
            .complete(req)
            .await
            .map_err(|s| ClientError::rpc("Complete", s))?
            .into_inner();
        match resp.call {
            Some(c) => CallInfo::try_from(c),
            None => Err(ClientError::rpc(
                "Complete",
                tonic::Status::internal("response carries no call record"),
            )),
        }
    }

    /// Reads one recorded call.
    pub async fn get_call(&self, call_id: &str) -> Result<CallInfo, ClientError> {
        let resp = self
            .raw
            .clone()
            .get_call(proto::GetCallRequest {
                call_id: call_id.to_string(),
            })
            .await
            .map_err(|s| ClientError::rpc("GetCall", s))?;
        CallInfo::try_from(resp.into_inner())
    }

    /// Waits on the server until `call_id` leaves IN_PROGRESS (or is taken over), or `timeout`
    /// passes, and returns the call as it then is. A long wait is several WaitForCall RPCs,
    /// each well inside the channel's per-RPC timeout.
    pub async fn wait_for_call(
        &self,
        call_id: &str,
        timeout: Duration,
    ) -> Result<CallInfo, ClientError> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let slice = left.min(MAX_WAIT_SLICE);
            let timeout_ms = u32::try_from(slice.as_millis()).unwrap_or(u32::MAX).max(1);
            let req = proto::WaitForCallRequest {
                call_id: call_id.to_string(),
                timeout_ms,
            };
            let asked = tokio::time::Instant::now();
            let resp = self
                .raw
                .clone()
                .wait_for_call(req)
                .await
                .map_err(|s| ClientError::rpc("WaitForCall", s))?;
            let call = CallInfo::try_from(resp.into_inner())?;
            // The server answered before the slice ended: something changed (completed, taken
            // over, lease expired); the caller looks at the record.
            let early = asked.elapsed() + Duration::from_millis(50) < slice;
            if early || call.status != CallStatus::InProgress || slice >= left {
                return Ok(call);
            }
        }
    }

    /// Asks the server for its version and API (compare with [`crate::VERSION`] through
    /// [`ServerVersion::is_compatible_with`]).
    pub async fn server_version(&self) -> Result<ServerVersion, ClientError> {
        let resp = self
            .raw
            .clone()
            .get_version(proto::GetVersionRequest {})
            .await
            .map_err(|s| ClientError::rpc("GetVersion", s))?;
        Ok(ServerVersion::from(resp.into_inner()))
    }

    /// Sets the mode of tools in a session (other settings and tools are left as they are).
    pub async fn set_tool_modes(
        &self,
        tenant: &str,
        session: &str,
        modes: &std::collections::BTreeMap<String, ToolMode>,
    ) -> Result<(), ClientError> {
        let tools = modes
            .iter()
            .map(|(name, mode)| {
                let policy = proto::ToolPolicy {
                    mode: mode.as_str().to_string(),
                    ..Default::default()
                };
                (name.clone(), policy)
            })
            .collect();
        let config = proto::SessionConfig {
            tenant: tenant.to_string(),
            session: session.to_string(),
            tools,
            ..Default::default()
        };
        self.raw
            .clone()
            .configure_session(proto::ConfigureSessionRequest {
                config: Some(config),
            })
            .await
            .map_err(|s| ClientError::rpc("ConfigureSession", s))?;
        Ok(())
    }
}
