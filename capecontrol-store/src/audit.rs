//! [`AuditStore`] on PostgreSQL. The chain's links (`seq`, `prev_hash`, `hash`) live in
//! `audit_links`, one narrow row per sealed audit row, and are written after the commit of
//! whatever transaction inserted the row (migrations `…021_audit_sealer.sql`,
//! `…026_audit_links.sql`): an insert only lists its row in `audit_pending` (a statement
//! trigger), and [`PostgresStore::seal_audit`] chains the pending rows in batches — each node
//! in the background, and every read of the trail or its head first, so that a reader sees
//! every row committed before its read in the chain. [`AuditStore::append_audit`] seals after
//! its commit, so that the row it returns carries its place.

use async_trait::async_trait;
use capecontrol_core::Result;
use capecontrol_core::audit::{self, ChainHead};
use capecontrol_core::store::{AuditEvent, AuditFilter, AuditStore, NewAuditEvent};
use sqlx::Row;

use crate::error::db;
use crate::rows;
use crate::store::PostgresStore;

/// The columns of an audit row `a`, as `rows::audit` reads them before the link's three.
macro_rules! audit_columns {
    () => {
        "a.id, a.task_id, a.agent_id, a.user_id, a.event_type, a.payload, a.ip_address, \
         a.user_agent, a.created_at"
    };
}

/// An audit row with its link `l` (none for a row not sealed).
macro_rules! audit_row {
    () => {
        concat!(
            "SELECT ",
            audit_columns!(),
            ", l.seq, l.prev_hash, l.hash FROM audit_events a "
        )
    };
}

/// `list_audit`'s filters and order after the join of the links.
macro_rules! audit_page {
    () => {
        " audit_links l ON l.id = a.id \
         WHERE ($1::uuid IS NULL OR a.task_id = $1) AND ($2::text IS NULL OR a.agent_id = $2) \
         AND ($3::text IS NULL OR a.user_id = $3) AND ($4::text IS NULL OR a.event_type = $4) \
         AND ($5::bigint IS NULL OR l.seq > $5) \
         AND (NOT $6 OR (l.id IS NULL AND NOT EXISTS \
              (SELECT 1 FROM audit_pending p WHERE p.id = a.id))) \
         ORDER BY l.seq NULLS LAST, a.id LIMIT $7"
    };
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, event: NewAuditEvent) -> Result<AuditEvent> {
        event.check()?;
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
        let row = sqlx::query(concat!(
            audit_row!(),
            "LEFT JOIN audit_links l ON l.id = a.id WHERE a.id = $1"
        ))
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
        // Paging after a place reads the links in chain order (an inner join: only sealed rows
        // have a place); otherwise the rows without a link follow the chain (as `NULLS LAST`).
        let query = if after.is_some() {
            concat!(audit_row!(), "JOIN", audit_page!())
        } else {
            concat!(audit_row!(), "LEFT JOIN", audit_page!())
        };
        sqlx::query(query)
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
        head(&row)
    }
}

/// The chain's head from its row in `audit_chain`.
fn head(row: &sqlx::postgres::PgRow) -> Result<ChainHead> {
    let seq: i64 = row.try_get("seq").map_err(db)?;
    Ok(ChainHead {
        seq: u64::try_from(seq).unwrap_or(0),
        hash: row.try_get("hash").map_err(db)?,
    })
}

/// Rows sealed per transaction at most.
const SEAL_BATCH: i64 = 2_000;

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
        let Some(n) = seal_batch(pool, wait).await? else {
            return Ok(sealed);
        };
        sealed += n;
        if n < SEAL_BATCH.unsigned_abs() {
            return Ok(sealed);
        }
    }
}

/// One batch, in one transaction: the head locked, the pending rows read in id order (a fresh
/// snapshot after the lock, READ COMMITTED: what another sealer sealed meanwhile is no longer
/// pending), hashed here with the canonical form `verify_chain` checks, then one statement
/// takes them off `audit_pending`, writes their links and moves the head. `None`: nothing
/// pending, or (without `wait`) another session holds the head.
async fn seal_batch(pool: &sqlx::PgPool, wait: bool) -> Result<Option<u64>> {
    // A cheap look first: most background rounds find nothing and lock nothing.
    let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM audit_pending)")
        .fetch_one(pool)
        .await
        .map_err(db)?;
    if !any {
        return Ok(None);
    }
    let mut tx = pool.begin().await.map_err(db)?;
    let lock = if wait {
        "SELECT seq, hash FROM audit_chain WHERE id FOR UPDATE"
    } else {
        "SELECT seq, hash FROM audit_chain WHERE id FOR UPDATE SKIP LOCKED"
    };
    let Some(row) = sqlx::query(lock)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
    else {
        return Ok(None);
    };
    let mut chain = head(&row)?;
    // A pending id whose row was deleted before its seal has nothing to chain: it only leaves
    // the list. Each row is reached by its primary key (a lateral probe the planner cannot
    // flatten): joined plainly, the planner hashed the batch against a scan of the whole trail.
    let pending = sqlx::query(concat!(
        "SELECT p.id AS pending_id, ",
        audit_columns!(),
        ", NULL::bigint AS seq, NULL::text AS prev_hash, NULL::text AS hash \
         FROM (SELECT id FROM audit_pending ORDER BY id LIMIT $1) p \
         LEFT JOIN LATERAL (SELECT * FROM audit_events e WHERE e.id = p.id OFFSET 0) a ON true \
         ORDER BY p.id"
    ))
    .bind(SEAL_BATCH)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    if pending.is_empty() {
        return Ok(None);
    }
    let mut taken = Vec::with_capacity(pending.len());
    let mut ids = Vec::with_capacity(pending.len());
    let mut seqs = Vec::with_capacity(pending.len());
    let mut prevs = Vec::with_capacity(pending.len());
    let mut hashes = Vec::with_capacity(pending.len());
    for row in &pending {
        taken.push(row.try_get::<i64, _>("pending_id").map_err(db)?);
        if row.try_get::<Option<i64>, _>("id").map_err(db)?.is_none() {
            continue;
        }
        let mut event = rows::audit(row)?;
        chain = audit::seal(&mut event, &chain);
        ids.push(event.id);
        seqs.push(i64::try_from(event.seq).unwrap_or(i64::MAX));
        prevs.push(event.prev_hash);
        hashes.push(event.hash);
    }
    sqlx::query(
        "WITH taken AS (DELETE FROM audit_pending WHERE id = ANY ($1::bigint[])), \
         linked AS (INSERT INTO audit_links (id, seq, prev_hash, hash) \
           SELECT * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[])) \
         UPDATE audit_chain SET seq = $6, hash = $7 WHERE id",
    )
    .bind(&taken)
    .bind(&ids)
    .bind(&seqs)
    .bind(&prevs)
    .bind(&hashes)
    .bind(i64::try_from(chain.seq).unwrap_or(i64::MAX))
    .bind(&chain.hash)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(Some(u64::try_from(taken.len()).unwrap_or(u64::MAX)))
}

/// The background sealer of a store: seals the pending rows every `interval`, the first time one
/// interval after the store connects (another node's sealer holding the head is left to it). An
/// error is logged and the next round tried: before `migrate`, the tables do not exist yet.
pub(crate) async fn sealer(pool: sqlx::PgPool, interval: std::time::Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = seal(&pool, false).await {
            tracing::debug!(target: "capecontrol::store", error = %e, "sealing the audit chain failed");
        }
    }
}
