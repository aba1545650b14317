//! The console's pages: the extractors (the signed-in viewer, posted forms) and rendering
//! here, the handlers and their templates one module per area.

mod admin;
mod audit;
mod installs;
mod marketplace;
mod sign_in;
mod tasks;

pub(crate) use self::admin::*;
pub(crate) use self::audit::*;
pub(crate) use self::installs::*;
pub(crate) use self::marketplace::*;
pub(crate) use self::sign_in::*;
pub(crate) use self::tasks::*;

use std::convert::Infallible;
use std::net::IpAddr;

use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Path, RawQuery, Request, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use capecontrol_core::manifest::TaskDecl;
use capecontrol_core::registry::{InstallRequest, VersionSummary};
use capecontrol_core::runtime::TaskRequest;
use capecontrol_core::store::{
    AgentFilter, AuditFilter, CatalogQuery, CatalogSort, NewAuditEvent, TaskFilter,
};
use capecontrol_core::{Error, ErrorCategory, Manifest, Principal, TaskStatus};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Console;
use super::forms::{self, Field, scope_words};
use super::session::{
    CSRF_FIELD, SESSION_COOKIE, SIGN_IN_COOKIE, cookie, same_token, set_cookie, token,
};
use crate::http::{
    AuthError, CreatedKey, Tasks, check_page, client, event_stream, hash_key, is_admin,
};

/// Rows per page of the marketplace, task and audit lists.
pub(crate) const PAGE: usize = 20;

/// The categories and placements offered by the marketplace's filters.
const CATEGORIES: [&str; 4] = ["ai-assisted", "domain-specific", "middleware", "utility"];
const PLACEMENTS: [&str; 4] = ["chat", "dashboard", "workflow", "background"];

// ---------------------------------------------------------------------------------------------
// Extractors

/// Where the console is mounted (`/console`, or under the host's prefix).
#[derive(Debug, Clone)]
pub(crate) struct Base(pub(crate) String);

fn base_of(parts: &Parts) -> String {
    let inner = parts.uri.path();
    let original = parts
        .extensions
        .get::<OriginalUri>()
        .map(|u| u.0.path().to_owned())
        .unwrap_or_else(|| format!("/console{inner}"));
    let base = if inner == "/" {
        original.trim_end_matches('/')
    } else {
        original.strip_suffix(inner).unwrap_or("/console")
    };
    if base.is_empty() {
        "/console".into()
    } else {
        base.to_owned()
    }
}

impl FromRequestParts<Console> for Base {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &Console) -> Result<Self, Infallible> {
        Ok(Base(base_of(parts)))
    }
}

/// The client's IP address and user agent (as the API sees them).
#[derive(Debug, Clone)]
pub(crate) struct Client(Option<IpAddr>, Option<String>);

impl FromRequestParts<Console> for Client {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &Console) -> Result<Self, Infallible> {
        let (ip, ua) = client(parts, &state.api.config);
        Ok(Client(ip, ua))
    }
}

/// What every page's frame shows: where the console is, who is signed in, the CSRF token of
/// the sign-out form.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chrome {
    pub(crate) base: String,
    pub(crate) user: String,
    pub(crate) admin: bool,
    pub(crate) csrf: String,
}

/// The signed-in viewer: the principal every page acts as, its session's CSRF token.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    by: Principal,
    csrf: String,
    token: String,
    base: String,
}

impl Viewer {
    fn chrome(&self) -> Chrome {
        Chrome {
            base: self.base.clone(),
            user: self.by.user_id.clone(),
            admin: is_admin(&self.by),
            csrf: self.csrf.clone(),
        }
    }

    /// The error page of `e`, in the viewer's frame.
    fn fail(&self, e: &Error) -> Response {
        error_page(status_of(e), e, Some(&self.chrome()))
    }

    /// A redirect (303) to `path` under the console.
    fn to(&self, path: &str) -> Response {
        see_other(&format!("{}{path}", self.base))
    }

    /// Refuses a form without the session's CSRF token (403, audited `policy.denied`).
    async fn check_csrf(&self, state: &Console, form: &Form) -> Result<(), Response> {
        let sent = forms::value(&form.fields, CSRF_FIELD).unwrap_or_default();
        if same_token(sent, &self.csrf) {
            return Ok(());
        }
        let event = NewAuditEvent::by(
            &self.by,
            "policy.denied",
            json!({"action": "console.form", "reason": "CSRF token missing or wrong",
                   "path": form.path}),
        );
        if let Err(e) = state.api.platform.store().append_audit(event).await {
            return Err(self.fail(&e));
        }
        Err(self.fail(&Error::forbidden(
            "the form's CSRF token is missing or wrong: reload the page and try again",
        )))
    }

    /// Only an admin; anyone else gets 403 and an audited `policy.denied`.
    async fn admin_only(&self, state: &Console, action: &str) -> Result<(), Response> {
        if is_admin(&self.by) {
            return Ok(());
        }
        let event = NewAuditEvent::by(
            &self.by,
            "policy.denied",
            json!({"action": action, "reason": "role",
                   "required_roles": [crate::http::ADMIN_ROLE]}),
        );
        if let Err(e) = state.api.platform.store().append_audit(event).await {
            return Err(self.fail(&e));
        }
        Err(self.fail(&Error::forbidden(format!(
            "`{action}` needs the `{}` role",
            crate::http::ADMIN_ROLE
        ))))
    }
}

fn see_other(location: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, location.to_owned())]).into_response()
}

impl FromRequestParts<Console> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Console) -> Result<Self, Response> {
        let base = base_of(parts);
        let sign_in = || see_other(&format!("{base}/sign-in"));
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE).map(str::to_owned) else {
            return Err(sign_in());
        };
        let Some(session) = state.sessions.get(&token) else {
            return Err(sign_in());
        };
        let record = match state
            .api
            .platform
            .store()
            .key_by_hash(&session.key_hash)
            .await
        {
            Ok(record) if record.revoked_at.is_none() => record,
            Ok(_) => {
                state.sessions.remove(&token);
                return Err(sign_in());
            }
            Err(e) if e.category() == ErrorCategory::NotFound => {
                state.sessions.remove(&token);
                return Err(sign_in());
            }
            Err(e) => return Err(error_page(StatusCode::SERVICE_UNAVAILABLE, &e, None)),
        };
        let (ip, user_agent) = client(parts, &state.api.config);
        Ok(Viewer {
            by: Principal {
                user_id: record.user_id,
                roles: record.roles,
                scopes: Vec::new(),
                ip_address: ip,
                user_agent,
            },
            csrf: session.csrf,
            token,
            base,
        })
    }
}

/// A posted `application/x-www-form-urlencoded` body (at most the API's body limit).
#[derive(Debug, Clone)]
pub(crate) struct Form {
    fields: Vec<(String, String)>,
    path: String,
}

impl FromRequest<Console> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Console) -> Result<Self, Response> {
        let path = req.uri().path().to_owned();
        let limit = state.api.config.body_limit;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| {
                error_page(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &Error::invalid_field("", format!("the form is over {limit} bytes")),
                    None,
                )
            })?;
        let fields = form_urlencoded::parse(&bytes).into_owned().collect();
        Ok(Form { fields, path })
    }
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// A non-empty query parameter.
fn param(q: &[(String, String)], name: &str) -> Option<String> {
    forms::value(q, name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
}

/// A numeric query parameter; not a number → validation error at `/query/<name>`.
fn number_param(q: &[(String, String)], name: &str) -> Result<Option<u64>, Error> {
    match param(q, name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| Error::invalid_field(format!("/query/{name}"), "must be a whole number")),
    }
}

fn status_of(e: &Error) -> StatusCode {
    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    title: String,
    status: u16,
    detail: String,
    errors: Vec<(String, String)>,
    missing: Vec<String>,
}

/// The page of an error, with its field errors and missing scopes.
pub(crate) fn error_page(status: StatusCode, e: &Error, chrome: Option<&Chrome>) -> Response {
    let page = ErrorPage {
        chrome: chrome.cloned().unwrap_or_else(|| Chrome {
            base: "/console".into(),
            ..Chrome::default()
        }),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: e.to_string(),
        errors: e
            .field_errors()
            .iter()
            .map(|f| (f.pointer.clone(), f.message.clone()))
            .collect(),
        missing: e.missing_scopes().to_vec(),
    };
    (status, render(&page)).into_response()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
