//! Agents and their versions: create, update, validate, version, publish, archive, and the
//! registration of native agents.

use super::*;

impl Registry {
    /// Creates an agent in `draft`, with a unique slug from its name (a duplicate is a
    /// conflict).
    pub async fn create_agent(&self, by: &Principal, new: NewAgent) -> Result<AgentRecord> {
        let slug = slugify(&new.name);
        let id = new.id.clone().unwrap_or_else(|| slug.clone());
        let context = json!({ "name": new.name, "slug": slug });
        self.audited(by, Action::CreateAgent, Some(&id), context, async {
            if !by.is_admin() && !by.has_role(PUBLISHER) {
                return Err(Error::forbidden(format!(
                    "creating an agent needs the `{PUBLISHER}` or `{ADMIN}` role"
                )));
            }
            if new.name.trim().is_empty() {
                return Err(Error::invalid_field("/name", "the name must not be blank"));
            }
            if new.name.chars().count() > 64 {
                return Err(Error::invalid_field(
                    "/name",
                    "the name is longer than 64 characters",
                ));
            }
            if let Some(c) = &new.category {
                serde_json::from_value::<Category>(Value::String(c.clone())).map_err(|_| {
                    Error::invalid_field("/category", format!("unknown category `{c}`"))
                })?;
            }
            let now = Utc::now();
            let agent = self
                .store
                .insert_agent(AgentRecord {
                    id: id.clone(),
                    name: new.name.trim().to_owned(),
                    slug: slug.clone(),
                    description: new.description.clone(),
                    category: new.category.clone(),
                    capabilities: None,
                    policy_scopes: Vec::new(),
                    manifest: None,
                    status: AgentStatus::Draft,
                    owner: Some(by.user_id.clone()),
                    created_at: now,
                    updated_at: now,
                })
                .await?;
            let payload = json!({ "name": agent.name, "slug": agent.slug, "owner": agent.owner });
            Ok((agent, payload))
        })
        .await
    }

    /// Updates an agent (PATCH semantics). A status change must be a legal transition; the
    /// slug never changes.
    pub async fn update_agent(
        &self,
        by: &Principal,
        id: &str,
        patch: AgentPatch,
    ) -> Result<AgentRecord> {
        let fields: Vec<&str> = [
            ("name", patch.name.is_some()),
            ("description", patch.description.is_some()),
            ("category", patch.category.is_some()),
            ("capabilities", patch.capabilities.is_some()),
            ("policy_scopes", patch.policy_scopes.is_some()),
            ("manifest", patch.manifest.is_some()),
            ("status", patch.status.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect();
        let context = json!({ "fields": fields });
        self.audited(by, Action::UpdateAgent, Some(id), context.clone(), async {
            let agent = self.store.get_agent(id).await?;
            authorize_manage(by, &agent)?;
            if patch.name.as_ref().is_some_and(|n| n.trim().is_empty()) {
                return Err(Error::invalid_field("/name", "the name must not be blank"));
            }
            if let Some(c) = &patch.category {
                serde_json::from_value::<Category>(Value::String(c.clone())).map_err(|_| {
                    Error::invalid_field("/category", format!("unknown category `{c}`"))
                })?;
            }
            if let Some(to) = patch.status {
                agent.status.transition(to)?;
            }
            let agent = self.store.update_agent(&agent.id, patch).await?;
            Ok((agent, context))
        })
        .await
    }

    /// Validates a manifest (JSON Schema and semantic rules), returning the typed manifest or
    /// an [`Error::Validation`] with every problem.
    pub fn validate_manifest(&self, manifest: &Value) -> Result<Manifest> {
        check_manifest(manifest)
    }

    /// The agent with this id or slug.
    pub async fn get_agent(&self, id_or_slug: &str) -> Result<AgentRecord> {
        self.store.get_agent(id_or_slug).await
    }

    /// Agents matching `filter`, by name.
    pub async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<AgentRecord>> {
        self.store.list_agents(filter).await
    }

    /// The versions of an agent, oldest first.
    pub async fn versions(&self, agent: &str) -> Result<Vec<VersionRecord>> {
        let agent = self.store.get_agent(agent).await?;
        self.store.list_versions(&agent.id).await
    }

    /// The version [`Registry::add_version`] gives a manifest without a version: the next
    /// after the greatest existing one, by [`suggest_next_version`], or `0.1.0` for a first
    /// version. The manifest's own `version` is ignored.
    pub async fn suggest_version(&self, agent: &str, manifest: &Value) -> Result<semver::Version> {
        let mut manifest = manifest.clone();
        if let Some(obj) = manifest.as_object_mut() {
            obj.entry("version")
                .or_insert_with(|| Value::String("0.0.0".into()));
        }
        let next = check_manifest(&manifest)?;
        let agent = self.store.get_agent(agent).await?;
        let versions = self.store.list_versions(&agent.id).await?;
        self.suggest_from(&versions, &next)
    }

    fn suggest_from(&self, versions: &[VersionRecord], next: &Manifest) -> Result<semver::Version> {
        match greatest(versions) {
            None => Ok(semver::Version::new(0, 1, 0)),
            Some((prev, prev_v)) => {
                let prev_manifest = typed_manifest(prev)?;
                Ok(versioning::bump(
                    &prev_v,
                    classify_change(&prev_manifest, next),
                ))
            }
        }
    }

    /// Adds a `draft` version: the manifest is validated; its `version` must equal the version
    /// and be greater (SemVer precedence) than every existing version, else conflict.
    pub async fn add_version(
        &self,
        by: &Principal,
        agent: &str,
        new: NewVersion,
    ) -> Result<VersionRecord> {
        let context =
            json!({ "version": new.version, "manifest_version": new.manifest.get("version") });
        self.audited(by, Action::AddVersion, Some(agent), context, async {
            let agent = self.store.get_agent(agent).await?;
            authorize_manage(by, &agent)?;
            let mut stored = new.manifest.clone();
            let unversioned = stored
                .get("version")
                .and_then(Value::as_str)
                .is_none_or(|v| v.trim().is_empty());
            if let Some(obj) = stored.as_object_mut().filter(|_| unversioned) {
                // A placeholder while validating; replaced below.
                let v = new.version.clone().unwrap_or_else(|| "0.0.0".to_owned());
                obj.insert("version".into(), Value::String(v));
            }
            let mut manifest = check_manifest(&stored)?;
            let versions = self.store.list_versions(&agent.id).await?;
            let version = match &new.version {
                None if !unversioned => parse_version("/version", &manifest.version)?,
                Some(v) => {
                    let parsed = parse_version("/version", v)?;
                    let in_manifest = parse_version("/manifest/version", &manifest.version)?;
                    if parsed != in_manifest {
                        return Err(Error::conflict(format!(
                            "the version {v} differs from the manifest's version {}",
                            manifest.version
                        )));
                    }
                    parsed
                }
                None => {
                    let suggested = self.suggest_from(&versions, &manifest)?;
                    manifest.version = suggested.to_string();
                    if let Some(obj) = stored.as_object_mut() {
                        obj.insert("version".into(), Value::String(manifest.version.clone()));
                    }
                    suggested
                }
            };
            ensure_greatest(&version, &versions)?;
            let record = self
                .store
                .insert_version(VersionRecord {
                    id: Uuid::new_v4(),
                    agent_id: agent.id.clone(),
                    version: version.to_string(),
                    manifest: stored,
                    status: VersionStatus::Draft,
                    changelog: new.changelog.clone(),
                    published_at: None,
                    created_at: Utc::now(),
                })
                .await?;
            let payload = json!({ "version": record.version, "changelog": record.changelog });
            Ok((record, payload))
        })
        .await
    }

    /// Publishes a draft version: the manifest is validated again and its dependencies checked
    /// against the host [`Environment`] (every unmet one reported at its pointer); the previously
    /// published version is archived, atomically.
    pub async fn publish(
        &self,
        by: &Principal,
        agent: &str,
        version: &str,
    ) -> Result<VersionRecord> {
        let context = json!({ "version": version });
        self.audited(by, Action::Publish, Some(agent), context, async {
            let agent = self.store.get_agent(agent).await?;
            authorize_manage(by, &agent)?;
            let record = self.store.get_version(&agent.id, version).await?;
            let manifest = check_manifest(&record.manifest)?;
            let unmet = self
                .env
                .unmet(&manifest.dependencies.clone().unwrap_or_default());
            if !unmet.is_empty() {
                return Err(Error::validation("unmet dependencies", unmet));
            }
            self.publish_checked(&agent, &record, &manifest).await
        })
        .await
    }

    async fn publish_checked(
        &self,
        agent: &AgentRecord,
        record: &VersionRecord,
        manifest: &Manifest,
    ) -> Result<(VersionRecord, Value)> {
        let (published, archived) = self
            .store
            .publish_version(&agent.id, &record.version)
            .await?;
        self.store
            .update_agent(&agent.id, Self::agent_fields(manifest))
            .await?;
        let payload = json!({
            "version": published.version,
            "archived": archived.as_ref().map(|a| a.version.clone()),
        });
        Ok((published, payload))
    }

    /// The agent columns that follow the published manifest.
    fn agent_fields(manifest: &Manifest) -> AgentPatch {
        AgentPatch {
            description: Some(manifest.description.clone()),
            category: manifest.category.and_then(category_string),
            capabilities: Some(json!({
                "tools": manifest.tools,
                "tasks": manifest.tasks.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
            })),
            policy_scopes: Some(manifest.permissions().scopes),
            ..AgentPatch::default()
        }
    }

    /// Archives a version (draft or published). Archiving the published version withdraws the
    /// agent from the marketplace (the agent becomes `archived`).
    pub async fn archive_version(
        &self,
        by: &Principal,
        agent: &str,
        version: &str,
    ) -> Result<VersionRecord> {
        let context = json!({ "version": version });
        self.audited(by, Action::ArchiveVersion, Some(agent), context, async {
            let agent = self.store.get_agent(agent).await?;
            authorize_manage(by, &agent)?;
            let current = self.store.get_version(&agent.id, version).await?;
            let archived = self
                .store
                .set_version_status(&agent.id, version, current.status, VersionStatus::Archived)
                .await?;
            if current.status == VersionStatus::Published {
                self.set_agent_archived(&agent).await?;
            }
            let payload = json!({ "version": archived.version, "was": current.status });
            Ok((archived, payload))
        })
        .await
    }

    async fn set_agent_archived(&self, agent: &AgentRecord) -> Result<AgentRecord> {
        agent.status.transition(AgentStatus::Archived)?;
        let patch = AgentPatch {
            status: Some(AgentStatus::Archived),
            ..AgentPatch::default()
        };
        self.store.update_agent(&agent.id, patch).await
    }

    /// Archives an agent: its published version is archived and the agent leaves the
    /// marketplace. An archived agent comes back when a new version is published.
    pub async fn archive_agent(&self, by: &Principal, agent: &str) -> Result<AgentRecord> {
        self.audited(by, Action::ArchiveAgent, Some(agent), json!({}), async {
            let agent = self.store.get_agent(agent).await?;
            authorize_manage(by, &agent)?;
            agent.status.transition(AgentStatus::Archived)?;
            let versions = self.store.list_versions(&agent.id).await?;
            let mut archived_version = None;
            if let Some(p) = published_of(&versions) {
                self.store
                    .set_version_status(
                        &agent.id,
                        &p.version,
                        VersionStatus::Published,
                        VersionStatus::Archived,
                    )
                    .await?;
                archived_version = Some(p.version.clone());
            }
            let agent = self.set_agent_archived(&agent).await?;
            Ok((agent, json!({ "archived_version": archived_version })))
        })
        .await
    }

    /// Registers an agent compiled into the host: the agent (id = slug of the manifest's name)
    /// is created if needed and the manifest's version added and published. Idempotent: the
    /// same version registered again returns the published version unchanged. Dependencies are
    /// not checked (the host that compiled the agent in vouches for them).
    pub async fn register_native(&self, manifest: &Manifest) -> Result<VersionRecord> {
        let by = Principal::new(SYSTEM_USER);
        let slug = slugify(&manifest.name);
        let context = json!({ "name": manifest.name, "version": manifest.version });
        self.audited(&by, Action::RegisterNative, Some(&slug), context, async {
            let value = serde_json::to_value(manifest)
                .map_err(|e| Error::invalid_field("", format!("manifest: {e}")))?;
            let manifest = check_manifest(&value)?;
            let agent = match self.store.get_agent(&slug).await {
                Ok(a) => a,
                Err(Error::NotFound { .. }) => {
                    let now = Utc::now();
                    let record = AgentRecord {
                        id: slug.clone(),
                        name: manifest.name.clone(),
                        slug: slug.clone(),
                        description: Some(manifest.description.clone()),
                        category: manifest.category.and_then(category_string),
                        capabilities: None,
                        policy_scopes: Vec::new(),
                        manifest: None,
                        status: AgentStatus::Draft,
                        owner: Some(SYSTEM_USER.to_owned()),
                        created_at: now,
                        updated_at: now,
                    };
                    match self.store.insert_agent(record).await {
                        Ok(a) => a,
                        // Registered concurrently: use that one.
                        Err(Error::Conflict { .. }) => self.store.get_agent(&slug).await?,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            let version = parse_version("/version", &manifest.version)?;
            let versions = self.store.list_versions(&agent.id).await?;
            let existing = versions
                .iter()
                .find(|v| semver::Version::parse(&v.version).is_ok_and(|x| x == version));
            let record = match existing {
                Some(v) if v.status == VersionStatus::Published => {
                    let payload = json!({ "version": v.version, "unchanged": true });
                    return Ok((v.clone(), payload));
                }
                Some(v) if v.status == VersionStatus::Archived => {
                    return Err(Error::conflict(format!(
                        "version {} of `{}` is archived",
                        v.version, agent.id
                    )));
                }
                Some(v) => v.clone(),
                None => {
                    ensure_greatest(&version, &versions)?;
                    let inserted = self
                        .store
                        .insert_version(VersionRecord {
                            id: Uuid::new_v4(),
                            agent_id: agent.id.clone(),
                            version: version.to_string(),
                            manifest: value.clone(),
                            status: VersionStatus::Draft,
                            changelog: None,
                            published_at: None,
                            created_at: Utc::now(),
                        })
                        .await;
                    match inserted {
                        Ok(v) => v,
                        // Registered concurrently (nodes starting together): use that one.
                        Err(Error::Conflict { .. }) => {
                            self.store
                                .get_version(&agent.id, &version.to_string())
                                .await?
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            let unchanged = |v: VersionRecord| {
                let payload = json!({ "version": v.version, "unchanged": true });
                (v, payload)
            };
            if record.status == VersionStatus::Published {
                return Ok(unchanged(record));
            }
            match self.publish_checked(&agent, &record, &manifest).await {
                // Published concurrently by another node: the same outcome.
                Err(Error::Conflict { .. }) => {
                    let v = self.store.get_version(&agent.id, &record.version).await?;
                    if v.status == VersionStatus::Published {
                        Ok(unchanged(v))
                    } else {
                        Err(Error::conflict(format!(
                            "version {} of `{}` is {}",
                            v.version, agent.id, v.status
                        )))
                    }
                }
                other => other,
            }
        })
        .await
    }
}
