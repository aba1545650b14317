//! Events transactional with the host's own PostgreSQL work (migration `…18_event_outbox.sql`):
//! [`PostgresStore::emit_in`] writes the event to the `event_outbox` table on the host's
//! connection (inside its transaction: a rollback emits nothing), and
//! [`PostgresStore::drain_outbox`] (or the loop [`PostgresStore::spawn_outbox_drain`] starts on
//! each node) hands committed rows to [`Platform::emit`] and marks them done.
//!
//! Rows are claimed with `FOR UPDATE SKIP LOCKED`, so nodes draining at once take different
//! rows; a node that dies between emitting and marking done leaves its rows to the next drain,
//! whose emit starts nothing twice (each installation's task is keyed by the event id).

use std::sync::Arc;
use std::time::Duration;

use capecontrol_core::runtime::triggers::EMIT_SCOPE;
use capecontrol_core::runtime::{Event, Platform};
use capecontrol_core::store::{AuditStore, NewAuditEvent};
use capecontrol_core::{Error, Principal, Result, Scope};
use serde_json::{Value, json};
use sqlx::{PgConnection, Row};
use tokio::task::JoinHandle;

use crate::error::db;
use crate::store::PostgresStore;

/// Rows one [`PostgresStore::drain_outbox`] call takes at most.
pub const OUTBOX_BATCH: i64 = 100;

impl PostgresStore {
    /// Emits `event` as `by` transactionally with the host's work on `conn` (typically a
    /// `&mut *tx` of the host's own transaction on this database): the event is written to the
    /// outbox and starts its tasks only once the transaction commits and a node drains it.
    ///
    /// The event's name and id are checked here (typed errors at `/event` and `/id`), and so is
    /// `by`'s right to emit (the `events:emit` scope or admin; a denial is audited, outside the
    /// host's transaction, and nothing is written).
    pub async fn emit_in(
        &self,
        conn: &mut PgConnection,
        event: &Event,
        by: &Principal,
    ) -> Result<()> {
        event.check()?;
        let emit: Scope = EMIT_SCOPE
            .parse()
            .map_err(|e| Error::agent(format!("{e}")))?;
        if !by.is_admin() && !by.scopes.iter().any(|s| s.covers(&emit)) {
            let error = Error::permission([EMIT_SCOPE.to_owned()]);
            self.append_audit(NewAuditEvent::by(
                by,
                "event.denied",
                json!({"event": event.name, "event_id": event.id, "error": error.to_string()}),
            ))
            .await?;
            return Err(error);
        }
        let principal = serde_json::to_value(by).map_err(|e| Error::agent(e.to_string()))?;
        sqlx::query(
            "INSERT INTO event_outbox (event_id, name, payload, principal) VALUES ($1, $2, $3, $4)",
        )
        .bind(&event.id)
        .bind(&event.name)
        .bind(&event.payload)
        .bind(principal)
        .execute(conn)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Drains up to [`OUTBOX_BATCH`] committed outbox rows through `platform`'s
    /// [`Platform::emit`], oldest first, and marks them done; returns how many were done.
    ///
    /// A transient failure (of the emit or of any task it starts) stops the drain and leaves the
    /// row pending for the next one; a permanent one (the emitter lost its right to emit, ...) is
    /// audited by the emit and the row is done.
    pub async fn drain_outbox(&self, platform: &Platform) -> Result<usize> {
        let mut tx = self.inner.pool.begin().await.map_err(db)?;
        let rows = sqlx::query(
            "SELECT seq, event_id, name, payload, principal FROM event_outbox \
             WHERE done_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(OUTBOX_BATCH)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut done = 0;
        for row in &rows {
            let seq: i64 = row.try_get("seq").map_err(db)?;
            let principal: Value = row.try_get("principal").map_err(db)?;
            let by: Principal =
                serde_json::from_value(principal).map_err(|e| Error::agent(e.to_string()))?;
            let event = Event {
                name: row.try_get("name").map_err(db)?,
                id: row.try_get("event_id").map_err(db)?,
                payload: row.try_get("payload").map_err(db)?,
            };
            match platform.emit(event, &by).await {
                Ok(fired) => {
                    if let Some(Err(e)) = fired
                        .into_iter()
                        .map(|f| f.task)
                        .find(|t| t.as_ref().is_err_and(Error::is_transient))
                    {
                        tx.commit().await.map_err(db)?;
                        return Err(e);
                    }
                }
                Err(e) if e.is_transient() => {
                    tx.commit().await.map_err(db)?;
                    return Err(e);
                }
                Err(_) => {}
            }
            sqlx::query("UPDATE event_outbox SET done_at = now() WHERE seq = $1")
                .bind(seq)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            done += 1;
        }
        tx.commit().await.map_err(db)?;
        Ok(done)
    }

    /// Starts this node's outbox loop: [`PostgresStore::drain_outbox`] every `every` (and again
    /// at once while batches come back full), until the returned handle is aborted. Errors are
    /// retried at the next round.
    pub fn spawn_outbox_drain(&self, platform: Arc<Platform>, every: Duration) -> JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                match store.drain_outbox(&platform).await {
                    Ok(n) if n as i64 >= OUTBOX_BATCH => continue,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "event outbox drain failed"),
                }
                tokio::time::sleep(every).await;
            }
        })
    }
}
