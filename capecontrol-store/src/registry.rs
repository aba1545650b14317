//! [`RegistryStore`] on PostgreSQL: agents, versions, the catalog, installations.

use async_trait::async_trait;
use capecontrol_core::store::{
    AgentFilter, AgentPatch, AgentRecord, CatalogEntry, CatalogQuery, CatalogSort,
    InstallationRecord, Page, RegistryStore, VersionRecord,
};
use capecontrol_core::{Error, Result, VersionStatus};
use sqlx::Row;

use crate::error::{db, db_agent, refuse};
use crate::rows;
use crate::store::PostgresStore;

#[async_trait]
impl RegistryStore for PostgresStore {
    async fn insert_agent(&self, agent: AgentRecord) -> Result<AgentRecord> {
        let row = sqlx::query(
            "INSERT INTO agents (id, name, slug, description, category, capabilities, \
             policy_scopes, manifest, status, created_at, updated_at, owner) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING *",
        )
        .bind(&agent.id)
        .bind(&agent.name)
        .bind(&agent.slug)
        .bind(&agent.description)
        .bind(&agent.category)
        .bind(&agent.capabilities)
        .bind(&agent.policy_scopes)
        .bind(&agent.manifest)
        .bind(agent.status.as_str())
        .bind(agent.created_at)
        .bind(agent.updated_at)
        .bind(&agent.owner)
        .fetch_one(&self.inner.pool)
        .await
        .map_err(db)?;
        rows::agent(&row)
    }

    async fn update_agent(&self, id: &str, patch: AgentPatch) -> Result<AgentRecord> {
        // `updated_at` is set by the `update_agents_updated_at` trigger.
        let row = sqlx::query(
            "UPDATE agents SET name = COALESCE($2, name), description = COALESCE($3, description), \
             category = COALESCE($4, category), capabilities = COALESCE($5, capabilities), \
             policy_scopes = COALESCE($6, policy_scopes), manifest = COALESCE($7, manifest), \
             status = COALESCE($8, status) WHERE id = $1 RETURNING *",
        )
        .bind(id)
        .bind(&patch.name)
        .bind(&patch.description)
        .bind(&patch.category)
        .bind(&patch.capabilities)
        .bind(&patch.policy_scopes)
        .bind(&patch.manifest)
        .bind(patch.status.map(|s| s.as_str()))
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| Error::not_found("agent", id))?;
        rows::agent(&row)
    }

    async fn get_agent(&self, id_or_slug: &str) -> Result<AgentRecord> {
        let row = sqlx::query(
            "SELECT * FROM agents WHERE id = $1 OR slug = $1 ORDER BY (id = $1) DESC LIMIT 1",
        )
        .bind(id_or_slug)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| Error::not_found("agent", id_or_slug))?;
        rows::agent(&row)
    }

    async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<AgentRecord>> {
        sqlx::query(
            "SELECT * FROM agents WHERE ($1::text IS NULL OR status = $1) \
             AND ($2::text IS NULL OR category = $2) ORDER BY name, id",
        )
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.category)
        .fetch_all(&self.inner.read)
        .await
        .map_err(db)?
        .iter()
        .map(rows::agent)
        .collect()
    }

    async fn insert_version(&self, version: VersionRecord) -> Result<VersionRecord> {
        let row = sqlx::query(
            "INSERT INTO agent_versions (id, agent_id, version, manifest, status, changelog, \
             published_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        )
        .bind(version.id)
        .bind(&version.agent_id)
        .bind(&version.version)
        .bind(&version.manifest)
        .bind(version.status.as_str())
        .bind(&version.changelog)
        .bind(version.published_at)
        .bind(version.created_at)
        .fetch_one(&self.inner.pool)
        .await
        .map_err(db_agent(&version.agent_id))?;
        rows::version(&row)
    }

    async fn get_version(&self, agent_id: &str, version: &str) -> Result<VersionRecord> {
        let row = sqlx::query("SELECT * FROM agent_versions WHERE agent_id = $1 AND version = $2")
            .bind(agent_id)
            .bind(version)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| Error::not_found("agent version", format!("{agent_id}@{version}")))?;
        rows::version(&row)
    }

    async fn list_versions(&self, agent_id: &str) -> Result<Vec<VersionRecord>> {
        sqlx::query("SELECT * FROM agent_versions WHERE agent_id = $1 ORDER BY created_at, id")
            .bind(agent_id)
            .fetch_all(&self.inner.read)
            .await
            .map_err(db)?
            .iter()
            .map(rows::version)
            .collect()
    }

    async fn publish_version(
        &self,
        agent_id: &str,
        version: &str,
    ) -> Result<(VersionRecord, Option<VersionRecord>)> {
        let mut tx = self.inner.pool.begin().await.map_err(db)?;
        // The agent row lock serializes publishes of the same agent (NO KEY: foreign-key checks of
        // concurrent task and audit inserts are not blocked).
        let agent = sqlx::query("SELECT id FROM agents WHERE id = $1 FOR NO KEY UPDATE")
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if agent.is_none() {
            return refuse(tx, Error::not_found("agent", agent_id)).await;
        }
        let status: Option<Option<String>> = sqlx::query_scalar(
            "SELECT status FROM agent_versions WHERE agent_id = $1 AND version = $2",
        )
        .bind(agent_id)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        match status {
            None => {
                let missing = Error::not_found("agent version", format!("{agent_id}@{version}"));
                return refuse(tx, missing).await;
            }
            Some(s) if s.as_deref() != Some("draft") => {
                let not_draft = Error::conflict(format!(
                    "version {agent_id}@{version} is {}, not draft",
                    s.unwrap_or_default()
                ));
                return refuse(tx, not_draft).await;
            }
            Some(_) => {}
        }
        let archived = sqlx::query(
            "UPDATE agent_versions SET status = 'archived' \
             WHERE agent_id = $1 AND status = 'published' RETURNING *",
        )
        .bind(agent_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .map(|r| rows::version(&r))
        .transpose()?;
        let published = sqlx::query(
            "UPDATE agent_versions SET status = 'published', published_at = now() \
             WHERE agent_id = $1 AND version = $2 RETURNING *",
        )
        .bind(agent_id)
        .bind(version)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let published = rows::version(&published)?;
        sqlx::query("UPDATE agents SET status = 'published', manifest = $2 WHERE id = $1")
            .bind(agent_id)
            .bind(&published.manifest)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok((published, archived))
    }

    async fn set_version_status(
        &self,
        agent_id: &str,
        version: &str,
        from: VersionStatus,
        to: VersionStatus,
    ) -> Result<VersionRecord> {
        from.transition(to)?;
        let row = sqlx::query(
            "UPDATE agent_versions SET status = $4, \
             published_at = CASE WHEN $4 = 'published' THEN COALESCE(published_at, now()) \
                                 ELSE published_at END \
             WHERE agent_id = $1 AND version = $2 AND status = $3 RETURNING *",
        )
        .bind(agent_id)
        .bind(version)
        .bind(from.as_str())
        .bind(to.as_str())
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(db)?;
        match row {
            Some(row) => rows::version(&row),
            None => {
                let current = self.get_version(agent_id, version).await?;
                Err(Error::conflict(format!(
                    "version {agent_id}@{version} is {}, not {from}",
                    current.status
                )))
            }
        }
    }

    async fn catalog(&self, query: &CatalogQuery) -> Result<Page<CatalogEntry>> {
        let limit = i64::try_from(query.limit.clamp(1, 100)).unwrap_or(100);
        let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
        let sort = match query.sort {
            CatalogSort::Name => "name",
            CatalogSort::RecentlyPublished => "published",
            CatalogSort::RecentlyUpdated => "updated",
        };
        let rows = sqlx::query(
            "SELECT a.id, a.name, a.slug, a.description, a.category, a.capabilities, \
                    a.policy_scopes, a.manifest, a.status, a.created_at, a.updated_at, a.owner, \
                    v.id AS v_id, v.agent_id AS v_agent_id, v.version AS v_version, \
                    v.manifest AS v_manifest, v.status AS v_status, v.changelog AS v_changelog, \
                    v.published_at AS v_published_at, v.created_at AS v_created_at, \
                    count(*) OVER () AS total \
             FROM agents a JOIN agent_versions v ON v.agent_id = a.id AND v.status = 'published' \
             WHERE a.status = 'published' \
               AND ($1::text IS NULL OR a.category = $1) \
               AND ($2::text IS NULL OR v.manifest->>'placement' = $2) \
               AND ($3::text IS NULL OR strpos(lower(a.name), lower($3)) > 0 \
                    OR strpos(lower(COALESCE(a.description, '')), lower($3)) > 0) \
             ORDER BY CASE WHEN $4 = 'name' THEN lower(a.name) END, \
                      CASE WHEN $4 = 'published' THEN v.published_at END DESC NULLS LAST, \
                      CASE WHEN $4 = 'updated' THEN a.updated_at END DESC NULLS LAST, \
                      a.name, a.id \
             LIMIT $5 OFFSET $6",
        )
        .bind(&query.category)
        .bind(&query.placement)
        .bind(query.text.as_deref().filter(|t| !t.is_empty()))
        .bind(sort)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.inner.read)
        .await
        .map_err(db)?;
        let mut total = 0usize;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            total = usize::try_from(row.try_get::<i64, _>("total").map_err(db)?).unwrap_or(0);
            let agent = rows::agent(row)?;
            let status: Option<String> = row.try_get("v_status").map_err(db)?;
            let version = VersionRecord {
                id: row.try_get("v_id").map_err(db)?,
                agent_id: row.try_get("v_agent_id").map_err(db)?,
                version: row.try_get("v_version").map_err(db)?,
                manifest: row.try_get("v_manifest").map_err(db)?,
                status: status
                    .as_deref()
                    .unwrap_or("published")
                    .parse()
                    .map_err(|e| crate::error::corrupt("version status", e))?,
                changelog: row.try_get("v_changelog").map_err(db)?,
                published_at: row.try_get("v_published_at").map_err(db)?,
                created_at: row
                    .try_get::<Option<_>, _>("v_created_at")
                    .map_err(db)?
                    .unwrap_or(chrono::DateTime::UNIX_EPOCH),
            };
            items.push(CatalogEntry { agent, version });
        }
        if rows.is_empty() && offset > 0 {
            // The page is past the end: count separately.
            total = usize::try_from(
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM agents a JOIN agent_versions v \
                     ON v.agent_id = a.id AND v.status = 'published' \
                     WHERE a.status = 'published' \
                       AND ($1::text IS NULL OR a.category = $1) \
                       AND ($2::text IS NULL OR v.manifest->>'placement' = $2) \
                       AND ($3::text IS NULL OR strpos(lower(a.name), lower($3)) > 0 \
                            OR strpos(lower(COALESCE(a.description, '')), lower($3)) > 0)",
                )
                .bind(&query.category)
                .bind(&query.placement)
                .bind(query.text.as_deref().filter(|t| !t.is_empty()))
                .fetch_one(&self.inner.read)
                .await
                .map_err(db)?,
            )
            .unwrap_or(0);
        }
        Ok(Page { items, total })
    }

    async fn upsert_installation(
        &self,
        installation: InstallationRecord,
    ) -> Result<InstallationRecord> {
        let row = sqlx::query(
            "INSERT INTO installations (id, agent_id, user_id, version, granted_scopes, settings, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now()) \
             ON CONFLICT (agent_id, user_id) DO UPDATE SET version = EXCLUDED.version, \
             granted_scopes = EXCLUDED.granted_scopes, settings = EXCLUDED.settings \
             RETURNING *",
        )
        .bind(installation.id)
        .bind(&installation.agent_id)
        .bind(&installation.user_id)
        .bind(&installation.version)
        .bind(&installation.granted_scopes)
        .bind(&installation.settings)
        .bind(installation.created_at)
        .fetch_one(&self.inner.pool)
        .await
        .map_err(db_agent(&installation.agent_id))?;
        rows::installation(&row)
    }

    async fn get_installation(&self, agent_id: &str, user_id: &str) -> Result<InstallationRecord> {
        let row = sqlx::query("SELECT * FROM installations WHERE agent_id = $1 AND user_id = $2")
            .bind(agent_id)
            .bind(user_id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| Error::not_found("installation", format!("{agent_id} for {user_id}")))?;
        rows::installation(&row)
    }

    async fn list_installations(&self, user_id: &str) -> Result<Vec<InstallationRecord>> {
        sqlx::query("SELECT * FROM installations WHERE user_id = $1 ORDER BY agent_id")
            .bind(user_id)
            .fetch_all(&self.inner.read)
            .await
            .map_err(db)?
            .iter()
            .map(rows::installation)
            .collect()
    }

    async fn delete_installation(&self, agent_id: &str, user_id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM installations WHERE agent_id = $1 AND user_id = $2")
            .bind(agent_id)
            .bind(user_id)
            .execute(&self.inner.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(
                "installation",
                format!("{agent_id} for {user_id}"),
            ));
        }
        Ok(())
    }
}
