//! The runtime (`Platform`) on `PostgresStore`: the important behaviours of
//! `capecontrol-core/tests/runtime.rs` against a real PostgreSQL (a fresh database per test),
//! and several nodes — separate `Platform`s, each with its own `PostgresStore` and pools — on
//! one database.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use capecontrol_core::events::{TaskEvent, TaskEventKind};
use capecontrol_core::manifest::{Config, Manifest};
use capecontrol_core::runtime::{Platform, PlatformConfig, TaskRequest};
use capecontrol_core::store::Store;
use capecontrol_core::{Error, ErrorCategory, TaskStatus};
use capecontrol_testkit::poll::until;
use capecontrol_testkit::runtime::{self as testkit, TestAgent, agent, events_within, user};
use common::{TestDb, fast_config};
use serde_json::json;
use tokio_stream::StreamExt;
use uuid::Uuid;

/// The next value from `rx`, waited for up to 10 s (`None`: none came).
async fn within(rx: &mut tokio::sync::mpsc::UnboundedReceiver<i64>) -> Option<i64> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .ok()
        .flatten()
}

/// Version 1.0.0 of `name` with `config` and no scopes.
fn manifest(name: &str, config: Config) -> Manifest {
    testkit::manifest(name, config, &[])
}

/// Installs version 1.0.0 of `agent_id` for alice.
async fn install(store: &Arc<dyn Store>, agent_id: &str) {
    testkit::install(store, agent_id, "alice", &[]).await;
}

/// A node: a new `PostgresStore` (its own pools and LISTEN connection) on the test database.
async fn node(db: &TestDb) -> Arc<dyn Store> {
    Arc::new(db.store().await)
}

async fn platform(
    store: Arc<dyn Store>,
    agents: Vec<TestAgent>,
    config: PlatformConfig,
    workers: bool,
) -> Platform {
    let mut b = Platform::builder().store(store).config(config);
    for a in agents {
        b = b.agent(a);
    }
    if !workers {
        b = b.without_workers();
    }
    b.build().await.unwrap()
}

async fn events_of(p: &Platform, id: Uuid) -> Vec<TaskEvent> {
    events_within(p, id, Duration::from_secs(20)).await
}

async fn wait(p: &Platform, id: Uuid) -> capecontrol_core::store::TaskRecord {
    tokio::time::timeout(Duration::from_secs(20), p.wait(id, &user()))
        .await
        .expect("the task ends in time")
        .unwrap()
}

fn names(events: &[TaskEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

fn assert_gap_free(events: &[TaskEvent]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "gap-free, each once"
    );
}

fn two_steps() -> TestAgent {
    agent(manifest("Stepper", Config::default()), |_, input, cx| {
        Box::pin(async move {
            let a: i64 = cx.step("one", async { Ok::<_, Error>(1) }).await?;
            let b: i64 = cx.step("two", async { Ok::<_, Error>(2) }).await?;
            Ok(json!({"sum": a + b + input["x"].as_i64().unwrap_or(0)}))
        })
    })
}

const TWO_STEPS: [&str; 7] = [
    "queued",
    "started",
    "step_started",
    "step_completed",
    "step_started",
    "step_completed",
    "completed",
];

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completes_with_steps_and_events_in_order() {
    let db = test_db!();
    let store = node(&db).await;
    let p = platform(store.clone(), vec![two_steps()], fast_config(), true).await;
    install(&store, "stepper").await;
    let id = p
        .submit(TaskRequest::new("stepper", "run", json!({"x": 3}), user()))
        .await
        .unwrap();
    let done = wait(&p, id).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.output, Some(json!({"sum": 6})));
    let events = events_of(&p, id).await;
    assert_eq!(names(&events), TWO_STEPS);
    assert_gap_free(&events);
    assert_eq!(store.events(id, 0).await.unwrap(), events, "live = rows");
    assert_eq!(store.steps(id).await.unwrap().len(), 2);
    let audit = p.audit(id, &user()).await.unwrap();
    let types: Vec<&str> = audit.iter().map(|a| a.event_type.as_str()).collect();
    assert!(types.contains(&"policy.allowed"), "{types:?}");
    assert!(types.contains(&"task.completed"), "{types:?}");
    p.shutdown(Duration::from_secs(1)).await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_then_succeeds_or_fails_for_good() {
    let db = test_db!();
    let store = node(&db).await;
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let flaky = agent(
        manifest(
            "Flaky",
            Config {
                retries: 3,
                ..Config::default()
            },
        ),
        move |_, _, _| {
            let c = c.clone();
            Box::pin(async move {
                if c.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Error::agent("transient"))
                } else {
                    Ok(json!("ok"))
                }
            })
        },
    );
    let broken = agent(
        manifest(
            "Broken",
            Config {
                retries: 2,
                ..Config::default()
            },
        ),
        |_, _, _| Box::pin(async { Err(Error::resource("disk full")) }),
    );
    let p = platform(store.clone(), vec![flaky, broken], fast_config(), true).await;
    install(&store, "flaky").await;
    install(&store, "broken").await;
    let id = p
        .submit(TaskRequest::new("flaky", "run", json!({}), user()))
        .await
        .unwrap();
    let done = wait(&p, id).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.attempts, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let events = events_of(&p, id).await;
    assert_gap_free(&events);
    let retries: Vec<u32> = events
        .iter()
        .filter_map(|e| match e.kind {
            TaskEventKind::Retrying { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [1, 2]);

    let id = p
        .submit(TaskRequest::new("broken", "run", json!({}), user()))
        .await
        .unwrap();
    let done = wait(&p, id).await;
    assert_eq!(done.status, TaskStatus::Failed);
    assert_eq!(done.attempts, 3);
    assert_eq!(
        done.error.as_ref().map(Error::category),
        Some(ErrorCategory::Resource)
    );
    p.shutdown(Duration::from_secs(1)).await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancels_queued_and_running_tasks() {
    let db = test_db!();
    let store = node(&db).await;
    let started = Arc::new(tokio::sync::Notify::new());
    let s = started.clone();
    let waiter = agent(manifest("Waiter", Config::default()), move |_, _, _| {
        let s = s.clone();
        Box::pin(async move {
            s.notify_one();
            // Ignores cancellation: the platform must stop it after the grace period.
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(json!("late"))
        })
    });
    let p = platform(store.clone(), vec![waiter], fast_config(), true).await;
    install(&store, "waiter").await;
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let queued = p
        .submit(TaskRequest::new("waiter", "run", json!({}), user()).run_at(later))
        .await
        .unwrap();
    assert_eq!(
        p.cancel(queued, &user()).await.unwrap().status,
        TaskStatus::Cancelled
    );
    assert_eq!(names(&events_of(&p, queued).await), ["queued", "cancelled"]);

    let running = p
        .submit(TaskRequest::new("waiter", "run", json!({}), user()))
        .await
        .unwrap();
    started.notified().await;
    p.cancel(running, &user()).await.unwrap();
    let t = wait(&p, running).await;
    assert_eq!(t.status, TaskStatus::Cancelled);
    let events = events_of(&p, running).await;
    assert_gap_free(&events);
    assert_eq!(events.last().unwrap().kind, TaskEventKind::Cancelled);
    assert_eq!(
        p.cancel(running, &user()).await.unwrap_err().category(),
        ErrorCategory::Conflict
    );
    p.shutdown(Duration::from_secs(1)).await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_task_is_cancelled_from_another_node() {
    let db = test_db!();
    let started = Arc::new(tokio::sync::Notify::new());
    let s = started.clone();
    let make = move || {
        let s = s.clone();
        agent(manifest("Patient", Config::default()), move |_, _, cx| {
            let s = s.clone();
            Box::pin(async move {
                s.notify_one();
                // Stops when cancelled (learnt by the worker node from a heartbeat).
                cx.cancellation().cancelled().await;
                Err(Error::agent("stopped"))
            })
        })
    };
    let a = node(&db).await;
    let b = node(&db).await;
    let submitter = platform(a.clone(), vec![make()], fast_config(), false).await;
    let worker = platform(b.clone(), vec![make()], fast_config(), true).await;
    install(&a, "patient").await;
    let id = submitter
        .submit(TaskRequest::new("patient", "run", json!({}), user()))
        .await
        .unwrap();
    started.notified().await;
    submitter.cancel(id, &user()).await.unwrap();
    let t = wait(&submitter, id).await;
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert_gap_free(&events_of(&submitter, id).await);
    worker.shutdown(Duration::from_secs(1)).await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn higher_priority_runs_first() {
    let db = test_db!();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let o = order.clone();
    let make = move || {
        let o = o.clone();
        agent(
            manifest("Ordered", Config::default()),
            move |_, input, _| {
                o.lock().unwrap().push(input["n"].as_i64().unwrap());
                Box::pin(async { Ok(json!(null)) })
            },
        )
    };
    let a = node(&db).await;
    let submitter = platform(a.clone(), vec![make()], fast_config(), false).await;
    install(&a, "ordered").await;
    let mut ids = Vec::new();
    for (n, prio) in [(1, 0), (2, 5), (3, 1), (4, 5), (5, -1)] {
        ids.push(
            submitter
                .submit(TaskRequest::new("ordered", "run", json!({"n": n}), user()).priority(prio))
                .await
                .unwrap(),
        );
    }
    let worker = platform(
        node(&db).await,
        vec![make()],
        PlatformConfig {
            workers: 1,
            claim_batch: 1,
            ..fast_config()
        },
        true,
    )
    .await;
    for id in ids {
        wait(&worker, id).await;
    }
    assert_eq!(
        *order.lock().unwrap(),
        [2, 4, 3, 1, 5],
        "priority, then age"
    );
    worker.shutdown(Duration::from_secs(1)).await;
    db.drop().await;
}

/// A task submitted while the idle node's poll is claiming still starts in its own enqueue:
/// the poll's claim takes one worker slot and leaves the node parked. Here the poll's claim
/// is held up by another session holding the advisory lock of the agent whose delayed task
/// came due; the new task starts while that claim waits, and the delayed task runs once the
/// lock goes.
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_submission_during_a_poll_starts_in_its_enqueue() {
    let db = test_db!();
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<i64>();
    let quick = agent(manifest("Quick", Config::default()), move |_, input, _| {
        let n = input["n"].as_i64().unwrap();
        started_tx.send(n).unwrap();
        Box::pin(async move { Ok(json!({ "n": n })) })
    });
    let other = agent(manifest("Other", Config::default()), |_, _, _| {
        Box::pin(async { Ok(json!("other")) })
    });
    let store = node(&db).await;
    let config = PlatformConfig {
        workers: 2,
        claim_batch: 2,
        ..fast_config()
    };
    let p = platform(store.clone(), vec![quick, other], config, true).await;
    install(&store, "quick").await;
    install(&store, "other").await;
    let submit = |n: i64| p.submit(TaskRequest::new("quick", "run", json!({ "n": n }), user()));
    let warm = submit(0).await.unwrap();
    assert_eq!(within(&mut started).await, Some(0));
    wait(&p, warm).await;

    // Another session holds the lock that a claim of `other`'s tasks takes; the delayed task
    // comes due, and the next poll's claim waits for the lock.
    let pg = db.store().await;
    let mut blocker = pg.pool().acquire().await.unwrap();
    let lock = "SELECT pg_advisory_lock(1128353861, hashtext('other'))";
    sqlx::query(lock).execute(&mut *blocker).await.unwrap();
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    let delayed = p
        .submit(TaskRequest::new("other", "run", json!({}), user()).run_at(due))
        .await
        .unwrap();
    until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "a poll's claim comes to wait for the lock",
        async || {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event = 'advisory'",
            )
            .fetch_one(pg.pool())
            .await
            .unwrap();
            waiting > 0
        },
    )
    .await;

    let mut wakeups = store.wakeups();
    let id = submit(1).await.unwrap();
    assert_eq!(
        within(&mut started).await,
        Some(1),
        "the task starts while the poll's claim waits"
    );
    assert!(
        matches!(
            wakeups.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ),
        "started in its enqueue: no wake-up for a claim"
    );
    assert_eq!(
        store.get_task(delayed).await.unwrap().status,
        TaskStatus::Queued,
        "the claim still waits"
    );
    sqlx::query("SELECT pg_advisory_unlock(1128353861, hashtext('other'))")
        .execute(&mut *blocker)
        .await
        .unwrap();
    drop(blocker);
    for id in [id, delayed] {
        assert_eq!(wait(&p, id).await.status, TaskStatus::Completed);
    }
    let names: Vec<&str> = events_of(&p, id)
        .await
        .iter()
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(names[..2], ["queued", "started"]);
    p.shutdown(Duration::from_secs(1)).await;
    pg.close().await;
    db.drop().await;
}

/// A worker slot frees when its agent returns, not when the outcome's write commits: with one
/// worker, a second task starts while the first one's completion is held up in the database
/// (another session locks its row), and the first stays `running` until that write goes
/// through. Attempts waiting for their writes are bounded (four times `workers`): with four of
/// them held up, a fifth task does not start until they are written; then all five complete.
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_slot_frees_before_the_outcome_is_written() {
    /// Attempts in flight per worker (the runtime's bound).
    const IN_FLIGHT: i64 = 4;
    let db = test_db!();
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<i64>();
    let go: Arc<Vec<tokio::sync::Notify>> =
        Arc::new((0..IN_FLIGHT).map(|_| tokio::sync::Notify::new()).collect());
    let g = go.clone();
    let quick = agent(manifest("Quick", Config::default()), move |_, input, _| {
        let n = input["n"].as_i64().unwrap();
        started_tx.send(n).unwrap();
        let go = g.clone();
        Box::pin(async move {
            if let Some(go) = usize::try_from(n - 1).ok().and_then(|i| go.get(i)) {
                go.notified().await;
            }
            Ok(json!({ "n": n }))
        })
    });
    let store = node(&db).await;
    let config = PlatformConfig {
        workers: 1,
        claim_batch: 1,
        lease: Duration::from_secs(10),
        ..fast_config()
    };
    let p = platform(store.clone(), vec![quick], config, true).await;
    install(&store, "quick").await;
    let pg = db.store().await;
    let submit = |n: i64| p.submit(TaskRequest::new("quick", "run", json!({ "n": n }), user()));
    // Holds a task's row: its outcome cannot be written until the transaction rolls back.
    let lock = |id: Uuid| {
        let pool = pg.pool().clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE")
                .bind(id)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx
        }
    };

    let mut held = Vec::new();
    let mut ids = Vec::new();
    for n in 1..=IN_FLIGHT {
        let id = submit(n).await.unwrap();
        assert_eq!(
            within(&mut started).await,
            Some(n),
            "the only worker slot was free while {} outcome(s) waited for their writes",
            n - 1
        );
        held.push(lock(id).await);
        go[usize::try_from(n - 1).unwrap()].notify_one();
        ids.push(id);
    }
    // The first agent returned long ago; its outcome's write is still held up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.get_task(ids[0]).await.unwrap().status,
        TaskStatus::Running,
        "not completed before its write commits"
    );
    let last = submit(IN_FLIGHT + 1).await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_millis(1500), started.recv())
            .await
            .ok(),
        None,
        "{IN_FLIGHT} attempts waiting for their writes: no further one starts"
    );
    for tx in held {
        tx.rollback().await.unwrap();
    }
    assert_eq!(within(&mut started).await, Some(IN_FLIGHT + 1));
    ids.push(last);
    for id in ids {
        assert_eq!(wait(&p, id).await.status, TaskStatus::Completed);
    }
    p.shutdown(Duration::from_secs(1)).await;
    pg.close().await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_submit_returns_the_same_task_on_every_node() {
    let db = test_db!();
    let once = || {
        agent(manifest("Once", Config::default()), |_, _, _| {
            Box::pin(async { Ok(json!(1)) })
        })
    };
    let a = node(&db).await;
    let pa = platform(a.clone(), vec![once()], fast_config(), true).await;
    let pb = platform(node(&db).await, vec![once()], fast_config(), false).await;
    install(&a, "once").await;
    let r = TaskRequest::new("once", "run", json!({}), user()).idempotency_key("order-42");
    let (x, y) = tokio::join!(pa.submit(r.clone()), pb.submit(r.clone()));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x, y);
    assert_eq!(pa.submit(r).await.unwrap(), x);
    let other = pb
        .submit(TaskRequest::new("once", "run", json!({}), user()).idempotency_key("order-43"))
        .await
        .unwrap();
    assert_ne!(x, other);
    assert_eq!(wait(&pb, x).await.status, TaskStatus::Completed);
    pa.shutdown(Duration::from_secs(1)).await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_watcher_sees_every_event_once() {
    let db = test_db!();
    let store = node(&db).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let gated = agent(manifest("Gated", Config::default()), move |_, _, cx| {
        let g = g.clone();
        Box::pin(async move {
            for i in 0..5u32 {
                let g = g.clone();
                let _: u32 = cx
                    .step(&format!("s{i}"), async move {
                        g.acquire()
                            .await
                            .map(|p| p.forget())
                            .map_err(|_| Error::agent("closed"))?;
                        Ok::<_, Error>(i)
                    })
                    .await?;
            }
            Ok(json!("done"))
        })
    });
    let p = platform(store.clone(), vec![gated], fast_config(), true).await;
    install(&store, "gated").await;
    let id = p
        .submit(TaskRequest::new("gated", "run", json!({}), user()))
        .await
        .unwrap();
    gate.add_permits(2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = p.watch(id, &user()).await.unwrap();
    let resumed = p.watch_from(id, 3, &user()).await.unwrap();
    gate.add_permits(3);
    let all: Vec<_> = tokio::time::timeout(
        Duration::from_secs(20),
        late.map(|e| e.unwrap()).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_gap_free(&all);
    assert_eq!(all.len(), 2 + 5 * 2 + 1);
    let rest: Vec<_> = tokio::time::timeout(
        Duration::from_secs(20),
        resumed.map(|e| e.unwrap()).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_eq!(rest.first().map(|e| e.seq), Some(4));
    assert_eq!(rest.len(), all.len() - 3);
    p.shutdown(Duration::from_secs(1)).await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resumed_task_does_not_rerun_completed_steps() {
    let db = test_db!();
    let runs = Arc::new([AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)]);
    let in_step_two = Arc::new(tokio::sync::Notify::new());
    let make = |block: bool| {
        let runs = runs.clone();
        let in_two = in_step_two.clone();
        agent(manifest("Durable", Config::default()), move |_, _, cx| {
            let runs = runs.clone();
            let in_two = in_two.clone();
            Box::pin(async move {
                let r = runs.clone();
                let a: u32 = cx
                    .step("fetch", async move {
                        r[0].fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Error>(10)
                    })
                    .await?;
                let r = runs.clone();
                let b: u32 = cx
                    .step("transform", async move {
                        r[1].fetch_add(1, Ordering::SeqCst);
                        if block {
                            in_two.notify_one();
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, Error>(a * 2)
                    })
                    .await?;
                let r = runs.clone();
                let c: u32 = cx
                    .step("store", async move {
                        r[2].fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Error>(b + 1)
                    })
                    .await?;
                Ok(json!(c))
            })
        })
    };
    let config = PlatformConfig {
        lease: Duration::from_millis(400),
        ..fast_config()
    };
    let a = node(&db).await;
    let first = platform(a.clone(), vec![make(true)], config.clone(), true).await;
    install(&a, "durable").await;
    let id = first
        .submit(TaskRequest::new("durable", "run", json!({}), user()))
        .await
        .unwrap();
    in_step_two.notified().await;
    drop(first); // a crash: no lease released, nothing more written
    let b = node(&db).await;
    let second = platform(b.clone(), vec![make(false)], config, true).await;
    let done = wait(&second, id).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.output, Some(json!(21)));
    assert_eq!(done.attempts, 2);
    assert_eq!(
        runs[0].load(Ordering::SeqCst),
        1,
        "the completed step ran once"
    );
    assert_eq!(
        runs[1].load(Ordering::SeqCst),
        2,
        "the interrupted step ran again"
    );
    assert_eq!(runs[2].load(Ordering::SeqCst), 1);
    let steps = b.steps(id).await.unwrap();
    assert_eq!(steps.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2, 3]);
    let rows = b.events(id, 0).await.unwrap();
    assert_gap_free(&rows);
    let completed: Vec<_> = rows
        .iter()
        .filter_map(|e| match &e.kind {
            TaskEventKind::StepCompleted { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(completed, [1, 2, 3], "each step completed once");
    assert!(names(&rows).contains(&"retrying"), "{:?}", names(&rows));
    second.shutdown(Duration::from_secs(1)).await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submitted_on_a_run_on_b_watched_from_c() {
    let db = test_db!();
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let make = move || {
        let s = s.clone();
        agent(manifest("Relay", Config::default()), move |_, input, cx| {
            let s = s.clone();
            Box::pin(async move {
                s.fetch_add(1, Ordering::SeqCst);
                let mut total = 0;
                for i in 0..3i64 {
                    let v: i64 = cx
                        .step(&format!("s{i}"), async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok::<_, Error>(i)
                        })
                        .await?;
                    total += v;
                }
                Ok(json!({"n": input["n"], "total": total}))
            })
        })
    };
    // Three nodes, each with its own store (pools and LISTEN connection).
    let (sa, sb, sc) = (node(&db).await, node(&db).await, node(&db).await);
    let a = platform(sa.clone(), vec![make()], fast_config(), false).await;
    let b_config = PlatformConfig {
        node_id: "node-b".into(),
        ..fast_config()
    };
    let b = platform(sb.clone(), vec![make()], b_config, true).await;
    let c = platform(sc.clone(), vec![make()], fast_config(), false).await;
    install(&sa, "relay").await;

    const N: usize = 20;
    let mut ids = Vec::new();
    for n in 0..N {
        ids.push(
            a.submit(TaskRequest::new("relay", "run", json!({"n": n}), user()))
                .await
                .unwrap(),
        );
    }
    // C watches every task from the start: replayed rows, then NOTIFYs from B.
    let mut watches = Vec::new();
    for &id in &ids {
        let stream = c.watch(id, &user()).await.unwrap();
        watches.push(tokio::spawn(async move {
            let events: Vec<TaskEvent> = tokio::time::timeout(
                Duration::from_secs(30),
                stream.map(|e| e.unwrap()).collect::<Vec<_>>(),
            )
            .await
            .expect("the watch on C ends");
            (id, events)
        }));
    }
    let mut workers = HashSet::new();
    for w in watches {
        let (id, events) = w.await.unwrap();
        assert_gap_free(&events);
        assert_eq!(
            names(&events),
            [
                "queued",
                "started",
                "step_started",
                "step_completed",
                "step_started",
                "step_completed",
                "step_started",
                "step_completed",
                "completed"
            ]
        );
        for e in &events {
            if let TaskEventKind::Started { worker, .. } = &e.kind {
                workers.insert(worker.clone());
            }
        }
        assert_eq!(events, sc.events(id, 0).await.unwrap(), "live = rows");
        let t = c.get(id, &user()).await.unwrap();
        assert_eq!(t.status, TaskStatus::Completed);
    }
    assert_eq!(started.load(Ordering::SeqCst), N, "each task ran once");
    assert_eq!(workers, HashSet::from(["node-b".to_owned()]), "run on B");
    b.shutdown(Duration::from_secs(1)).await;
    drop((a, c));
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_submission_to_an_idle_node_starts_in_its_enqueue() {
    let db = test_db!();
    capecontrol_testkit::runtime::check_a_submission_to_an_idle_node_starts_in_its_enqueue(
        node(&db).await,
    )
    .await;
}
