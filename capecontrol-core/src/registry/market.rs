//! The marketplace: the catalog of published agents and the detail of one.

use super::*;

impl Registry {
    /// Published agents for the marketplace: filters (category, placement, free text over name
    /// and description, case-insensitive), sort and pagination (`limit` 1..=100).
    pub async fn catalog(&self, query: &CatalogQuery) -> Result<Page<CatalogEntry>> {
        if !(1..=100).contains(&query.limit) {
            return Err(Error::invalid_field("/limit", "must be between 1 and 100"));
        }
        let page = self.store.catalog(query).await?;
        // Blueprint §10.1: how often agents are discovered in the marketplace — one count per
        // agent version listed on a catalog page served (labels bounded by the catalog).
        for entry in &page.items {
            metrics::counter!(
                "marketplace_discovery_rate",
                "agent" => entry.agent.id.clone(),
                "version" => entry.version.version.clone()
            )
            .increment(1);
        }
        Ok(page)
    }

    /// The marketplace's detail view: the agent, its published manifest's excerpt and its
    /// version history with changelogs.
    pub async fn detail(&self, agent: &str) -> Result<AgentDetail> {
        let agent = self.store.get_agent(agent).await?;
        let versions = self.store.list_versions(&agent.id).await?;
        let published = match published_of(&versions) {
            Some(v) => {
                let m = typed_manifest(v)?;
                Some(ManifestExcerpt {
                    config: m.config(),
                    permissions: m.permissions(),
                    name: m.name,
                    version: m.version,
                    description: m.description,
                    placement: m.placement,
                    category: m.category,
                    tools: m.tools,
                })
            }
            None => None,
        };
        let versions = versions.into_iter().map(VersionSummary::from).collect();
        Ok(AgentDetail {
            agent,
            published,
            versions,
        })
    }
}
