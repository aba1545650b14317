//! Trigger routes: `POST /api/events` (emit an event), `POST /api/hooks/{installation}/{path}`
//! (a signed webhook delivery: the signature is its authentication, no API key),
//! `POST /api/installations/{agent}/webhook-secret` (a new secret, shown once) and
//! `GET /api/schedules` (the caller's schedules with their next fire time).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use capecontrol_core::Error;
use capecontrol_core::runtime::Event;
use capecontrol_core::runtime::webhooks::{WebhookDelivery, WebhookError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::ApiState;
use super::extract::{Caller, JsonBody};
use super::problem::{ApiResult, Problem};
use super::responses::{Reads, Unfiltered, Writes};

/// The header carrying a webhook's delivery id.
pub const DELIVERY_HEADER: &str = "x-capecontrol-delivery";
/// The header carrying a webhook's timestamp (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-capecontrol-timestamp";
/// The header carrying a webhook's signature (`sha256=<hex>`).
pub const SIGNATURE_HEADER: &str = "x-capecontrol-signature";

/// `POST /api/events`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Emit {
    /// The event's name (`user.onboard`): two or more dot-separated segments, each a lowercase
    /// letter followed by lowercase letters, digits, `_` or `-`.
    #[schema(pattern = r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$")]
    event: String,
    /// The event's id (default: a fresh one); emitting an id again starts nothing new. 1 to 128
    /// bytes of UTF-8: `maxLength` counts characters, so an id of non-ASCII characters may be
    /// shorter than 128 and still too long (JSON Schema cannot count bytes).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    id: Option<String>,
    /// The payload: the input of the tasks it starts.
    #[serde(default)]
    payload: Value,
}

/// One task a trigger started, or why it did not.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FiredView {
    /// The installation.
    pub installation_id: Uuid,
    /// Its agent.
    pub agent_id: String,
    /// Its user.
    pub user_id: String,
    /// The task started (an earlier one's for a repeated event or delivery).
    pub task_id: Option<Uuid>,
    /// Why no task was started.
    pub error: Option<String>,
}

impl From<capecontrol_core::runtime::Fired> for FiredView {
    fn from(f: capecontrol_core::runtime::Fired) -> Self {
        let (task_id, error) = match f.task {
            Ok(id) => (Some(id), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Self {
            installation_id: f.installation_id,
            agent_id: f.agent_id,
            user_id: f.user_id,
            task_id,
            error,
        }
    }
}

/// The answer to an emit.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Emitted {
    /// The event's id.
    pub event_id: String,
    /// One entry per subscribed installation.
    pub tasks: Vec<FiredView>,
}

/// A new webhook secret: shown this once.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookSecretView {
    /// The installation (the first segment of its webhook URLs).
    pub installation_id: Uuid,
    /// The secret.
    pub secret: String,
}

impl std::fmt::Debug for WebhookSecretView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecretView")
            .field("installation_id", &self.installation_id)
            .finish_non_exhaustive()
    }
}

/// A schedule and its next fire time.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleView {
    /// The installation.
    pub installation_id: Uuid,
    /// Its agent.
    pub agent_id: String,
    /// Its user.
    pub user_id: String,
    /// The cron expression (UTC).
    pub schedule: String,
    /// The latest instant dealt with.
    pub last_instant: Option<DateTime<Utc>>,
    /// The next instant.
    pub next_fire: Option<DateTime<Utc>>,
}

#[utoipa::path(
    post,
    path = "/api/events",
    tag = "triggers",
    request_body = Emit,
    responses(
        (status = 202, description = "Emitted: the subscribed installations' tasks", body = Emitted),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn emit(
    State(state): State<ApiState>,
    Caller(by): Caller,
    JsonBody(body): JsonBody<Emit>,
) -> ApiResult<Response> {
    let mut event = Event::new(body.event, body.payload);
    if let Some(id) = body.id {
        event = event.with_id(id);
    }
    let event_id = event.id.clone();
    let fired = state.platform.emit(event, &by).await?;
    let tasks = fired.into_iter().map(FiredView::from).collect();
    Ok((StatusCode::ACCEPTED, Json(Emitted { event_id, tasks })).into_response())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[utoipa::path(
    post,
    path = "/api/hooks/{installation}/{path}",
    tag = "triggers",
    params(
        ("installation" = Uuid, Path, description = "The installation"),
        ("path" = String, Path, description = "One of the installed version's `triggers.webhooks` paths, without its leading /"),
        ("X-CapeControl-Delivery" = String, Header, description = "The delivery id (1 to 128 bytes); a repeat is a replay"),
        ("X-CapeControl-Timestamp" = i64, Header, description = "Unix seconds, within 5 minutes of the server's clock"),
        ("X-CapeControl-Signature" = String, Header, description = "sha256=<hex HMAC-SHA256 of `<timestamp>.<delivery id>.<raw body>` under the installation's secret>")
    ),
    request_body(content = Object, description = "The task's input (JSON)"),
    responses(
        (status = 202, description = "The task started", body = FiredView),
        (status = 400, description = "Invalid request (field errors at JSON pointers)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Bad signature, unknown installation or stale timestamp", content_type = "application/problem+json", body = Problem),
        (status = 403, description = "Missing role or scopes", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "Not a webhook path of the agent", content_type = "application/problem+json", body = Problem),
        (status = 409, description = "A replayed delivery id", content_type = "application/problem+json", body = Problem),
        (status = 413, description = "Body over the limit", content_type = "application/problem+json", body = Problem),
        (status = 429, description = "Rate limited (see Retry-After)", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "A dependency is unavailable", content_type = "application/problem+json", body = Problem)
    )
)]
pub(crate) async fn deliver(
    State(state): State<ApiState>,
    Path((installation, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let unauthorized = || Problem::unauthorized("webhook signature does not verify");
    let Ok(installation_id) = installation.parse::<Uuid>() else {
        return Err(unauthorized());
    };
    let missing =
        |h: &str| Problem::from(Error::invalid_field(format!("/header/{h}"), "is required"));
    let delivery_id =
        header(&headers, DELIVERY_HEADER).ok_or_else(|| missing("X-CapeControl-Delivery"))?;
    let signature =
        header(&headers, SIGNATURE_HEADER).ok_or_else(|| missing("X-CapeControl-Signature"))?;
    let timestamp = header(&headers, TIMESTAMP_HEADER)
        .ok_or_else(|| missing("X-CapeControl-Timestamp"))?
        .trim()
        .parse::<i64>()
        .map_err(|_| {
            Problem::from(Error::invalid_field(
                "/header/X-CapeControl-Timestamp",
                "must be Unix seconds",
            ))
        })?;
    let delivery = WebhookDelivery {
        installation_id,
        path: format!("/{path}"),
        delivery_id: delivery_id.to_owned(),
        timestamp,
        signature: signature.to_owned(),
        body: body.to_vec(),
    };
    match state.platform.deliver_webhook(delivery).await {
        Ok(fired) => Ok((StatusCode::ACCEPTED, Json(FiredView::from(fired))).into_response()),
        Err(WebhookError::BadSignature) => Err(unauthorized()),
        Err(WebhookError::Stale) => Err(Problem::unauthorized(
            "webhook timestamp is outside the accepted window",
        )),
        Err(WebhookError::Replay(id)) => Err(Problem::from(Error::conflict(format!(
            "webhook delivery `{id}` was already received"
        )))),
        Err(WebhookError::Other(e)) => Err(Problem::from(e)),
    }
}

#[utoipa::path(
    post,
    path = "/api/installations/{agent}/webhook-secret",
    tag = "triggers",
    params(("agent" = String, Path, description = "The agent's id or slug")),
    responses(
        (status = 201, description = "A new secret (replacing any), shown this once", body = WebhookSecretView),
        Reads
    ),
    security(("bearer" = []))
)]
pub(crate) async fn webhook_secret(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path(agent): Path<String>,
) -> ApiResult<Response> {
    let s = state.platform.rotate_webhook_secret(&agent, &by).await?;
    let view = WebhookSecretView {
        installation_id: s.installation_id,
        secret: s.secret,
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/schedules",
    tag = "triggers",
    responses(
        (status = 200, description = "The caller's schedules (an admin's: all), with their next fire time", body = Vec<ScheduleView>),
        Unfiltered
    ),
    security(("bearer" = []))
)]
pub(crate) async fn schedules(
    State(state): State<ApiState>,
    Caller(by): Caller,
) -> ApiResult<Json<Vec<ScheduleView>>> {
    let entries = state.platform.schedules(&by, Utc::now()).await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| ScheduleView {
                installation_id: e.installation_id,
                agent_id: e.agent_id,
                user_id: e.user_id,
                schedule: e.schedule,
                last_instant: e.last_instant,
                next_fire: e.next_fire,
            })
            .collect(),
    ))
}

/// The trigger routes (merged into the API router).
pub(crate) fn routes() -> axum::Router<ApiState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/events", post(emit))
        .route("/api/hooks/{installation}/{*path}", post(deliver))
        .route(
            "/api/installations/{agent}/webhook-secret",
            post(webhook_secret),
        )
        .route("/api/schedules", get(schedules))
}
