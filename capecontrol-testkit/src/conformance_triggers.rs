//! Conformance cases of [`TriggerStore`](capecontrol_core::store::TriggerStore): schedule
//! cursors only move forward, webhook secrets replace, delivery ids are claimed once, and all of
//! it goes with its installation. Run by [`conformance::run_all`](crate::conformance::run_all).

use std::sync::Arc;

use capecontrol_core::ErrorCategory;
use capecontrol_core::store::{InstallationRecord, Store};
use chrono::{Duration, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::fixtures::{agent, assert_category};

async fn installed(store: &Arc<dyn Store>) -> InstallationRecord {
    let id = format!("trigger-agent-{}", Uuid::new_v4().simple());
    store.insert_agent(agent(&id)).await.unwrap();
    let now = Utc::now();
    store
        .upsert_installation(InstallationRecord {
            id: Uuid::new_v4(),
            agent_id: id,
            user_id: format!("user-{}", Uuid::new_v4().simple()),
            version: "1.0.0".into(),
            granted_scopes: Vec::new(),
            settings: json!({}),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap()
}

/// Cursors per (installation, schedule), moving forward only; delivery ids claimed once per
/// installation; secrets replaced; unknown installations not found; everything gone with an
/// uninstall; `all_installations` lists every user's.
pub async fn trigger_state(store: Arc<dyn Store>) {
    let a = installed(&store).await;
    let b = installed(&store).await;
    let all: Vec<Uuid> = store
        .all_installations()
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert!(
        all.contains(&a.id) && all.contains(&b.id),
        "every user's installation"
    );

    let t = Utc.with_ymd_and_hms(2030, 1, 1, 6, 0, 0).unwrap();
    let s = "0 */6 * * *";
    assert_eq!(store.schedule_cursor(a.id, s).await.unwrap(), None);
    store.advance_schedule(a.id, s, t).await.unwrap();
    assert_eq!(store.schedule_cursor(a.id, s).await.unwrap(), Some(t));
    store
        .advance_schedule(a.id, s, t - Duration::hours(6))
        .await
        .unwrap();
    assert_eq!(
        store.schedule_cursor(a.id, s).await.unwrap(),
        Some(t),
        "a cursor never moves back"
    );
    store
        .advance_schedule(a.id, s, t + Duration::hours(6))
        .await
        .unwrap();
    assert_eq!(
        store.schedule_cursor(a.id, s).await.unwrap(),
        Some(t + Duration::hours(6))
    );
    assert_eq!(
        store.schedule_cursor(a.id, "0 9 * * MON").await.unwrap(),
        None
    );
    assert_eq!(store.schedule_cursor(b.id, s).await.unwrap(), None);
    assert_category(
        store.advance_schedule(Uuid::new_v4(), s, t).await,
        ErrorCategory::NotFound,
    );

    assert_eq!(store.webhook_secret(a.id).await.unwrap(), None);
    store.set_webhook_secret(a.id, "one").await.unwrap();
    store.set_webhook_secret(a.id, "two").await.unwrap();
    assert_eq!(
        store.webhook_secret(a.id).await.unwrap().as_deref(),
        Some("two")
    );
    assert_eq!(store.webhook_secret(b.id).await.unwrap(), None);
    assert_category(
        store.set_webhook_secret(Uuid::new_v4(), "x").await,
        ErrorCategory::NotFound,
    );

    assert!(store.claim_delivery(a.id, "d-1").await.unwrap());
    assert!(
        !store.claim_delivery(a.id, "d-1").await.unwrap(),
        "a replay"
    );
    assert!(
        store.claim_delivery(b.id, "d-1").await.unwrap(),
        "per installation"
    );
    assert!(store.claim_delivery(a.id, &"x".repeat(128)).await.unwrap());
    assert_category(
        store.claim_delivery(a.id, &"x".repeat(129)).await,
        ErrorCategory::Validation,
    );
    assert_category(
        store.claim_delivery(a.id, "").await,
        ErrorCategory::Validation,
    );
    assert_category(
        store.claim_delivery(Uuid::new_v4(), "d-1").await,
        ErrorCategory::NotFound,
    );

    store
        .delete_installation(&a.agent_id, &a.user_id)
        .await
        .unwrap();
    let again = store
        .upsert_installation(InstallationRecord {
            id: Uuid::new_v4(),
            ..a.clone()
        })
        .await
        .unwrap();
    assert_ne!(again.id, a.id);
    assert_eq!(
        store.schedule_cursor(a.id, s).await.unwrap(),
        None,
        "gone with the uninstall"
    );
    assert_eq!(store.webhook_secret(a.id).await.unwrap(), None);
    assert_eq!(store.webhook_secret(again.id).await.unwrap(), None);
    assert!(store.claim_delivery(again.id, "d-1").await.unwrap());
}
