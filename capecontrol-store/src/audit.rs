//! [`AuditStore`] on PostgreSQL. The chain (`seq`, `prev_hash`, `hash`) is sealed by the
//! deferred trigger of migration `…003_trust.sql` at the commit of whatever transaction inserted
//! the row; [`AuditStore::append_audit`] fires it before its own commit so that the row it
//! returns carries its place in the chain.

use async_trait::async_trait;
use capecontrol_core::Result;
use capecontrol_core::audit::ChainHead;
use capecontrol_core::store::{AuditEvent, AuditFilter, AuditStore, NewAuditEvent};
use sqlx::Row;

use crate::error::db;
use crate::rows;
use crate::store::PostgresStore;

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, event: NewAuditEvent) -> Result<AuditEvent> {
        let mut tx = self.inner.pool.begin().await.map_err(db)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload, \
             ip_address, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(event.task_id)
        .bind(&event.agent_id)
        .bind(&event.user_id)
        .bind(&event.event_type)
        .bind(&event.payload)
        .bind(event.ip_address)
        .bind(&event.user_agent)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("SET CONSTRAINTS audit_events_chain IMMEDIATE")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let row = sqlx::query("SELECT * FROM audit_events WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        rows::audit(&row)
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        let limit = i64::try_from(filter.page_size()).unwrap_or(i64::MAX);
        let after = filter.after.map(|a| i64::try_from(a).unwrap_or(i64::MAX));
        sqlx::query(
            "SELECT * FROM audit_events WHERE ($1::uuid IS NULL OR task_id = $1) \
             AND ($2::text IS NULL OR agent_id = $2) AND ($3::text IS NULL OR user_id = $3) \
             AND ($4::text IS NULL OR event_type = $4) AND ($5::bigint IS NULL OR seq > $5) \
             AND (NOT $6 OR seq IS NULL) ORDER BY seq NULLS LAST, id LIMIT $7",
        )
        .bind(filter.task_id)
        .bind(&filter.agent_id)
        .bind(&filter.user_id)
        .bind(&filter.event_type)
        .bind(after)
        .bind(filter.unchained)
        .bind(limit)
        .fetch_all(&self.inner.read)
        .await
        .map_err(db)?
        .iter()
        .map(rows::audit)
        .collect()
    }

    async fn audit_head(&self) -> Result<ChainHead> {
        let row = sqlx::query("SELECT seq, hash FROM audit_chain")
            .fetch_one(&self.inner.read)
            .await
            .map_err(db)?;
        let seq: i64 = row.try_get("seq").map_err(db)?;
        Ok(ChainHead {
            seq: u64::try_from(seq).unwrap_or(0),
            hash: row.try_get("hash").map_err(db)?,
        })
    }
}
