//! `emit_in` on PostgreSQL: an event emitted inside the host's transaction starts nothing when
//! the transaction rolls back, and, once committed, starts each subscribed installation's task
//! exactly once, even with two nodes draining the outbox at once and a drain that emitted but
//! did not mark its rows done. A drained event's tasks name it in their `queued` event.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use capecontrol_core::events::TaskEventKind;
use capecontrol_core::manifest::{Config, Manifest, TaskDecl, Triggers};
use capecontrol_core::runtime::{Event, Platform, PlatformConfig, TriggerConfig, TriggerSource};
use capecontrol_core::store::{AuditFilter, Store, TaskFilter};
use capecontrol_core::{ErrorCategory, Principal};
use capecontrol_store::PostgresStore;
use capecontrol_testkit::runtime::{self as testkit, TestAgent, agent, install};
use futures::future::join_all;
use serde_json::json;

fn subscribed(name: &str, events: &[&str]) -> TestAgent {
    let mut m: Manifest = testkit::manifest(name, Config::default(), &[]);
    m.tasks = vec![TaskDecl {
        name: "handle".into(),
        description: None,
        input_schema: None,
        output_schema: None,
        timeout: None,
    }];
    m.triggers = Some(Triggers {
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        ..Triggers::default()
    });
    agent(m, |_, input, _| Box::pin(async move { Ok(input) }))
}

async fn node(db: &common::TestDb) -> (PostgresStore, Platform) {
    let pg = db.store().await;
    let store: Arc<dyn Store> = Arc::new(pg.clone());
    let platform = Platform::builder()
        .store(store)
        .agent(subscribed("Guide", &["user.onboard"]))
        .agent(subscribed("Other", &["payment.completed"]))
        .config(PlatformConfig {
            triggers: TriggerConfig {
                schedule_tick: None,
                ..TriggerConfig::default()
            },
            ..testkit::fast_config()
        })
        .without_workers()
        .build()
        .await
        .unwrap();
    (pg, platform)
}

async fn tasks_by_key(store: &Arc<dyn Store>) -> BTreeMap<(String, String, String), usize> {
    let mut by: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    let tasks = store
        .list_tasks(&TaskFilter {
            limit: Some(1000),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    for t in tasks {
        *by.entry((
            t.agent_id.clone(),
            t.user_id.clone(),
            t.idempotency_key.clone().unwrap(),
        ))
        .or_default() += 1;
    }
    by
}

async fn pending(pg: &PostgresStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM event_outbox WHERE done_at IS NULL")
        .fetch_one(pg.pool())
        .await
        .unwrap()
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn emit_in_is_transactional_and_drains_once_across_two_nodes() {
    let db = test_db!();
    let (pg_a, a) = node(&db).await;
    let (pg_b, b) = node(&db).await;
    let store = Arc::clone(a.store());
    install(&store, "guide", "alice", &[]).await;
    install(&store, "guide", "bob", &[]).await;
    install(&store, "other", "alice", &[]).await;
    let host = Principal::new("host").with_roles(["admin"]);

    // Rolled back: nothing in the outbox, nothing started.
    let mut tx = pg_a.pool().begin().await.unwrap();
    let dropped = Event::new("user.onboard", json!({"user": "carol"})).with_id("rolled-back");
    pg_a.emit_in(&mut tx, &dropped, &host).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(pending(&pg_a).await, 0);
    assert_eq!(pg_a.drain_outbox(&a).await.unwrap(), 0);
    assert!(tasks_by_key(&store).await.is_empty());

    // Committed with the host's own write: pending until drained, then started once per
    // subscribed installation, with both nodes draining at once.
    let mut tx = pg_a.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO audit_events (event_type) VALUES ('host.signup')")
        .execute(&mut *tx)
        .await
        .unwrap();
    for i in 0..20 {
        let e = Event::new("user.onboard", json!({"n": i})).with_id(format!("signup-{i}"));
        pg_a.emit_in(&mut tx, &e, &host).await.unwrap();
    }
    assert!(
        tasks_by_key(&store).await.is_empty(),
        "nothing before commit"
    );
    tx.commit().await.unwrap();
    assert_eq!(pending(&pg_a).await, 20);
    let (da, db_) = futures::join!(pg_a.drain_outbox(&a), pg_b.drain_outbox(&b));
    assert_eq!(da.unwrap() + db_.unwrap(), 20);
    assert_eq!(pending(&pg_a).await, 0);
    let started = tasks_by_key(&store).await;
    assert_eq!(
        started.len(),
        40,
        "20 events x (alice, bob) of guide; none for other"
    );
    assert!(started.values().all(|n| *n == 1));
    assert!(started.keys().all(|(agent, _, _)| agent == "guide"));
    // Each drained task's queued event names the event that started it.
    let tasks = store
        .list_tasks(&TaskFilter {
            limit: Some(1000),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    for t in &tasks {
        let key = t.idempotency_key.as_deref().unwrap();
        let event_id = key
            .strip_prefix("event:")
            .expect("an event's key")
            .to_owned();
        assert_eq!(
            store.events(t.id, 0).await.unwrap()[0].kind,
            TaskEventKind::Queued {
                trigger: Some(TriggerSource::Event {
                    event: "user.onboard".into(),
                    event_id,
                }),
            }
        );
    }

    // A drain that emitted but died before marking done: the next drains start nothing twice.
    sqlx::query("UPDATE event_outbox SET done_at = NULL")
        .execute(pg_a.pool())
        .await
        .unwrap();
    let drains = join_all([pg_a.drain_outbox(&a), pg_b.drain_outbox(&b)]).await;
    assert_eq!(drains.into_iter().map(Result::unwrap).sum::<usize>(), 20);
    assert_eq!(tasks_by_key(&store).await, started);
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn emit_in_rejects_bad_events_and_unauthorized_emitters_writing_nothing() {
    let db = test_db!();
    let (pg, p) = node(&db).await;
    let mut tx = pg.pool().begin().await.unwrap();
    let host = Principal::new("host").with_roles(["admin"]);
    let bad = Event::new("User.Onboard", json!({}));
    let e = pg.emit_in(&mut tx, &bad, &host).await.unwrap_err();
    assert_eq!(e.field_errors()[0].pointer, "/event");
    let long = Event::new("user.onboard", json!({})).with_id("x".repeat(129));
    let e = pg.emit_in(&mut tx, &long, &host).await.unwrap_err();
    assert_eq!(e.field_errors()[0].pointer, "/id");
    let edge = Event::new("user.onboard", json!({})).with_id("x".repeat(128));
    pg.emit_in(&mut tx, &edge, &host).await.unwrap();
    let mallory = Principal::new("mallory");
    let e = pg
        .emit_in(&mut tx, &Event::new("user.onboard", json!({})), &mallory)
        .await
        .unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Permission);
    tx.commit().await.unwrap();
    assert_eq!(pending(&pg).await, 1, "only the 128-byte id");
    let denied = p
        .store()
        .list_audit(&AuditFilter {
            event_type: Some("event.denied".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);
    db.drop().await;
}
