//! JSON log lines that tie logs to traces: each line has the service, level, message and
//! fields of the event, the ids of the business flow found on the spans in scope
//! (`correlation_id`, `saga_id`, `order_id`, …) and the OpenTelemetry `trace_id`/`span_id`.

use std::{fmt, io::Write, sync::OnceLock};

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::{
    Dispatch, Event, Subscriber,
    dispatcher::WeakDispatch,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

/// Span fields copied into every log line written inside the span (nearest span wins).
const FLOW_FIELDS: [&str; 7] =
    ["correlation_id", "saga_id", "order_id", "pet_id", "message_id", "message_type", "channel"];

/// The JSON log layer.
pub(super) struct JsonLogs {
    service: String,
    dispatch: OnceLock<WeakDispatch>,
}

impl JsonLogs {
    pub(super) fn new(service: &str) -> Self {
        Self { service: service.to_owned(), dispatch: OnceLock::new() }
    }

    /// `trace_id` and `span_id` of the span `id`, if it has a valid OpenTelemetry context.
    fn trace_ids(&self, id: &Id) -> Option<(String, String)> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
    }
}

/// The flow fields a span carries, kept in its extensions.
#[derive(Default)]
struct FlowFields(Map<String, Value>);

impl Visit for FlowFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if FLOW_FIELDS.contains(&field.name()) && !value.is_empty() {
            self.0.insert(field.name().to_owned(), Value::from(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if FLOW_FIELDS.contains(&field.name()) {
            let value = format!("{value:?}");
            if !value.is_empty() {
                self.0.insert(field.name().to_owned(), Value::from(value.trim_matches('"')));
            }
        }
    }
}

/// Every field of an event.
struct EventFields<'a>(&'a mut Map<String, Value>);

impl Visit for EventFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().to_owned(), Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

impl<S> Layer<S> for JsonLogs
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = FlowFields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<FlowFields>()
        {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("service".into(), Value::from(self.service.as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        let mut fields = Map::new();
        event.record(&mut EventFields(&mut fields));
        // The event's own fields first; spans fill in the flow ids it does not name.
        let leaf = ctx.event_scope(event).and_then(|mut scope| scope.next().map(|s| s.id()));
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(flow) = span.extensions().get::<FlowFields>() {
                    for (key, value) in &flow.0 {
                        fields.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                }
            }
        }
        if let Some((trace_id, span_id)) = leaf.as_ref().and_then(|id| self.trace_ids(id)) {
            line.insert("trace_id".into(), Value::from(trace_id));
            line.insert("span_id".into(), Value::from(span_id));
        }
        line.extend(fields);
        let mut bytes = match serde_json::to_vec(&line) {
            Ok(bytes) => bytes,
            Err(_) => return,
        };
        bytes.push(b'\n');
        let _ = std::io::stdout().lock().write_all(&bytes);
    }
}
