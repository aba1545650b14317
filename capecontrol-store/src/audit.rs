//! [`AuditStore`] on PostgreSQL. The chain (`seq`, `prev_hash`, `hash`) is sealed after the
//! commit of whatever transaction inserted the row (migration `…021_audit_sealer.sql`): an insert
//! only marks its row pending, and [`PostgresStore::seal_audit`] chains the pending rows in
//! batches — each node in the background, and every read of the trail or its head first, so
//! that a reader sees every row committed before its read in the chain.
//! [`AuditStore::append_audit`] seals after its commit, so that the row it returns carries its
//! place.

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
        tx.commit().await.map_err(db)?;
        self.seal_audit().await?;
        let row = sqlx::query("SELECT * FROM audit_events WHERE id = $1")
            .bind(id)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db)?;
        rows::audit(&row)
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        self.seal_audit().await?;
        let limit = i64::try_from(filter.page_size()).unwrap_or(i64::MAX);
        let after = filter.after.map(|a| i64::try_from(a).unwrap_or(i64::MAX));
        sqlx::query(
            "SELECT * FROM audit_events WHERE ($1::uuid IS NULL OR task_id = $1) \
             AND ($2::text IS NULL OR agent_id = $2) AND ($3::text IS NULL OR user_id = $3) \
             AND ($4::text IS NULL OR event_type = $4) AND ($5::bigint IS NULL OR seq > $5) \
             AND (NOT $6 OR (seq IS NULL AND NOT pending)) ORDER BY seq NULLS LAST, id LIMIT $7",
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
        self.seal_audit().await?;
        // The primary's: the head just moved there.
        let row = sqlx::query("SELECT seq, hash FROM audit_chain")
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db)?;
        let seq: i64 = row.try_get("seq").map_err(db)?;
        Ok(ChainHead {
            seq: u64::try_from(seq).unwrap_or(0),
            hash: row.try_get("hash").map_err(db)?,
        })
    }
}

/// Rows sealed per statement at most.
const SEAL_BATCH: i32 = 2_000;

impl PostgresStore {
    /// Seals every audit row pending now into the chain and returns how many it sealed (every
    /// read of the trail does this first; each store also does it in the background, every
    /// [`audit_seal_interval`](crate::PostgresStoreOptions::audit_seal_interval)). Waits for a
    /// sealer of another node that holds the chain's head.
    pub async fn seal_audit(&self) -> Result<u64> {
        seal(&self.inner.pool, true).await
    }
}

/// Seals pending rows in batches of [`SEAL_BATCH`] until none is left; without `wait`, gives up
/// (returning what it sealed) when another session holds the head.
pub(crate) async fn seal(pool: &sqlx::PgPool, wait: bool) -> Result<u64> {
    let mut sealed = 0u64;
    loop {
        let n: i32 = sqlx::query_scalar("SELECT capecontrol_audit_seal_pending($1, $2)")
            .bind(SEAL_BATCH)
            .bind(wait)
            .fetch_one(pool)
            .await
            .map_err(db)?;
        if n <= 0 {
            return Ok(sealed);
        }
        sealed += u64::try_from(n).unwrap_or(0);
        if n < SEAL_BATCH {
            return Ok(sealed);
        }
    }
}

/// The background sealer of a store: seals the pending rows every `interval` (another node's
/// sealer holding the head is left to it). An error is logged and the next round tried: before
/// `migrate`, the function does not exist yet.
pub(crate) async fn sealer(pool: sqlx::PgPool, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = seal(&pool, false).await {
            tracing::debug!(target: "capecontrol::store", error = %e, "sealing the audit chain failed");
        }
    }
}
