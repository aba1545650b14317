//! Health, audit and API-key routes, and the fallbacks.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use capecontrol_core::store::{AuditEvent, AuditFilter, MAX_AUDIT_PAGE, NewAuditEvent};
use capecontrol_core::{Error, Principal};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::access::Tasks;
use super::auth::CreatedKey;
use super::extract::{Caller, JsonBody, Query};
use super::problem::{ApiResult, Problem};
use super::responses::{Reads, Unavailable, Writes};
use super::tasks::check_page;
use super::{ApiState, is_admin};

/// The answer of `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
    /// Each readiness check and its result (`ok`, or why not).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub checks: std::collections::BTreeMap<String, String>,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses(
        (status = 200, description = "Alive", body = Health)
    )
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        checks: Default::default(),
    })
}

/// `/metrics`: the platform's metrics in the Prometheus text format (see
/// [`crate::observability`]), unauthenticated like `/healthz`: its labels are agent ids and
/// versions, never users or tasks. Not part of the JSON API's OpenAPI document. The recorder
/// is installed when the router is built; a host that installed another `metrics` recorder
/// gets a 503 problem here.
pub(crate) async fn metrics(State(state): State<ApiState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match &state.metrics {
        Ok(m) => (
            [(
                axum::http::header::CONTENT_TYPE,
                crate::observability::Metrics::CONTENT_TYPE,
            )],
            m.render(),
        )
            .into_response(),
        Err(e) => Problem::from(e.clone()).into_response(),
    }
}

/// Readiness: the store answers, and every added check passes (else 503).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        Unavailable
    )
)]
pub(crate) async fn readyz(State(state): State<ApiState>) -> ApiResult<Json<Health>> {
    let mut checks = std::collections::BTreeMap::new();
    let mut failed = Vec::new();
    match state.platform.store().queue_depth().await {
        Ok(_) => {
            checks.insert("store".to_owned(), "ok".to_owned());
        }
        Err(e) => failed.push(format!("store: {e}")),
    }
    for (name, check) in &state.ready {
        match check().await {
            Ok(()) => {
                checks.insert(name.clone(), "ok".to_owned());
            }
            Err(why) => failed.push(format!("{name}: {why}")),
        }
    }
    if failed.is_empty() {
        Ok(Json(Health {
            status: "ready".into(),
            checks,
        }))
    } else {
        Err(Problem::from(Error::resource(format!(
            "not ready: {}",
            failed.join("; ")
        ))))
    }
}

/// `GET /api/audit` query.
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    task: Option<Uuid>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default, rename = "type")]
    event_type: Option<String>,
    #[serde(default)]
    since: Option<DateTime<Utc>>,
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    #[serde(default)]
    cursor: Option<u64>,
    #[serde(default = "audit_limit")]
    limit: usize,
}

fn audit_limit() -> usize {
    100
}

/// A page of audit rows, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// The rows.
    pub items: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page (absent on the last page): the chain position
    /// (`seq`) of the page's last row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<u64>,
}

/// The audit trail: a user sees its own rows and the rows of its own tasks; an admin all.
#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "Audit rows {items, next_cursor}", body = AuditPage),
        Reads
    ),
    security(("bearer" = []))
)]
pub(crate) async fn audit(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    check_page(q.limit, 0)?;
    // Pages of the store's chain order after the cursor, filtered by time here, until one more
    // row than asked for is found (it says whether a next page exists) or the rows run out.
    let tasks = Tasks::new(&state.platform, &by);
    let mut filter = AuditFilter {
        task_id: q.task,
        agent_id: q.agent,
        user_id: q.user,
        event_type: q.event_type,
        after: q.cursor,
        limit: Some(MAX_AUDIT_PAGE),
        ..AuditFilter::default()
    };
    let mut items: Vec<AuditEvent> = Vec::new();
    loop {
        let rows = tasks.audit(filter.clone()).await?;
        let last = rows.last().map(|e| e.seq);
        let full = rows.len() == filter.page_size();
        items.extend(
            rows.into_iter()
                .filter(|e| q.since.is_none_or(|t| e.created_at >= t))
                .filter(|e| q.until.is_none_or(|t| e.created_at < t)),
        );
        if items.len() > q.limit || !full {
            break;
        }
        filter.after = last;
    }
    let next_cursor = if items.len() > q.limit {
        items.truncate(q.limit);
        items.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Json(AuditPage { items, next_cursor }))
}

/// Only an admin; anyone else gets 403 and an audited `policy.denied`.
async fn admin_only(state: &ApiState, by: &Principal, action: &str) -> ApiResult<()> {
    if is_admin(by) {
        return Ok(());
    }
    let event = NewAuditEvent::by(
        by,
        "policy.denied",
        json!({"action": action, "reason": "role", "required_roles": [super::ADMIN_ROLE]}),
    );
    state.platform.store().append_audit(event).await?;
    Err(Problem::from(Error::forbidden(format!(
        "`{action}` needs the `{}` role",
        super::ADMIN_ROLE
    ))))
}

/// `POST /api/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CreateKey {
    /// The user the key authenticates as: 1 to 255 bytes of UTF-8, not blank (at least one
    /// non-whitespace character). `maxLength` counts characters, so a non-ASCII user id may be
    /// shorter than 255 characters and still too long (JSON Schema cannot count bytes).
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    user_id: String,
    /// Its roles, each 1 to 255 bytes of UTF-8 and not blank (as `user_id`).
    #[serde(default)]
    #[schema(schema_with = key_roles)]
    roles: Vec<String>,
    /// A name for the key (may be empty): at most 255 bytes of UTF-8 (as `user_id`).
    #[serde(default)]
    #[schema(max_length = 255)]
    name: String,
}

/// The schema of `CreateKey::roles`: strings of 1 to 255 characters, not blank.
fn key_roles() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .description(Some(
            "Its roles, each 1 to 255 bytes of UTF-8 and not blank (as `user_id`).",
        ))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(super::auth::MAX_KEY_FIELD))
                .pattern(Some(r"\S")),
        )
        .build()
}

#[utoipa::path(
    post,
    path = "/api/keys",
    tag = "keys",
    request_body = CreateKey,
    responses(
        (status = 201, description = "The key, shown once", body = CreatedKey),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_key(
    State(state): State<ApiState>,
    Caller(by): Caller,
    JsonBody(body): JsonBody<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    admin_only(&state, &by, "api_key.create").await?;
    let created = state
        .keys
        .create(&by, &body.user_id, &body.roles, &body.name)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A revoked key as the API shows it (never its hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevokedKey {
    /// The key's id.
    pub id: String,
    /// Its user.
    pub user_id: String,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

#[utoipa::path(
    delete,
    path = "/api/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "Revoked", body = RevokedKey),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn revoke_key(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RevokedKey>> {
    admin_only(&state, &by, "api_key.revoke").await?;
    let record = state.keys.revoke(&by, &id).await?;
    Ok(Json(RevokedKey {
        id: record.id,
        user_id: record.user_id,
        revoked_at: record.revoked_at,
    }))
}

/// Unknown paths: a 404 problem.
pub(crate) async fn not_found() -> Problem {
    Problem::from(Error::not_found("route", "no such route"))
}

/// Known paths with another method: a 405 problem.
pub(crate) async fn method_not_allowed() -> Problem {
    let mut p = Problem::from(Error::not_found("route", "method not allowed"));
    p.status = 405;
    p.title = "Method not allowed".into();
    p.detail = "this route does not accept the method".into();
    p.type_uri = "urn:capecontrol:problem:method_not_allowed".into();
    p.category = "method_not_allowed".into();
    p
}
