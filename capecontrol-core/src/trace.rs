//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` a task is
//! submitted under is checked here, stored with the task, recorded on the attempt's span and
//! sent to container agents in the protocol's `start` message, so that every span of the task
//! carries the submitting request's trace id.

use crate::error::{Error, Result};

/// A checked `traceparent`: `version-traceid-parentid-flags`, lower-case hex, 2-32-16-2 digits,
/// neither id all zeros, version not `ff`.
///
/// ```
/// use capecontrol_core::trace::Traceparent;
/// let t = Traceparent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(t.parent_id(), "00f067aa0ba902b7");
/// assert!(Traceparent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traceparent(String);

impl Traceparent {
    /// Parses `text`; a validation error at `/traceparent` naming what is wrong.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid_field("/traceparent", format!("not a W3C traceparent: {why}"))
        };
        if text.len() > 256 {
            return Err(bad("longer than 256 characters"));
        }
        let parts: Vec<&str> = text.split('-').collect();
        if parts.len() < 4 {
            return Err(bad("expected version-traceid-parentid-flags"));
        }
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let (version, trace, parent, flags) = (parts[0], parts[1], parts[2], parts[3]);
        if !hex(version, 2) || version == "ff" {
            return Err(bad("the version must be 2 lower-case hex digits, not ff"));
        }
        if version == "00" && parts.len() != 4 {
            return Err(bad("version 00 has exactly four fields"));
        }
        if !hex(trace, 32) || trace.bytes().all(|b| b == b'0') {
            return Err(bad(
                "the trace id must be 32 lower-case hex digits, not all zero",
            ));
        }
        if !hex(parent, 16) || parent.bytes().all(|b| b == b'0') {
            return Err(bad(
                "the parent id must be 16 lower-case hex digits, not all zero",
            ));
        }
        if !hex(flags, 2) {
            return Err(bad("the flags must be 2 lower-case hex digits"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The trace id (32 hex digits).
    pub fn trace_id(&self) -> &str {
        &self.0[3..35]
    }

    /// The parent span id (16 hex digits).
    pub fn parent_id(&self) -> &str {
        &self.0[36..52]
    }

    /// The header's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Traceparent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Links a task attempt's `tracing` span to the remote span of the submitting request (the
/// task's stored `traceparent`), for an exporter that knows remote parents: the facade's `otel`
/// feature sets one that makes the attempt's OpenTelemetry span a child of that span. Called
/// right after the span is created, before any child span exists.
pub type RemoteParentHook = fn(&tracing::Span, &Traceparent);

static REMOTE_PARENT: std::sync::OnceLock<RemoteParentHook> = std::sync::OnceLock::new();

/// Sets the process's [`RemoteParentHook`]; `false` (and nothing changes) when one was set
/// already. Without a hook an attempt span records the trace id and `traceparent` as fields only.
pub fn set_remote_parent_hook(hook: RemoteParentHook) -> bool {
    REMOTE_PARENT.set(hook).is_ok()
}

/// Runs the [`RemoteParentHook`], if one is set.
pub(crate) fn link_remote_parent(span: &tracing::Span, traceparent: &Traceparent) {
    if let Some(hook) = REMOTE_PARENT.get() {
        hook(span, traceparent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_malformed_headers_at_the_field() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            let e = Traceparent::parse(bad).unwrap_err();
            assert_eq!(e.field_errors()[0].pointer, "/traceparent", "{bad}");
        }
        // A later version may append fields.
        let t = Traceparent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
            .unwrap();
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
