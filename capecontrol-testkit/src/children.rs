//! Runtime scenarios of child tasks (`cx.spawn`, `cx.join`), written once against a node
//! factory: core's `tests/children.rs` runs them on `MemoryStore` (nodes sharing one store)
//! and `capecontrol-store`'s `tests/children.rs` on PostgreSQL (each node its own
//! `PostgresStore` on one database).
//!
//! A "node" is a [`Platform`] over a store from the factory; dropping it stops its workers at
//! once, as a crash would.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use capecontrol_core::agent::ChildOutcome;
use capecontrol_core::events::TaskEventKind;
use capecontrol_core::manifest::Config;
use capecontrol_core::runtime::{Platform, PlatformConfig, TaskRequest};
use capecontrol_core::store::{AuditFilter, MAX_LIST_TASKS, Store, TaskFilter, TaskRecord};
use capecontrol_core::{Error, ErrorCategory, TaskStatus};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::poll::eventually;
use crate::runtime::{TestAgent, agent, install, manifest, platform_with, user};
use crate::waits::until_status;

/// The agent `family`:
///
/// - `fan` spawns `n` children `square` on `{"i": 0..n}` (`fail_at`: that one runs `fail`
///   instead; `pause_ms`: a pause before each spawn), joins them and returns
///   `{"sum": Σ i², "outcomes": [...]}`;
/// - `square` returns `i * i`; `fail` fails with a validation error at `/i`;
/// - `tree` spawns `nap`, `spin` and `nest` and joins them; `nest` spawns a `nap` and joins
///   it; `nap` sleeps durably for an hour; `spin` runs until it is cancelled.
pub fn family() -> TestAgent {
    let config = Config {
        retries: 5,
        concurrent_tasks: 50,
        ..Config::default()
    };
    agent(manifest("Family", config, &[]), |name, input, cx| {
        Box::pin(async move {
            match name {
                "fan" => {
                    let n = input["n"].as_u64().unwrap_or(0);
                    let fail_at = input["fail_at"].as_u64();
                    let pause = Duration::from_millis(input["pause_ms"].as_u64().unwrap_or(0));
                    let mut children = Vec::new();
                    for i in 0..n {
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                        let task = if Some(i) == fail_at { "fail" } else { "square" };
                        children.push(cx.spawn("family", task, json!({ "i": i })).await?);
                    }
                    let outcomes = cx.join(children).await?;
                    let sum: u64 = outcomes
                        .iter()
                        .filter_map(|o| o.output().and_then(Value::as_u64))
                        .sum();
                    Ok(json!({ "sum": sum, "outcomes": outcomes }))
                }
                "square" => {
                    let i = input["i"].as_u64().unwrap_or(0);
                    Ok(json!(i * i))
                }
                "fail" => Err(Error::invalid_field("/i", "must not be this one")),
                "tree" => {
                    let nap = cx.spawn("family", "nap", json!({})).await?;
                    let spin = cx.spawn("family", "spin", json!({})).await?;
                    let nest = cx.spawn("family", "nest", json!({})).await?;
                    let outcomes = cx.join([nap, spin, nest]).await?;
                    Ok(json!(outcomes))
                }
                "nest" => {
                    let nap = cx.spawn("family", "nap", json!({})).await?;
                    Ok(json!(nap.await?))
                }
                "nap" => {
                    cx.sleep(Duration::from_secs(3600)).await?;
                    Ok(json!("rested"))
                }
                "spin" => {
                    cx.cancellation().cancelled().await;
                    Err(Error::conflict("spun until cancelled"))
                }
                other => Err(Error::not_found("task", other)),
            }
        })
    })
}

/// A node over a store from the factory, running [`family`] with `config`; the agent
/// installed for alice.
pub async fn node(store: Arc<dyn Store>, config: PlatformConfig) -> Platform {
    let p = platform_with(store.clone(), vec![family()], config).await;
    install(&store, "family", "alice", &[]).await;
    p
}

/// The children of `parent`, as the store lists them.
pub async fn children_of(p: &Platform, parent: Uuid) -> Vec<TaskRecord> {
    p.store()
        .list_tasks(&TaskFilter {
            parent_id: Some(parent),
            limit: Some(MAX_LIST_TASKS),
            ..TaskFilter::default()
        })
        .await
        .unwrap()
}

async fn done(p: &Platform, id: Uuid, within: Duration) -> TaskRecord {
    tokio::time::timeout(within, p.wait(id, &user()))
        .await
        .expect("the task ends in time")
        .unwrap()
}

/// `n` children fan out and join: the parent's output is the sum of their squares and their
/// outcomes in spawn order; each child is alice's, linked to the parent, spawned once
/// (`task.spawned` audited) and readable by alice; the parent waited for them
/// (`waiting_for_children`, then `resumed`).
pub async fn fan_out_and_join<F, Fut>(make: F, config: PlatformConfig, n: u64)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let p = node(make().await, config).await;
    let id = p
        .submit(TaskRequest::new("family", "fan", json!({ "n": n }), user()))
        .await
        .unwrap();
    let t = done(&p, id, Duration::from_secs(60)).await;
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    let output = t.output.unwrap();
    assert_eq!(output["sum"], json!((0..n).map(|i| i * i).sum::<u64>()));
    let outcomes: Vec<ChildOutcome> = serde_json::from_value(output["outcomes"].clone()).unwrap();
    assert_eq!(outcomes.len() as u64, n);
    for (i, o) in outcomes.iter().enumerate() {
        let i = i as u64;
        assert_eq!(o.output(), Some(&json!(i * i)), "child {i}");
    }

    let children = children_of(&p, id).await;
    assert_eq!(children.len() as u64, n, "one task per spawn");
    let ids: BTreeSet<Uuid> = children.iter().map(|c| c.id).collect();
    let joined: BTreeSet<Uuid> = outcomes.iter().map(ChildOutcome::task_id).collect();
    assert_eq!(ids, joined, "the join returned the spawned children");
    for c in &children {
        assert_eq!(c.parent_id, Some(id));
        assert_eq!(c.user_id, "alice", "a child runs as the parent's principal");
        assert_eq!(c.status, TaskStatus::Completed);
    }
    // Readable by the parent's user as any task of theirs.
    let first = p.get(children[0].id, &user()).await.unwrap();
    assert_eq!(first.parent_id, Some(id));

    let spawned = p
        .store()
        .list_audit(&AuditFilter {
            event_type: Some("task.spawned".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let spawned: Vec<_> = spawned
        .iter()
        .filter(|a| a.payload["parent_id"] == json!(id))
        .collect();
    assert_eq!(spawned.len() as u64, n, "each spawn audited once");
    assert!(
        spawned
            .iter()
            .all(|a| a.user_id.as_deref() == Some("alice"))
    );
    assert!(
        spawned
            .iter()
            .all(|a| a.task_id.is_some_and(|c| ids.contains(&c)))
    );

    let events = p.store().events(id, 0).await.unwrap();
    let waited = events.iter().find_map(|e| match &e.kind {
        TaskEventKind::WaitingForChildren { children, .. } => Some(children.len()),
        _ => None,
    });
    assert_eq!(
        waited,
        Some(n as usize),
        "the parent waited for its children"
    );
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    for want in ["waiting_for_children", "resumed", "completed"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
}

/// The parent's node is dropped (a crash) while it spawns `n` children (a few milliseconds
/// apart), once at least a third of them exist; another node reclaims the parent (its lease
/// expired: a `retrying` event) and replays it: every child is spawned exactly once (`n` tasks
/// name the parent, one per index), and the parent completes with all of them joined.
pub async fn spawn_once_across_a_crash<F, Fut>(make: F, config: PlatformConfig, n: u64)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let a = node(make().await, config.clone()).await;
    let input = json!({ "n": n, "pause_ms": 5 });
    let id = a
        .submit(TaskRequest::new("family", "fan", input, user()))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(2),
        async || {
            let seen = children_of(&a, id).await.len() as u64;
            if seen >= n / 3 {
                Ok(())
            } else {
                Err(format!("only {seen} children of {n}"))
            }
        },
    )
    .await;
    let at_crash = a.trusted().get(id).await.unwrap();
    assert_eq!(
        at_crash.status,
        TaskStatus::Running,
        "the parent is still spawning when its node goes"
    );
    drop(a);

    let b = node(make().await, config).await;
    let t = done(&b, id, Duration::from_secs(90)).await;
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    let names: Vec<&str> = b
        .store()
        .events(id, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind.name())
        .collect();
    let started = names.iter().filter(|n| **n == "started").count();
    assert!(
        names.contains(&"retrying") && started >= 2,
        "the parent was reclaimed and replayed: {names:?}"
    );
    assert_eq!(
        t.output.as_ref().unwrap()["sum"],
        json!((0..n).map(|i| i * i).sum::<u64>())
    );
    let children = children_of(&b, id).await;
    assert_eq!(children.len() as u64, n, "each child spawned once");
    let indices: BTreeSet<u64> = children
        .iter()
        .map(|c| c.input["i"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, (0..n).collect::<BTreeSet<u64>>());
}

/// A child that fails: the parent sees its typed error (category and field pointer) in the
/// join's outcomes, the other children's outputs beside it, and completes.
pub async fn a_child_failure_is_a_typed_value<F, Fut>(make: F, config: PlatformConfig)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let p = node(make().await, config).await;
    let id = p
        .submit(TaskRequest::new(
            "family",
            "fan",
            json!({ "n": 3, "fail_at": 1 }),
            user(),
        ))
        .await
        .unwrap();
    let t = done(&p, id, Duration::from_secs(30)).await;
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    let output = t.output.unwrap();
    let outcomes: Vec<ChildOutcome> = serde_json::from_value(output["outcomes"].clone()).unwrap();
    assert_eq!(outcomes[0].output(), Some(&json!(0)));
    assert_eq!(outcomes[2].output(), Some(&json!(4)));
    assert_eq!(output["sum"], json!(4));
    let ChildOutcome::Failed { task_id, error } = &outcomes[1] else {
        panic!("child 1 failed: {:?}", outcomes[1]);
    };
    assert_eq!(error.category(), ErrorCategory::Validation);
    assert_eq!(error.field_errors()[0].pointer, "/i");
    let child = p.get(*task_id, &user()).await.unwrap();
    assert_eq!(child.status, TaskStatus::Failed);
    let err = outcomes[1].clone().into_result().unwrap_err();
    assert_eq!(err.http_status(), 400);
}

/// A parent waiting on its children (a sleeping one, a running one, one waiting on its own
/// child) is cancelled: it is cancelled at once, and so is every descendant — the waiting ones
/// at once, the running one once its attempt stops — each with a `cascade_from` audit row.
pub async fn cancelling_a_parent_cancels_its_children<F, Fut>(make: F, config: PlatformConfig)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let p = node(make().await, config).await;
    let id = p
        .submit(TaskRequest::new("family", "tree", json!({}), user()))
        .await
        .unwrap();
    until_status(&p, id, TaskStatus::Waiting).await;
    let children = children_of(&p, id).await;
    assert_eq!(children.len(), 3);
    let by_task = |name: &str| children.iter().find(|c| c.task == name).unwrap().id;
    let (nap, spin, nest) = (by_task("nap"), by_task("spin"), by_task("nest"));
    until_status(&p, nap, TaskStatus::Waiting).await;
    until_status(&p, spin, TaskStatus::Running).await;
    until_status(&p, nest, TaskStatus::Waiting).await;
    let grandchildren = children_of(&p, nest).await;
    assert_eq!(grandchildren.len(), 1);
    let grandchild = grandchildren[0].id;
    until_status(&p, grandchild, TaskStatus::Waiting).await;

    let t = p.cancel(id, &user()).await.unwrap();
    assert_eq!(
        t.status,
        TaskStatus::Cancelled,
        "a waiting parent is cancelled at once"
    );
    for waiting in [nap, nest, grandchild] {
        assert_eq!(
            p.trusted().get(waiting).await.unwrap().status,
            TaskStatus::Cancelled,
            "a waiting descendant is cancelled in the same write"
        );
    }
    let spun = until_status(&p, spin, TaskStatus::Cancelled).await;
    assert!(spun.cancel_requested);

    for child in [nap, spin, nest, grandchild] {
        let audit = p.audit(child, &user()).await.unwrap();
        let cascaded: Vec<_> = audit
            .iter()
            .filter(|a| a.payload["cascade_from"] == json!(id))
            .collect();
        assert_eq!(cascaded.len(), 1, "child {child}: {audit:?}");
        assert_eq!(cascaded[0].user_id.as_deref(), Some("alice"));
    }
    // Nothing is woken or left over: the parent stays cancelled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        p.trusted().get(id).await.unwrap().status,
        TaskStatus::Cancelled
    );
    let err = p.cancel(id, &user()).await.unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Conflict);
}

/// The agent `canceller`: its task spawns a `family` `nap`, cancels itself through the store
/// (the cascade cancels that child; the attempt learns of it only at its next heartbeat),
/// spawns a second `nap` meanwhile, and fails once its cancellation reaches it.
pub fn canceller(store: Arc<dyn Store>) -> TestAgent {
    let config = Config {
        retries: 0,
        ..Config::default()
    };
    agent(manifest("Canceller", config, &[]), move |_, _, cx| {
        let store = store.clone();
        Box::pin(async move {
            let first = cx.spawn("family", "nap", json!({})).await?;
            store.cancel(cx.task_id(), cx.principal()).await?;
            let second = cx.spawn("family", "nap", json!({})).await?;
            cx.cancellation().cancelled().await;
            Err(Error::conflict(format!(
                "cancelled after spawning {} and {}",
                first.id(),
                second.id()
            )))
        })
    })
}

/// A child spawned after the store's cancel cascaded (while the cancel travels to the parent's
/// attempt) is cancelled too once the parent's attempt ends cancelled; the one that existed at
/// the cancel is cancelled by the cascade (`cascade_from`).
pub async fn a_child_spawned_while_the_cancel_travels_is_cancelled<F, Fut>(
    make: F,
    config: PlatformConfig,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let store = make().await;
    let p = platform_with(
        store.clone(),
        vec![family(), canceller(store.clone())],
        config,
    )
    .await;
    install(&store, "family", "alice", &[]).await;
    install(&store, "canceller", "alice", &[]).await;
    let id = p
        .submit(TaskRequest::new("canceller", "run", json!({}), user()))
        .await
        .unwrap();
    until_status(&p, id, TaskStatus::Cancelled).await;
    let children = eventually(
        Duration::from_secs(15),
        Duration::from_millis(20),
        async || {
            let children = children_of(&p, id).await;
            if children.len() == 2 && children.iter().all(|c| c.status.is_final()) {
                Ok(children)
            } else {
                Err(format!(
                    "children not all ended: {:?}",
                    children
                        .iter()
                        .map(|c| (c.created_at, c.status))
                        .collect::<Vec<_>>()
                ))
            }
        },
    )
    .await;
    let mut children = children;
    children.sort_by_key(|c| (c.created_at, c.id));
    for c in &children {
        assert_eq!(c.status, TaskStatus::Cancelled, "child {}", c.id);
    }
    let cascaded = |audit: &[capecontrol_core::store::AuditEvent]| {
        audit.iter().any(|a| a.payload["cascade_from"] == json!(id))
    };
    let first = p.audit(children[0].id, &user()).await.unwrap();
    assert!(cascaded(&first), "the first child went with the cascade");
    let second = p.audit(children[1].id, &user()).await.unwrap();
    assert!(
        !cascaded(&second),
        "the second child was spawned after the cascade: {second:?}"
    );
    assert!(second.iter().any(|a| a.event_type == "task.cancelled"));
}
