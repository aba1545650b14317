//! [`KeyStore`] on PostgreSQL (the `api_keys` table of migration `…004_api_keys`).

use async_trait::async_trait;
use capecontrol_core::store::{ApiKeyRecord, KeyStore};
use capecontrol_core::{Error, Result};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::{corrupt, db};
use crate::store::PostgresStore;

fn key(row: &PgRow) -> Result<ApiKeyRecord> {
    let get = |e: sqlx::Error| corrupt("api_keys row", e);
    Ok(ApiKeyRecord {
        id: row.try_get("id").map_err(get)?,
        hash: row.try_get("hash").map_err(get)?,
        user_id: row.try_get("user_id").map_err(get)?,
        roles: row.try_get("roles").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        revoked_at: row.try_get("revoked_at").map_err(get)?,
    })
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn insert_key(&self, k: ApiKeyRecord) -> Result<ApiKeyRecord> {
        let row = sqlx::query(
            "INSERT INTO api_keys (id, hash, user_id, roles, name, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        )
        .bind(&k.id)
        .bind(&k.hash)
        .bind(&k.user_id)
        .bind(&k.roles)
        .bind(&k.name)
        .bind(k.revoked_at)
        .fetch_one(&self.inner.pool)
        .await
        .map_err(db)?;
        key(&row)
    }

    async fn key_by_hash(&self, hash: &str) -> Result<ApiKeyRecord> {
        // From the primary: a key just created or revoked counts at once.
        sqlx::query("SELECT * FROM api_keys WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| Error::not_found("api key", "(by hash)"))
            .and_then(|r| key(&r))
    }

    async fn revoke_key(&self, id: &str) -> Result<ApiKeyRecord> {
        sqlx::query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, NOW()) WHERE id = $1 \
             RETURNING *",
        )
        .bind(id)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| Error::not_found("api key", id))
        .and_then(|r| key(&r))
    }

    async fn list_keys(&self, user_id: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        sqlx::query(
            "SELECT * FROM api_keys WHERE ($1::text IS NULL OR user_id = $1) \
             ORDER BY created_at, id",
        )
        .bind(user_id)
        .fetch_all(&self.inner.read)
        .await
        .map_err(db)?
        .iter()
        .map(key)
        .collect()
    }
}
