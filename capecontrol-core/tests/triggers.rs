//! Triggers on the in-memory store: events start exactly the subscribed installations' tasks,
//! schedules fire exactly once per instant across nodes (with a fake clock) and apply the
//! misfire policy, webhooks start a task only with a good signature, a fresh timestamp and a
//! new delivery id; each triggered task's first event (`queued`) names what started it.

use std::collections::BTreeMap;
use std::sync::Arc;

use capecontrol_core::events::TaskEventKind;
use capecontrol_core::manifest::{Config, Manifest, TaskDecl, Triggers};
use capecontrol_core::runtime::webhooks::{WebhookDelivery, WebhookError, sign};
use capecontrol_core::runtime::{
    Event, MisfirePolicy, Platform, PlatformConfig, TaskRequest, TriggerConfig, TriggerSource,
};
use capecontrol_core::store::memory::MemoryStore;
use capecontrol_core::store::{AuditFilter, MAX_VALUE_DEPTH, Store, TaskFilter};
use capecontrol_core::{ErrorCategory, Principal, TaskStatus};
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use futures::future::join_all;
use serde_json::{Value, json};

use capecontrol_testkit::runtime::{TestAgent, agent, fast_config, install, manifest};

const SIX_HOURS: &str = "0 */6 * * *";

fn triggered(name: &str, triggers: Triggers) -> Manifest {
    let mut m = manifest(name, Config::default(), &[]);
    m.tasks = vec![TaskDecl {
        name: "handle".into(),
        description: None,
        input_schema: None,
        output_schema: None,
        timeout: None,
    }];
    m.triggers = Some(triggers);
    m
}

fn echo(m: Manifest) -> TestAgent {
    agent(m, |task, input, _| {
        Box::pin(async move { Ok(json!({"task": task, "input": input})) })
    })
}

fn config(misfire: MisfirePolicy) -> PlatformConfig {
    PlatformConfig {
        triggers: TriggerConfig {
            schedule_tick: None,
            misfire,
            ..TriggerConfig::default()
        },
        ..fast_config()
    }
}

async fn node(store: &Arc<dyn Store>, agents: Vec<TestAgent>, cfg: PlatformConfig) -> Platform {
    let mut b = Platform::builder()
        .store(Arc::clone(store))
        .config(cfg)
        .without_workers();
    for a in agents {
        b = b.agent(a);
    }
    b.build().await.unwrap()
}

async fn tasks_of(
    store: &Arc<dyn Store>,
    agent_id: &str,
) -> Vec<capecontrol_core::store::TaskRecord> {
    store
        .list_tasks(&TaskFilter {
            agent_id: Some(agent_id.into()),
            limit: Some(1000),
            ..TaskFilter::default()
        })
        .await
        .unwrap()
}

fn admin() -> Principal {
    Principal::new("host").with_roles(["admin"])
}

#[tokio::test]
async fn an_event_starts_exactly_the_subscribed_installations_tasks() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let onboard = Triggers {
        events: vec!["user.onboard".into()],
        ..Triggers::default()
    };
    let other = Triggers {
        events: vec!["payment.completed".into()],
        ..Triggers::default()
    };
    let p = capecontrol_testkit::runtime::platform_with(
        Arc::clone(&store),
        vec![
            echo(triggered("Guide", onboard)),
            echo(triggered("Payer", other)),
            echo(triggered("Quiet", Triggers::default())),
        ],
        config(MisfirePolicy::FireOnce),
    )
    .await;
    for (agent, user) in [
        ("guide", "alice"),
        ("guide", "bob"),
        ("payer", "alice"),
        ("quiet", "alice"),
    ] {
        install(&store, agent, user, &[]).await;
    }

    let event = Event::new("user.onboard", json!({"user_id": "carol"})).with_id("evt-1");
    let fired = p.emit(event.clone(), &admin()).await.unwrap();
    let mut users: Vec<&str> = fired.iter().map(|f| f.user_id.as_str()).collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "bob"]);
    assert!(fired.iter().all(|f| f.agent_id == "guide"));
    for f in &fired {
        let id = *f.task.as_ref().unwrap();
        let done = p.trusted().wait(id).await.unwrap();
        assert_eq!(done.status, TaskStatus::Completed);
        assert_eq!(done.user_id, f.user_id, "runs as the installation's user");
        assert_eq!(
            done.output,
            Some(json!({"task": "handle", "input": {"user_id": "carol"}}))
        );
        let audit = p.trusted().audit(id).await.unwrap();
        let trig = audit
            .iter()
            .find(|e| e.event_type == "task.triggered")
            .expect("a task.triggered audit row");
        assert_eq!(
            trig.payload,
            json!({"kind": "event", "event": "user.onboard", "event_id": "evt-1"})
        );
    }
    assert!(tasks_of(&store, "payer").await.is_empty());
    assert!(tasks_of(&store, "quiet").await.is_empty());

    // The same event id again: the same tasks, nothing new.
    let again = p.emit(event, &admin()).await.unwrap();
    let ids = |f: &[capecontrol_core::runtime::Fired]| {
        let mut v: Vec<_> = f.iter().map(|f| *f.task.as_ref().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&again), ids(&fired));
    assert_eq!(tasks_of(&store, "guide").await.len(), 2);

    // A plain user may not emit; the denial is audited and starts nothing.
    let e = p
        .emit(
            Event::new("user.onboard", json!({})),
            &Principal::new("mallory"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Permission);
    let denied = store
        .list_audit(&AuditFilter {
            event_type: Some("event.denied".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(tasks_of(&store, "guide").await.len(), 2);
    // The scope `events:emit` is enough.
    let emitter = Principal::new("svc").with_scopes(["events:emit"]).unwrap();
    let fired = p
        .emit(Event::new("user.onboard", json!({"n": 2})), &emitter)
        .await
        .unwrap();
    assert_eq!(fired.len(), 2);
    // A bad name or id is a validation error naming the field.
    let e = p
        .emit(Event::new("Onboard", json!({})), &admin())
        .await
        .unwrap_err();
    assert_eq!(e.field_errors()[0].pointer, "/event");
    let long = Event::new("user.onboard", json!({})).with_id("x".repeat(129));
    let e = p.emit(long, &admin()).await.unwrap_err();
    assert_eq!(e.field_errors()[0].pointer, "/id");
    let edge = Event::new("user.onboard", json!({})).with_id("x".repeat(128));
    assert_eq!(p.emit(edge, &admin()).await.unwrap().len(), 2);
    // A payload deeper than a task's input may be (it becomes theirs) is refused at once.
    let nested = |levels| (0..levels).fold(json!(1), |v, _| json!([v]));
    let deep = Event::new("user.onboard", nested(MAX_VALUE_DEPTH + 1));
    let e = p.emit(deep, &admin()).await.unwrap_err();
    assert_eq!(e.field_errors()[0].pointer, "/payload");
    // At the edge the event is taken and fires (each task then meets the submission's own
    // checks: the input sanitizer allows 64 levels by default).
    let at_edge = Event::new("user.onboard", nested(MAX_VALUE_DEPTH));
    assert_eq!(p.emit(at_edge, &admin()).await.unwrap().len(), 2);
}

/// The first instant of `cron` after `t`.
fn next_after(t: DateTime<Utc>) -> DateTime<Utc> {
    capecontrol_rules::schedule(SIX_HOURS)
        .unwrap()
        .find_next_occurrence(&t, false)
        .unwrap()
}

fn instants_fired(tasks: &[capecontrol_core::store::TaskRecord]) -> BTreeMap<String, Vec<Value>> {
    let mut by_instant: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for t in tasks {
        by_instant
            .entry(t.input["instant"].as_str().unwrap().to_owned())
            .or_default()
            .push(t.input.clone());
    }
    by_instant
}

#[tokio::test]
async fn a_schedule_fires_once_per_instant_across_three_nodes_stopping_and_starting() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let m = triggered(
        "Meter",
        Triggers {
            schedules: vec![SIX_HOURS.into()],
            ..Triggers::default()
        },
    );
    let cfg = config(MisfirePolicy::FireOnce);
    let mut nodes: Vec<Option<Platform>> = Vec::new();
    for _ in 0..3 {
        nodes.push(Some(node(&store, vec![echo(m.clone())], cfg.clone()).await));
    }
    install(&store, "meter", "alice", &[]).await;
    let installed = store.get_installation("meter", "alice").await.unwrap();
    let first = next_after(installed.updated_at);
    const INSTANTS: i64 = 1000;
    for k in 0..INSTANTS {
        // One node in three is down at any time; which one changes every 40 instants (the
        // stopped node is dropped and a fresh one started in its place when it comes back).
        let down = usize::try_from((k / 40) % 3).unwrap();
        for (i, slot) in nodes.iter_mut().enumerate() {
            if i == down {
                *slot = None;
            } else if slot.is_none() {
                *slot = Some(node(&store, vec![echo(m.clone())], cfg.clone()).await);
            }
        }
        let instant = first + Duration::hours(6 * k);
        // The live nodes tick at once, a few seconds apart as real clocks are.
        let ticks = nodes.iter().enumerate().filter_map(|(i, n)| {
            n.as_ref().map(|n| {
                let skew = Duration::seconds(i64::try_from(i).unwrap() * 3);
                n.run_schedules(instant + skew)
            })
        });
        for r in join_all(ticks).await {
            r.unwrap();
        }
    }
    assert_eq!(
        store.queue_depth().await.unwrap(),
        1000,
        "one task per instant, no more"
    );
    let tasks = tasks_of(&store, "meter").await;
    let fired = instants_fired(&tasks);
    assert_eq!(fired.len(), 1000);
    assert!(fired.values().all(|v| v.len() == 1 && v[0]["missed"] == 0));
    assert_eq!(
        fired.keys().next().unwrap(),
        &first.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    assert!(
        tasks
            .iter()
            .all(|t| t.user_id == "alice" && t.task == "handle")
    );
    let cursor = store
        .schedule_cursor(installed.id, SIX_HOURS)
        .await
        .unwrap();
    assert_eq!(cursor, Some(first + Duration::hours(6 * (INSTANTS - 1))));
}

/// Fires instants 0..3, all nodes down for 3..6, back at 6 and 7: the instants fired.
async fn down_for_three_instants(policy: MisfirePolicy) -> BTreeMap<String, Vec<Value>> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let m = triggered(
        "Meter",
        Triggers {
            schedules: vec![SIX_HOURS.into()],
            ..Triggers::default()
        },
    );
    let p = node(&store, vec![echo(m)], config(policy)).await;
    install(&store, "meter", "alice", &[]).await;
    let installed = store.get_installation("meter", "alice").await.unwrap();
    let first = next_after(installed.updated_at);
    for k in [0, 1, 2, 6, 7] {
        p.run_schedules(first + Duration::hours(6 * k))
            .await
            .unwrap();
    }
    let fired = instants_fired(&tasks_of(&store, "meter").await);
    let at = |k: i64| {
        (first + Duration::hours(6 * k)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let mut expected: Vec<String> = [0, 1, 2, 6, 7].map(at).to_vec();
    if policy == MisfirePolicy::FireOnce {
        expected.push(at(5));
    }
    expected.sort();
    assert_eq!(
        fired.keys().cloned().collect::<Vec<_>>(),
        expected,
        "{policy:?}"
    );
    fired
}

#[tokio::test]
async fn a_window_missed_by_every_node_fires_once_or_is_skipped() {
    let once = down_for_three_instants(MisfirePolicy::FireOnce).await;
    let missed: Vec<i64> = once
        .values()
        .map(|v| v[0]["missed"].as_i64().unwrap())
        .collect();
    assert_eq!(
        missed,
        [0, 0, 0, 3, 0, 0],
        "one fire stands for the 3 missed instants"
    );
    down_for_three_instants(MisfirePolicy::Skip).await;
}

#[tokio::test]
async fn a_schedule_in_a_time_zone_fires_at_local_times_across_spring_forward() {
    // Europe/Paris springs forward on 2027-03-28: 02:00 CET becomes 03:00 CEST, so 02:30
    // does not exist that day and the schedule fires at 03:00 CEST (01:00 UTC).
    const PARIS: &str = "CRON_TZ=Europe/Paris 30 2 * * *";
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let m = triggered(
        "Meter",
        Triggers {
            schedules: vec![PARIS.into()],
            ..Triggers::default()
        },
    );
    let p = node(&store, vec![echo(m)], config(MisfirePolicy::Skip)).await;
    install(&store, "meter", "alice", &[]).await;
    let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    for tick in [
        "2027-03-27T01:30:00Z", // 02:30 CET
        "2027-03-28T00:30:00Z", // 01:30 CET: nothing due
        "2027-03-28T01:00:00Z", // 03:00 CEST, the first instant after the gap
        "2027-03-28T01:30:00Z", // 03:30 CEST: nothing due
        "2027-03-29T00:30:00Z", // 02:30 CEST
    ] {
        p.run_schedules(utc(tick)).await.unwrap();
    }
    let tasks = tasks_of(&store, "meter").await;
    let fired = instants_fired(&tasks);
    assert_eq!(
        fired.keys().cloned().collect::<Vec<_>>(),
        [
            "2027-03-27T01:30:00Z",
            "2027-03-28T01:00:00Z",
            "2027-03-29T00:30:00Z"
        ]
    );
    assert!(fired.values().all(|v| v.len() == 1));
    let installed = store.get_installation("meter", "alice").await.unwrap();
    let mut keys: Vec<String> = tasks
        .iter()
        .map(|t| t.idempotency_key.clone().unwrap())
        .collect();
    keys.sort();
    assert_eq!(
        keys[1],
        format!("schedule:{}:{PARIS}@2027-03-28T01:00:00Z", installed.id),
        "the idempotency key carries the instant in UTC"
    );
    let listed = p
        .schedules(&admin(), utc("2027-03-29T00:30:00Z"))
        .await
        .unwrap();
    assert_eq!(listed[0].next_fire, Some(utc("2027-03-30T00:30:00Z")));
}

#[tokio::test]
async fn schedules_follow_installs_upgrades_and_uninstalls_and_list_their_next_fire() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let m = triggered(
        "Meter",
        Triggers {
            schedules: vec![SIX_HOURS.into()],
            ..Triggers::default()
        },
    );
    let p = node(&store, vec![echo(m)], config(MisfirePolicy::FireOnce)).await;
    let now = Utc::now();
    assert!(
        p.run_schedules(now + Duration::days(1))
            .await
            .unwrap()
            .is_empty(),
        "not installed"
    );
    install(&store, "meter", "alice", &[]).await;
    let alice = Principal::new("alice");
    let listed = p.schedules(&alice, now).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].schedule, SIX_HOURS);
    assert_eq!(listed[0].next_fire, Some(next_after(now)));
    assert!(
        p.schedules(&Principal::new("bob"), now)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(p.schedules(&admin(), now).await.unwrap().len(), 1);

    let installed = store.get_installation("meter", "alice").await.unwrap();
    let first = next_after(installed.updated_at);
    assert_eq!(p.run_schedules(first).await.unwrap().len(), 1);
    store.delete_installation("meter", "alice").await.unwrap();
    assert!(
        p.run_schedules(first + Duration::hours(6))
            .await
            .unwrap()
            .is_empty(),
        "an uninstalled schedule fires no more"
    );
    assert_eq!(tasks_of(&store, "meter").await.len(), 1);
}

async fn webhook_platform() -> (Arc<dyn Store>, Platform, uuid::Uuid, String) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let m = triggered(
        "Ledger",
        Triggers {
            webhooks: vec!["/payments/{id}".into()],
            ..Triggers::default()
        },
    );
    let p = node(&store, vec![echo(m)], config(MisfirePolicy::FireOnce)).await;
    install(&store, "ledger", "alice", &[]).await;
    let secret = p
        .rotate_webhook_secret("ledger", &Principal::new("alice"))
        .await
        .unwrap();
    (store, p, secret.installation_id, secret.secret)
}

fn delivery(
    installation: uuid::Uuid,
    secret: &str,
    id: &str,
    ts: i64,
    body: &[u8],
) -> WebhookDelivery {
    WebhookDelivery {
        installation_id: installation,
        path: "/payments/p-1".into(),
        delivery_id: id.into(),
        timestamp: ts,
        signature: sign(secret, ts, id, body),
        body: body.to_vec(),
    }
}

#[tokio::test]
async fn a_signed_webhook_starts_one_task_and_bad_ones_start_none() {
    let (store, p, inst, secret) = webhook_platform().await;
    let now = Utc::now();
    let ts = now.timestamp();
    let body = br#"{"amount": 12}"#;

    let fired = p
        .deliver_webhook_at(delivery(inst, &secret, "d-1", ts, body), now)
        .await
        .unwrap();
    let task = store.get_task(fired.task.unwrap()).await.unwrap();
    assert_eq!(task.input, json!({"amount": 12}));
    assert_eq!(task.user_id, "alice");
    assert_eq!(
        fired.source,
        TriggerSource::Webhook {
            path: "/payments/{id}".into(),
            delivery_id: "d-1".into()
        }
    );

    // A bad signature: 401, no task, an audit row (without the signature).
    let mut bad = delivery(inst, &secret, "d-2", ts, body);
    bad.body = br#"{"amount": 1200}"#.to_vec();
    let e = p.deliver_webhook_at(bad, now).await.unwrap_err();
    assert_eq!(e, WebhookError::BadSignature);
    assert_eq!(e.http_status(), 401);
    let e = p
        .deliver_webhook_at(delivery(inst, "not-the-secret", "d-3", ts, body), now)
        .await
        .unwrap_err();
    assert_eq!(e, WebhookError::BadSignature);
    // A replay of the good delivery: refused.
    let e = p
        .deliver_webhook_at(delivery(inst, &secret, "d-1", ts, body), now)
        .await
        .unwrap_err();
    assert_eq!(e, WebhookError::Replay("d-1".into()));
    assert_eq!(e.http_status(), 409);
    // A stale timestamp, one second past the 5-minute window: refused; at the edge: accepted.
    let e = p
        .deliver_webhook_at(delivery(inst, &secret, "d-4", ts - 301, body), now)
        .await
        .unwrap_err();
    assert_eq!(e, WebhookError::Stale);
    let e = p
        .deliver_webhook_at(delivery(inst, &secret, "d-5", ts + 301, body), now)
        .await
        .unwrap_err();
    assert_eq!(e, WebhookError::Stale);
    // An unknown path and a body that is not JSON: no task either.
    let mut elsewhere = delivery(inst, &secret, "d-6", ts, body);
    elsewhere.path = "/refunds/p-1".into();
    elsewhere.signature = sign(&secret, ts, "d-6", body);
    let e = p.deliver_webhook_at(elsewhere, now).await.unwrap_err();
    assert_eq!(e.http_status(), 404);
    let e = p
        .deliver_webhook_at(delivery(inst, &secret, "d-7", ts, b"not json"), now)
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 400);
    assert_eq!(
        tasks_of(&store, "ledger").await.len(),
        1,
        "only the good delivery ran"
    );

    let rejected = store
        .list_audit(&AuditFilter {
            event_type: Some("webhook.rejected".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let reasons: Vec<&str> = rejected
        .iter()
        .map(|e| e.payload["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "bad signature",
            "bad signature",
            "replay",
            "stale timestamp",
            "stale timestamp",
            "unknown path"
        ]
    );
    for row in &rejected {
        let text = row.payload.to_string();
        assert!(
            !text.contains(&secret) && !text.contains("sha256="),
            "{text}"
        );
    }

    let edge = p
        .deliver_webhook_at(delivery(inst, &secret, "d-8", ts - 300, body), now)
        .await
        .unwrap();
    assert!(edge.task.is_ok());
    // A rotated secret: the old one no longer verifies.
    let fresh = p
        .rotate_webhook_secret("ledger", &Principal::new("alice"))
        .await
        .unwrap();
    assert_ne!(fresh.secret, secret);
    let e = p
        .deliver_webhook_at(delivery(inst, &secret, "d-9", ts, body), now)
        .await
        .unwrap_err();
    assert_eq!(e, WebhookError::BadSignature);
    assert!(
        !format!("{fresh:?}").contains(&fresh.secret),
        "Debug redacts the secret"
    );
}

/// The task's first event, from the platform's watch (replayed from the store) and from the
/// store directly: the two must agree.
async fn first_event(p: &Platform, store: &Arc<dyn Store>, id: uuid::Uuid) -> TaskEventKind {
    let mut watch = p.trusted().watch(id).await.unwrap();
    let watched = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
        .await
        .expect("the first event within 5 s")
        .expect("an event")
        .unwrap();
    let stored = store.events(id, 0).await.unwrap().remove(0);
    assert_eq!(watched, stored);
    assert_eq!(watched.seq, 1);
    watched.kind
}

#[tokio::test]
async fn each_triggered_task_s_queued_event_names_what_started_it() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let p = node(
        &store,
        vec![
            echo(triggered(
                "Guide",
                Triggers {
                    events: vec!["user.onboard".into()],
                    ..Triggers::default()
                },
            )),
            echo(triggered(
                "Meter",
                Triggers {
                    schedules: vec![SIX_HOURS.into()],
                    ..Triggers::default()
                },
            )),
            echo(triggered(
                "Ledger",
                Triggers {
                    webhooks: vec!["/payments/{id}".into()],
                    ..Triggers::default()
                },
            )),
        ],
        config(MisfirePolicy::FireOnce),
    )
    .await;
    for agent in ["guide", "meter", "ledger"] {
        install(&store, agent, "alice", &[]).await;
    }
    let queued = |trigger| TaskEventKind::Queued { trigger };
    // The audit row and the event name the same source.
    let audited = |id: uuid::Uuid| {
        let p = &p;
        async move {
            p.trusted()
                .audit(id)
                .await
                .unwrap()
                .into_iter()
                .find(|e| e.event_type == "task.triggered")
                .expect("a task.triggered audit row")
                .payload
        }
    };

    // An event.
    let fired = p
        .emit(
            Event::new("user.onboard", json!({"user_id": "carol"})).with_id("evt-7"),
            &admin(),
        )
        .await
        .unwrap();
    assert_eq!(fired.len(), 1);
    let id = *fired[0].task.as_ref().unwrap();
    let source = TriggerSource::Event {
        event: "user.onboard".into(),
        event_id: "evt-7".into(),
    };
    assert_eq!(
        first_event(&p, &store, id).await,
        queued(Some(source.clone()))
    );
    assert_eq!(audited(id).await, serde_json::to_value(&source).unwrap());

    // A schedule instant.
    let installed = store.get_installation("meter", "alice").await.unwrap();
    let instant = next_after(installed.updated_at);
    let fired = p.run_schedules(instant).await.unwrap();
    assert_eq!(fired.len(), 1);
    let id = *fired[0].task.as_ref().unwrap();
    let source = TriggerSource::Schedule {
        schedule: SIX_HOURS.into(),
        instant,
        missed: 0,
    };
    assert_eq!(fired[0].source, source);
    assert_eq!(
        first_event(&p, &store, id).await,
        queued(Some(source.clone()))
    );
    assert_eq!(audited(id).await, serde_json::to_value(&source).unwrap());

    // A webhook delivery.
    let secret = p
        .rotate_webhook_secret("ledger", &Principal::new("alice"))
        .await
        .unwrap();
    let now = Utc::now();
    let body = br#"{"amount": 3}"#;
    let fired = p
        .deliver_webhook_at(
            delivery(
                secret.installation_id,
                &secret.secret,
                "d-42",
                now.timestamp(),
                body,
            ),
            now,
        )
        .await
        .unwrap();
    let id = fired.task.unwrap();
    let source = TriggerSource::Webhook {
        path: "/payments/{id}".into(),
        delivery_id: "d-42".into(),
    };
    assert_eq!(
        first_event(&p, &store, id).await,
        queued(Some(source.clone()))
    );
    assert_eq!(audited(id).await, serde_json::to_value(&source).unwrap());

    // A task submitted directly: no trigger, and the event's JSON is the bare `queued`.
    let id = p
        .submit(TaskRequest::new(
            "guide",
            "handle",
            json!({}),
            Principal::new("alice"),
        ))
        .await
        .unwrap();
    let kind = first_event(&p, &store, id).await;
    assert_eq!(kind, queued(None));
    assert_eq!(
        serde_json::to_value(&kind).unwrap(),
        json!({"type": "queued"})
    );
    assert!(
        p.trusted()
            .audit(id)
            .await
            .unwrap()
            .iter()
            .all(|e| e.event_type != "task.triggered")
    );

    // A request cannot claim a trigger by its JSON: the field is never read.
    let forged: TaskRequest = serde_json::from_value(json!({
        "agent": "guide", "task": "handle", "input": {}, "priority": 0,
        "idempotency_key": null, "run_at": null,
        "principal": serde_json::to_value(Principal::new("alice")).unwrap(),
        "trigger": {"kind": "event", "event": "user.onboard", "event_id": "forged"}
    }))
    .unwrap();
    assert_eq!(forged.trigger(), None);
    let id = p.submit(forged).await.unwrap();
    assert_eq!(first_event(&p, &store, id).await, queued(None));
}
