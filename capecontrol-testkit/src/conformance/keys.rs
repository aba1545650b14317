//! API key cases: stored by hash, found by hash, revoked once, listed per user.

use super::helpers::*;

/// API keys: inserted by hash, found by hash, duplicates rejected, revoked once, listed per user.
pub async fn api_keys_by_hash_revoke_and_list(store: Arc<dyn Store>) {
    use capecontrol_core::store::ApiKeyRecord;
    let id = unique("key");
    let hash = format!("{:0>64}", Uuid::new_v4().simple());
    let user = unique("user");
    let record = ApiKeyRecord {
        id: id.clone(),
        hash: hash.clone(),
        user_id: user.clone(),
        roles: vec!["user".into(), "publisher".into()],
        name: "ci".into(),
        created_at: Utc::now(),
        revoked_at: None,
    };
    let inserted = store.insert_key(record.clone()).await.unwrap();
    assert_eq!(inserted.id, id);
    assert_eq!(inserted.roles, ["user", "publisher"]);
    assert_eq!(inserted.revoked_at, None);
    assert_eq!(store.key_by_hash(&hash).await.unwrap(), inserted);
    let unknown = store.key_by_hash(&"0".repeat(64)).await.unwrap_err();
    assert_eq!(unknown.category(), ErrorCategory::NotFound);

    let same_id = store.insert_key(record.clone()).await.unwrap_err();
    assert_eq!(same_id.category(), ErrorCategory::Conflict);
    let same_hash = ApiKeyRecord {
        id: unique("key"),
        ..record.clone()
    };
    let same_hash = store.insert_key(same_hash).await.unwrap_err();
    assert_eq!(same_hash.category(), ErrorCategory::Conflict);

    let other = ApiKeyRecord {
        id: unique("key"),
        hash: format!("{:0>64}", Uuid::new_v4().simple()),
        user_id: unique("user"),
        ..record
    };
    store.insert_key(other.clone()).await.unwrap();
    let mine = store.list_keys(Some(&user)).await.unwrap();
    assert_eq!(mine, vec![inserted.clone()]);
    let all = store.list_keys(None).await.unwrap();
    assert!(all.iter().any(|k| k.id == id) && all.iter().any(|k| k.id == other.id));

    let revoked = store.revoke_key(&id).await.unwrap();
    let at = revoked.revoked_at.expect("revoked");
    assert_eq!(store.key_by_hash(&hash).await.unwrap().revoked_at, Some(at));
    let again = store.revoke_key(&id).await.unwrap();
    assert_eq!(
        again.revoked_at,
        Some(at),
        "the first revocation time is kept"
    );
    let missing = store.revoke_key("no-such-key").await.unwrap_err();
    assert_eq!(missing.category(), ErrorCategory::NotFound);
}
