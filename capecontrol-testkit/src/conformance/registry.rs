//! Registry cases: agents, versions, installations, the catalog and references between rows.

use super::helpers::*;

/// Agents: insert, duplicate id and slug, get by id and slug, PATCH, list with filters.
pub async fn registry_crud_and_conflicts(store: Arc<dyn Store>) {
    let id = unique("crud");
    let category = unique("cat");
    let mut record = agent_record(&id, "Zeta");
    record.category = Some(category.clone());
    let inserted = store.insert_agent(record.clone()).await.unwrap();
    assert_eq!(inserted.id, id);
    assert_eq!(inserted.status, AgentStatus::Draft);
    assert_eq!(
        inserted.owner.as_deref(),
        Some("owner-1"),
        "the owner is kept"
    );

    assert_category(
        store.insert_agent(record.clone()).await,
        ErrorCategory::Conflict,
    );
    let mut same_slug = agent_record(&unique("other"), "Other");
    same_slug.slug = id.clone();
    assert_category(store.insert_agent(same_slug).await, ErrorCategory::Conflict);

    let mut by_slug = agent_record(&unique("slugged"), "Alpha");
    by_slug.slug = unique("alpha-slug");
    by_slug.category = Some(category.clone());
    store.insert_agent(by_slug.clone()).await.unwrap();
    assert_eq!(store.get_agent(&by_slug.slug).await.unwrap().id, by_slug.id);
    assert_eq!(store.get_agent(&id).await.unwrap(), inserted);
    assert_category(
        store.get_agent(&unique("missing")).await,
        ErrorCategory::NotFound,
    );

    let patched = store
        .update_agent(
            &id,
            AgentPatch {
                description: Some("new description".into()),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.description.as_deref(), Some("new description"));
    assert_eq!(patched.name, "Zeta", "PATCH leaves other fields");
    assert_eq!(patched.slug, id);
    assert_eq!(patched.owner, inserted.owner, "an update keeps the owner");
    assert!(patched.updated_at >= inserted.updated_at);
    assert_category(
        store
            .update_agent(&unique("missing"), AgentPatch::default())
            .await,
        ErrorCategory::NotFound,
    );

    let listed = store
        .list_agents(&AgentFilter {
            status: None,
            category: Some(category.clone()),
        })
        .await
        .unwrap();
    let names: Vec<&str> = listed.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["Alpha", "Zeta"], "by name");
    let published = store
        .list_agents(&AgentFilter {
            status: Some(AgentStatus::Published),
            category: Some(category),
        })
        .await
        .unwrap();
    assert!(published.is_empty());
}

/// Versions: insert, duplicate, publish (archiving the previous one atomically), illegal
/// transitions change nothing.
pub async fn versions_publish_and_archive(store: Arc<dyn Store>) {
    let id = unique("versions");
    store.insert_agent(agent_record(&id, "V")).await.unwrap();
    assert_category(
        store
            .insert_version(version_record(&unique("nobody"), "1.0.0", json!({})))
            .await,
        ErrorCategory::NotFound,
    );
    for v in ["1.0.0", "1.1.0"] {
        store
            .insert_version(version_record(&id, v, manifest("V", v, "chat")))
            .await
            .unwrap();
    }
    assert_category(
        store
            .insert_version(version_record(&id, "1.0.0", json!({})))
            .await,
        ErrorCategory::Conflict,
    );
    let list = store.list_versions(&id).await.unwrap();
    assert_eq!(
        list.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(),
        ["1.0.0", "1.1.0"]
    );
    assert_category(
        store.get_version(&id, "9.9.9").await,
        ErrorCategory::NotFound,
    );

    let (published, archived) = store.publish_version(&id, "1.0.0").await.unwrap();
    assert_eq!(published.status, VersionStatus::Published);
    assert!(published.published_at.is_some());
    assert!(archived.is_none());
    let agent = store.get_agent(&id).await.unwrap();
    assert_eq!(agent.status, AgentStatus::Published);
    assert_eq!(agent.manifest, Some(manifest("V", "1.0.0", "chat")));

    let (published, archived) = store.publish_version(&id, "1.1.0").await.unwrap();
    assert_eq!(published.version, "1.1.0");
    let archived = archived.expect("the previous version is archived");
    assert_eq!(
        (archived.version.as_str(), archived.status),
        ("1.0.0", VersionStatus::Archived)
    );
    assert_eq!(
        store.get_version(&id, "1.0.0").await.unwrap().status,
        VersionStatus::Archived
    );
    assert_eq!(
        store.get_agent(&id).await.unwrap().manifest,
        Some(manifest("V", "1.1.0", "chat"))
    );

    // Publishing an archived version is illegal and changes nothing.
    assert_category(
        store.publish_version(&id, "1.0.0").await,
        ErrorCategory::Conflict,
    );
    let after = store.list_versions(&id).await.unwrap();
    assert_eq!(
        after.iter().map(|v| v.status).collect::<Vec<_>>(),
        [VersionStatus::Archived, VersionStatus::Published]
    );
    assert_category(
        store.publish_version(&id, "7.0.0").await,
        ErrorCategory::NotFound,
    );

    // set_version_status: from must match, and the move must be legal.
    assert_category(
        store
            .set_version_status(&id, "1.1.0", VersionStatus::Draft, VersionStatus::Archived)
            .await,
        ErrorCategory::Conflict,
    );
    assert_category(
        store
            .set_version_status(
                &id,
                "1.0.0",
                VersionStatus::Archived,
                VersionStatus::Published,
            )
            .await,
        ErrorCategory::Conflict,
    );
    let v = store
        .set_version_status(
            &id,
            "1.1.0",
            VersionStatus::Published,
            VersionStatus::Archived,
        )
        .await
        .unwrap();
    assert_eq!(v.status, VersionStatus::Archived);
}

/// Installations: upsert (one per agent and user, replacing keeps the id), get, list, delete.
pub async fn installations(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let user = unique("user");
    let now = Utc::now();
    let first = InstallationRecord {
        id: Uuid::new_v4(),
        agent_id: agent.clone(),
        user_id: user.clone(),
        version: "1.0.0".into(),
        granted_scopes: vec!["a:read".into()],
        settings: json!({ "api_key": "secret" }),
        created_at: now,
        updated_at: now,
    };
    let stored = store.upsert_installation(first.clone()).await.unwrap();
    assert_eq!(stored.granted_scopes, ["a:read"]);
    let got = store.get_installation(&agent, &user).await.unwrap();
    assert_eq!(got.id, first.id);
    assert_eq!(got.settings, json!({ "api_key": "secret" }));

    let replaced = store
        .upsert_installation(InstallationRecord {
            id: Uuid::new_v4(),
            granted_scopes: vec!["a:read".into(), "b:write".into()],
            ..first.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        replaced.id, first.id,
        "an upsert keeps the installation's id"
    );
    assert_eq!(replaced.created_at, stored.created_at, "and its created_at");
    assert!(replaced.updated_at >= stored.updated_at);
    assert_eq!(replaced.granted_scopes.len(), 2);
    let listed = store.list_installations(&user).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        store
            .list_installations(&unique("nobody"))
            .await
            .unwrap()
            .is_empty()
    );
    store.delete_installation(&agent, &user).await.unwrap();
    assert_category(
        store.get_installation(&agent, &user).await,
        ErrorCategory::NotFound,
    );
    assert_category(
        store.delete_installation(&agent, &user).await,
        ErrorCategory::NotFound,
    );
}

/// The catalog: published agents only, filters, case-insensitive text, sort, pagination.
pub async fn catalog_filters_sort_and_pages(store: Arc<dyn Store>) {
    let tag = unique("tag");
    let category = unique("category");
    let make = |name: &str, description: &str, placement: &str, publish: bool| {
        let store = store.clone();
        let name = format!("{tag} {name}");
        let description = description.to_owned();
        let placement = placement.to_owned();
        let category = category.clone();
        async move {
            let id = unique("cat-agent");
            let mut r = agent_record(&id, &name);
            r.description = Some(description);
            r.category = Some(category);
            store.insert_agent(r).await.unwrap();
            store
                .insert_version(version_record(
                    &id,
                    "1.0.0",
                    manifest(&name, "1.0.0", &placement),
                ))
                .await
                .unwrap();
            if publish {
                store.publish_version(&id, "1.0.0").await.unwrap();
            }
            id
        }
    };
    make("Charlie", "Energy dashboards", "dashboard", true).await;
    make("Alpha", "Guides new USERS", "chat", true).await;
    make("Bravo", "Budget tracking", "dashboard", true).await;
    make("Delta", "never published", "dashboard", false).await;
    let text_query = CatalogQuery {
        text: Some(tag.to_uppercase()),
        ..CatalogQuery::default()
    };
    let page = store.catalog(&text_query).await.unwrap();
    assert_eq!(page.total, 3, "drafts are not in the catalog");
    let names: Vec<String> = page.items.iter().map(|e| e.agent.name.clone()).collect();
    assert_eq!(
        names,
        [
            format!("{tag} Alpha"),
            format!("{tag} Bravo"),
            format!("{tag} Charlie")
        ]
    );
    for e in &page.items {
        assert_eq!(e.version.status, VersionStatus::Published);
    }

    let dashboards = store
        .catalog(&CatalogQuery {
            placement: Some("dashboard".into()),
            ..text_query.clone()
        })
        .await
        .unwrap();
    assert_eq!(dashboards.total, 2);

    let by_description = store
        .catalog(&CatalogQuery {
            category: Some(category.clone()),
            text: Some("new users".into()),
            ..CatalogQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_description.total, 1);
    assert_eq!(by_description.items[0].agent.name, format!("{tag} Alpha"));

    let other_category = store
        .catalog(&CatalogQuery {
            category: Some(unique("nothing")),
            ..text_query.clone()
        })
        .await
        .unwrap();
    assert_eq!(other_category.total, 0);

    let second_page = store
        .catalog(&CatalogQuery {
            offset: 1,
            limit: 1,
            ..text_query.clone()
        })
        .await
        .unwrap();
    assert_eq!(second_page.total, 3);
    assert_eq!(second_page.items.len(), 1);
    assert_eq!(second_page.items[0].agent.name, format!("{tag} Bravo"));

    let recent = store
        .catalog(&CatalogQuery {
            sort: CatalogSort::RecentlyPublished,
            ..text_query.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        recent.items[0].agent.name,
        format!("{tag} Bravo"),
        "the last published comes first"
    );
}

/// Tasks, installations and audit events refer to existing agents and tasks (the SQL
/// schema's foreign keys): an unknown one is not-found and nothing is written.
pub async fn references_must_exist(store: Arc<dyn Store>) {
    let nobody = unique("no-agent");
    let mut t = new_task(&nobody);
    t.idempotency_key = Some(unique("key"));
    let id = t.id;
    assert_category(store.enqueue(t).await, ErrorCategory::NotFound);
    assert_category(store.get_task(id).await, ErrorCategory::NotFound);
    let now = Utc::now();
    assert_category(
        store
            .upsert_installation(InstallationRecord {
                id: Uuid::new_v4(),
                agent_id: nobody.clone(),
                user_id: "u".into(),
                version: "1.0.0".into(),
                granted_scopes: Vec::new(),
                settings: json!({}),
                created_at: now,
                updated_at: now,
            })
            .await,
        ErrorCategory::NotFound,
    );
    assert_category(
        store
            .append_audit(
                NewAuditEvent {
                    event_type: "x".into(),
                    ..NewAuditEvent::default()
                }
                .agent(nobody.clone()),
            )
            .await,
        ErrorCategory::NotFound,
    );
    assert_category(
        store
            .append_audit(
                NewAuditEvent {
                    event_type: "x".into(),
                    ..NewAuditEvent::default()
                }
                .task(Uuid::new_v4()),
            )
            .await,
        ErrorCategory::NotFound,
    );
    let rows = store
        .list_audit(&AuditFilter {
            agent_id: Some(nobody),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(rows.is_empty());
}
