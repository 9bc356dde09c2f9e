//! Trace context on the hot path: the span a message is handled in and the spans of its steps
//! (made only when spans are exported or a flow has its own `log_level`), the W3C
//! `traceparent` a message came with, and the one each outbound call passes on.
//!
//! Exporting itself (OTLP, the batch processor) and the per-flow log filter are set up by
//! `crate::telemetry`, which sits above the components; this part is what the flow runner, the
//! durable workers and the HTTP clients call per message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Span;

use super::Message;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The W3C trace context header, named once: looked up by a `&str`, the name is parsed and
/// checked on every request.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Whether spans are exported (then every message has spans).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Called once export is set up: from then on every message has spans.
pub fn set_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// The span a message is handled in (none when nothing wants it).
pub fn message_span(flow: &str, traced: bool, message: &Message) -> Span {
    if !(traced || exporting()) {
        return Span::none();
    }
    // At ERROR level, so that no `WEFT_LOG` level switches it off: it carries the flow's own.
    let span = tracing::error_span!(target: "weft::flow", "message", flow, id = %message.id);
    if exporting()
        && let Some(parent) = message.traceparent.as_deref().and_then(remote_parent)
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let _ = span.set_parent(parent);
    }
    span
}

/// The span of one step or output attempt, inside the message's (only when exporting).
pub fn step_span(kind: &'static str, component: &str) -> Span {
    if exporting() {
        tracing::error_span!(target: "weft::flow", "step", otel.name = component, kind)
    } else {
        Span::none()
    }
}

fn remote_parent(traceparent: &str) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    let (trace_id, span_id, flags) = parse_traceparent(traceparent)?;
    let context = SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    Some(opentelemetry::Context::new().with_remote_span_context(context))
}

/// The parts of a W3C `traceparent` (version 00): trace id, parent span id, flags.
pub fn parse_traceparent(text: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let mut parts = text.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    // Version 00 has exactly four parts; later versions may add more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let hex = |s: &str, out: &mut [u8]| -> Option<()> {
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(())
    };
    let (mut trace_id, mut span_id, mut flag) = ([0u8; 16], [0u8; 8], [0u8; 1]);
    hex(trace, &mut trace_id)?;
    hex(span, &mut span_id)?;
    hex(flags, &mut flag)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some((trace_id, span_id, flag[0]))
}

/// The `traceparent` an outbound call made now carries: the current span's when exporting,
/// else the caller's, passed on unchanged.
pub fn outbound_traceparent() -> Option<String> {
    if exporting() {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let context = Span::current().context();
        let span = context.span();
        let span = span.span_context();
        if span.is_valid() {
            return Some(format!(
                "00-{}-{}-{:02x}",
                span.trace_id(),
                span.span_id(),
                span.trace_flags().to_u8()
            ));
        }
    }
    CALLER
        .try_with(|t| t.as_deref().map(str::to_string))
        .ok()
        .flatten()
}

tokio::task_local! {
    /// The `traceparent` the message being handled came with.
    static CALLER: Option<Arc<str>>;
}

/// Runs `work` with `traceparent` (the message's) as the one outbound calls pass on.
///
/// Not an `async fn`: that would hold `work` twice (as its argument and as what it awaits),
/// and a message's whole future is copied into a box.
pub fn with_caller<F: std::future::Future>(
    traceparent: Option<Arc<str>>,
    work: F,
) -> impl std::future::Future<Output = F::Output> {
    use futures_util::future::Either;
    match traceparent {
        None => Either::Left(work),
        Some(tp) => Either::Right(CALLER.scope(Some(tp), work)),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_traceparent;

    #[test]
    fn traceparents_are_read_as_w3c_says() {
        let (trace, span, flags) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(trace[0], 0x4b);
        assert_eq!(span[7], 0xb7);
        assert_eq!(flags, 1);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // A later version may carry more parts.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
    }
}
