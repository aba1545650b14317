//! The HTTP API (feature `http`): [`router`] returns an axum [`Router`] a host nests under its
//! own prefix (or serves as is); `capecontrol serve` serves it.
//!
//! - JSON routes under `/api` (agents, versions, marketplace, installations, tasks, audit, API
//!   keys), `GET /api/agents/tasks/{task_id}/events` as Server-Sent Events, `/healthz` and
//!   `/readyz` without authentication.
//! - Every `/api` route authenticates the caller through an [`Authenticator`] (built in:
//!   bearer [`ApiKeys`], stored hashed) and calls the same [`Platform`] and [`Registry`] a Rust
//!   host calls, with a [`Principal`] made of the key's user and roles and the client's IP
//!   address and user agent: the same gateway, policy, middleware and audit trail. A failed
//!   authentication is audited (`auth.denied`).
//! - Errors are RFC 9457 problem details ([`Problem`]); request bodies are limited
//!   ([`HttpConfig::body_limit`], 413) and unknown fields are rejected (400, with a pointer).
//! - The client's IP is the connection's peer (serve the router with
//!   `into_make_service_with_connect_info::<SocketAddr>()`), or the first address of
//!   `X-Forwarded-For` that is not a trusted proxy, when the peer is one
//!   ([`HttpConfig::trusted_proxies`]).
//!
//! ```no_run
//! # async fn run() -> capecontrol::error::Result<()> {
//! use std::sync::Arc;
//! use capecontrol::http::{self, ApiKeys};
//! use capecontrol::prelude::*;
//!
//! let platform = Arc::new(Platform::builder().build().await?);
//! let keys = ApiKeys::new(platform.store().clone());
//! let app = axum::Router::new().nest("/cape", http::router(platform, keys));
//! # let _ = app; Ok(()) }
//! ```
//!
//! [`Registry`]: capecontrol_core::registry::Registry

mod access;
mod agents;
mod answer;
mod auth;
mod extract;
mod hooks;
mod market;
mod openapi;
mod ops;
mod problem;
mod responses;
mod tasks;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{delete, get, patch, post};
use capecontrol_core::Principal;
use capecontrol_core::runtime::Platform;

pub use self::agents::{Paged, Suggested, Validation};
pub use self::auth::{
    ApiKeys, AuthError, Authenticator, CreatedKey, Identity, KEY_PREFIX, MAX_KEY_FIELD, bearer,
    hash_key,
};
pub use self::extract::{Caller, MAX_USER_AGENT};
pub use self::hooks::{
    DELIVERY_HEADER, Emitted, FiredView, SIGNATURE_HEADER, ScheduleView, TIMESTAMP_HEADER,
    WebhookSecretView,
};
pub use self::market::CategoryCount;
pub use self::openapi::{openapi, openapi_json};
pub use self::ops::{AuditPage, Health, RevokedKey};
pub use self::problem::{ApiResult, PROBLEM_JSON, Problem};
pub use self::tasks::{MAX_IDEMPOTENCY_KEY, MAX_OFFSET, RatingView, Submitted, TaskView};
// What the web console (feature `console`) reuses of the API's own checks.
#[cfg(feature = "console")]
pub(crate) use self::{
    access::Tasks,
    extract::client,
    tasks::{check_page, event_stream},
};

/// The role that may create and revoke API keys and see every task and audit row.
pub const ADMIN_ROLE: &str = "admin";

/// Whether `principal` holds the [`ADMIN_ROLE`].
pub fn is_admin(principal: &Principal) -> bool {
    principal.roles.iter().any(|r| r == ADMIN_ROLE)
}

/// Settings of the HTTP layer.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// The largest request body accepted (larger: 413). Default 1 MiB.
    pub body_limit: usize,
    /// Peers whose `X-Forwarded-For` is believed. Default: none (the header is ignored).
    pub trusted_proxies: Vec<IpAddr>,
    /// How often an idle event stream sends a keep-alive comment. Default 15 s.
    pub keep_alive: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            trusted_proxies: Vec::new(),
            keep_alive: Duration::from_secs(15),
        }
    }
}

/// A readiness check of `/readyz` besides the store's (an executor's engine, say): `Ok` when
/// ready, else why not.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The shared state of the routes.
#[derive(Clone)]
pub(crate) struct ApiState(Arc<Shared>);

pub(crate) struct Shared {
    pub(crate) platform: Arc<Platform>,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) keys: ApiKeys,
    pub(crate) config: HttpConfig,
    pub(crate) ready: Vec<(String, ReadyCheck)>,
    /// The Prometheus recorder, installed when the router is built (metrics recorded before a
    /// recorder exists are lost), or why it could not be.
    pub(crate) metrics: capecontrol_core::Result<&'static crate::observability::Metrics>,
}

impl std::ops::Deref for ApiState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Builds the router with settings: `Api::new(platform, authenticator).config(…).router()`.
pub struct Api {
    platform: Arc<Platform>,
    auth: Arc<dyn Authenticator>,
    config: HttpConfig,
    ready: Vec<(String, ReadyCheck)>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// The API of `platform`, authenticating with `authenticator`.
    pub fn new(platform: Arc<Platform>, authenticator: impl Authenticator) -> Self {
        Self {
            platform,
            auth: Arc::new(authenticator),
            config: HttpConfig::default(),
            ready: Vec::new(),
        }
    }

    /// Replaces the settings.
    pub fn config(mut self, config: HttpConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a readiness check to `/readyz` under `name`.
    pub fn ready_check(mut self, name: impl Into<String>, check: ReadyCheck) -> Self {
        self.ready.push((name.into(), check));
        self
    }

    /// The router.
    pub fn router(self) -> Router {
        let keys = ApiKeys::new(self.platform.store().clone());
        let state = ApiState(Arc::new(Shared {
            platform: self.platform,
            auth: self.auth,
            keys,
            config: self.config,
            ready: self.ready,
            metrics: crate::observability::install(),
        }));
        Router::new()
            .route("/healthz", get(ops::healthz))
            .route("/readyz", get(ops::readyz))
            .route("/metrics", get(ops::metrics))
            .route("/api/openapi.json", get(openapi::serve))
            .route(
                "/api/manifest.schema.json",
                get(openapi::serve_manifest_schema),
            )
            .route("/api/agents", get(agents::list).post(agents::create))
            .route("/api/agents/tasks", get(tasks::list))
            .route("/api/agents/tasks/{task_id}", get(tasks::get))
            .route("/api/agents/tasks/{task_id}/cancel", post(tasks::cancel))
            .route("/api/agents/tasks/{task_id}/rating", post(tasks::rate))
            .route("/api/agents/tasks/{task_id}/answer", post(answer::answer))
            .route("/api/agents/tasks/{task_id}/events", get(tasks::events))
            .route("/api/agents/{id}", get(agents::get).patch(agents::update))
            .route("/api/agents/{id}/archive", post(agents::archive))
            .route("/api/agents/{id}/validate", post(agents::validate))
            .route(
                "/api/agents/{id}/versions",
                get(agents::versions).post(agents::add_version),
            )
            .route("/api/agents/{id}/versions/suggest", post(agents::suggest))
            .route(
                "/api/agents/{id}/versions/{ver}/publish",
                post(agents::publish),
            )
            .route(
                "/api/agents/{id}/versions/{ver}/archive",
                post(agents::archive_version),
            )
            .route("/api/agents/{id}/tasks", post(tasks::submit))
            .route("/api/marketplace", get(market::browse))
            .route("/api/marketplace/categories", get(market::categories))
            .route("/api/marketplace/{id}", get(market::detail))
            .route(
                "/api/installations",
                get(market::installations).post(market::install),
            )
            .route("/api/installations/{agent}/upgrade", post(market::upgrade))
            .route(
                "/api/installations/{agent}/settings",
                patch(market::settings),
            )
            .route("/api/installations/{agent}", delete(market::uninstall))
            .route("/api/audit", get(ops::audit))
            .route("/api/keys", post(ops::create_key))
            .route("/api/keys/{id}", delete(ops::revoke_key))
            .merge(console(&state))
            .merge(hooks::routes())
            .fallback(ops::not_found)
            .method_not_allowed_fallback(ops::method_not_allowed)
            .with_state(state)
    }
}

/// The web console's pages (feature `console`), on the API's state; nothing without the feature.
fn console(state: &ApiState) -> Router<ApiState> {
    #[cfg(feature = "console")]
    return crate::console::routes(state.clone());
    #[cfg(not(feature = "console"))]
    {
        let _ = state;
        Router::new()
    }
}

/// The API of `platform` with default settings: an axum [`Router`] to serve or nest.
pub fn router(platform: Arc<Platform>, authenticator: impl Authenticator) -> Router {
    Api::new(platform, authenticator).router()
}
