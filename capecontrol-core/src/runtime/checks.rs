//! What a worker checks at each attempt, besides running it: the gateway's decisions again
//! (installation, version status, grants), the retry time an error asks for (clamped), and
//! the size of an output.

use std::io::{self, Write};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::{Error, FieldError, Result};
use crate::manifest::Manifest;
use crate::policy::{Scope, missing_scopes};
use crate::state::VersionStatus;
use crate::store::{InstallationRecord, MAX_VALUE_DEPTH, nests_too_deep};

/// The gateway's checks, made again by the worker when an attempt starts: the installation
/// exists (the caller looked it up), the task's version is not archived (unless
/// `finish_archived` lets queued tasks of archived versions finish), and the installation's
/// grants still cover every scope the manifest requires. Returns the granted scopes.
/// `version` is the task's version (its agent is the installation's) and `status` its status.
pub(crate) fn recheck(
    version: &str,
    status: VersionStatus,
    manifest: &Manifest,
    installation: &InstallationRecord,
    finish_archived: bool,
) -> Result<Vec<Scope>> {
    if status == VersionStatus::Archived && !finish_archived {
        return Err(Error::conflict(format!(
            "version {version} of `{}` was archived after the task was queued; it no longer runs",
            installation.agent_id
        )));
    }
    let granted: Vec<Scope> = installation
        .granted_scopes
        .iter()
        .filter_map(|s| s.parse::<Scope>().ok())
        .collect();
    let required: Vec<Scope> = manifest
        .permissions()
        .scopes
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let missing = missing_scopes(&granted, &required);
    if !missing.is_empty() {
        return Err(Error::permission(missing.iter().map(ToString::to_string)));
    }
    Ok(granted)
}

/// When a failed attempt runs again: `delay` from `now`, the delay clamped to `max` (an
/// agent's or a container's `retry_after` can be anything), the time saturating instead of
/// overflowing.
pub(crate) fn retry_at(now: DateTime<Utc>, delay: Duration, max: Duration) -> DateTime<Utc> {
    let delay = delay.min(max);
    let delta = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    now.checked_add_signed(delta)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Counts bytes and fails once past a limit, so that an oversized value is not serialized in
/// full.
struct Capped {
    written: usize,
    limit: usize,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written = self.written.saturating_add(buf.len());
        if self.written > self.limit {
            return Err(io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Drops `value` without recursion: a value nested deeper than the stack allows (an
/// in-process agent's refused output) would overflow it if dropped the usual way.
pub(crate) fn drop_flat(value: Value) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// Checks that `output` nests at most [`MAX_VALUE_DEPTH`] levels (no store could read a
/// deeper one back) and, serialized as JSON, takes at most `limit` bytes: otherwise a
/// validation error (not retryable) at `/output` naming the limit. The depth is checked first,
/// without recursion, so that the serialization does not recurse deeper than that.
pub(crate) fn check_output(output: &Value, limit: usize) -> Result<()> {
    if nests_too_deep(output) {
        return Err(Error::validation(
            "task output nested too deep",
            vec![FieldError::new(
                "/output",
                format!("is nested deeper than {MAX_VALUE_DEPTH} levels"),
            )],
        ));
    }
    let mut w = Capped { written: 0, limit };
    match serde_json::to_writer(&mut w, output) {
        Ok(()) => Ok(()),
        Err(_) => Err(Error::validation(
            "task output too large",
            vec![FieldError::new(
                "/output",
                format!(
                    "the output exceeds the limit of {limit} bytes of JSON \
                     (PlatformConfig::max_output_bytes)"
                ),
            )],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retry_at_clamps_and_never_overflows() {
        let now = Utc::now();
        let max = Duration::from_secs(3600);
        assert_eq!(
            retry_at(now, Duration::MAX, max),
            now + chrono::Duration::hours(1)
        );
        assert_eq!(
            retry_at(now, Duration::from_secs(5), max),
            now + chrono::Duration::seconds(5)
        );
        // Even an unclamped absurd delay saturates instead of panicking.
        assert_eq!(
            retry_at(now, Duration::MAX, Duration::MAX),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn output_nested_too_deep_is_refused_before_it_is_serialized() {
        let nested = |levels: usize| {
            let mut v = json!("bottom");
            for _ in 0..levels {
                v = Value::Array(vec![v]);
            }
            v
        };
        assert!(check_output(&nested(MAX_VALUE_DEPTH), usize::MAX).is_ok());
        let e = check_output(&nested(MAX_VALUE_DEPTH + 1), usize::MAX).unwrap_err();
        assert_eq!(e.field_errors()[0].pointer, "/output");
        assert!(e.to_string().contains("nested too deep"), "{e}");
        // Deep enough that serializing it (recursively) could overflow the stack.
        let deep = nested(100_000);
        let e = check_output(&deep, usize::MAX).unwrap_err();
        assert_eq!(e.field_errors()[0].pointer, "/output");
        // Dropping 100,000 levels recursively could overflow the stack too.
        drop_flat(deep);
        drop_flat(json!({"a": [1, {"b": [2, 3]}], "c": null}));
    }

    #[test]
    fn output_over_the_limit_is_a_validation_error_naming_it() {
        assert!(check_output(&json!("abc"), 5).is_ok());
        let e = check_output(&json!("abcdef"), 5).unwrap_err();
        assert_eq!(e.category(), crate::ErrorCategory::Validation);
        assert!(!e.is_retryable());
        assert_eq!(e.field_errors()[0].pointer, "/output");
        assert!(e.field_errors()[0].message.contains("5 bytes"), "{e:?}");
    }
}
