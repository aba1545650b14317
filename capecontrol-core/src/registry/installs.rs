//! Installations: install with grants and settings, upgrade with re-consent, settings, uninstall.

use super::*;

impl Registry {
    /// The version to install: the one asked for (it must be published), or the published one.
    async fn installable(
        &self,
        agent: &AgentRecord,
        version: Option<&str>,
    ) -> Result<VersionRecord> {
        match version {
            Some(v) => {
                let record = self.store.get_version(&agent.id, v).await?;
                if record.status != VersionStatus::Published {
                    return Err(Error::conflict(format!(
                        "version {v} of `{}` is {}, not published",
                        agent.id, record.status
                    )));
                }
                Ok(record)
            }
            None => {
                let versions = self.store.list_versions(&agent.id).await?;
                published_of(&versions).cloned().ok_or_else(|| {
                    Error::conflict(format!("agent `{}` has no published version", agent.id))
                })
            }
        }
    }

    /// Checks roles, grant and settings of `by` for `manifest`.
    fn admit(
        by: &Principal,
        manifest: &Manifest,
        grant: &[String],
        settings: &Value,
    ) -> Result<()> {
        let permissions = manifest.permissions();
        if !by.has_any_role(&permissions.required_roles) {
            return Err(Error::forbidden(format!(
                "one of the roles {} is required",
                permissions.required_roles.join(", ")
            )));
        }
        let granted = parse_grant(grant)?;
        let required = parse_scopes("/permissions/scopes", &permissions.scopes)?;
        let missing = missing_scopes(&granted, &required);
        if !missing.is_empty() {
            return Err(Error::permission(missing.iter().map(ToString::to_string)));
        }
        let schema = manifest
            .ui
            .as_ref()
            .and_then(|u| u.settings_schema.as_ref());
        settings::validate_settings(schema, settings)
    }

    fn view(record: InstallationRecord, manifest: Option<&Manifest>) -> Installation {
        let (settings, secrets) = match manifest {
            Some(m) => settings::redact(
                m.ui.as_ref().and_then(|u| u.settings_schema.as_ref()),
                &record.settings,
            ),
            // Without the schema nothing can be shown safely.
            None => (json!({}), Vec::new()),
        };
        Installation {
            id: record.id,
            agent_id: record.agent_id,
            user_id: record.user_id,
            version: record.version,
            granted_scopes: record.granted_scopes,
            settings,
            secrets,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }

    async fn view_of(&self, record: InstallationRecord) -> Installation {
        let manifest = match self
            .store
            .get_version(&record.agent_id, &record.version)
            .await
        {
            Ok(v) => typed_manifest(&v).ok(),
            Err(_) => None,
        };
        Self::view(record, manifest.as_ref())
    }

    fn request_context(req: &InstallRequest) -> Value {
        json!({ "version": req.version, "grant": req.grant })
    }

    /// Installs an agent for `by`: the principal must hold one of the manifest's
    /// `required_roles` (else a permission error), the grant must cover the manifest's scopes
    /// (else a permission error naming exactly the missing ones), and the settings must fit the
    /// manifest's `ui.settings_schema` (errors under `/settings`). Installed already: conflict
    /// (use [`Registry::upgrade`]).
    pub async fn install(&self, by: &Principal, req: InstallRequest) -> Result<Installation> {
        let context = Self::request_context(&req);
        let agent_ref = req.agent.clone();
        self.audited(by, Action::Install, Some(&agent_ref), context, async {
            let agent = self.store.get_agent(&req.agent).await?;
            let version = self.installable(&agent, req.version.as_deref()).await?;
            let manifest = typed_manifest(&version)?;
            let grant = req.grant.clone().unwrap_or_default();
            let settings = req.settings.clone().unwrap_or_else(|| json!({}));
            Self::admit(by, &manifest, &grant, &settings)?;
            match self.store.get_installation(&agent.id, &by.user_id).await {
                Ok(_) => {
                    return Err(Error::conflict(format!(
                        "`{}` is installed already for {}",
                        agent.id, by.user_id
                    )));
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            let now = Utc::now();
            let record = self
                .store
                .upsert_installation(InstallationRecord {
                    id: Uuid::new_v4(),
                    agent_id: agent.id.clone(),
                    user_id: by.user_id.clone(),
                    version: version.version.clone(),
                    granted_scopes: grant,
                    settings,
                    created_at: now,
                    updated_at: now,
                })
                .await?;
            let view = Self::view(record, Some(&manifest));
            let payload = json!({
                "version": view.version,
                "granted_scopes": view.granted_scopes,
                "settings": view.settings,
            });
            Ok((view, payload))
        })
        .await
    }

    /// Moves an installation to another published version (`None`: the published one). A
    /// version that asks for more scopes needs a grant covering them (else a permission error
    /// listing exactly the new scopes); `grant` and `settings` left `None` keep the current ones.
    pub async fn upgrade(&self, by: &Principal, req: InstallRequest) -> Result<Installation> {
        let context = Self::request_context(&req);
        let agent_ref = req.agent.clone();
        self.audited(by, Action::Upgrade, Some(&agent_ref), context, async {
            let agent = self.store.get_agent(&req.agent).await?;
            let current = self.store.get_installation(&agent.id, &by.user_id).await?;
            let version = self.installable(&agent, req.version.as_deref()).await?;
            let manifest = typed_manifest(&version)?;
            let grant = req
                .grant
                .clone()
                .unwrap_or_else(|| current.granted_scopes.clone());
            let settings = req
                .settings
                .clone()
                .unwrap_or_else(|| current.settings.clone());
            Self::admit(by, &manifest, &grant, &settings)?;
            let from = current.version.clone();
            let record = self
                .store
                .upsert_installation(InstallationRecord {
                    version: version.version.clone(),
                    granted_scopes: grant,
                    settings,
                    ..current
                })
                .await?;
            let view = Self::view(record, Some(&manifest));
            let payload = json!({
                "from": from,
                "to": view.version,
                "granted_scopes": view.granted_scopes,
                "settings": view.settings,
            });
            Ok((view, payload))
        })
        .await
    }

    /// Replaces the settings of an installation (validated against the installed version's
    /// schema).
    pub async fn update_settings(
        &self,
        by: &Principal,
        agent: &str,
        settings: Value,
    ) -> Result<Installation> {
        self.audited(by, Action::UpdateSettings, Some(agent), json!({}), async {
            let agent = self.store.get_agent(agent).await?;
            let current = self.store.get_installation(&agent.id, &by.user_id).await?;
            let version = self.store.get_version(&agent.id, &current.version).await?;
            let manifest = typed_manifest(&version)?;
            let schema = manifest
                .ui
                .as_ref()
                .and_then(|u| u.settings_schema.as_ref());
            settings::validate_settings(schema, &settings)?;
            let record = self
                .store
                .upsert_installation(InstallationRecord {
                    settings,
                    ..current
                })
                .await?;
            let view = Self::view(record, Some(&manifest));
            let payload = json!({ "settings": view.settings });
            Ok((view, payload))
        })
        .await
    }

    /// Removes the installation of `agent` for `by`; not installed → not-found.
    pub async fn uninstall(&self, by: &Principal, agent: &str) -> Result<()> {
        self.audited(by, Action::Uninstall, Some(agent), json!({}), async {
            let agent = self.store.get_agent(agent).await?;
            let current = self.store.get_installation(&agent.id, &by.user_id).await?;
            self.store
                .delete_installation(&agent.id, &by.user_id)
                .await?;
            Ok(((), json!({ "version": current.version })))
        })
        .await
    }

    /// The installation of `agent` for `user_id`, secrets redacted.
    pub async fn installation(&self, agent: &str, user_id: &str) -> Result<Installation> {
        let agent = self.store.get_agent(agent).await?;
        let record = self.store.get_installation(&agent.id, user_id).await?;
        Ok(self.view_of(record).await)
    }

    /// The installations of `user_id`, secrets redacted.
    pub async fn installations(&self, user_id: &str) -> Result<Vec<Installation>> {
        let records = self.store.list_installations(user_id).await?;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            out.push(self.view_of(r).await);
        }
        Ok(out)
    }
}
