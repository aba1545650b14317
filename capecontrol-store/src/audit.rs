//! [`AuditStore`] on PostgreSQL.

use async_trait::async_trait;
use capecontrol_core::Result;
use capecontrol_core::store::{AuditEvent, AuditFilter, AuditStore, NewAuditEvent};

use crate::error::db;
use crate::rows;
use crate::store::PostgresStore;

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, event: NewAuditEvent) -> Result<AuditEvent> {
        let row = sqlx::query(
            "INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload, \
             ip_address, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        )
        .bind(event.task_id)
        .bind(&event.agent_id)
        .bind(&event.user_id)
        .bind(&event.event_type)
        .bind(&event.payload)
        .bind(event.ip_address)
        .bind(&event.user_agent)
        .fetch_one(&self.inner.pool)
        .await
        .map_err(db)?;
        rows::audit(&row)
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        let limit = i64::try_from(filter.limit.unwrap_or(1000)).unwrap_or(i64::MAX);
        sqlx::query(
            "SELECT * FROM audit_events WHERE ($1::uuid IS NULL OR task_id = $1) \
             AND ($2::text IS NULL OR agent_id = $2) AND ($3::text IS NULL OR user_id = $3) \
             AND ($4::text IS NULL OR event_type = $4) ORDER BY id LIMIT $5",
        )
        .bind(filter.task_id)
        .bind(&filter.agent_id)
        .bind(&filter.user_id)
        .bind(&filter.event_type)
        .bind(limit)
        .fetch_all(&self.inner.read)
        .await
        .map_err(db)?
        .iter()
        .map(rows::audit)
        .collect()
    }
}
