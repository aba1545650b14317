//! The error taxonomy (the table in `docs/contracts.md`): one error type, every value of which knows its
//! category, its HTTP status and whether retrying it can help.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The category of an [`Error`]: validation 400, permission 403, not found 404, conflict 409,
/// resource 503, agent 500, rate limit 429.
///
/// ```
/// use capecontrol_core::ErrorCategory;
/// assert_eq!(ErrorCategory::RateLimit.http_status(), 429);
/// assert!(ErrorCategory::Resource.is_retryable());
/// assert_eq!("permission".parse::<ErrorCategory>().unwrap(), ErrorCategory::Permission);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCategory {
    /// Invalid manifest or input (400), with field-specific errors.
    Validation,
    /// Insufficient roles or scopes (403), with the missing scopes.
    Permission,
    /// The thing asked for does not exist (404).
    NotFound,
    /// The request conflicts with the current state (409).
    Conflict,
    /// Timeout, memory or another exhausted resource (503); retried with backoff.
    Resource,
    /// An internal failure of the agent (500); retried, counted by the circuit breaker.
    Agent,
    /// Too many requests (429); carries when to retry.
    RateLimit,
}

impl ErrorCategory {
    /// All categories, in the order of the table.
    pub const ALL: [ErrorCategory; 7] = [
        Self::Validation,
        Self::Permission,
        Self::NotFound,
        Self::Conflict,
        Self::Resource,
        Self::Agent,
        Self::RateLimit,
    ];

    /// The HTTP status code of the category (the one place this mapping lives).
    pub const fn http_status(self) -> u16 {
        match self {
            Self::Validation => 400,
            Self::Permission => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::Resource => 503,
            Self::Agent => 500,
            Self::RateLimit => 429,
        }
    }

    /// Whether a task failing with this category may be retried.
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::Resource | Self::Agent | Self::RateLimit)
    }

    /// The category's name as stored and serialized (`"not_found"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Validation => "validation",
            Self::Permission => "permission",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Resource => "resource",
            Self::Agent => "agent",
            Self::RateLimit => "rate_limit",
        }
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ErrorCategory {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownValue::new("error category", s))
    }
}

/// A string that names no value of an enumeration (returned by the `FromStr` impls).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct UnknownValue {
    /// What was being parsed.
    pub kind: &'static str,
    /// The string that was given.
    pub value: String,
}

impl UnknownValue {
    /// A new error for `value`, which is not a `kind`.
    pub fn new(kind: &'static str, value: &str) -> Self {
        Self {
            kind,
            value: value.to_owned(),
        }
    }
}

/// One problem with one field: a JSON pointer (RFC 6901) to the field and a message.
///
/// For a missing field the pointer is where the field would be (`/name`); for the whole
/// document it is `""`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FieldError {
    /// JSON pointer to the offending field.
    pub pointer: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A field error at `pointer`.
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pointer, self.message)
    }
}

/// The one error type of CapeControl. Every error has an [`ErrorCategory`].
///
/// ```
/// use capecontrol_core::{Error, ErrorCategory};
/// let e = Error::permission(["finance:write"]);
/// assert_eq!(e.category(), ErrorCategory::Permission);
/// assert_eq!(e.http_status(), 403);
/// assert_eq!(e.to_string(), "permission denied: missing scopes finance:write");
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "category", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Error {
    /// Invalid manifest or input; `errors` lists every field problem.
    #[error("{message}{}", fmt_field_errors(errors))]
    Validation {
        /// Summary.
        message: String,
        /// Every problem found, each at its JSON pointer.
        errors: Vec<FieldError>,
    },
    /// The principal lacks roles or scopes.
    #[error("permission denied: {message}")]
    Permission {
        /// What was denied.
        message: String,
        /// Exactly the scopes that are missing (may be empty when a role is missing).
        missing_scopes: Vec<String>,
    },
    /// Something that does not exist.
    #[error("{kind} not found: {id}")]
    NotFound {
        /// What kind of thing (`agent`, `task`, `tool`, …).
        kind: String,
        /// Its identifier as given.
        id: String,
    },
    /// The request conflicts with the current state (duplicate, stale version, illegal transition).
    #[error("conflict: {message}")]
    Conflict {
        /// What conflicts.
        message: String,
    },
    /// A timeout, an exhausted memory limit or an unavailable dependency.
    #[error("resource error: {message}")]
    Resource {
        /// What ran out.
        message: String,
        /// Whether the failure is transient — a lost or reset connection, a pool timeout, a
        /// serialization failure, a deadlock, a server shutting down — so that the same
        /// operation, repeated after a short wait, may succeed. Set by stores; the runtime
        /// retries its final writes on these (see [`Error::is_transient`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        transient: bool,
    },
    /// An internal failure of an agent.
    #[error("agent error: {message}")]
    Agent {
        /// What failed.
        message: String,
    },
    /// Too many requests; retry after `retry_after`.
    #[error("rate limited: {message} (retry after {} ms)", retry_after.as_millis())]
    RateLimit {
        /// Which limit.
        message: String,
        /// How long to wait before retrying.
        #[serde(with = "duration_ms")]
        retry_after: Duration,
    },
}

fn fmt_field_errors(errors: &[FieldError]) -> String {
    let mut s = String::new();
    for e in errors {
        s.push_str("; ");
        s.push_str(&e.to_string());
    }
    s
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Error {
    /// The error's category.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Self::Validation { .. } => ErrorCategory::Validation,
            Self::Permission { .. } => ErrorCategory::Permission,
            Self::NotFound { .. } => ErrorCategory::NotFound,
            Self::Conflict { .. } => ErrorCategory::Conflict,
            Self::Resource { .. } => ErrorCategory::Resource,
            Self::Agent { .. } => ErrorCategory::Agent,
            Self::RateLimit { .. } => ErrorCategory::RateLimit,
        }
    }

    /// The HTTP status of the error's category.
    pub fn http_status(&self) -> u16 {
        self.category().http_status()
    }

    /// Whether retrying can help.
    pub fn is_retryable(&self) -> bool {
        self.category().is_retryable()
    }

    /// A validation error with one or more field errors.
    pub fn validation(message: impl Into<String>, errors: Vec<FieldError>) -> Self {
        Self::Validation {
            message: message.into(),
            errors,
        }
    }

    /// A validation error about one field.
    pub fn invalid_field(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        let e = FieldError::new(pointer, message);
        Self::Validation {
            message: "invalid input".into(),
            errors: vec![e],
        }
    }

    /// A permission error listing exactly the missing scopes.
    pub fn permission<I, S>(missing: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let missing_scopes: Vec<String> = missing.into_iter().map(Into::into).collect();
        Self::Permission {
            message: format!("missing scopes {}", missing_scopes.join(", ")),
            missing_scopes,
        }
    }

    /// A permission error that is not about scopes (a missing role, say).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Permission {
            message: message.into(),
            missing_scopes: Vec::new(),
        }
    }

    /// A not-found error.
    pub fn not_found(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self::NotFound {
            kind: kind.into(),
            id: id.into(),
        }
    }

    /// A conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
        }
    }

    /// A resource error (retryable).
    pub fn resource(message: impl Into<String>) -> Self {
        Self::Resource {
            message: message.into(),
            transient: false,
        }
    }

    /// A transient resource error: the operation may succeed when repeated after a short wait
    /// (a lost connection, a pool timeout, a serialization failure, a deadlock, a restarting
    /// server). Whether an interrupted write committed is unknown.
    ///
    /// ```
    /// use capecontrol_core::{Error, ErrorCategory};
    /// let e = Error::transient("connection reset");
    /// assert!(e.is_transient());
    /// assert_eq!(e.category(), ErrorCategory::Resource);
    /// assert!(!Error::resource("out of memory").is_transient());
    /// ```
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Resource {
            message: message.into(),
            transient: true,
        }
    }

    /// Whether the error is transient (see [`Error::transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Resource {
                transient: true,
                ..
            }
        )
    }

    /// An agent error (retryable).
    pub fn agent(message: impl Into<String>) -> Self {
        Self::Agent {
            message: message.into(),
        }
    }

    /// A rate-limit error.
    pub fn rate_limit(message: impl Into<String>, retry_after: Duration) -> Self {
        Self::RateLimit {
            message: message.into(),
            retry_after,
        }
    }

    /// The field errors of a validation error (empty for other categories).
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Self::Validation { errors, .. } => errors,
            _ => &[],
        }
    }

    /// The missing scopes of a permission error (empty for other categories).
    pub fn missing_scopes(&self) -> &[String] {
        match self {
            Self::Permission { missing_scopes, .. } => missing_scopes,
            _ => &[],
        }
    }

    /// How long to wait before retrying a rate-limit error.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimit { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// `Result` with CapeControl's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_map_to_the_blueprint_statuses() {
        let table = [
            (ErrorCategory::Validation, 400, false),
            (ErrorCategory::Permission, 403, false),
            (ErrorCategory::NotFound, 404, false),
            (ErrorCategory::Conflict, 409, false),
            (ErrorCategory::Resource, 503, true),
            (ErrorCategory::Agent, 500, true),
            (ErrorCategory::RateLimit, 429, true),
        ];
        for (c, status, retry) in table {
            assert_eq!(c.http_status(), status, "{c}");
            assert_eq!(c.is_retryable(), retry, "{c}");
            assert_eq!(c.as_str().parse::<ErrorCategory>(), Ok(c));
        }
        assert!("bogus".parse::<ErrorCategory>().is_err());
    }

    #[test]
    fn errors_round_trip_through_json() {
        let errors = [
            Error::validation("bad", vec![FieldError::new("/a", "x")]),
            Error::permission(["a:b", "c:d"]),
            Error::not_found("agent", "x"),
            Error::conflict("dup"),
            Error::resource("timeout"),
            Error::transient("connection reset"),
            Error::agent("boom"),
            Error::rate_limit("user", Duration::from_millis(1500)),
        ];
        for e in errors {
            let json = serde_json::to_value(&e).unwrap();
            assert_eq!(json["category"], e.category().as_str());
            let back: Error = serde_json::from_value(json).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn permission_lists_missing_scopes_and_rate_limit_carries_retry_after() {
        let e = Error::permission(["finance:write"]);
        assert_eq!(e.missing_scopes(), ["finance:write"]);
        let r = Error::rate_limit("per principal", Duration::from_secs(2));
        assert_eq!(r.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(r.http_status(), 429);
    }
}
