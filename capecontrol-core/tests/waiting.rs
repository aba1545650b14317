//! Cheap waiting: `Platform::wait` shares one subscription per node (a completion map), not a
//! replayed event stream per call, and still returns each task's final record.

use std::sync::Arc;
use std::time::Duration;

use capecontrol_core::manifest::Config;
use capecontrol_core::runtime::{Platform, TaskRequest};
use capecontrol_core::store::Store;
use capecontrol_core::store::memory::MemoryStore;
use capecontrol_core::{Principal, TaskStatus};
use serde_json::json;
use tokio::sync::Semaphore;

use capecontrol_testkit::poll::eventually;
use capecontrol_testkit::runtime::{agent, fast_config, install, manifest, platform_with, user};

/// A platform on a fresh `MemoryStore` with the agent `gated` installed for alice: each of its
/// `run` tasks returns its input's `i` once it takes a permit of the returned gate (none at
/// first), so its waits stay pending until the test lets the task go.
async fn gated_platform() -> (Arc<MemoryStore>, Arc<Semaphore>, Arc<Platform>) {
    let mem = Arc::new(MemoryStore::new());
    let store: Arc<dyn Store> = mem.clone();
    let gate = Arc::new(Semaphore::new(0));
    let g = Arc::clone(&gate);
    let a = agent(
        manifest("Gated", Config::default(), &[]),
        move |_, input, _| {
            let g = Arc::clone(&g);
            Box::pin(async move {
                g.acquire().await.expect("gate").forget();
                Ok(json!(input["i"]))
            })
        },
    );
    let p = Arc::new(platform_with(store.clone(), vec![a], fast_config()).await);
    install(&store, "gated", "alice", &[]).await;
    (mem, gate, p)
}

#[tokio::test]
async fn many_waits_share_one_subscription_and_each_returns_its_final_record() {
    // The agent's tasks hold until the test lets them go, so every wait is pending at once.
    let (mem, gate, p) = gated_platform().await;
    let before = mem.subscribers();
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(
            p.submit(TaskRequest::new("gated", "run", json!({ "i": i }), user()))
                .await
                .unwrap(),
        );
    }
    let waits: Vec<_> = ids
        .iter()
        .map(|&id| {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.wait(id, &user()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Fifty pending waits, one listener: a wait that replayed its own event stream would
    // hold a subscription each (and read every event of every task).
    assert_eq!(mem.subscribers(), before + 1);
    gate.add_permits(50);
    for (i, w) in waits.into_iter().enumerate() {
        let t = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("wait returns after the task ends")
            .unwrap()
            .unwrap();
        assert_eq!(t.id, ids[i]);
        assert_eq!(t.status, TaskStatus::Completed);
        assert_eq!(t.output, Some(json!(i)));
    }
}

#[tokio::test]
async fn a_wait_on_a_finished_task_returns_at_once_and_a_strangers_wait_is_not_found() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = agent(manifest("Echo", Config::default(), &[]), |_, _, _| {
        Box::pin(async { Ok(json!("ok")) })
    });
    let p = platform_with(store.clone(), vec![a], fast_config()).await;
    install(&store, "echo", "alice", &[]).await;
    let id = p
        .submit(TaskRequest::new("echo", "run", json!({}), user()))
        .await
        .unwrap();
    let done = p.wait(id, &user()).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    let again = tokio::time::timeout(Duration::from_millis(200), p.wait(id, &user()))
        .await
        .expect("a finished task's wait does not wait")
        .unwrap();
    assert_eq!(again.status, TaskStatus::Completed);
    let mallory = Principal::new("mallory").with_roles(["user"]);
    let err = p.wait(id, &mallory).await.unwrap_err();
    assert_eq!(err.category(), capecontrol_core::ErrorCategory::NotFound);
}

#[tokio::test]
async fn a_wait_for_a_cancelled_queued_task_returns_cancelled() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = agent(manifest("Echo", Config::default(), &[]), |_, _, _| {
        Box::pin(async { Ok(json!("ok")) })
    });
    let p = Arc::new(platform_with(store.clone(), vec![a], fast_config()).await);
    install(&store, "echo", "alice", &[]).await;
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    let id = p
        .submit(TaskRequest::new("echo", "run", json!({}), user()).run_at(later))
        .await
        .unwrap();
    let p2 = Arc::clone(&p);
    let w = tokio::spawn(async move { p2.wait(id, &user()).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!w.is_finished(), "a queued task's wait waits");
    p.cancel(id, &user()).await.unwrap();
    // Woken by the terminal event, well before the re-read after a second of silence.
    let t = tokio::time::timeout(Duration::from_millis(500), w)
        .await
        .expect("the cancel wakes the wait")
        .unwrap()
        .unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
}

#[tokio::test]
async fn the_listener_ends_once_nobody_waits_and_the_next_wait_starts_another() {
    let (mem, gate, p) = gated_platform().await;
    let before = mem.subscribers();
    let submit = |i: i64| {
        let p = Arc::clone(&p);
        async move {
            p.submit(TaskRequest::new("gated", "run", json!({ "i": i }), user()))
                .await
                .unwrap()
        }
    };
    // Polls the store's subscriber count until it is `n` (or fails after five seconds).
    let subscribers_become = |n: usize| {
        let mem = Arc::clone(&mem);
        async move {
            eventually(
                Duration::from_secs(5),
                Duration::from_millis(5),
                async || match mem.subscribers() {
                    seen if seen == n => Ok(()),
                    seen => Err(format!("{seen} subscribers, expected {n}")),
                },
            )
            .await
        }
    };

    for round in 0..2 {
        // A pending wait holds the node's one subscription (started anew in the second round).
        let id = submit(round).await;
        let p2 = Arc::clone(&p);
        let w = tokio::spawn(async move { p2.wait(id, &user()).await });
        subscribers_become(before + 1).await;
        gate.add_permits(1);
        // Woken by the terminal event, well before the re-read after a second of silence.
        let t = tokio::time::timeout(Duration::from_millis(500), w)
            .await
            .expect("the terminal event wakes the wait")
            .unwrap()
            .unwrap();
        assert_eq!(t.output, Some(json!(round)), "round {round}");

        // Nobody waits now: the next event that passes ends the listener and its
        // subscription, where it used to be woken by every event of every task for good.
        let other = submit(100 + round).await;
        subscribers_become(before).await;
        gate.add_permits(1);
        let done = p.wait(other, &user()).await.unwrap();
        assert_eq!(done.status, TaskStatus::Completed);
    }
}
