//! [`KeyStore`] on [`MemoryStore`]: API keys, by their hash.

use super::*;

#[async_trait]
impl KeyStore for MemoryStore {
    async fn insert_key(&self, key: ApiKeyRecord) -> Result<ApiKeyRecord> {
        let now = self.now();
        let mut state = self.lock();
        if state
            .keys
            .values()
            .any(|k| k.id == key.id || k.hash == key.hash)
        {
            return Err(Error::conflict(format!("API key `{}` exists", key.id)));
        }
        let key = ApiKeyRecord {
            created_at: now,
            revoked_at: key.revoked_at.map(|t| t.trunc_subsecs(6)),
            ..key
        };
        state.counter += 1;
        let n = state.counter;
        state.keys.insert((n, key.id.clone()), key.clone());
        Ok(key)
    }

    async fn key_by_hash(&self, hash: &str) -> Result<ApiKeyRecord> {
        let state = self.lock();
        state
            .keys
            .values()
            .find(|k| k.hash == hash)
            .cloned()
            .ok_or_else(|| Error::not_found("api key", "(by hash)"))
    }

    async fn revoke_key(&self, id: &str) -> Result<ApiKeyRecord> {
        let now = self.now();
        let mut state = self.lock();
        let key = state
            .keys
            .values_mut()
            .find(|k| k.id == id)
            .ok_or_else(|| Error::not_found("api key", id))?;
        key.revoked_at.get_or_insert(now);
        Ok(key.clone())
    }

    async fn list_keys(&self, user_id: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        let state = self.lock();
        Ok(state
            .keys
            .values()
            .filter(|k| user_id.is_none_or(|u| k.user_id == u))
            .cloned()
            .collect())
    }
}
