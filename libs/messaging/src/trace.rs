//! W3C trace context (`traceparent`) for messages and requests.
//!
//! A new message carries the trace context of the span that creates it (the HTTP request or
//! the handler of the message that caused it), so an order is one trace across every service
//! and backend. Consumer spans are **children** of that producer context (not links): one
//! order, one connected tree. Without an OpenTelemetry layer installed (tools, some tests)
//! the ids are still generated here, continuing the cause's trace, so propagation never
//! depends on the exporter.

use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of the current `tracing` span, if an OpenTelemetry layer gives it a
/// valid span context.
pub fn current() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

/// The OpenTelemetry context of a remote parent given as a `traceparent`; `None` when it is
/// not a valid version-00 value.
pub fn remote_context(traceparent: &str) -> Option<Context> {
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let ["00", trace_id, span_id, flags] = parts.as_slice() else { return None };
    if trace_id.len() != 32 || span_id.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, TraceState::default());
    sc.is_valid().then(|| Context::new().with_remote_span_context(sc))
}

/// Makes `span` a child of the remote parent `traceparent` (ignored when invalid). Call it
/// right after creating the span, before anything is logged in it.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    if let Some(cx) = traceparent.and_then(remote_context) {
        // Fails only if the span already started; then it keeps its own parent.
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` for a new message: the current span's context, or else a new span id
/// in the cause's trace, or else a new trace.
pub fn for_new_message(cause: Option<&str>) -> String {
    current().unwrap_or_else(|| cause.map_or_else(new_root, child_of))
}

/// A `traceparent` for a new trace.
pub fn new_root() -> String {
    format!("00-{:032x}-{:016x}-01", nonzero_u128(), nonzero_u64())
}

/// A `traceparent` continuing `parent`'s trace with a new span id; a new trace when `parent`
/// is not a valid version-00 `traceparent`.
pub fn child_of(parent: &str) -> String {
    let parts: Vec<&str> = parent.split('-').collect();
    match parts.as_slice() {
        ["00", trace_id, span_id, flags]
            if trace_id.len() == 32
                && span_id.len() == 16
                && flags.len() == 2
                && [trace_id, span_id, flags].iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
                && trace_id.bytes().any(|b| b != b'0') =>
        {
            format!("00-{trace_id}-{:016x}-{flags}", nonzero_u64())
        }
        _ => new_root(),
    }
}

fn nonzero_u128() -> u128 {
    rand::random::<u128>().max(1)
}

fn nonzero_u64() -> u64 {
    rand::random::<u64>().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_keeps_the_trace_and_gets_a_new_span() {
        let root = new_root();
        let child = child_of(&root);
        assert_eq!(root.len(), 55);
        assert_eq!(root[..35], child[..35], "same version and trace id");
        assert_ne!(root[36..52], child[36..52], "new span id");
        assert_eq!(&child[52..], "-01");
    }

    #[test]
    fn a_traceparent_becomes_a_remote_parent_context() {
        let cx = remote_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote() && sc.is_sampled());
        for bad in ["", "00-0000-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"] {
            assert!(remote_context(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn without_a_tracing_layer_a_new_message_continues_its_cause() {
        let cause = new_root();
        let next = for_new_message(Some(&cause));
        assert_eq!(cause[..35], next[..35]);
        assert_ne!(cause, next);
    }

    #[test]
    fn an_invalid_parent_starts_a_new_trace() {
        for bad in ["", "garbage", "00-00000000000000000000000000000000-0000000000000001-01", "01-abc-def-01"] {
            let t = child_of(bad);
            assert!(t.starts_with("00-") && t.len() == 55, "{bad}: {t}");
        }
    }
}
