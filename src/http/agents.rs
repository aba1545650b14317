//! Agent and version routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use capecontrol_core::registry::{NewAgent, NewVersion};
use capecontrol_core::store::{AgentFilter, AgentPatch, AgentRecord, VersionRecord};
use capecontrol_core::{AgentStatus, ErrorCategory, FieldError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ApiState;
use super::extract::{Caller, JsonBody, Query};
use super::problem::ApiResult;
use super::responses::{Lists, Reads, Writes};
use super::tasks::{check_page, default_limit};

/// A list: its items and, when known, how many match in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Paged<T> {
    /// The items.
    pub items: Vec<T>,
    /// How many match in all (when the list is paged and the total is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<usize>,
}

impl<T> Paged<T> {
    pub(crate) fn of(items: Vec<T>, total: Option<usize>) -> Self {
        Self { items, total }
    }
}

/// `GET /api/agents` query.
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListAgents {
    /// Only agents in this status (`draft`, `published`, `archived`).
    #[serde(default)]
    #[param(value_type = Option<String>)]
    #[schema(value_type = Option<String>)]
    status: Option<AgentStatus>,
    /// Only agents of this category.
    #[serde(default)]
    category: Option<String>,
    /// Only agents this user created (their `owner`).
    #[serde(default)]
    owner: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

#[utoipa::path(
    get,
    path = "/api/agents",
    tag = "agents",
    params(ListAgents),
    responses(
        (status = 200, description = "Agents {items, total}", body = Paged<AgentRecord>),
        Lists
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    Caller(_by): Caller,
    Query(q): Query<ListAgents>,
) -> ApiResult<Json<Paged<AgentRecord>>> {
    check_page(q.limit, q.offset)?;
    let filter = AgentFilter {
        status: q.status,
        category: q.category,
    };
    let mut all = state.platform.registry().list_agents(&filter).await?;
    if let Some(owner) = &q.owner {
        all.retain(|agent| agent.owner.as_ref() == Some(owner));
    }
    let total = all.len();
    let items = all.into_iter().skip(q.offset).take(q.limit).collect();
    Ok(Json(Paged::of(items, Some(total))))
}

/// `POST /api/agents`.
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CreateAgent {
    /// The display name: 1 to 64 characters, not blank (at least one non-whitespace
    /// character); its slug is made from it.
    #[schema(min_length = 1, max_length = 64, pattern = r"\S")]
    name: String,
    /// A description (free text).
    #[serde(default)]
    description: Option<String>,
    /// The marketplace category.
    #[serde(default)]
    #[schema(value_type = Option<capecontrol_core::manifest::Category>)]
    category: Option<String>,
    /// The agent's id (default: its slug). An id or slug already taken is a 409.
    #[serde(default)]
    id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/agents",
    tag = "agents",
    request_body = CreateAgent,
    responses(
        (status = 201, description = "The agent", body = AgentRecord),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    State(state): State<ApiState>,
    Caller(by): Caller,
    JsonBody(body): JsonBody<CreateAgent>,
) -> ApiResult<(StatusCode, Json<AgentRecord>)> {
    let new = NewAgent {
        name: body.name,
        description: body.description,
        category: body.category,
        id: body.id,
    };
    let agent = state.platform.registry().create_agent(&by, new).await?;
    Ok((StatusCode::CREATED, Json(agent)))
}

#[utoipa::path(
    get,
    path = "/api/agents/{id}",
    tag = "agents",
    params(("id" = String, Path, description = "The agent's id or slug")),
    responses(
        (status = 200, description = "The agent", body = AgentRecord),
        Reads
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    State(state): State<ApiState>,
    Caller(_by): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentRecord>> {
    Ok(Json(state.platform.registry().get_agent(&id).await?))
}

/// `PATCH /api/agents/{id}`: the fields of an agent patch.
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UpdateAgent {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    capabilities: Option<Value>,
    #[serde(default)]
    policy_scopes: Option<Vec<String>>,
    #[serde(default)]
    manifest: Option<Value>,
    #[serde(default)]
    #[param(value_type = Option<String>)]
    #[schema(value_type = Option<String>)]
    status: Option<AgentStatus>,
}

#[utoipa::path(
    patch,
    path = "/api/agents/{id}",
    tag = "agents",
    params(("id" = String, Path, description = "The agent's id or slug")),
    request_body = UpdateAgent,
    responses(
        (status = 200, description = "The agent", body = AgentRecord),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn update(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateAgent>,
) -> ApiResult<Json<AgentRecord>> {
    let patch = AgentPatch {
        name: body.name,
        description: body.description,
        category: body.category,
        capabilities: body.capabilities,
        policy_scopes: body.policy_scopes,
        manifest: body.manifest,
        status: body.status,
    };
    Ok(Json(
        state
            .platform
            .registry()
            .update_agent(&by, &id, patch)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/api/agents/{id}/archive",
    tag = "agents",
    params(("id" = String, Path, description = "The agent's id or slug")),
    responses(
        (status = 200, description = "The agent", body = AgentRecord),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn archive(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentRecord>> {
    Ok(Json(
        state.platform.registry().archive_agent(&by, &id).await?,
    ))
}

/// The answer of `POST /api/agents/{id}/validate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Validation {
    /// Whether the manifest is valid.
    pub valid: bool,
    /// Every problem, each at its JSON pointer.
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<FieldError>,
}

#[utoipa::path(
    post,
    path = "/api/agents/{id}/validate",
    tag = "agents",
    params(("id" = String, Path, description = "The agent's id or slug")),
    request_body = Object,
    responses(
        (status = 200, description = "Whether the manifest is valid, every error at its pointer", body = Validation),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn validate(
    State(state): State<ApiState>,
    Caller(_by): Caller,
    Path(id): Path<String>,
    JsonBody(manifest): JsonBody<Value>,
) -> ApiResult<Json<Validation>> {
    let registry = state.platform.registry();
    registry.get_agent(&id).await?;
    Ok(Json(match registry.validate_manifest(&manifest) {
        Ok(_) => Validation {
            valid: true,
            errors: Vec::new(),
        },
        Err(e) if e.category() == ErrorCategory::Validation => Validation {
            valid: false,
            errors: e.field_errors().to_vec(),
        },
        Err(e) => return Err(e.into()),
    }))
}

#[utoipa::path(
    get,
    path = "/api/agents/{id}/versions",
    tag = "versions",
    params(("id" = String, Path, description = "The agent's id or slug")),
    responses(
        (status = 200, description = "Versions {items, total}", body = Paged<VersionRecord>),
        Reads
    ),
    security(("bearer" = []))
)]
pub(crate) async fn versions(
    State(state): State<ApiState>,
    Caller(_by): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Paged<VersionRecord>>> {
    let versions = state.platform.registry().versions(&id).await?;
    let total = versions.len();
    Ok(Json(Paged::of(versions, Some(total))))
}

/// Where the OpenAPI document points for the schema of a manifest: the manifest's JSON Schema
/// (draft 2020-12), served next to the document at `/api/manifest.schema.json` and checked in
/// next to it as `schemas/manifest.schema.json`, so the relative reference resolves in both.
pub(crate) const MANIFEST_SCHEMA_REF: &str = "manifest.schema.json";

/// What a manifest in a request body must satisfy beyond its JSON Schema.
const MANIFEST_RULES: &str = "An agent manifest: its JSON Schema (`manifest.schema.json`). \
     The server also applies rules a JSON Schema cannot state (a 400 with every problem at its \
     pointer): the memory floor, `cpu_limit > 0`, cron expressions that parse, \
     `ui.settings_schema` being a valid schema, consistent task and tool declarations, size and \
     depth limits.";

/// A manifest in a request body, documented as a reference to the manifest's JSON Schema
/// ([`MANIFEST_SCHEMA_REF`]).
pub(crate) struct ManifestBody;

impl utoipa::PartialSchema for ManifestBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut r = utoipa::openapi::Ref::new(MANIFEST_SCHEMA_REF);
        r.description = MANIFEST_RULES.to_owned();
        r.into()
    }
}

impl utoipa::ToSchema for ManifestBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "Manifest".into()
    }
}

/// `POST /api/agents/{id}/versions`.
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AddVersion {
    /// The manifest (see `Manifest`). Its `version` may be left out (or blank) when `version`
    /// is given or is to be suggested.
    #[schema(value_type = ManifestBody)]
    manifest: Value,
    /// The version: strict SemVer 2.0.0 (default: the manifest's, else the suggested next
    /// one). It must equal the manifest's `version` when both are given (else 409) and be
    /// greater than every existing version (else 409); a JSON Schema cannot compare them. Each
    /// number must also fit in 64 bits.
    #[serde(default)]
    #[schema(
        pattern = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?(\+([0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*))?$"
    )]
    version: Option<String>,
    /// Release notes (free text).
    #[serde(default)]
    changelog: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/agents/{id}/versions",
    tag = "versions",
    params(("id" = String, Path, description = "The agent's id or slug")),
    request_body = AddVersion,
    responses(
        (status = 201, description = "The version", body = VersionRecord),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn add_version(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AddVersion>,
) -> ApiResult<(StatusCode, Json<VersionRecord>)> {
    let new = NewVersion {
        manifest: body.manifest,
        version: body.version,
        changelog: body.changelog,
    };
    let version = state.platform.registry().add_version(&by, &id, new).await?;
    Ok((StatusCode::CREATED, Json(version)))
}

/// The answer of `POST /api/agents/{id}/versions/suggest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Suggested {
    /// The suggested next version.
    pub version: String,
}

#[utoipa::path(
    post,
    path = "/api/agents/{id}/versions/suggest",
    tag = "versions",
    params(("id" = String, Path, description = "The agent's id or slug")),
    request_body(content = ManifestBody, description = "The manifest of the next version; its `version` may be left out (it is ignored)"),
    responses(
        (status = 200, description = "The suggested next version", body = Suggested),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn suggest(
    State(state): State<ApiState>,
    Caller(_by): Caller,
    Path(id): Path<String>,
    JsonBody(manifest): JsonBody<Value>,
) -> ApiResult<Json<Suggested>> {
    let version = state
        .platform
        .registry()
        .suggest_version(&id, &manifest)
        .await?;
    Ok(Json(Suggested {
        version: version.to_string(),
    }))
}

#[utoipa::path(
    post,
    path = "/api/agents/{id}/versions/{ver}/publish",
    tag = "versions",
    params(("id" = String, Path, description = "The agent's id or slug"), ("ver" = String, Path, description = "The version")),
    responses(
        (status = 200, description = "The published version", body = VersionRecord),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn publish(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path((id, ver)): Path<(String, String)>,
) -> ApiResult<Json<VersionRecord>> {
    Ok(Json(
        state.platform.registry().publish(&by, &id, &ver).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/api/agents/{id}/versions/{ver}/archive",
    tag = "versions",
    params(("id" = String, Path, description = "The agent's id or slug"), ("ver" = String, Path, description = "The version")),
    responses(
        (status = 200, description = "The archived version", body = VersionRecord),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn archive_version(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path((id, ver)): Path<(String, String)>,
) -> ApiResult<Json<VersionRecord>> {
    Ok(Json(
        state
            .platform
            .registry()
            .archive_version(&by, &id, &ver)
            .await?,
    ))
}
