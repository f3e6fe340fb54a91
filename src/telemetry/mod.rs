//! Logs and traces: a fmt layer (pretty or JSON) and, when an OTLP endpoint is
//! configured, an OpenTelemetry layer exporting spans over OTLP/HTTP.
//! [`trace`] carries a notification's trace through its events, [`metrics`]
//! names and describes every Prometheus metric.

pub mod metrics;
pub mod trace;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written to stderr (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Flushes buffered spans when dropped at the end of `main`.
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("herald: flushing traces failed: {error}");
        }
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, replaces
/// `log_filter`; spans go to `otlp_endpoint` when there is one.
pub fn init(
    log_format: LogFormat,
    log_filter: &str,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Telemetry> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(log_filter)
            .map_err(|e| anyhow::anyhow!("invalid log_filter {log_filter:?}: {e}"))?,
    };
    let fmt = match log_format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let tracer_provider = otlp_endpoint.map(otlp_provider).transpose()?;
    // Herald's spans go to the collector whatever the log level: quiet
    // logs (`warn`) must not cut a notification's trace.
    let otel = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("herald"))
            .with_filter(Targets::new().with_target("herald", Level::INFO))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()?;
    Ok(Telemetry { tracer_provider })
}

fn otlp_provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    // Like the SDK's own reading of OTEL_EXPORTER_OTLP_ENDPOINT: a base URL, signal path appended.
    let traces_url = if endpoint.ends_with("/v1/traces") {
        endpoint.to_string()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("herald").build())
        .build())
}
