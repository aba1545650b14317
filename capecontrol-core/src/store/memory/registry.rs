//! [`RegistryStore`] on [`MemoryStore`]: agents, versions, the catalog and installations.

use super::*;

#[async_trait]
impl RegistryStore for MemoryStore {
    async fn insert_agent(&self, mut agent: AgentRecord) -> Result<AgentRecord> {
        agent.created_at = micros(agent.created_at);
        agent.updated_at = micros(agent.updated_at);
        let mut state = self.lock();
        if state.agents.contains_key(&agent.id) {
            return Err(Error::conflict(format!(
                "an agent with id `{}` exists",
                agent.id
            )));
        }
        if state.agents.values().any(|a| a.slug == agent.slug) {
            return Err(Error::conflict(format!(
                "an agent with slug `{}` exists",
                agent.slug
            )));
        }
        state.agents.insert(agent.id.clone(), agent.clone());
        Ok(agent)
    }

    async fn update_agent(&self, id: &str, patch: AgentPatch) -> Result<AgentRecord> {
        let now = self.now();
        let mut state = self.lock();
        let key = state
            .agent_by_id_or_slug(id)
            .map(|a| a.id.clone())
            .ok_or_else(|| Error::not_found("agent", id))?;
        let agent = state
            .agents
            .get_mut(&key)
            .ok_or_else(|| Error::not_found("agent", id))?;
        let AgentPatch {
            name,
            description,
            category,
            capabilities,
            policy_scopes,
            manifest,
            status,
        } = patch;
        if let Some(v) = name {
            agent.name = v;
        }
        if let Some(v) = description {
            agent.description = Some(v);
        }
        if let Some(v) = category {
            agent.category = Some(v);
        }
        if let Some(v) = capabilities {
            agent.capabilities = Some(v);
        }
        if let Some(v) = policy_scopes {
            agent.policy_scopes = v;
        }
        if let Some(v) = manifest {
            agent.manifest = Some(v);
        }
        if let Some(v) = status {
            agent.status = v;
        }
        agent.updated_at = now;
        Ok(agent.clone())
    }

    async fn get_agent(&self, id_or_slug: &str) -> Result<AgentRecord> {
        self.lock()
            .agent_by_id_or_slug(id_or_slug)
            .cloned()
            .ok_or_else(|| Error::not_found("agent", id_or_slug))
    }

    async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<AgentRecord>> {
        let state = self.lock();
        let mut out: Vec<AgentRecord> = state
            .agents
            .values()
            .filter(|a| filter.status.is_none_or(|s| a.status == s))
            .filter(|a| {
                filter
                    .category
                    .as_ref()
                    .is_none_or(|c| a.category.as_ref() == Some(c))
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn insert_version(&self, mut version: VersionRecord) -> Result<VersionRecord> {
        version.created_at = micros(version.created_at);
        version.published_at = version.published_at.map(micros);
        let mut state = self.lock();
        if !state.agents.contains_key(&version.agent_id) {
            return Err(Error::not_found("agent", &version.agent_id));
        }
        let order = state.next();
        let list = state.versions.entry(version.agent_id.clone()).or_default();
        if list.iter().any(|(_, v)| v.version == version.version) {
            return Err(Error::conflict(format!(
                "version {} of agent `{}` exists",
                version.version, version.agent_id
            )));
        }
        list.push((order, version.clone()));
        Ok(version)
    }

    async fn get_version(&self, agent_id: &str, version: &str) -> Result<VersionRecord> {
        let state = self.lock();
        state
            .versions
            .get(agent_id)
            .and_then(|l| l.iter().find(|(_, v)| v.version == version))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::not_found("agent version", format!("{agent_id}@{version}")))
    }

    async fn version_status(&self, agent_id: &str, version: &str) -> Result<VersionStatus> {
        let state = self.lock();
        state
            .versions
            .get(agent_id)
            .and_then(|l| l.iter().find(|(_, v)| v.version == version))
            .map(|(_, v)| v.status)
            .ok_or_else(|| Error::not_found("agent version", format!("{agent_id}@{version}")))
    }

    async fn list_versions(&self, agent_id: &str) -> Result<Vec<VersionRecord>> {
        let state = self.lock();
        let mut list: Vec<(u64, VersionRecord)> =
            state.versions.get(agent_id).cloned().unwrap_or_default();
        list.sort_by(|(oa, a), (ob, b)| a.created_at.cmp(&b.created_at).then(oa.cmp(ob)));
        Ok(list.into_iter().map(|(_, v)| v).collect())
    }

    async fn publish_version(
        &self,
        agent_id: &str,
        version: &str,
    ) -> Result<(VersionRecord, Option<VersionRecord>)> {
        let now = self.now();
        let mut state = self.lock();
        let agent_status = state
            .agents
            .get(agent_id)
            .map(|a| a.status)
            .ok_or_else(|| Error::not_found("agent", agent_id))?;
        let list = state
            .versions
            .get_mut(agent_id)
            .ok_or_else(|| Error::not_found("agent version", format!("{agent_id}@{version}")))?;
        let target = list
            .iter()
            .position(|(_, v)| v.version == version)
            .ok_or_else(|| Error::not_found("agent version", format!("{agent_id}@{version}")))?;
        // Check every transition before changing anything.
        list[target].1.status.transition(VersionStatus::Published)?;
        agent_status.transition(AgentStatus::Published)?;
        let previous = list
            .iter()
            .position(|(_, v)| v.status == VersionStatus::Published);
        let archived = match previous {
            Some(i) => {
                let v = &mut list[i].1;
                v.status = v.status.transition(VersionStatus::Archived)?;
                Some(v.clone())
            }
            None => None,
        };
        let published = {
            let v = &mut list[target].1;
            v.status = VersionStatus::Published;
            v.published_at = Some(now);
            v.clone()
        };
        if let Some(agent) = state.agents.get_mut(agent_id) {
            agent.status = AgentStatus::Published;
            agent.manifest = Some(published.manifest.clone());
            agent.updated_at = now;
        }
        Ok((published, archived))
    }

    async fn set_version_status(
        &self,
        agent_id: &str,
        version: &str,
        from: VersionStatus,
        to: VersionStatus,
    ) -> Result<VersionRecord> {
        let mut state = self.lock();
        let v = state
            .versions
            .get_mut(agent_id)
            .and_then(|l| l.iter_mut().find(|(_, v)| v.version == version))
            .map(|(_, v)| v)
            .ok_or_else(|| Error::not_found("agent version", format!("{agent_id}@{version}")))?;
        if v.status != from {
            return Err(Error::conflict(format!(
                "version {version} of agent `{agent_id}` is {}, not {from}",
                v.status
            )));
        }
        v.status = from.transition(to)?;
        Ok(v.clone())
    }

    async fn catalog(&self, query: &CatalogQuery) -> Result<Page<CatalogEntry>> {
        let state = self.lock();
        let text = query.text.as_ref().map(|t| t.to_lowercase());
        let mut entries: Vec<CatalogEntry> = Vec::new();
        for agent in state.agents.values() {
            if agent.status != AgentStatus::Published {
                continue;
            }
            let Some(version) = state.versions.get(&agent.id).and_then(|l| {
                l.iter()
                    .find(|(_, v)| v.status == VersionStatus::Published)
                    .map(|(_, v)| v)
            }) else {
                continue;
            };
            if query
                .category
                .as_ref()
                .is_some_and(|c| agent.category.as_ref() != Some(c))
            {
                continue;
            }
            let placement = version.manifest.get("placement").and_then(|v| v.as_str());
            if query
                .placement
                .as_ref()
                .is_some_and(|p| placement != Some(p.as_str()))
            {
                continue;
            }
            if let Some(t) = &text {
                let in_name = agent.name.to_lowercase().contains(t.as_str());
                let in_description = agent
                    .description
                    .as_ref()
                    .is_some_and(|d| d.to_lowercase().contains(t.as_str()));
                if !in_name && !in_description {
                    continue;
                }
            }
            entries.push(CatalogEntry {
                agent: agent.clone(),
                version: version.clone(),
            });
        }
        match query.sort {
            CatalogSort::Name => entries.sort_by(|a, b| {
                a.agent
                    .name
                    .to_lowercase()
                    .cmp(&b.agent.name.to_lowercase())
                    .then_with(|| a.agent.name.cmp(&b.agent.name))
                    .then_with(|| a.agent.id.cmp(&b.agent.id))
            }),
            CatalogSort::RecentlyPublished => entries.sort_by(|a, b| {
                b.version
                    .published_at
                    .cmp(&a.version.published_at)
                    .then_with(|| a.agent.id.cmp(&b.agent.id))
            }),
            CatalogSort::RecentlyUpdated => entries.sort_by(|a, b| {
                b.agent
                    .updated_at
                    .cmp(&a.agent.updated_at)
                    .then_with(|| a.agent.id.cmp(&b.agent.id))
            }),
        }
        let total = entries.len();
        let limit = query.limit.clamp(1, 100);
        let items = entries.into_iter().skip(query.offset).take(limit).collect();
        Ok(Page { items, total })
    }

    async fn upsert_installation(
        &self,
        installation: InstallationRecord,
    ) -> Result<InstallationRecord> {
        let now = self.now();
        let mut state = self.lock();
        if !state.agents.contains_key(&installation.agent_id) {
            return Err(Error::not_found("agent", &installation.agent_id));
        }
        let mut record = installation;
        record.created_at = micros(record.created_at);
        if let Some(existing) = state.installations.get(&record.agent_id, &record.user_id) {
            record.id = existing.id;
            record.created_at = existing.created_at;
        }
        record.updated_at = now;
        state.installations.insert(record.clone());
        Ok(record)
    }

    async fn get_installation(&self, agent_id: &str, user_id: &str) -> Result<InstallationRecord> {
        self.lock()
            .installations
            .get(agent_id, user_id)
            .map(|r| InstallationRecord::clone(r))
            .ok_or_else(|| Error::not_found("installation", format!("{agent_id} for {user_id}")))
    }

    async fn list_installations(&self, user_id: &str) -> Result<Vec<InstallationRecord>> {
        Ok(self
            .lock()
            .installations
            .values()
            .filter(|i| i.user_id == user_id)
            .cloned()
            .collect())
    }

    async fn delete_installation(&self, agent_id: &str, user_id: &str) -> Result<()> {
        let mut state = self.lock();
        let removed = state.installations.remove(agent_id, user_id);
        if let Some(i) = &removed {
            state.triggers.forget(i.id);
        }
        removed
            .map(|_| ())
            .ok_or_else(|| Error::not_found("installation", format!("{agent_id} for {user_id}")))
    }
}
