//! Marketplace and installation routes.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use capecontrol_core::registry::{AgentDetail, InstallRequest, Installation};
use capecontrol_core::store::{CatalogEntry, CatalogQuery, CatalogSort};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ApiState;
use super::agents::Paged;
use super::extract::{Caller, JsonBody, Query};
use super::problem::ApiResult;
use super::responses::{Lists, Reads, Unfiltered, Writes};
use super::tasks::{check_page, default_limit};

/// `GET /api/marketplace` query.
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Browse {
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    placement: Option<String>,
    #[serde(default)]
    q: Option<String>,
    /// `name`, `recently_published` or `recently_updated`.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    #[schema(value_type = Option<String>)]
    sort: CatalogSort,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

#[utoipa::path(
    get,
    path = "/api/marketplace",
    tag = "marketplace",
    params(Browse),
    responses(
        (status = 200, description = "Catalog entries {items, total}", body = Paged<CatalogEntry>),
        Lists
    ),
    security(("bearer" = []))
)]
pub(crate) async fn browse(
    State(state): State<ApiState>,
    Caller(_by): Caller,
    Query(q): Query<Browse>,
) -> ApiResult<Json<Paged<CatalogEntry>>> {
    check_page(q.limit, q.offset)?;
    let query = CatalogQuery {
        category: q.category,
        placement: q.placement,
        text: q.q,
        sort: q.sort,
        offset: q.offset,
        limit: q.limit,
    };
    let page = state.platform.registry().catalog(&query).await?;
    Ok(Json(Paged::of(page.items, Some(page.total))))
}

/// A marketplace category and how many published agents it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CategoryCount {
    /// The category (`domain-specific`; `uncategorized` for agents without one).
    pub category: String,
    /// Published agents in it.
    pub count: usize,
}

#[utoipa::path(
    get,
    path = "/api/marketplace/categories",
    tag = "marketplace",
    responses(
        (status = 200, description = "Categories with counts {items, total}", body = Paged<CategoryCount>),
        Unfiltered
    ),
    security(("bearer" = []))
)]
pub(crate) async fn categories(
    State(state): State<ApiState>,
    Caller(_by): Caller,
) -> ApiResult<Json<Paged<CategoryCount>>> {
    let registry = state.platform.registry();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut query = CatalogQuery {
        limit: 100,
        ..CatalogQuery::default()
    };
    loop {
        let page = registry.catalog(&query).await?;
        let n = page.items.len();
        for entry in page.items {
            let category = entry
                .agent
                .category
                .unwrap_or_else(|| "uncategorized".into());
            *counts.entry(category).or_default() += 1;
        }
        query.offset += n;
        if n == 0 || query.offset >= page.total {
            break;
        }
    }
    let items: Vec<CategoryCount> = counts
        .into_iter()
        .map(|(category, count)| CategoryCount { category, count })
        .collect();
    let total = items.len();
    Ok(Json(Paged::of(items, Some(total))))
}

#[utoipa::path(
    get,
    path = "/api/marketplace/{id}",
    tag = "marketplace",
    params(("id" = String, Path, description = "The agent's id or slug")),
    responses(
        (status = 200, description = "The agent, its published manifest excerpt and version history", body = AgentDetail),
        Reads
    ),
    security(("bearer" = []))
)]
pub(crate) async fn detail(
    State(state): State<ApiState>,
    Caller(_by): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentDetail>> {
    Ok(Json(state.platform.registry().detail(&id).await?))
}

#[utoipa::path(
    get,
    path = "/api/installations",
    tag = "installations",
    responses(
        (status = 200, description = "My installations {items, total}", body = Paged<Installation>),
        Unfiltered
    ),
    security(("bearer" = []))
)]
pub(crate) async fn installations(
    State(state): State<ApiState>,
    Caller(by): Caller,
) -> ApiResult<Json<Paged<Installation>>> {
    let items = state.platform.registry().installations(&by.user_id).await?;
    let total = items.len();
    Ok(Json(Paged::of(items, Some(total))))
}

/// `POST /api/installations`.
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Install {
    agent: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    grant: Option<Vec<String>>,
    #[serde(default)]
    settings: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/api/installations",
    tag = "installations",
    request_body = Install,
    responses(
        (status = 201, description = "The installation (secrets redacted)", body = Installation),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn install(
    State(state): State<ApiState>,
    Caller(by): Caller,
    JsonBody(body): JsonBody<Install>,
) -> ApiResult<(StatusCode, Json<Installation>)> {
    let req = InstallRequest {
        agent: body.agent,
        version: body.version,
        grant: body.grant,
        settings: body.settings,
    };
    let installed = state.platform.registry().install(&by, req).await?;
    Ok((StatusCode::CREATED, Json(installed)))
}

/// `POST /api/installations/{agent}/upgrade`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Upgrade {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    grant: Option<Vec<String>>,
    #[serde(default)]
    settings: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/api/installations/{agent}/upgrade",
    tag = "installations",
    params(("agent" = String, Path, description = "The agent's id or slug")),
    request_body = Upgrade,
    responses(
        (status = 200, description = "The installation", body = Installation),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn upgrade(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path(agent): Path<String>,
    JsonBody(body): JsonBody<Option<Upgrade>>,
) -> ApiResult<Json<Installation>> {
    let body = body.unwrap_or_default();
    let req = InstallRequest {
        agent,
        version: body.version,
        grant: body.grant,
        settings: body.settings,
    };
    Ok(Json(state.platform.registry().upgrade(&by, req).await?))
}

/// `PATCH /api/installations/{agent}/settings`.
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Settings {
    settings: Value,
}

#[utoipa::path(
    patch,
    path = "/api/installations/{agent}/settings",
    tag = "installations",
    params(("agent" = String, Path, description = "The agent's id or slug")),
    request_body = Settings,
    responses(
        (status = 200, description = "The installation", body = Installation),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn settings(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path(agent): Path<String>,
    JsonBody(body): JsonBody<Settings>,
) -> ApiResult<Json<Installation>> {
    Ok(Json(
        state
            .platform
            .registry()
            .update_settings(&by, &agent, body.settings)
            .await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/api/installations/{agent}",
    tag = "installations",
    params(("agent" = String, Path, description = "The agent's id or slug")),
    responses(
        (status = 204, description = "Uninstalled"),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn uninstall(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path(agent): Path<String>,
) -> ApiResult<StatusCode> {
    state.platform.registry().uninstall(&by, &agent).await?;
    Ok(StatusCode::NO_CONTENT)
}
