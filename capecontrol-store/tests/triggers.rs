//! Triggers on PostgreSQL: three nodes (each a `Platform` over its own `PostgresStore` and
//! pools, on one database) tick a schedule together, stopping and starting, and an event
//! emitted on every node at once: each instant and each event starts one task per installation.
//! Each triggered task's `queued` event names what started it, as on the in-memory store.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use capecontrol_core::Principal;
use capecontrol_core::events::TaskEventKind;
use capecontrol_core::manifest::{Config, Manifest, TaskDecl, Triggers};
use capecontrol_core::runtime::webhooks::{WebhookDelivery, sign};
use capecontrol_core::runtime::{
    Event, MisfirePolicy, Platform, PlatformConfig, TaskRequest, TriggerConfig, TriggerSource,
};
use capecontrol_core::store::{Store, TaskFilter};
use capecontrol_testkit::runtime::{self as testkit, TestAgent, agent, install};
use chrono::{Duration, DurationRound};
use futures::StreamExt;
use futures::future::join_all;
use serde_json::json;

const SIX_HOURS: &str = "0 */6 * * *";

fn triggered() -> Manifest {
    let mut m = testkit::manifest("Meter", Config::default(), &[]);
    m.tasks = vec![TaskDecl {
        name: "handle".into(),
        description: None,
        input_schema: None,
        output_schema: None,
        timeout: None,
    }];
    m.triggers = Some(Triggers {
        events: vec!["meter.reading".into()],
        schedules: vec![SIX_HOURS.into()],
        webhooks: vec!["/readings".into()],
    });
    m
}

fn meter() -> TestAgent {
    agent(triggered(), |_, input, _| {
        Box::pin(async move { Ok(input) })
    })
}

async fn node(db: &common::TestDb) -> Platform {
    let store: Arc<dyn Store> = Arc::new(db.store().await);
    Platform::builder()
        .store(store)
        .agent(meter())
        .config(PlatformConfig {
            triggers: TriggerConfig {
                schedule_tick: None,
                misfire: MisfirePolicy::FireOnce,
                ..TriggerConfig::default()
            },
            ..testkit::fast_config()
        })
        .without_workers()
        .build()
        .await
        .unwrap()
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_fire_each_instant_and_event_once() {
    let db = test_db!();
    let mut nodes: Vec<Option<Platform>> = Vec::new();
    for _ in 0..3 {
        nodes.push(Some(node(&db).await));
    }
    let store = Arc::clone(nodes[0].as_ref().unwrap().store());
    install(&store, "meter", "alice", &[]).await;
    install(&store, "meter", "bob", &[]).await;
    let alice = store.get_installation("meter", "alice").await.unwrap();
    let bob = store.get_installation("meter", "bob").await.unwrap();
    let since = alice.updated_at.max(bob.updated_at);
    // The first six-hour instant after both installs.
    let first = since.duration_trunc(Duration::hours(6)).unwrap() + Duration::hours(6);
    const INSTANTS: i64 = 120;
    for k in 0..INSTANTS {
        let down = usize::try_from((k / 10) % 3).unwrap();
        for (i, slot) in nodes.iter_mut().enumerate() {
            if i == down {
                *slot = None;
            } else if slot.is_none() {
                *slot = Some(node(&db).await);
            }
        }
        let instant = first + Duration::hours(6 * k);
        let ticks = nodes.iter().flatten().map(|n| n.run_schedules(instant));
        for r in join_all(ticks).await {
            r.unwrap();
        }
    }
    let host = Principal::new("host").with_roles(["admin"]);
    let event = Event::new("meter.reading", json!({"kwh": 1.5})).with_id("reading-1");
    let emits = nodes.iter().flatten().map(|n| n.emit(event.clone(), &host));
    for r in join_all(emits).await {
        assert_eq!(r.unwrap().len(), 2);
    }

    for user in ["alice", "bob"] {
        let tasks = store
            .list_tasks(&TaskFilter {
                user_id: Some(user.into()),
                limit: Some(1000),
                ..TaskFilter::default()
            })
            .await
            .unwrap();
        let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
        for t in &tasks {
            *by_key
                .entry(t.idempotency_key.clone().unwrap())
                .or_default() += 1;
        }
        assert!(by_key.values().all(|n| *n == 1));
        assert_eq!(
            tasks.len(),
            usize::try_from(INSTANTS).unwrap() + 1,
            "{user}"
        );
        let events: Vec<_> = tasks
            .iter()
            .filter(|t| t.input == json!({"kwh": 1.5}))
            .collect();
        assert_eq!(events.len(), 1, "{user}: one task for the event");
    }
    drop(nodes);
    db.drop().await;
}

/// The task's first event, watched (replayed from the database) and read: the same `queued`.
async fn first_event(p: &Platform, id: uuid::Uuid) -> TaskEventKind {
    let mut watch = p.trusted().watch(id).await.unwrap();
    let watched = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next())
        .await
        .expect("the first event within 10 s")
        .expect("an event")
        .unwrap();
    let stored = p.store().events(id, 0).await.unwrap().remove(0);
    assert_eq!(watched, stored);
    assert_eq!(watched.seq, 1);
    watched.kind
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_queued_event_names_the_event_the_schedule_instant_or_the_delivery() {
    let db = test_db!();
    let p = node(&db).await;
    let store = Arc::clone(p.store());
    install(&store, "meter", "alice", &[]).await;
    let queued = |trigger| TaskEventKind::Queued { trigger };

    let host = Principal::new("host").with_roles(["admin"]);
    let fired = p
        .emit(
            Event::new("meter.reading", json!({"kwh": 2})).with_id("reading-9"),
            &host,
        )
        .await
        .unwrap();
    let source = TriggerSource::Event {
        event: "meter.reading".into(),
        event_id: "reading-9".into(),
    };
    let id = *fired[0].task.as_ref().unwrap();
    assert_eq!(first_event(&p, id).await, queued(Some(source)));

    let installed = store.get_installation("meter", "alice").await.unwrap();
    let instant = installed
        .updated_at
        .duration_trunc(Duration::hours(6))
        .unwrap()
        + Duration::hours(6);
    let fired = p.run_schedules(instant).await.unwrap();
    assert_eq!(fired.len(), 1);
    let source = TriggerSource::Schedule {
        schedule: SIX_HOURS.into(),
        instant,
        missed: 0,
    };
    let id = *fired[0].task.as_ref().unwrap();
    assert_eq!(first_event(&p, id).await, queued(Some(source)));

    let alice = Principal::new("alice");
    let secret = p.rotate_webhook_secret("meter", &alice).await.unwrap();
    let now = chrono::Utc::now();
    let body = br#"{"kwh": 3}"#.to_vec();
    let fired = p
        .deliver_webhook_at(
            WebhookDelivery {
                installation_id: secret.installation_id,
                path: "/readings".into(),
                delivery_id: "d-7".into(),
                timestamp: now.timestamp(),
                signature: sign(&secret.secret, now.timestamp(), "d-7", &body),
                body,
            },
            now,
        )
        .await
        .unwrap();
    let source = TriggerSource::Webhook {
        path: "/readings".into(),
        delivery_id: "d-7".into(),
    };
    assert_eq!(
        first_event(&p, fired.task.unwrap()).await,
        queued(Some(source))
    );

    let id = p
        .submit(TaskRequest::new("meter", "handle", json!({}), alice))
        .await
        .unwrap();
    let kind = first_event(&p, id).await;
    assert_eq!(kind, queued(None));
    assert_eq!(
        serde_json::to_value(&kind).unwrap(),
        json!({"type": "queued"})
    );
    drop(p);
    db.drop().await;
}
