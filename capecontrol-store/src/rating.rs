//! [`RatingStore`] on PostgreSQL: one transaction locks the task's row (`FOR SHARE`), checks it,
//! upserts the rating, appends the `task.rated` audit event and reads the version's aggregate.

use async_trait::async_trait;
use capecontrol_core::store::{RatingStore, RatingSummary, check_rating, check_score};
use capecontrol_core::{Principal, Result};
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{db, refuse};
use crate::rows;
use crate::store::PostgresStore;

#[async_trait]
impl RatingStore for PostgresStore {
    async fn rate(&self, task_id: Uuid, by: &Principal, score: u8) -> Result<RatingSummary> {
        check_score(score)?;
        let mut tx = self.inner.pool.begin().await.map_err(db)?;
        let task = sqlx::query("SELECT * FROM tasks WHERE id = $1 FOR SHARE")
            .bind(task_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .map(|row| rows::task(&row))
            .transpose()?;
        if let Err(e) = check_rating(task.as_ref(), task_id, by, score) {
            return refuse(tx, e).await;
        }
        let Some(task) = task else {
            return Err(capecontrol_core::Error::not_found(
                "task",
                task_id.to_string(),
            ));
        };
        let previous: Option<i16> = sqlx::query_scalar(
            "WITH old AS (SELECT score FROM task_ratings WHERE task_id = $1 FOR UPDATE), \
             up AS (INSERT INTO task_ratings (task_id, user_id, agent_id, version, score) \
                    VALUES ($1, $2, $3, $4, $5) \
                    ON CONFLICT (task_id) DO UPDATE SET score = EXCLUDED.score, updated_at = now()) \
             SELECT score FROM old",
        )
        .bind(task_id)
        .bind(&task.user_id)
        .bind(&task.agent_id)
        .bind(&task.version)
        .bind(i16::from(score))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let previous = previous.and_then(|p| u8::try_from(p).ok());
        let mut payload = json!({"score": score, "version": task.version});
        if let Some(p) = previous {
            payload["previous"] = json!(p);
        }
        sqlx::query(
            "INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload, \
             ip_address, user_agent) VALUES ($1, $2, $3, 'task.rated', $4, $5, $6)",
        )
        .bind(task_id)
        .bind(&task.agent_id)
        .bind(&by.user_id)
        .bind(&payload)
        .bind(by.ip_address)
        .bind(&by.user_agent)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let row = sqlx::query(
            "SELECT avg(score)::float8 AS mean, count(*) AS n FROM task_ratings \
             WHERE agent_id = $1 AND version = $2",
        )
        .bind(&task.agent_id)
        .bind(&task.version)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let mean: Option<f64> = row.try_get("mean").map_err(db)?;
        let count: i64 = row.try_get("n").map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(RatingSummary {
            task_id,
            agent_id: task.agent_id,
            version: task.version,
            score,
            previous,
            mean: mean.unwrap_or(f64::from(score)),
            count: u64::try_from(count).unwrap_or(0),
        })
    }
}
