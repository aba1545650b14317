//! The registry and lifecycle service: every transition and error path.

use std::sync::Arc;

use capecontrol_core::registry::{
    Environment, InstallRequest, NewAgent, NewVersion, REDACTED, Registry,
};
use capecontrol_core::store::memory::MemoryStore;
use capecontrol_core::store::{
    AgentFilter, AgentPatch, AuditFilter, AuditStore, CatalogQuery, RegistryStore, Store,
};
use capecontrol_core::{AgentStatus, Error, ErrorCategory, Manifest, Principal, VersionStatus};
use serde_json::{Value, json};

const SECRET: &str = "sk-live-0123456789";

fn registry() -> (Registry, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let env = Environment::new()
        .with_services(["redis", "postgresql"])
        .with_package("fastapi", "0.110.0")
        .with_package("pydantic", "2.5.3")
        .with_python("3.11.4");
    let registry = Registry::new(store.clone() as Arc<dyn Store>).with_environment(env);
    (registry, store)
}

fn admin() -> Principal {
    Principal::new("admin")
        .with_roles(["admin"])
        .with_ip("192.0.2.1".parse().unwrap())
        .with_user_agent("tests/1.0")
}

fn user() -> Principal {
    Principal::new("u1").with_roles(["user"])
}

fn manifest(version: &str, tools: &[&str], scopes: &[&str]) -> Value {
    json!({
        "name": "Finance Agent",
        "version": version,
        "description": "Budget tracking and payments",
        "placement": "dashboard",
        "category": "domain-specific",
        "tools": tools,
        "dependencies": {
            "python": ">=3.9",
            "packages": ["fastapi>=0.104.0", "pydantic>=2,<3"],
            "services": ["redis"]
        },
        "permissions": { "scopes": scopes, "required_roles": ["user", "premium"] },
        "ui": {
            "settings_schema": {
                "type": "object",
                "properties": {
                    "api_key": { "type": "string", "secret": true },
                    "threshold": { "type": "number", "default": 0.8, "maximum": 1 }
                },
                "required": ["api_key"]
            }
        }
    })
}

/// A manifest without a version: the registry numbers it.
fn unversioned(tools: &[&str], scopes: &[&str]) -> Value {
    let mut m = manifest("0.0.0", tools, scopes);
    m.as_object_mut().unwrap().remove("version");
    m
}

fn category(r: Result<impl std::fmt::Debug, Error>) -> ErrorCategory {
    match r {
        Err(e) => e.category(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

fn pointers(e: &Error) -> Vec<&str> {
    e.field_errors()
        .iter()
        .map(|f| f.pointer.as_str())
        .collect()
}

async fn audit_types(store: &MemoryStore) -> Vec<String> {
    store
        .list_audit(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

/// An agent with 1.0.0 published.
async fn published(registry: &Registry) -> String {
    let agent = registry
        .create_agent(&admin(), NewAgent::named("Finance Agent"))
        .await
        .unwrap();
    registry
        .add_version(
            &admin(),
            &agent.id,
            NewVersion::new(manifest("1.0.0", &["ingest", "report"], &["finance:read"]))
                .changelog("First release"),
        )
        .await
        .unwrap();
    registry
        .publish(&admin(), &agent.id, "1.0.0")
        .await
        .unwrap();
    agent.id
}

#[tokio::test]
async fn create_agent_assigns_a_slug_and_draft() {
    let (registry, store) = registry();
    let agent = registry
        .create_agent(
            &admin(),
            NewAgent::named("Cape AI Guide")
                .description("Onboarding")
                .category("ai-assisted"),
        )
        .await
        .unwrap();
    assert_eq!(agent.slug, "cape-ai-guide");
    assert_eq!(agent.id, "cape-ai-guide");
    assert_eq!(agent.status, AgentStatus::Draft);

    let dup = registry
        .create_agent(&admin(), NewAgent::named("Cape  AI  guide!"))
        .await;
    assert_eq!(category(dup), ErrorCategory::Conflict);
    let blank = registry.create_agent(&admin(), NewAgent::named("  ")).await;
    assert_eq!(pointers(&blank.unwrap_err()), ["/name"]);
    let long = registry
        .create_agent(&admin(), NewAgent::named("x".repeat(65)))
        .await;
    assert_eq!(pointers(&long.unwrap_err()), ["/name"]);
    let bad_category = registry
        .create_agent(&admin(), NewAgent::named("Other").category("gaming"))
        .await;
    assert_eq!(pointers(&bad_category.unwrap_err()), ["/category"]);

    let audit = store.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(audit[0].event_type, "agent.created");
    assert_eq!(audit[0].user_id.as_deref(), Some("admin"));
    assert_eq!(audit[0].ip_address, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(audit[0].user_agent.as_deref(), Some("tests/1.0"));
    assert_eq!(audit[0].agent_id.as_deref(), Some("cape-ai-guide"));
    let denied: Vec<_> = audit
        .iter()
        .filter(|e| e.event_type == "agent.create.denied")
        .collect();
    assert_eq!(denied.len(), 4, "each denial is audited");
    assert_eq!(denied[0].payload["error"]["category"], "conflict");
}

#[tokio::test]
async fn update_agent_is_a_patch_and_checks_the_status_machine() {
    let (registry, store) = registry();
    let agent = registry
        .create_agent(&admin(), NewAgent::named("Energy").description("old"))
        .await
        .unwrap();
    let updated = registry
        .update_agent(
            &admin(),
            "energy",
            AgentPatch {
                name: Some("Energy Agent".into()),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.name, "Energy Agent");
    assert_eq!(updated.slug, "energy", "the slug does not change");
    assert_eq!(updated.description.as_deref(), Some("old"));
    assert!(updated.updated_at >= agent.updated_at);

    let illegal = registry
        .update_agent(
            &admin(),
            "energy",
            AgentPatch {
                status: Some(AgentStatus::Draft),
                ..AgentPatch::default()
            },
        )
        .await;
    assert_eq!(category(illegal), ErrorCategory::Conflict);
    let blank = registry
        .update_agent(
            &admin(),
            "energy",
            AgentPatch {
                name: Some(" ".into()),
                ..AgentPatch::default()
            },
        )
        .await;
    assert_eq!(category(blank), ErrorCategory::Validation);
    let bad_category = registry
        .update_agent(
            &admin(),
            "energy",
            AgentPatch {
                category: Some("nope".into()),
                ..AgentPatch::default()
            },
        )
        .await;
    assert_eq!(category(bad_category), ErrorCategory::Validation);
    let missing = registry
        .update_agent(&admin(), "nope", AgentPatch::default())
        .await;
    assert_eq!(category(missing), ErrorCategory::NotFound);
    let archived = registry
        .update_agent(
            &admin(),
            "energy",
            AgentPatch {
                status: Some(AgentStatus::Archived),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(archived.status, AgentStatus::Archived);

    let types = audit_types(&store).await;
    assert_eq!(
        types,
        [
            "agent.created",
            "agent.updated",
            "agent.update.denied",
            "agent.update.denied",
            "agent.update.denied",
            "agent.update.denied",
            "agent.updated"
        ]
    );
    // A denial about an unknown agent refers to it in the payload only.
    let unknown = store
        .list_audit(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.payload["agent"] == "nope")
        .unwrap();
    assert_eq!(unknown.agent_id, None);
    assert_eq!(unknown.payload["error"]["category"], "not_found");
    assert_eq!(
        registry.get_agent("energy").await.unwrap().name,
        "Energy Agent"
    );
    assert_eq!(
        registry
            .list_agents(&AgentFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn validate_manifest() {
    let (registry, _) = registry();
    let m = registry
        .validate_manifest(&manifest("1.0.0", &["a"], &["x:read"]))
        .unwrap();
    assert_eq!(m.version, "1.0.0");
    let bad = registry.validate_manifest(&json!({ "name": "x" }));
    assert_eq!(category(bad), ErrorCategory::Validation);
}

#[tokio::test]
async fn add_version_checks_and_suggests_versions() {
    let (registry, store) = registry();
    let id = registry
        .create_agent(&admin(), NewAgent::named("Finance Agent"))
        .await
        .unwrap()
        .id;
    let v1 = registry
        .add_version(
            &admin(),
            &id,
            NewVersion::new(manifest("1.0.0", &["ingest"], &["finance:read"])).version("1.0.0"),
        )
        .await
        .unwrap();
    assert_eq!(
        (v1.version.as_str(), v1.status),
        ("1.0.0", VersionStatus::Draft)
    );

    // Explicit version must equal the manifest's and be greater than every existing one.
    let mismatch = registry
        .add_version(
            &admin(),
            &id,
            NewVersion::new(manifest("1.1.0", &["ingest"], &["finance:read"])).version("1.2.0"),
        )
        .await;
    assert_eq!(category(mismatch), ErrorCategory::Conflict);
    for stale in ["1.0.0", "0.9.0", "1.0.0-rc.1"] {
        let r = registry
            .add_version(
                &admin(),
                &id,
                NewVersion::new(manifest(stale, &["ingest"], &["finance:read"])).version(stale),
            )
            .await;
        assert_eq!(category(r), ErrorCategory::Conflict, "{stale}");
    }
    let not_semver = registry
        .add_version(
            &admin(),
            &id,
            NewVersion::new(manifest("1.1.0", &["ingest"], &["finance:read"])).version("v1"),
        )
        .await;
    assert_eq!(category(not_semver), ErrorCategory::Validation);
    let invalid = registry
        .add_version(&admin(), &id, NewVersion::new(json!({ "name": "x" })))
        .await;
    assert_eq!(category(invalid), ErrorCategory::Validation);
    let unknown = registry
        .add_version(
            &admin(),
            "nope",
            NewVersion::new(manifest("1.0.0", &[], &[])),
        )
        .await;
    assert_eq!(category(unknown), ErrorCategory::NotFound);

    // Without a version: suggested from the diff, written into the stored manifest.
    let patch = unversioned(&["ingest"], &["finance:read"]);
    assert_eq!(
        registry
            .suggest_version(&id, &patch)
            .await
            .unwrap()
            .to_string(),
        "1.0.1"
    );
    let v = registry
        .add_version(&admin(), &id, NewVersion::new(patch))
        .await
        .unwrap();
    assert_eq!(v.version, "1.0.1");
    assert_eq!(v.manifest["version"], "1.0.1");
    let minor = registry
        .add_version(
            &admin(),
            &id,
            NewVersion::new(unversioned(&["ingest", "report"], &["finance:read"])),
        )
        .await
        .unwrap();
    assert_eq!(minor.version, "1.1.0");
    let major_scope = registry
        .add_version(
            &admin(),
            &id,
            NewVersion::new(unversioned(
                &["ingest", "report"],
                &["finance:read", "payments:manage"],
            )),
        )
        .await
        .unwrap();
    assert_eq!(major_scope.version, "2.0.0");
    let major_tool = registry
        .add_version(
            &admin(),
            &id,
            NewVersion::new(unversioned(
                &["report"],
                &["finance:read", "payments:manage"],
            )),
        )
        .await
        .unwrap();
    assert_eq!(major_tool.version, "3.0.0");
    let versions = registry.versions(&id).await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| v.version.as_str())
            .collect::<Vec<_>>(),
        ["1.0.0", "1.0.1", "1.1.0", "2.0.0", "3.0.0"]
    );
    let types = audit_types(&store).await;
    assert_eq!(
        types.iter().filter(|t| *t == "agent.version_added").count(),
        5
    );
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "agent.version_add.denied")
            .count(),
        7
    );

    // A manifest's own version, without an explicit one, is the version; an unversioned
    // first manifest gets 0.1.0.
    let other = registry
        .create_agent(&admin(), NewAgent::named("Other"))
        .await
        .unwrap();
    let first = registry
        .add_version(&admin(), &other.id, NewVersion::new(unversioned(&[], &[])))
        .await
        .unwrap();
    assert_eq!(first.version, "0.1.0");
    let own = registry
        .add_version(
            &admin(),
            &other.id,
            NewVersion::new(manifest("0.3.0", &[], &[])),
        )
        .await
        .unwrap();
    assert_eq!(own.version, "0.3.0");
    let own_stale = registry
        .add_version(
            &admin(),
            &other.id,
            NewVersion::new(manifest("0.2.0", &[], &[])),
        )
        .await;
    assert_eq!(category(own_stale), ErrorCategory::Conflict);
    // An explicit version fills an unversioned manifest.
    let filled = registry
        .add_version(
            &admin(),
            &other.id,
            NewVersion::new(unversioned(&[], &[])).version("0.4.0"),
        )
        .await
        .unwrap();
    assert_eq!(filled.manifest["version"], "0.4.0");
}

#[tokio::test]
async fn publish_checks_dependencies_and_archives_the_previous_version() {
    let (registry, store) = registry();
    let id = registry
        .create_agent(&admin(), NewAgent::named("Finance Agent"))
        .await
        .unwrap()
        .id;
    let mut unmet = manifest("1.0.0", &["ingest"], &["finance:read"]);
    unmet["dependencies"] = json!({
        "python": ">=3.12",
        "packages": ["fastapi>=0.104.0", "fastapi>=1.0", "numpy"],
        "services": ["redis", "kafka"]
    });
    registry
        .add_version(&admin(), &id, NewVersion::new(unmet))
        .await
        .unwrap();
    let err = registry.publish(&admin(), &id, "1.0.0").await.unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Validation);
    assert_eq!(
        pointers(&err),
        [
            "/dependencies/python",
            "/dependencies/packages/1",
            "/dependencies/packages/2",
            "/dependencies/services/1"
        ]
    );
    assert_eq!(
        store.get_version(&id, "1.0.0").await.unwrap().status,
        VersionStatus::Draft,
        "a failed publish changes nothing"
    );
    let denied = store
        .list_audit(&AuditFilter {
            event_type: Some("agent.version_publish.denied".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(
        denied[0].payload["error"]["fields"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    registry
        .add_version(
            &admin(),
            &id,
            NewVersion::new(manifest("1.1.0", &["ingest"], &["finance:read"])),
        )
        .await
        .unwrap();
    let p = registry.publish(&admin(), &id, "1.1.0").await.unwrap();
    assert_eq!(p.status, VersionStatus::Published);
    let agent = registry.get_agent(&id).await.unwrap();
    assert_eq!(agent.status, AgentStatus::Published);
    assert_eq!(agent.category.as_deref(), Some("domain-specific"));
    assert_eq!(agent.policy_scopes, ["finance:read"]);
    assert_eq!(
        agent.capabilities.as_ref().unwrap()["tools"],
        json!(["ingest"])
    );

    registry
        .add_version(
            &admin(),
            &id,
            NewVersion::new(manifest("1.2.0", &["ingest"], &["finance:read"])),
        )
        .await
        .unwrap();
    registry.publish(&admin(), &id, "1.2.0").await.unwrap();
    let statuses: Vec<_> = registry
        .versions(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.version, v.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("1.0.0".to_string(), VersionStatus::Draft),
            ("1.1.0".to_string(), VersionStatus::Archived),
            ("1.2.0".to_string(), VersionStatus::Published)
        ]
    );
    let again = registry.publish(&admin(), &id, "1.2.0").await;
    assert_eq!(category(again), ErrorCategory::Conflict);
    let archived = registry.publish(&admin(), &id, "1.1.0").await;
    assert_eq!(category(archived), ErrorCategory::Conflict);
    let missing = registry.publish(&admin(), &id, "9.0.0").await;
    assert_eq!(category(missing), ErrorCategory::NotFound);
    let published = store
        .list_audit(&AuditFilter {
            event_type: Some("agent.version_published".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(published.len(), 2);
    assert_eq!(published[1].payload["archived"], "1.1.0");
}

#[tokio::test]
async fn archive_versions_and_agents() {
    let (registry, store) = registry();
    let id = published(&registry).await;
    registry
        .add_version(
            &admin(),
            &id,
            NewVersion::new(manifest("1.1.0", &["ingest", "report"], &["finance:read"])),
        )
        .await
        .unwrap();
    let draft = registry
        .archive_version(&admin(), &id, "1.1.0")
        .await
        .unwrap();
    assert_eq!(draft.status, VersionStatus::Archived);
    assert_eq!(
        registry.get_agent(&id).await.unwrap().status,
        AgentStatus::Published,
        "archiving a draft leaves the agent published"
    );
    let twice = registry.archive_version(&admin(), &id, "1.1.0").await;
    assert_eq!(category(twice), ErrorCategory::Conflict);

    let live = registry
        .archive_version(&admin(), &id, "1.0.0")
        .await
        .unwrap();
    assert_eq!(live.status, VersionStatus::Archived);
    assert_eq!(
        registry.get_agent(&id).await.unwrap().status,
        AgentStatus::Archived
    );
    assert_eq!(
        registry
            .catalog(&CatalogQuery::default())
            .await
            .unwrap()
            .total,
        0
    );

    // A new version brings the agent back; archiving the agent archives its version.
    registry
        .add_version(
            &admin(),
            &id,
            NewVersion::new(manifest("2.0.0", &["report"], &["finance:read"])),
        )
        .await
        .unwrap();
    registry.publish(&admin(), &id, "2.0.0").await.unwrap();
    assert_eq!(
        registry.get_agent(&id).await.unwrap().status,
        AgentStatus::Published
    );
    let agent = registry.archive_agent(&admin(), &id).await.unwrap();
    assert_eq!(agent.status, AgentStatus::Archived);
    assert_eq!(
        store.get_version(&id, "2.0.0").await.unwrap().status,
        VersionStatus::Archived
    );
    let again = registry.archive_agent(&admin(), &id).await;
    assert_eq!(category(again), ErrorCategory::Conflict);

    let draft_agent = registry
        .create_agent(&admin(), NewAgent::named("Drafty"))
        .await
        .unwrap();
    let archived = registry
        .archive_agent(&admin(), &draft_agent.id)
        .await
        .unwrap();
    assert_eq!(archived.status, AgentStatus::Archived);
    let types = audit_types(&store).await;
    for t in [
        "agent.version_archived",
        "agent.version_archive.denied",
        "agent.archived",
        "agent.archive.denied",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} in {types:?}");
    }
}

#[tokio::test]
async fn register_native_publishes_idempotently() {
    let (registry, store) = registry();
    let typed = |v: Value| -> Manifest { serde_json::from_value(v).unwrap() };
    let mut m = manifest("1.0.0", &["ingest"], &["finance:read"]);
    // Natives are not checked against the environment.
    m["dependencies"]["services"] = json!(["kafka"]);
    let v = registry.register_native(&typed(m.clone())).await.unwrap();
    assert_eq!(
        (v.version.as_str(), v.status),
        ("1.0.0", VersionStatus::Published)
    );
    let again = registry.register_native(&typed(m.clone())).await.unwrap();
    assert_eq!(again.id, v.id, "the same version again changes nothing");
    let agent = registry.get_agent("finance-agent").await.unwrap();
    assert_eq!(agent.status, AgentStatus::Published);

    let v2 = registry
        .register_native(&typed(manifest(
            "1.1.0",
            &["ingest", "report"],
            &["finance:read"],
        )))
        .await
        .unwrap();
    assert_eq!(v2.status, VersionStatus::Published);
    assert_eq!(
        store.get_version(&agent.id, "1.0.0").await.unwrap().status,
        VersionStatus::Archived
    );
    let old = registry.register_native(&typed(m.clone())).await;
    assert_eq!(category(old), ErrorCategory::Conflict, "archived");
    let older = registry
        .register_native(&typed(manifest("0.5.0", &[], &[])))
        .await;
    assert_eq!(category(older), ErrorCategory::Conflict, "not greater");
    let mut bad = typed(manifest("2.0.0", &[], &[]));
    bad.version = "two".into();
    assert_eq!(
        category(registry.register_native(&bad).await),
        ErrorCategory::Validation
    );
    let native = store
        .list_audit(&AuditFilter {
            user_id: Some("system".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(
        native
            .iter()
            .any(|e| e.event_type == "agent.native_registered")
    );
    assert!(
        native
            .iter()
            .any(|e| e.event_type == "agent.native_register.denied")
    );
}

#[tokio::test]
async fn catalog_and_detail() {
    let (registry, _) = registry();
    let id = published(&registry).await;
    registry
        .add_version(
            &admin(),
            &id,
            NewVersion::new(manifest(
                "1.1.0",
                &["ingest", "report", "forecast"],
                &["finance:read"],
            ))
            .changelog("Adds forecasts"),
        )
        .await
        .unwrap();
    registry.publish(&admin(), &id, "1.1.0").await.unwrap();
    registry
        .create_agent(&admin(), NewAgent::named("Unpublished"))
        .await
        .unwrap();

    let page = registry
        .catalog(&CatalogQuery {
            category: Some("domain-specific".into()),
            placement: Some("dashboard".into()),
            text: Some("PAYMENTS".into()),
            ..CatalogQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.items[0].version.version, "1.1.0");
    let none = registry
        .catalog(&CatalogQuery {
            placement: Some("chat".into()),
            ..CatalogQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(none.total, 0);
    for limit in [0, 101] {
        let r = registry
            .catalog(&CatalogQuery {
                limit,
                ..CatalogQuery::default()
            })
            .await;
        assert_eq!(category(r), ErrorCategory::Validation);
    }

    let detail = registry.detail(&id).await.unwrap();
    let excerpt = detail.published.unwrap();
    assert_eq!(excerpt.version, "1.1.0");
    assert_eq!(excerpt.tools, ["ingest", "report", "forecast"]);
    assert_eq!(excerpt.permissions.scopes, ["finance:read"]);
    assert_eq!(excerpt.config.timeout, 30);
    let history: Vec<_> = detail
        .versions
        .iter()
        .map(|v| (v.version.as_str(), v.status, v.changelog.as_deref()))
        .collect();
    assert_eq!(
        history,
        [
            ("1.0.0", VersionStatus::Archived, Some("First release")),
            ("1.1.0", VersionStatus::Published, Some("Adds forecasts"))
        ]
    );
    let draft = registry.detail("unpublished").await.unwrap();
    assert!(draft.published.is_none());
    assert_eq!(
        category(registry.detail("nope").await),
        ErrorCategory::NotFound
    );
}

#[tokio::test]
async fn install_checks_roles_grants_and_settings_and_hides_secrets() {
    let (registry, store) = registry();
    let draft_only = registry
        .create_agent(&admin(), NewAgent::named("Draft Only"))
        .await
        .unwrap();
    let nothing = registry
        .install(&user(), InstallRequest::latest(&draft_only.id))
        .await;
    assert_eq!(category(nothing), ErrorCategory::Conflict);

    let id = published(&registry).await;
    let settings = json!({ "api_key": SECRET, "threshold": 0.5 });
    let req = InstallRequest::latest(&id)
        .grant(["finance:read"])
        .settings(settings.clone());

    let no_role = registry
        .install(&Principal::new("guest").with_roles(["guest"]), req.clone())
        .await
        .unwrap_err();
    assert_eq!(no_role.category(), ErrorCategory::Permission);
    assert!(no_role.missing_scopes().is_empty());

    let no_grant = registry
        .install(&user(), req.clone().grant(["profile:read"]))
        .await
        .unwrap_err();
    assert_eq!(no_grant.category(), ErrorCategory::Permission);
    assert_eq!(no_grant.missing_scopes(), ["finance:read"]);
    let bad_scope = registry
        .install(&user(), req.clone().grant(["Finance"]))
        .await
        .unwrap_err();
    assert_eq!(pointers(&bad_scope), ["/grant/0"]);
    let bad_settings = registry
        .install(&user(), req.clone().settings(json!({ "threshold": 7 })))
        .await
        .unwrap_err();
    let mut ptrs = pointers(&bad_settings);
    ptrs.sort_unstable();
    assert_eq!(ptrs, ["/settings", "/settings/threshold"]);
    let draft_version = {
        registry
            .add_version(
                &admin(),
                &id,
                NewVersion::new(manifest("1.1.0", &["ingest", "report"], &["finance:read"])),
            )
            .await
            .unwrap();
        registry
            .install(&user(), req.clone().version("1.1.0"))
            .await
    };
    assert_eq!(category(draft_version), ErrorCategory::Conflict);

    let installed = registry.install(&user(), req.clone()).await.unwrap();
    assert_eq!(installed.version, "1.0.0");
    assert_eq!(installed.settings["api_key"], REDACTED);
    assert_eq!(installed.settings["threshold"], 0.5);
    assert_eq!(installed.secrets, ["/api_key"]);
    let wildcard = registry
        .install(&user(), req.clone().grant(["finance:*"]))
        .await;
    assert_eq!(
        category(wildcard),
        ErrorCategory::Conflict,
        "installed already"
    );

    // Stored with the secret; shown without it.
    let raw = store.get_installation(&id, "u1").await.unwrap();
    assert_eq!(raw.settings, settings);
    let listed = registry.installations("u1").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].settings["api_key"], REDACTED);
    let one = registry.installation(&id, "u1").await.unwrap();
    assert_eq!(one, listed[0]);
    assert!(!format!("{listed:?}").contains(SECRET));

    // Every action is audited, and no audit payload holds the secret.
    let audit = store.list_audit(&AuditFilter::default()).await.unwrap();
    let installs: Vec<&str> = audit
        .iter()
        .filter(|e| e.event_type.starts_with("installation."))
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        installs,
        [
            "installation.create.denied",
            "installation.create.denied",
            "installation.create.denied",
            "installation.create.denied",
            "installation.create.denied",
            "installation.create.denied",
            "installation.created",
            "installation.create.denied"
        ]
    );
    let created = audit
        .iter()
        .find(|e| e.event_type == "installation.created")
        .unwrap();
    assert_eq!(created.payload["settings"]["api_key"], REDACTED);
    let denied_scope = audit
        .iter()
        .find(|e| e.payload["error"]["missing_scopes"] == json!(["finance:read"]))
        .unwrap();
    assert_eq!(denied_scope.user_id.as_deref(), Some("u1"));
    let all = serde_json::to_string(&audit).unwrap();
    assert!(
        !all.contains(SECRET),
        "a secret leaked into the audit trail"
    );
}

#[tokio::test]
async fn upgrade_needs_a_grant_for_new_scopes() {
    let (registry, store) = registry();
    let id = published(&registry).await;
    let not_installed = registry.upgrade(&user(), InstallRequest::latest(&id)).await;
    assert_eq!(category(not_installed), ErrorCategory::NotFound);
    registry
        .install(
            &user(),
            InstallRequest::latest(&id)
                .grant(["finance:read"])
                .settings(json!({ "api_key": SECRET })),
        )
        .await
        .unwrap();
    registry
        .add_version(
            &admin(),
            &id,
            NewVersion::new(manifest(
                "2.0.0",
                &["ingest", "report"],
                &["finance:read", "finance:write", "payments:manage"],
            )),
        )
        .await
        .unwrap();
    registry.publish(&admin(), &id, "2.0.0").await.unwrap();

    let err = registry
        .upgrade(&user(), InstallRequest::latest(&id))
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Permission);
    assert_eq!(err.missing_scopes(), ["finance:write", "payments:manage"]);
    let partial = registry
        .upgrade(&user(), InstallRequest::latest(&id).grant(["finance:*"]))
        .await
        .unwrap_err();
    assert_eq!(partial.missing_scopes(), ["payments:manage"]);
    assert_eq!(
        store.get_installation(&id, "u1").await.unwrap().version,
        "1.0.0",
        "a denied upgrade changes nothing"
    );
    let archived = registry
        .upgrade(&user(), InstallRequest::latest(&id).version("1.0.0"))
        .await;
    assert_eq!(category(archived), ErrorCategory::Conflict);

    let up = registry
        .upgrade(
            &user(),
            InstallRequest::latest(&id).grant(["finance:*", "payments:manage"]),
        )
        .await
        .unwrap();
    assert_eq!(up.version, "2.0.0");
    assert_eq!(up.granted_scopes, ["finance:*", "payments:manage"]);
    assert_eq!(up.settings["api_key"], REDACTED, "settings kept, redacted");
    let audit = store
        .list_audit(&AuditFilter {
            event_type: Some("installation.upgraded".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].payload["from"], "1.0.0");
    assert_eq!(audit[0].payload["to"], "2.0.0");
    let denied = store
        .list_audit(&AuditFilter {
            event_type: Some("installation.upgrade.denied".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 4);
}

#[tokio::test]
async fn settings_updates_and_uninstall() {
    let (registry, store) = registry();
    let id = published(&registry).await;
    registry
        .install(
            &user(),
            InstallRequest::latest(&id)
                .grant(["finance:read"])
                .settings(json!({ "api_key": "first" })),
        )
        .await
        .unwrap();
    let bad = registry
        .update_settings(&user(), &id, json!({ "api_key": 42 }))
        .await
        .unwrap_err();
    assert_eq!(pointers(&bad), ["/settings/api_key"]);
    assert!(!bad.to_string().contains("42"), "{bad}");
    let ok = registry
        .update_settings(&user(), &id, json!({ "api_key": SECRET, "threshold": 1 }))
        .await
        .unwrap();
    assert_eq!(ok.settings, json!({ "api_key": REDACTED, "threshold": 1 }));
    assert_eq!(
        store.get_installation(&id, "u1").await.unwrap().settings["api_key"],
        SECRET
    );
    let other_user = registry
        .update_settings(&Principal::new("u2"), &id, json!({ "api_key": "x" }))
        .await;
    assert_eq!(category(other_user), ErrorCategory::NotFound);

    registry.uninstall(&user(), &id).await.unwrap();
    assert!(registry.installations("u1").await.unwrap().is_empty());
    let again = registry.uninstall(&user(), &id).await;
    assert_eq!(category(again), ErrorCategory::NotFound);
    let types = audit_types(&store).await;
    for t in [
        "installation.settings_updated",
        "installation.settings_update.denied",
        "installation.deleted",
        "installation.delete.denied",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} in {types:?}");
    }
    let all =
        serde_json::to_string(&store.list_audit(&AuditFilter::default()).await.unwrap()).unwrap();
    assert!(!all.contains(SECRET));
}

// ----- authorization ------------------------------------------------------------------------

fn publisher(user: &str) -> Principal {
    Principal::new(user).with_roles([capecontrol_core::policy::PUBLISHER])
}

async fn denials(store: &MemoryStore, event_type: &str, user: &str) -> usize {
    store
        .list_audit(&AuditFilter {
            event_type: Some(event_type.into()),
            user_id: Some(user.into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn creating_an_agent_needs_the_publisher_or_admin_role() {
    let (registry, store) = registry();
    for who in [user(), Principal::new("nobody")] {
        let e = registry
            .create_agent(&who, NewAgent::named("Sneaky Agent"))
            .await
            .unwrap_err();
        assert_eq!(e.category(), ErrorCategory::Permission, "{e}");
        assert_eq!(e.category().http_status(), 403);
        assert_eq!(
            denials(&store, "agent.create.denied", &who.user_id).await,
            1
        );
    }
    assert!(
        store.get_agent("sneaky-agent").await.is_err(),
        "nothing created"
    );
    let agent = registry
        .create_agent(&publisher("pub-1"), NewAgent::named("Pub Agent"))
        .await
        .unwrap();
    assert_eq!(agent.owner.as_deref(), Some("pub-1"), "the creator owns it");
    let agent = registry
        .create_agent(&admin(), NewAgent::named("Admin Agent"))
        .await
        .unwrap();
    assert_eq!(agent.owner.as_deref(), Some("admin"));
}

#[tokio::test]
async fn only_the_owner_or_an_admin_manages_an_agent() {
    let (registry, store) = registry();
    let owner = publisher("pub-1");
    let other = publisher("pub-2");
    let agent = registry
        .create_agent(&owner, NewAgent::named("Finance Agent"))
        .await
        .unwrap()
        .id;
    let v1 = || NewVersion::new(manifest("1.0.0", &["ingest"], &["finance:read"]));

    // Another publisher: every management action is a 403 and a `.denied` row, and changes
    // nothing.
    let e = registry
        .add_version(&other, &agent, v1())
        .await
        .unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Permission, "{e}");
    assert_eq!(
        denials(&store, "agent.version_add.denied", "pub-2").await,
        1
    );
    assert!(registry.versions(&agent).await.unwrap().is_empty());

    registry.add_version(&owner, &agent, v1()).await.unwrap();
    let e = registry.publish(&other, &agent, "1.0.0").await.unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Permission);
    assert_eq!(
        denials(&store, "agent.version_publish.denied", "pub-2").await,
        1
    );
    assert_eq!(
        store.get_version(&agent, "1.0.0").await.unwrap().status,
        VersionStatus::Draft
    );
    registry.publish(&owner, &agent, "1.0.0").await.unwrap();

    let patch = AgentPatch {
        name: Some("Hijacked".into()),
        ..AgentPatch::default()
    };
    let e = registry
        .update_agent(&other, &agent, patch.clone())
        .await
        .unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Permission);
    assert_eq!(denials(&store, "agent.update.denied", "pub-2").await, 1);
    assert_eq!(store.get_agent(&agent).await.unwrap().name, "Finance Agent");

    let e = registry
        .archive_version(&other, &agent, "1.0.0")
        .await
        .unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Permission);
    assert_eq!(
        denials(&store, "agent.version_archive.denied", "pub-2").await,
        1
    );
    let e = registry.archive_agent(&other, &agent).await.unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Permission);
    assert_eq!(denials(&store, "agent.archive.denied", "pub-2").await, 1);
    // A plain user neither.
    let e = registry.archive_agent(&user(), &agent).await.unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Permission);
    assert_eq!(
        store.get_agent(&agent).await.unwrap().status,
        AgentStatus::Published
    );

    // The owner and an admin may.
    registry
        .update_agent(&owner, &agent, patch.clone())
        .await
        .unwrap();
    registry
        .add_version(
            &admin(),
            &agent,
            NewVersion::new(manifest("1.1.0", &["ingest"], &["finance:read"])),
        )
        .await
        .unwrap();
    registry.publish(&admin(), &agent, "1.1.0").await.unwrap();
    registry.archive_agent(&owner, &agent).await.unwrap();
}

#[tokio::test]
async fn an_agent_without_an_owner_is_for_admins_only_and_native_registration_works() {
    let (registry, store) = registry();
    // An agent from before owners were recorded.
    let now = chrono::Utc::now();
    store
        .insert_agent(capecontrol_core::store::AgentRecord {
            id: "legacy".into(),
            name: "Legacy".into(),
            slug: "legacy".into(),
            description: None,
            category: None,
            capabilities: None,
            policy_scopes: Vec::new(),
            manifest: None,
            status: AgentStatus::Draft,
            owner: None,
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    let e = registry
        .archive_agent(&publisher("legacy"), "legacy")
        .await
        .unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Permission);
    registry.archive_agent(&admin(), "legacy").await.unwrap();

    // The platform's native registration records the system user and needs no role.
    let mut m = manifest("1.0.0", &["ingest"], &["finance:read"]);
    m["name"] = json!("Native Agent");
    let m: Manifest = serde_json::from_value(m).unwrap();
    registry.register_native(&m).await.unwrap();
    let agent = store.get_agent("native-agent").await.unwrap();
    assert_eq!(
        agent.owner.as_deref(),
        Some(capecontrol_core::registry::SYSTEM_USER)
    );
    assert_eq!(agent.status, AgentStatus::Published);
}

// ----- bounds -------------------------------------------------------------------------------

#[tokio::test]
async fn settings_have_a_size_limit_at_install_and_update() {
    use capecontrol_core::store::MAX_SETTINGS_BYTES;
    let (registry, store) = registry();
    let agent = published(&registry).await;
    let installer = Principal::new("u1").with_roles(["user", "premium"]);
    // `{"api_key":"…"}` is 14 bytes plus the key.
    let sized = |n: usize| json!({ "api_key": "k".repeat(n - 14) });
    assert_eq!(serde_json::to_vec(&sized(100)).unwrap().len(), 100);
    let e = registry
        .install(
            &installer,
            InstallRequest::latest(&agent)
                .grant(["finance:read"])
                .settings(sized(MAX_SETTINGS_BYTES + 1)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Validation, "{e}");
    assert_eq!(pointers(&e), ["/settings"]);
    registry
        .install(
            &installer,
            InstallRequest::latest(&agent)
                .grant(["finance:read"])
                .settings(sized(MAX_SETTINGS_BYTES)),
        )
        .await
        .unwrap();
    let e = registry
        .update_settings(&installer, &agent, sized(MAX_SETTINGS_BYTES + 1))
        .await
        .unwrap_err();
    assert_eq!(pointers(&e), ["/settings"]);
    registry
        .update_settings(&installer, &agent, sized(MAX_SETTINGS_BYTES))
        .await
        .unwrap();
    // The denials are audited without the value.
    let audit = store.list_audit(&AuditFilter::default()).await.unwrap();
    assert!(
        audit
            .iter()
            .all(|e| !e.payload.to_string().contains("kkkkkkkk")),
        "no audit row echoes the settings"
    );
}

#[tokio::test]
async fn a_principal_out_of_bounds_is_refused_and_audited_without_the_value() {
    use capecontrol_core::store::MAX_USER_AGENT_BYTES;
    let (registry, store) = registry();
    let at_limit = admin().with_user_agent("a".repeat(MAX_USER_AGENT_BYTES));
    registry
        .create_agent(&at_limit, NewAgent::named("Bounded Agent"))
        .await
        .unwrap();
    let over = admin().with_user_agent("a".repeat(MAX_USER_AGENT_BYTES + 1));
    let e = registry
        .create_agent(&over, NewAgent::named("Unbounded Agent"))
        .await
        .unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Validation);
    assert_eq!(pointers(&e), ["/principal/user_agent"]);
    assert!(store.get_agent("unbounded-agent").await.is_err());
    let denied = store
        .list_audit(&AuditFilter {
            event_type: Some("agent.create.denied".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 1, "the denial is audited");
    assert_eq!(
        denied[0].user_agent, None,
        "without the oversized user agent"
    );
}
