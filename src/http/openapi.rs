//! The OpenAPI 3.1 document of the API, generated from the route handlers and the request and
//! response types (utoipa); served at `/api/openapi.json` and checked in as
//! `schemas/openapi.json` (a test fails when the two drift apart). The manifests in request
//! bodies reference the manifest's JSON Schema relative to the document (`manifest.schema.json`),
//! served at `/api/manifest.schema.json` and checked in as `schemas/manifest.schema.json`.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{agents, answer, hooks, market, ops, tasks};

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer cc_…`"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CapeControl API",
        description = "Register, version, publish, install and run agents. Errors are RFC 9457 \
                       problem details (application/problem+json)."
    ),
    paths(
        agents::list, agents::create, agents::get, agents::update, agents::archive,
        agents::validate, agents::versions, agents::add_version, agents::suggest,
        agents::publish, agents::archive_version,
        market::browse, market::categories, market::detail, market::installations,
        market::install, market::upgrade, market::settings, market::uninstall,
        tasks::submit, tasks::list, tasks::get, tasks::cancel, tasks::rate, tasks::events,
        answer::answer,
        ops::healthz, ops::readyz, ops::audit, ops::create_key, ops::revoke_key,
        hooks::emit, hooks::deliver, hooks::webhook_secret, hooks::schedules,
    ),
    components(schemas(crate::http::Problem, capecontrol_core::events::TriggerSource)),
    modifiers(&Bearer)
)]
struct Doc;

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

/// The OpenAPI document as pretty JSON (what `schemas/openapi.json` holds).
pub fn openapi_json() -> String {
    let mut json = openapi().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

/// `GET /api/openapi.json`.
pub(crate) async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}

/// `GET /api/manifest.schema.json`: the manifest's JSON Schema, which the OpenAPI document
/// references (relative to itself) for the manifests in request bodies.
pub(crate) async fn serve_manifest_schema() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        capecontrol_core::validate::manifest_schema_string(),
    )
}
