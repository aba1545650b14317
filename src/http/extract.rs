//! Extractors: the authenticated caller, JSON bodies and query strings whose errors are
//! problems naming the field.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use capecontrol_core::store::NewAuditEvent;
use capecontrol_core::{Error, FieldError, Principal};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::auth::AuthError;
use super::problem::Problem;
use super::{ApiState, HttpConfig};

/// The longest user agent kept (longer ones are cut at a character boundary).
pub const MAX_USER_AGENT: usize = 512;

/// The authenticated caller of a route, as a [`Principal`] (user, roles, IP, user agent).
#[derive(Debug, Clone, PartialEq)]
pub struct Caller(pub Principal);

/// The client's IP and user agent.
pub(crate) fn client(parts: &Parts, config: &HttpConfig) -> (Option<IpAddr>, Option<String>) {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = match peer {
        Some(peer) if config.trusted_proxies.contains(&peer) => {
            forwarded_for(parts, config).or(Some(peer))
        }
        other => other,
    };
    let agent = parts
        .headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| {
            let mut end = ua.len().min(MAX_USER_AGENT);
            while !ua.is_char_boundary(end) {
                end -= 1;
            }
            ua[..end].to_owned()
        });
    (ip, agent)
}

/// The last address of `X-Forwarded-For` (over all its headers) that is not a trusted proxy:
/// the client as seen by the outermost proxy we trust.
fn forwarded_for(parts: &Parts, config: &HttpConfig) -> Option<IpAddr> {
    let hops: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        let ip: IpAddr = hop.parse().ok()?;
        if !config.trusted_proxies.contains(&ip) {
            return Some(ip);
        }
    }
    None
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let (ip, user_agent) = client(parts, &state.config);
        match state.auth.authenticate(&parts.headers).await {
            Ok(identity) => Ok(Caller(Principal {
                user_id: identity.user_id,
                roles: identity.roles,
                scopes: Vec::new(),
                ip_address: ip,
                user_agent,
            })),
            Err(AuthError::Unavailable(e)) => Err(Problem::from(Error::resource(format!(
                "cannot authenticate now: {e}"
            )))),
            Err(e) => {
                let event = NewAuditEvent {
                    event_type: "auth.denied".into(),
                    payload: json!({
                        "reason": e.to_string(),
                        "method": parts.method.as_str(),
                        "path": parts.uri.path(),
                    }),
                    ip_address: ip,
                    user_agent,
                    ..NewAuditEvent::default()
                };
                if let Err(error) = state.platform.store().append_audit(event).await {
                    tracing::warn!(%error, "could not audit a failed authentication");
                }
                Err(Problem::unauthorized(e.to_string()))
            }
        }
    }
}

/// A JSON pointer from a serde path.
fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        out.push('/');
        match segment {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Unknown => out.push('?'),
        }
    }
    if out == "/?" { String::new() } else { out }
}

/// The problem of a body or query that does not deserialize; `prefix` is prepended to the
/// field's pointer (`""` for bodies, `"/query"` for query strings).
fn invalid<E: std::fmt::Display>(
    what: &str,
    prefix: &str,
    e: &serde_path_to_error::Error<E>,
) -> Problem {
    let at = format!("{prefix}{}", pointer(e.path()));
    let message = e.inner().to_string();
    Problem::from(Error::validation(
        format!("invalid {what}"),
        vec![FieldError::new(at, message)],
    ))
}

/// A JSON request body, read up to [`HttpConfig::body_limit`] (413 beyond), with unknown
/// fields rejected by the target type and every error at its pointer.
#[derive(Debug, Clone)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<ApiState> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, Self::Rejection> {
        let limit = state.config.body_limit;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|e| {
                let too_large = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                    || e.into_inner().is::<http_body_util::LengthLimitError>();
                if too_large {
                    Problem::payload_too_large(limit)
                } else {
                    Problem::from(Error::validation(
                        "the request body could not be read",
                        vec![FieldError::new("", "unreadable body")],
                    ))
                }
            })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &bytes
        };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| invalid("request body", "", &e))?;
        de.end()
            .map_err(|e| Problem::from(Error::invalid_field("", format!("trailing data: {e}"))))?;
        Ok(JsonBody(value))
    }
}

/// Query parameters, with unknown parameters rejected by the target type and every error at
/// `/query/<name>`.
#[derive(Debug, Clone)]
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| invalid("query string", "/query", &e))
    }
}

/// A task id from the path (not a UUID: 400 at `/path/task_id`).
pub(crate) fn task_id(raw: &str) -> capecontrol_core::Result<uuid::Uuid> {
    raw.parse()
        .map_err(|_| Error::invalid_field("/path/task_id", "the task id must be a UUID"))
}

#[cfg(test)]
mod tests {
    use axum::http::Request as HttpRequest;

    use super::*;

    fn parts(peer: &str, xff: &[&str]) -> Parts {
        let mut b = HttpRequest::builder().uri("/api/agents");
        for x in xff {
            b = b.header("x-forwarded-for", *x);
        }
        let (mut parts, ()) = b.body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(ConnectInfo::<SocketAddr>(peer.parse().unwrap()));
        parts
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let none = HttpConfig::default();
        let p = parts("10.0.0.1:5000", &["203.0.113.9"]);
        assert_eq!(client(&p, &none).0, Some("10.0.0.1".parse().unwrap()));

        let trusted = HttpConfig {
            trusted_proxies: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
            ..HttpConfig::default()
        };
        let p = parts("10.0.0.1:5000", &["198.51.100.7, 203.0.113.9", "10.0.0.2"]);
        assert_eq!(client(&p, &trusted).0, Some("203.0.113.9".parse().unwrap()));
        let p = parts("192.0.2.1:5000", &["203.0.113.9"]);
        assert_eq!(client(&p, &trusted).0, Some("192.0.2.1".parse().unwrap()));
        let p = parts("10.0.0.1:5000", &["garbage"]);
        assert_eq!(client(&p, &trusted).0, Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn pointers_escape_keys() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: Vec<u32>,
        }
        let mut de = serde_json::Deserializer::from_str(r#"{"a":[1,"x"]}"#);
        let e = serde_path_to_error::deserialize::<_, T>(&mut de).unwrap_err();
        assert_eq!(pointer(e.path()), "/a/1");
    }
}
