//! OpenTelemetry export of the task spans (feature `otel`, not on by default).
//!
//! The platform traces with `tracing`: a span `attempt` per task attempt, `step` per durable
//! step and `tool_call` per tool call (see `docs/observability.md`). With this feature a host
//! exports them through OpenTelemetry with [`tracing_opentelemetry`]'s layer over an SDK tracer
//! of its choice, and calls [`link_remote_parents`] once, so that each attempt's span is a child
//! of the submitting request's *remote* span: the same trace id and, as parent span id, the one
//! in the task's stored W3C `traceparent`. Steps are children of their attempt, tool calls of
//! their step.
//!
//! ```no_run
//! use capecontrol::otel::opentelemetry::trace::TracerProvider as _;
//! use capecontrol::otel::opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
//! use tracing_subscriber::layer::SubscriberExt as _;
//!
//! /// Any SDK exporter: OTLP (the `opentelemetry-otlp` crate), stdout, in-memory...
//! fn install(exporter: impl SpanExporter + 'static) -> SdkTracerProvider {
//!     let provider = SdkTracerProvider::builder().with_simple_exporter(exporter).build();
//!     let layer = capecontrol::otel::tracing_opentelemetry::layer()
//!         .with_tracer(provider.tracer("capecontrol"));
//!     tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
//!         .expect("no other global subscriber");
//!     capecontrol::otel::link_remote_parents();
//!     provider
//! }
//! ```
//!
//! The crate sets no exporter, sampler or global provider itself, and the `capecontrol` binary
//! does not enable the feature (library use only).

pub use opentelemetry;
pub use opentelemetry_sdk;
pub use tracing_opentelemetry;

use capecontrol_core::trace::Traceparent;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Makes each task attempt's OpenTelemetry span a child of the remote span named by the task's
/// stored `traceparent` (through [`capecontrol_core::trace::set_remote_parent_hook`]). Call it
/// once per process, with the `tracing_opentelemetry` layer installed; calling it again does
/// nothing. A task without a `traceparent` starts its own trace.
pub fn link_remote_parents() {
    // `false` only when a hook is set already: this one, or the host's own.
    let _ = capecontrol_core::trace::set_remote_parent_hook(set_remote_parent);
}

/// The OpenTelemetry context whose span is the remote one `traceparent` names (its trace id,
/// parent span id and sampled flag).
pub fn remote_context(traceparent: &Traceparent) -> opentelemetry::Context {
    let flags = traceparent
        .as_str()
        .split('-')
        .nth(3)
        .and_then(|f| u8::from_str_radix(f, 16).ok())
        .unwrap_or(0);
    let span = SpanContext::new(
        TraceId::from_hex(traceparent.trace_id()).unwrap_or(TraceId::INVALID),
        SpanId::from_hex(traceparent.parent_id()).unwrap_or(SpanId::INVALID),
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(span)
}

fn set_remote_parent(span: &tracing::Span, traceparent: &Traceparent) {
    // An error means no OpenTelemetry layer is installed (nothing to link) or the span was
    // already started (the hook runs before any child exists, so it was not).
    let _ = span.set_parent(remote_context(traceparent));
}
