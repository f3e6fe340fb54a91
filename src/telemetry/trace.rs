//! A notification's trace: one W3C trace id from its request to its last
//! provider call. The id is kept in every event's metadata (with the span
//! that recorded the event), so a worker in another process, later, puts
//! its spans in the same trace.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A place in a trace: its id and, when spans are exported, the span there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracePoint {
    pub trace_id: TraceId,
    pub span_id: Option<SpanId>,
}

tokio::task_local! {
    /// The trace an HTTP request belongs to, for a process that exports no
    /// spans (whose spans then carry no trace ids).
    static REQUEST: TracePoint;
}

impl TracePoint {
    /// A trace of its own.
    pub fn new_trace() -> TracePoint {
        let mut bytes = [0u8; 16];
        while bytes == [0; 16] {
            rand::fill(&mut bytes);
        }
        TracePoint {
            trace_id: TraceId::from_bytes(bytes),
            span_id: None,
        }
    }

    /// The trace a caller named in a request's `trace_id`: a W3C trace id
    /// (32 hex digits) as it is; any other string always maps to the same
    /// trace, by the first 16 bytes of its SHA-256.
    pub fn from_caller(trace_id: &str) -> TracePoint {
        let w3c = trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit());
        let trace_id = match TraceId::from_hex(trace_id) {
            Ok(id) if w3c && id != TraceId::INVALID => id,
            _ => {
                let digest = Sha256::digest(trace_id.as_bytes());
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(&digest[..16]);
                TraceId::from_bytes(bytes)
            }
        };
        TracePoint {
            trace_id,
            span_id: None,
        }
    }

    /// The caller's span of a W3C `traceparent` header, if it is a valid one.
    pub fn from_traceparent(header: &str) -> Option<TracePoint> {
        let carrier = std::collections::HashMap::from([("traceparent".to_string(), header.into())]);
        let context = TraceContextPropagator::new().extract(&carrier);
        let span = context.span();
        let remote = span.span_context();
        remote.is_valid().then(|| TracePoint {
            trace_id: remote.trace_id(),
            span_id: Some(remote.span_id()),
        })
    }

    /// Where `span` is, when spans are exported.
    pub fn of_span(span: &tracing::Span) -> Option<TracePoint> {
        let context = span.context();
        let otel = context.span();
        let here = otel.span_context();
        here.is_valid().then(|| TracePoint {
            trace_id: here.trace_id(),
            span_id: Some(here.span_id()),
        })
    }

    /// The trace of the work in hand: the current span's, else the HTTP
    /// request's ([`in_request`]).
    pub fn current() -> Option<TracePoint> {
        TracePoint::of_span(&tracing::Span::current()).or_else(|| REQUEST.try_with(|t| *t).ok())
    }

    /// As recorded in an event's metadata by [`TracePoint::write`].
    pub fn read(metadata: &Value) -> Option<TracePoint> {
        let trace_id = metadata.get("trace_id")?.as_str()?;
        let trace_id = TraceId::from_hex(trace_id)
            .ok()
            .filter(|id| *id != TraceId::INVALID)?;
        let span_id = metadata
            .get("span_id")
            .and_then(Value::as_str)
            .and_then(|id| SpanId::from_hex(id).ok())
            .filter(|id| *id != SpanId::INVALID);
        Some(TracePoint { trace_id, span_id })
    }

    /// Records it in an event's metadata, as lowercase hex.
    pub fn write(&self, metadata: &mut serde_json::Map<String, Value>) {
        metadata.insert("trace_id".into(), self.trace_id.to_string().into());
        if let Some(span_id) = self.span_id {
            metadata.insert("span_id".into(), span_id.to_string().into());
        }
    }

    /// Makes `span`, just created (never entered, nor asked for its
    /// context, which starts it), a child of this point, unless the current
    /// span, its parent, is in this trace already. Without a span id here (a
    /// caller's bare trace id, a process that exported no spans) its parent
    /// id is the current span's, of another trace, or else one of Herald's
    /// choosing: either way no span of this trace, so backends show it as
    /// the trace's root.
    pub fn adopt(&self, span: &tracing::Span) {
        let current = TracePoint::of_span(&tracing::Span::current());
        if current.is_some_and(|here| here.trace_id == self.trace_id) {
            return;
        }
        let span_id = self.span_id.or(current.and_then(|here| here.span_id));
        let span_id = span_id.unwrap_or_else(|| {
            let mut bytes = [0u8; 8];
            while bytes == [0; 8] {
                rand::fill(&mut bytes);
            }
            SpanId::from_bytes(bytes)
        });
        let parent = SpanContext::new(
            self.trace_id,
            span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        // Fails only when spans are not exported or the span was entered.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    }
}

/// Runs `work` (an HTTP request's handling) with `trace` as the request's
/// trace for [`TracePoint::current`].
pub async fn in_request<F: std::future::Future>(trace: TracePoint, work: F) -> F::Output {
    REQUEST.scope(trace, work).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_trace_ids() {
        let w3c = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(TracePoint::from_caller(w3c).trace_id.to_string(), w3c);
        let upper = TracePoint::from_caller(&w3c.to_uppercase());
        assert_eq!(upper.trace_id.to_string(), w3c);
        // Anything else: the same trace every time, never the invalid one.
        let named = TracePoint::from_caller("order-1234");
        assert_eq!(named, TracePoint::from_caller("order-1234"));
        assert_ne!(named.trace_id, TraceId::INVALID);
        assert_ne!(named, TracePoint::from_caller("order-1235"));
        let zeros = TracePoint::from_caller(&"0".repeat(32));
        assert_ne!(zeros.trace_id, TraceId::INVALID);
    }

    #[test]
    fn traceparent_headers() {
        let point =
            TracePoint::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .expect("valid");
        assert_eq!(
            point.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(point.span_id.unwrap().to_string(), "00f067aa0ba902b7");
        assert!(TracePoint::from_traceparent("garbage").is_none());
        assert!(
            TracePoint::from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
                .is_none()
        );
    }

    #[test]
    fn metadata_round_trip() {
        let point = TracePoint {
            span_id: Some(SpanId::from_bytes([1, 2, 3, 4, 5, 6, 7, 8])),
            ..TracePoint::new_trace()
        };
        let mut metadata = serde_json::Map::new();
        point.write(&mut metadata);
        assert_eq!(TracePoint::read(&Value::Object(metadata)), Some(point));
        assert_eq!(
            TracePoint::read(&serde_json::json!({ "trace_id": null })),
            None
        );
    }
}
