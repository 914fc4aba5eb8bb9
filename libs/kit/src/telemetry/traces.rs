//! The OpenTelemetry tracer provider: spans get ids always, and are exported over OTLP/HTTP
//! when an endpoint is configured.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider},
};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

use crate::config::TracingSettings;

/// The process's tracer provider.
pub(super) struct Tracer {
    provider: SdkTracerProvider,
    service: String,
}

impl Tracer {
    /// A provider for `service`; with a batch exporter to `<endpoint>/v1/traces` when
    /// `settings.otlp_endpoint` is set. Fails only if the exporter cannot be built.
    pub(super) fn new(settings: &TracingSettings, service: &str) -> Result<Self, String> {
        let resource = Resource::builder().with_service_name(service.to_owned()).build();
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio)));
        let mut builder = SdkTracerProvider::builder().with_resource(resource).with_sampler(sampler);
        let endpoint = settings.otlp_endpoint.trim_end_matches('/');
        if !endpoint.is_empty() {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{endpoint}/v1/traces"))
                .with_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| e.to_string())?;
            let batch = BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(settings.export_interval_ms))
                .build();
            builder =
                builder.with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batch).build());
        }
        Ok(Self { provider: builder.build(), service: service.to_owned() })
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans.
    pub(super) fn layer<S>(&self) -> OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer(self.service.clone()))
    }

    /// Exports what is buffered and stops.
    pub(super) fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("tracing: flushing spans on shutdown failed: {e}");
        }
    }
}
