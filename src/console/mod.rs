//! The web console (feature `console`): server-rendered pages under `/console`, mounted by the
//! [`crate::http`] router (and so by `capecontrol serve`).
//!
//! - **Sign-in** with an API key: the key is checked like a bearer key (a failure is audited
//!   `auth.denied`), then the browser holds only a random session token in an HTTP-only,
//!   `SameSite=Strict` cookie; the session keeps the key's hash, so revoking the key signs it
//!   out. Every form carries the session's CSRF token and every `POST` without it is refused
//!   (403, audited `policy.denied`).
//! - **One path**: every page calls the same [`Platform`](capecontrol_core::runtime::Platform),
//!   registry and task adapter as the JSON API, with a [`Principal`](capecontrol_core::Principal)
//!   made of the key's user and roles and the client's IP and user agent: the same gateway,
//!   policy and audit trail. Admin pages need the `admin` role (else 403 and `policy.denied`).
//! - **Templates** are askama's (compiled and type-checked, HTML-escaped by default), in
//!   `src/console/templates`; a small stylesheet and one plain script (the task page's live
//!   view over Server-Sent Events) are served from `/console/static/`.
//! - **Headers**: a strict Content-Security-Policy (no inline script or style, `'self'` only,
//!   `frame-ancestors 'none'`), `X-Content-Type-Options: nosniff`, `Referrer-Policy:
//!   same-origin` and `Cache-Control: no-store` on every page.

mod forms;
mod pages;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::http::ApiState;

pub use self::session::{CSRF_FIELD, MAX_SESSIONS, SESSION_COOKIE, SESSION_IDLE, SIGN_IN_COOKIE};

/// The Content-Security-Policy of every console response.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The console's state: the API's, plus the sessions.
#[derive(Clone)]
pub(crate) struct Console {
    api: ApiState,
    sessions: Arc<session::Sessions>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

const STYLESHEET: &str = include_str!("static/console.css");
const TASK_SCRIPT: &str = include_str!("static/task.js");

async fn stylesheet() -> Response {
    (
        [
            ("content-type", "text/css; charset=utf-8"),
            ("cache-control", "public, max-age=300"),
        ],
        STYLESHEET,
    )
        .into_response()
}

async fn task_script() -> Response {
    (
        [
            ("content-type", "text/javascript; charset=utf-8"),
            ("cache-control", "public, max-age=300"),
        ],
        TASK_SCRIPT,
    )
        .into_response()
}

/// Adds the security headers to every console response (pages: `no-store`).
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn not_found() -> Response {
    pages::error_page(
        StatusCode::NOT_FOUND,
        &capecontrol_core::Error::not_found("page", "this address"),
        None,
    )
}

/// The console's routes on the API's state (merged by [`crate::http::Api::router`]).
pub(crate) fn routes(api: ApiState) -> Router<ApiState> {
    let console = Console {
        api,
        sessions: Arc::default(),
    };
    let pages = Router::new()
        .route("/", get(pages::home))
        .route("/sign-in", get(pages::sign_in_form).post(pages::sign_in))
        .route("/sign-out", post(pages::sign_out))
        .route("/marketplace", get(pages::marketplace))
        .route("/agents/{id}", get(pages::agent))
        .route("/agents/{id}/install", post(pages::install))
        .route("/agents/{id}/upgrade", post(pages::upgrade))
        .route("/agents/{id}/uninstall", post(pages::uninstall))
        .route(
            "/agents/{id}/tasks/{task}",
            get(pages::task_form).post(pages::submit),
        )
        .route("/installations", get(pages::installations))
        .route("/tasks", get(pages::tasks))
        .route("/tasks/{task_id}", get(pages::task))
        .route("/tasks/{task_id}/cancel", post(pages::cancel))
        .route("/tasks/{task_id}/events", get(pages::events))
        .route("/audit", get(pages::audit))
        .route("/admin/agents", get(pages::admin_agents))
        .route(
            "/admin/agents/{id}/archive",
            post(pages::admin_archive_agent),
        )
        .route(
            "/admin/agents/{id}/versions/{ver}/publish",
            post(pages::admin_publish),
        )
        .route(
            "/admin/agents/{id}/versions/{ver}/archive",
            post(pages::admin_archive_version),
        )
        .route(
            "/admin/keys",
            get(pages::admin_keys).post(pages::admin_create_key),
        )
        .route("/admin/keys/{id}/revoke", post(pages::admin_revoke_key))
        .route("/static/console.css", get(stylesheet))
        .route("/static/task.js", get(task_script))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console);
    Router::new().nest("/console", pages)
}
