//! [`TriggerStore`] on PostgreSQL (migration `…14_triggers.sql`): schedule cursors moved with
//! `GREATEST` in one upsert, webhook secrets, delivery ids claimed with
//! `INSERT … ON CONFLICT DO NOTHING`. The rows go with their installation (`ON DELETE CASCADE`).

use async_trait::async_trait;
use capecontrol_core::store::InstallationRecord;
use capecontrol_core::store::triggers::{MAX_DELIVERY_ID_BYTES, TriggerStore};
use capecontrol_core::{Error, Result};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::db;
use crate::rows;
use crate::store::PostgresStore;

/// A foreign-key violation (SQLSTATE 23503) is an unknown installation.
fn installation_fk(e: sqlx::Error, installation_id: Uuid) -> Error {
    if let sqlx::Error::Database(d) = &e
        && d.code().as_deref() == Some("23503")
    {
        return Error::not_found("installation", installation_id.to_string());
    }
    db(e)
}

#[async_trait]
impl TriggerStore for PostgresStore {
    async fn all_installations(&self) -> Result<Vec<InstallationRecord>> {
        sqlx::query("SELECT * FROM installations ORDER BY created_at, id")
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db)?
            .iter()
            .map(rows::installation)
            .collect()
    }

    async fn schedule_cursor(
        &self,
        installation_id: Uuid,
        schedule: &str,
    ) -> Result<Option<DateTime<Utc>>> {
        sqlx::query_scalar(
            "SELECT last_instant FROM trigger_schedule_cursors \
             WHERE installation_id = $1 AND schedule = $2",
        )
        .bind(installation_id)
        .bind(schedule)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(db)
    }

    async fn advance_schedule(
        &self,
        installation_id: Uuid,
        schedule: &str,
        to: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO trigger_schedule_cursors (installation_id, schedule, last_instant) \
             VALUES ($1, $2, $3) ON CONFLICT (installation_id, schedule) DO UPDATE \
             SET last_instant = GREATEST(trigger_schedule_cursors.last_instant, EXCLUDED.last_instant)",
        )
        .bind(installation_id)
        .bind(schedule)
        .bind(to)
        .execute(&self.inner.pool)
        .await
        .map_err(|e| installation_fk(e, installation_id))?;
        Ok(())
    }

    async fn set_webhook_secret(&self, installation_id: Uuid, secret: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO trigger_webhook_secrets (installation_id, secret) VALUES ($1, $2) \
             ON CONFLICT (installation_id) DO UPDATE SET secret = EXCLUDED.secret, created_at = now()",
        )
        .bind(installation_id)
        .bind(secret)
        .execute(&self.inner.pool)
        .await
        .map_err(|e| installation_fk(e, installation_id))?;
        Ok(())
    }

    async fn webhook_secret(&self, installation_id: Uuid) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT secret FROM trigger_webhook_secrets WHERE installation_id = $1")
            .bind(installation_id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db)
    }

    async fn claim_delivery(&self, installation_id: Uuid, delivery_id: &str) -> Result<bool> {
        if delivery_id.is_empty() || delivery_id.len() > MAX_DELIVERY_ID_BYTES {
            return Err(Error::invalid_field(
                "/delivery_id",
                format!("must be 1 to {MAX_DELIVERY_ID_BYTES} bytes"),
            ));
        }
        let done = sqlx::query(
            "INSERT INTO trigger_webhook_deliveries (installation_id, delivery_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(installation_id)
        .bind(delivery_id)
        .execute(&self.inner.pool)
        .await
        .map_err(|e| installation_fk(e, installation_id))?;
        Ok(done.rows_affected() == 1)
    }
}
