//! Authentication: the [`Authenticator`] port and the built-in bearer API keys.
//!
//! An API key looks like `cc_<id>_<secret>`: `id` (16 hex digits) names the key for revocation
//! and listing, `secret` is 256 random bits. Only the SHA-256 of the whole key is stored
//! ([`KeyStore`]); the key itself is returned once, by [`ApiKeys::create`].

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use capecontrol_core::store::{ApiKeyRecord, NewAuditEvent, Store};
use capecontrol_core::{Error, ErrorCategory, Principal, Result};
use chrono::Utc;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Who a request authenticates as: a user and its roles. The HTTP layer adds the client's IP
/// and user agent to make the [`Principal`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user.
    pub user_id: String,
    /// Its roles (`admin`, `publisher`, `user`, …).
    pub roles: Vec<String>,
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthError {
    /// No credentials were sent.
    Missing,
    /// The credentials authenticate nobody (unknown, malformed or revoked key). The message
    /// never contains the credentials.
    Invalid(String),
    /// The authenticator could not decide (its store is down, say): 503, not 401.
    Unavailable(Error),
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("no credentials: send `Authorization: Bearer <key>`"),
            Self::Invalid(why) => f.write_str(why),
            Self::Unavailable(e) => write!(f, "cannot authenticate now: {e}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Decides who a request is, from its headers.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The identity of the request's caller.
    async fn authenticate(&self, headers: &HeaderMap) -> std::result::Result<Identity, AuthError>;
}

/// The prefix of every API key.
pub const KEY_PREFIX: &str = "cc_";

/// A key as created: its record and the key itself, which is shown once and never stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The key's id (for revocation).
    pub id: String,
    /// The key (`cc_<id>_<secret>`), to send as `Authorization: Bearer <key>`.
    pub key: String,
    /// The user it authenticates as.
    pub user_id: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Its label.
    pub name: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .field("user_id", &self.user_id)
            .field("roles", &self.roles)
            .field("name", &self.name)
            .finish()
    }
}

/// The hex SHA-256 of a key, as stored.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The longest user id, role name and key name accepted.
pub const MAX_KEY_FIELD: usize = 255;

/// API keys over a [`Store`]: create (audited), revoke (audited), authenticate.
#[derive(Clone)]
pub struct ApiKeys {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").finish_non_exhaustive()
    }
}

impl ApiKeys {
    /// Keys kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Creates a key for `user_id` with `roles`, by `by` (audited as `api_key.created`, without
    /// the key). The returned key is the only copy.
    pub async fn create(
        &self,
        by: &Principal,
        user_id: &str,
        roles: &[String],
        name: &str,
    ) -> Result<CreatedKey> {
        let mut errors = Vec::new();
        if user_id.trim().is_empty() || user_id.len() > MAX_KEY_FIELD {
            errors.push(capecontrol_core::FieldError::new(
                "/user_id",
                format!("must be 1 to {MAX_KEY_FIELD} bytes and not blank"),
            ));
        }
        for (i, role) in roles.iter().enumerate() {
            if role.trim().is_empty() || role.len() > MAX_KEY_FIELD {
                errors.push(capecontrol_core::FieldError::new(
                    format!("/roles/{i}"),
                    format!("must be 1 to {MAX_KEY_FIELD} bytes and not blank"),
                ));
            }
        }
        if name.len() > MAX_KEY_FIELD {
            errors.push(capecontrol_core::FieldError::new(
                "/name",
                format!("must be at most {MAX_KEY_FIELD} bytes"),
            ));
        }
        if !errors.is_empty() {
            return Err(Error::validation("invalid API key request", errors));
        }
        let id = random_hex(8);
        let key = format!("{KEY_PREFIX}{id}_{}", random_hex(32));
        let record = self
            .store
            .insert_key(ApiKeyRecord {
                id: id.clone(),
                hash: hash_key(&key),
                user_id: user_id.to_owned(),
                roles: roles.to_vec(),
                name: name.to_owned(),
                created_at: Utc::now(),
                revoked_at: None,
            })
            .await?;
        self.store
            .append_audit(NewAuditEvent::by(
                by,
                "api_key.created",
                json!({"id": record.id, "user_id": record.user_id, "roles": record.roles,
                       "name": record.name}),
            ))
            .await?;
        Ok(CreatedKey {
            id: record.id,
            key,
            user_id: record.user_id,
            roles: record.roles,
            name: record.name,
        })
    }

    /// Adds an existing key (a bootstrap admin key given to the server, say), stored hashed.
    /// Adding a key that is already stored is a no-op.
    pub async fn seed(&self, key: &str, user_id: &str, roles: &[String]) -> Result<ApiKeyRecord> {
        let hash = hash_key(key);
        match self.store.key_by_hash(&hash).await {
            Ok(existing) => return Ok(existing),
            Err(e) if e.category() == ErrorCategory::NotFound => {}
            Err(e) => return Err(e),
        }
        if key.len() < 16 {
            return Err(Error::invalid_field(
                "/key",
                "a seeded key must be at least 16 bytes",
            ));
        }
        self.store
            .insert_key(ApiKeyRecord {
                id: format!("seed-{}", &hash[..16]),
                hash,
                user_id: user_id.to_owned(),
                roles: roles.to_vec(),
                name: "seeded".into(),
                created_at: Utc::now(),
                revoked_at: None,
            })
            .await
    }

    /// Revokes the key `id` by `by` (audited as `api_key.revoked`).
    pub async fn revoke(&self, by: &Principal, id: &str) -> Result<ApiKeyRecord> {
        let record = self.store.revoke_key(id).await?;
        self.store
            .append_audit(NewAuditEvent::by(
                by,
                "api_key.revoked",
                json!({"id": record.id, "user_id": record.user_id}),
            ))
            .await?;
        Ok(record)
    }

    /// The identity of `key`, if it is a known, unrevoked key.
    pub async fn identify(&self, key: &str) -> std::result::Result<Identity, AuthError> {
        match self.store.key_by_hash(&hash_key(key)).await {
            Ok(record) if record.revoked_at.is_none() => Ok(Identity {
                user_id: record.user_id,
                roles: record.roles,
            }),
            Ok(_) => Err(AuthError::Invalid("the API key was revoked".into())),
            Err(e) if e.category() == ErrorCategory::NotFound => {
                Err(AuthError::Invalid("unknown API key".into()))
            }
            Err(e) => Err(AuthError::Unavailable(e)),
        }
    }
}

/// The bearer token of `Authorization: Bearer <token>`, if any.
pub fn bearer(headers: &HeaderMap) -> std::result::Result<Option<&str>, AuthError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid("the Authorization header is not ASCII".into()))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| AuthError::Invalid("expected `Authorization: Bearer <key>`".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Invalid(
            "expected `Authorization: Bearer <key>`".into(),
        ));
    }
    Ok(Some(token.trim()))
}

#[async_trait]
impl Authenticator for ApiKeys {
    async fn authenticate(&self, headers: &HeaderMap) -> std::result::Result<Identity, AuthError> {
        let key = bearer(headers)?.ok_or(AuthError::Missing)?;
        self.identify(key).await
    }
}

#[cfg(test)]
mod tests {
    use capecontrol_core::store::memory::MemoryStore;

    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[tokio::test]
    async fn a_created_key_authenticates_until_revoked_and_only_its_hash_is_stored() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let keys = ApiKeys::new(store.clone());
        let admin = Principal::new("root");
        let created = keys
            .create(&admin, "alice", &["user".into()], "laptop")
            .await
            .unwrap();
        assert!(created.key.starts_with(&format!("cc_{}_", created.id)));
        assert!(!format!("{created:?}").contains(&created.key));
        let stored = store.list_keys(Some("alice")).await.unwrap();
        assert_eq!(stored[0].hash, hash_key(&created.key));
        assert_ne!(stored[0].hash, created.key);
        let audit = store.list_audit(&Default::default()).await.unwrap();
        assert!(
            !serde_json::to_string(&audit)
                .unwrap()
                .contains(&created.key)
        );

        let who = keys
            .authenticate(&headers(&format!("Bearer {}", created.key)))
            .await
            .unwrap();
        assert_eq!(who.user_id, "alice");
        assert_eq!(who.roles, ["user"]);

        keys.revoke(&admin, &created.id).await.unwrap();
        let denied = keys
            .authenticate(&headers(&format!("Bearer {}", created.key)))
            .await
            .unwrap_err();
        assert!(matches!(denied, AuthError::Invalid(_)));
    }

    #[tokio::test]
    async fn missing_malformed_and_unknown_credentials_are_told_apart() {
        let keys = ApiKeys::new(Arc::new(MemoryStore::new()));
        assert_eq!(
            keys.authenticate(&HeaderMap::new()).await,
            Err(AuthError::Missing)
        );
        assert!(matches!(
            keys.authenticate(&headers("Basic abc")).await,
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            keys.authenticate(&headers("Bearer cc_nope")).await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn bad_key_requests_name_the_field() {
        let keys = ApiKeys::new(Arc::new(MemoryStore::new()));
        let e = keys
            .create(&Principal::new("root"), " ", &["".into()], "x")
            .await
            .unwrap_err();
        let pointers: Vec<_> = e
            .field_errors()
            .iter()
            .map(|f| f.pointer.as_str())
            .collect();
        assert_eq!(pointers, ["/user_id", "/roles/0"]);
    }
}
