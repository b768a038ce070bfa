//! Logs and traces of the server: log lines on stderr (`log_format`, filtered by `RUST_LOG`),
//! and, in a build with the `otlp` cargo feature and `otlp_endpoint` set, the spans (one per
//! RPC, a child per funnel stage) exported over OTLP/HTTP (protobuf) by a batch exporter.
//! Spans carry the RPC, the verdict and the stage, never argument values.

use crate::config::LogFormat;

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `otlp_endpoint` is set in a build without the `otlp` feature.
    #[error(
        "otlp_endpoint is set but this idem was built without OTLP export: build it with \
         `cargo build --release --features otlp`, or unset otlp_endpoint"
    )]
    NotBuilt,
    /// The OTLP exporter could not be built (the message names the setting).
    #[error("cannot start the OTLP exporter: {0}")]
    Exporter(String),
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// Installed telemetry; [`Telemetry::shutdown`] sends the spans still buffered.
#[must_use = "dropping it without shutdown loses the spans still buffered"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the buffered spans and stops the exporter (blocking: call it once, at exit).
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(%e, "OTLP exporter shutdown failed; spans may be lost");
        }
    }
}

/// Installs the global subscriber: log lines in `format` on stderr (`RUST_LOG`, default
/// `idem=info`) and, when `otlp_endpoint` is given (the full traces URL, e.g.
/// `http://127.0.0.1:4318/v1/traces`), the OTLP span exporter.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Telemetry, TelemetryError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "idem=info".into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt);
    let Some(endpoint) = otlp_endpoint.filter(|e| !e.is_empty()) else {
        registry
            .try_init()
            .map_err(|e| TelemetryError::Install(e.to_string()))?;
        return Ok(Telemetry {
            #[cfg(feature = "otlp")]
            provider: None,
        });
    };
    #[cfg(not(feature = "otlp"))]
    {
        let _ = endpoint;
        Err(TelemetryError::NotBuilt)
    }
    #[cfg(feature = "otlp")]
    {
        let (layer, provider) = otlp::layer(endpoint)?;
        registry
            .with(layer)
            .try_init()
            .map_err(|e| TelemetryError::Install(e.to_string()))?;
        tracing::info!(endpoint, "exporting spans over OTLP/HTTP");
        Ok(Telemetry {
            provider: Some(provider),
        })
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::filter_fn;

    use super::TelemetryError;

    /// The layer exporting idem's spans (RPC and stage spans, debug level and up; no events).
    pub(super) fn layer<S>(
        endpoint: &str,
    ) -> Result<(impl Layer<S> + Send + Sync + 'static, SdkTracerProvider), TelemetryError>
    where
        S: tracing::Subscriber
            + for<'a> tracing_subscriber::registry::LookupSpan<'a>
            + Send
            + Sync
            + 'static,
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| TelemetryError::Exporter(format!("otlp_endpoint {endpoint:?}: {e}")))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("idem")
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                crate::VERSION,
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("idem");
        let only_our_spans = filter_fn(|m| {
            m.is_span() && m.target().starts_with("idem") && *m.level() <= tracing::Level::DEBUG
        });
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(only_our_spans);
        Ok((layer, provider))
    }
}
