//! The registry from the facade, as the README shows it.

use std::sync::Arc;

use capecontrol::prelude::*;
use capecontrol::registry::{Environment, InstallRequest, NewAgent, NewVersion};
use capecontrol::store::memory::MemoryStore;
use serde_json::json;

#[tokio::test]
async fn readme_registry_walkthrough() -> Result<()> {
    let registry = Registry::new(Arc::new(MemoryStore::new()))
        .with_environment(Environment::new().with_service("redis"));
    let admin = Principal::new("admin").with_roles(["admin"]);

    // Create → Version → Publish.
    let agent = registry
        .create_agent(&admin, NewAgent::named("Finance Agent"))
        .await?;
    let manifest = json!({
        "name": "Finance Agent", "version": "1.0.0",
        "description": "Budget tracking and payments", "category": "domain-specific",
        "tools": ["ingest_transactions"],
        "dependencies": { "services": ["redis"] },
        "permissions": { "scopes": ["finance:read"], "required_roles": ["user"] },
        "ui": { "settings_schema": { "type": "object",
            "properties": { "api_key": { "type": "string", "secret": true } } } },
    });
    registry
        .add_version(
            &admin,
            &agent.id,
            NewVersion::new(manifest).changelog("First release"),
        )
        .await?;
    registry.publish(&admin, &agent.id, "1.0.0").await?;

    // Browse → Install.
    let page = registry.catalog(&Default::default()).await?;
    assert_eq!(page.items[0].agent.slug, "finance-agent");
    let user = Principal::new("u1").with_roles(["user"]);
    let installed = registry
        .install(
            &user,
            InstallRequest::latest("finance-agent")
                .grant(["finance:read"])
                .settings(json!({ "api_key": "sk-secret" })),
        )
        .await?;
    assert_eq!(installed.settings["api_key"], "********");

    // Denied: a grant that misses a scope names it (and the denial is audited).
    let other = Principal::new("u2").with_roles(["user"]);
    let err = registry
        .install(
            &other,
            InstallRequest::latest("finance-agent").grant(["profile:read"]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 403);
    assert_eq!(err.missing_scopes(), ["finance:read"]);
    Ok(())
}
