//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Every error a route returns is a [`Problem`]: the [`ErrorCategory`] as `category` (and in
//! the `type` URI), the HTTP status of the category, the message as `detail`, the field errors
//! with their JSON pointers, the missing scopes of a permission error, and for a rate limit a
//! `Retry-After` header (whole seconds, rounded up) with `retry_after_ms` in the body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use capecontrol_core::{Error, ErrorCategory, FieldError};
use serde::{Deserialize, Serialize};

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem details object (RFC 9457) with CapeControl's extension members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:capecontrol:problem:<category>` (or `…:unauthorized`, `…:payload_too_large`).
    #[serde(rename = "type")]
    pub type_uri: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this occurrence.
    pub detail: String,
    /// The error category (`validation`, `permission`, …); `unauthorized` and
    /// `payload_too_large` for the two problems the HTTP layer adds.
    pub category: String,
    /// Field errors, each at a JSON pointer (validation problems).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<FieldError>,
    /// The scopes that are missing (permission problems).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_scopes: Vec<String>,
    /// When to retry, in milliseconds (rate-limit problems).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

fn title(category: ErrorCategory) -> &'static str {
    match category {
        ErrorCategory::Validation => "Invalid request",
        ErrorCategory::Permission => "Permission denied",
        ErrorCategory::NotFound => "Not found",
        ErrorCategory::Conflict => "Conflict",
        ErrorCategory::Resource => "Service unavailable",
        ErrorCategory::Agent => "Agent error",
        ErrorCategory::RateLimit => "Too many requests",
        _ => "Error",
    }
}

impl Problem {
    /// The problem of a CapeControl error.
    pub fn from_error(error: &Error) -> Self {
        let category = error.category();
        Self {
            type_uri: format!("urn:capecontrol:problem:{category}"),
            title: title(category).to_owned(),
            status: category.http_status(),
            detail: error.to_string(),
            category: category.as_str().to_owned(),
            errors: error.field_errors().to_vec(),
            missing_scopes: error.missing_scopes().to_vec(),
            retry_after_ms: error
                .retry_after()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// 401: no credentials, or credentials that authenticate nobody.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::other(401, "unauthorized", "Unauthorized", detail)
    }

    /// 413: the request body is larger than the limit.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::other(
            413,
            "payload_too_large",
            "Payload too large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    fn other(status: u16, category: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("urn:capecontrol:problem:{category}"),
            title: title.to_owned(),
            status,
            detail: detail.into(),
            category: category.to_owned(),
            errors: Vec::new(),
            missing_scopes: Vec::new(),
            retry_after_ms: None,
        }
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        Self::from_error(&error)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1));
        let unauthorized = self.status == 401;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if unauthorized {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"capecontrol\""),
            );
        }
        response
    }
}

/// What a route returns on failure.
pub type ApiResult<T> = Result<T, Problem>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_category_maps_to_its_status_and_type() {
        for category in ErrorCategory::ALL {
            let error = match category {
                ErrorCategory::Validation => Error::invalid_field("/name", "blank"),
                ErrorCategory::Permission => Error::permission(["finance:write"]),
                ErrorCategory::NotFound => Error::not_found("task", "x"),
                ErrorCategory::Conflict => Error::conflict("x"),
                ErrorCategory::Resource => Error::resource("x"),
                ErrorCategory::Agent => Error::agent("x"),
                _ => Error::rate_limit("x", Duration::from_millis(1500)),
            };
            let p = Problem::from(error);
            assert_eq!(p.status, category.http_status());
            assert_eq!(p.category, category.as_str());
            assert_eq!(p.type_uri, format!("urn:capecontrol:problem:{category}"));
        }
    }

    #[test]
    fn rate_limit_sets_retry_after_in_whole_seconds_rounded_up() {
        let r = Problem::from(Error::rate_limit("slow down", Duration::from_millis(1500)))
            .into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn field_errors_and_missing_scopes_are_members() {
        let p = Problem::from(Error::invalid_field("/input/amount", "must be positive"));
        assert_eq!(
            p.errors,
            [FieldError::new("/input/amount", "must be positive")]
        );
        let p = Problem::from(Error::permission(["finance:write"]));
        assert_eq!(p.missing_scopes, ["finance:write"]);
    }
}
