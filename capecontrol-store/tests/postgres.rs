//! `PostgresStore` against a real PostgreSQL: every port method, fencing, concurrent claimers,
//! per-agent concurrency across two stores ("nodes"), idempotency, NOTIFY between stores and
//! concurrent migrations. A fresh database per test (see `common`).
//!
//! The checks that hold for every backend are the test kit's generic `check_*` functions
//! (`capecontrol_testkit::checks`), which `MemoryStore` runs too (core's `tests/store_checks.rs`).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use capecontrol_core::events::{TaskEvent, TaskEventKind};
use capecontrol_core::store::{
    AgentFilter, CatalogQuery, Finish, JournalWrite, Outcome, QueueStore, RegistryStore, TaskFilter,
};
use capecontrol_core::{ErrorCategory, TaskStatus};
use capecontrol_store::PostgresStore;
use capecontrol_testkit::checks::*;
use capecontrol_testkit::fixtures::{
    assert_category, claim_req, completed, ev, register, step, task,
};
use serde_json::json;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

macro_rules! generic_test {
    ($name:ident, $check:ident) => {
        #[cfg_attr(
            capecontrol_skip_services,
            ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
        )]
        #[tokio::test]
        async fn $name() {
            let db = test_db!();
            let store = db.store().await;
            $check(&store).await;
            store.close().await;
            db.drop().await;
        }
    };
}

generic_test!(agents, check_agents);
generic_test!(versions_and_catalog, check_versions_and_catalog);
generic_test!(installations, check_installations);
generic_test!(audit, check_audit);
generic_test!(enqueue_and_idempotency, check_enqueue_and_idempotency);
generic_test!(claim_order_and_filters, check_claim_order_and_filters);
generic_test!(journal_and_finish, check_journal_and_finish);
generic_test!(retry_fail_release_cancel, check_retry_fail_release_cancel);
generic_test!(fencing_after_lease_loss, check_fencing_after_lease_loss);

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn migrations_run_concurrently_from_several_nodes() {
    let db = test_db!();
    let stores: Vec<PostgresStore> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(db.store_options().connect().await.unwrap());
        }
        v
    };
    let results = futures::future::join_all(stores.iter().map(|s| s.migrate())).await;
    for r in results {
        r.unwrap();
    }
    // Again: nothing left to do.
    stores[0].migrate().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(stores[0].pool())
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .is_ok_and(|f| f.path().extension().is_some_and(|e| e == "sql"))
        })
        .count();
    assert_eq!(
        usize::try_from(n).unwrap(),
        files,
        "every migration ran once"
    );
    // The status CHECK of tasks is in force.
    let bad = sqlx::query("INSERT INTO tasks (user_id, status) VALUES ('u', 'paused')")
        .execute(stores[0].pool())
        .await;
    assert!(bad.is_err());
    for s in &stores {
        s.close().await;
    }
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn concurrent_claimers_never_share_a_task() {
    let db = test_db!();
    let a = db.store().await;
    let b = db.store().await;
    register(&a, "x").await;
    register(&a, "y").await;
    const N: usize = 300;
    for i in 0..N {
        let mut t = task(if i % 2 == 0 { "x" } else { "y" }, "u");
        t.priority = (i % 3) as i32;
        a.enqueue(t).await.unwrap();
    }
    let mut handles = Vec::new();
    for w in 0..6 {
        let s = if w % 2 == 0 { a.clone() } else { b.clone() };
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s
                    .claim(&claim_req(&format!("w{w}"), 7, 30_000))
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                for c in got {
                    mine.push(c.task.id);
                    s.finish(
                        &c.lease,
                        Finish {
                            outcome: Outcome::Completed {
                                output: json!(null),
                            },
                            steps: Vec::new(),
                            events: vec![],
                            audit: vec![],
                        },
                    )
                    .await
                    .unwrap();
                }
            }
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), N, "every task claimed once");
    assert_eq!(unique.len(), N, "no task claimed twice");
    assert_eq!(a.queue_depth().await.unwrap(), 0);
    a.close().await;
    b.close().await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn per_agent_concurrency_holds_across_nodes() {
    let db = test_db!();
    let a = db.store().await;
    let b = db.store().await;
    register(&a, "limited").await;
    register(&a, "free").await;
    for _ in 0..20 {
        let mut t = task("limited", "u");
        t.concurrency_limit = 3;
        t.priority = 5;
        a.enqueue(t).await.unwrap();
    }
    for _ in 0..4 {
        a.enqueue(task("free", "u")).await.unwrap();
    }
    // Many claimers on two nodes at once, none finishing.
    let mut handles = Vec::new();
    for w in 0..8 {
        let s = if w % 2 == 0 { a.clone() } else { b.clone() };
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..5 {
                mine.extend(
                    s.claim(&claim_req(&format!("w{w}"), 2, 30_000))
                        .await
                        .unwrap(),
                );
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for h in handles {
        claimed.extend(h.await.unwrap());
    }
    let limited: Vec<_> = claimed
        .iter()
        .filter(|c| c.task.agent_id == "limited")
        .collect();
    assert_eq!(limited.len(), 3, "at most concurrency_limit running");
    assert_eq!(
        claimed.iter().filter(|c| c.task.agent_id == "free").count(),
        4,
        "a saturated agent does not starve the others"
    );
    // A slot frees: the other node is woken, and exactly one more can start, on either node.
    let mut wake = a.wakeups();
    b.finish(&limited[0].lease, completed(json!(1)))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), wake.recv())
        .await
        .expect("a wake-up when a slot frees")
        .unwrap();
    let (ra, rb) = (
        claim_req("late-a", 5, 30_000),
        claim_req("late-b", 5, 30_000),
    );
    let (x, y) = tokio::join!(a.claim(&ra), b.claim(&rb));
    assert_eq!(x.unwrap().len() + y.unwrap().len(), 1);
    let running = a
        .list_tasks(&TaskFilter {
            agent_id: Some("limited".into()),
            status: Some(TaskStatus::Running),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 3);
    a.close().await;
    b.close().await;
    db.drop().await;
}

async fn next_event(rx: &mut tokio::sync::broadcast::Receiver<TaskEvent>, task: Uuid) -> TaskEvent {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = rx.recv().await.expect("event channel open");
            if e.task_id == task {
                return e;
            }
        }
    })
    .await
    .expect("an event within 5 s")
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn events_and_wakeups_flow_between_nodes() {
    let db = test_db!();
    let submit = db.store().await; // node A
    let worker = db.store().await; // node B
    let watcher = db.store().await; // node C
    register(&submit, "a").await;
    let mut events = watcher.subscribe();
    let mut own = worker.subscribe();
    let mut wake = worker.wakeups();

    let t = submit.enqueue(task("a", "u")).await.unwrap().task;
    tokio::time::timeout(Duration::from_secs(5), wake.recv())
        .await
        .expect("a wake-up within 5 s")
        .unwrap();
    assert_eq!(
        next_event(&mut events, t.id).await.kind,
        TaskEventKind::Queued { trigger: None }
    );

    let c = worker
        .claim(&claim_req("b", 1, 30_000))
        .await
        .unwrap()
        .remove(0);
    let e = next_event(&mut events, t.id).await;
    assert_eq!((e.seq, e.kind.name()), (2, "started"));
    // The claiming node's own subscribers get each event once (not again through LISTEN).
    assert_eq!(next_event(&mut own, t.id).await.seq, 1);
    assert_eq!(next_event(&mut own, t.id).await, e);

    // Published (live only), then persisted by the next write with the same number.
    let live = ev(
        t.id,
        3,
        TaskEventKind::StepStarted {
            step: 1,
            name: "s".into(),
        },
    );
    worker.publish(live.clone()).await.unwrap();
    let got = next_event(&mut events, t.id).await;
    assert_eq!((got.seq, got.kind.clone()), (3, live.kind.clone()));
    assert!(
        worker.events(t.id, 2).await.unwrap().is_empty(),
        "not persisted"
    );

    // A big output does not fit in a NOTIFY payload: it travels by reference.
    let big = "x".repeat(20_000);
    worker
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Completed {
                    output: json!({ "big": big }),
                },
                steps: Vec::new(),
                events: vec![live],
                audit: vec![],
            },
        )
        .await
        .unwrap();
    let e3 = next_event(&mut events, t.id).await;
    assert_eq!(e3.seq, 3);
    let e4 = next_event(&mut events, t.id).await;
    assert_eq!(e4.seq, 4);
    // Read back from the row, but kept out of the live ring: a reference (`watch` reads it).
    assert!(e4.is_elided(), "{e4:?}");
    // A watcher can replay from the rows and then follow live, deduplicating by seq.
    let replay = watcher.events(t.id, 0).await.unwrap();
    assert_eq!(replay[2], e3, "live and replayed events are equal");
    assert_eq!(replay[3].clone().into_live(), e4);
    assert_eq!(
        replay[3].kind,
        TaskEventKind::Completed {
            output: json!({ "big": "x".repeat(20_000) })
        }
    );
    assert_eq!(
        replay.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    let mut own_seqs = Vec::new();
    while let Ok(e) = own.try_recv() {
        own_seqs.push(e.seq);
    }
    assert_eq!(
        own_seqs,
        [3, 3, 4],
        "published, persisted, completed; no duplicates"
    );

    submit.close().await;
    worker.close().await;
    watcher.close().await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn enqueue_joins_the_callers_transaction() {
    let db = test_db!();
    let s = db.store().await;
    register(&s, "a").await;
    let mut events = s.subscribe();

    let mut tx = s.pool().begin().await.unwrap();
    let rolled_back = s.enqueue_in(&mut tx, task("a", "u")).await.unwrap().task;
    tx.rollback().await.unwrap();
    assert_category(s.get_task(rolled_back.id).await, ErrorCategory::NotFound);

    let mut tx = s.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO audit_events (event_type) VALUES ('host.write')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut keyed = task("a", "u");
    keyed.idempotency_key = Some("k".into());
    let committed = s.enqueue_in(&mut tx, keyed.clone()).await.unwrap();
    assert!(committed.created);
    // Same key inside the same transaction: the same task.
    let mut again = task("a", "u");
    again.idempotency_key = Some("k".into());
    assert!(!s.enqueue_in(&mut tx, again).await.unwrap().created);
    assert_category(s.get_task(committed.task.id).await, ErrorCategory::NotFound);
    tx.commit().await.unwrap();
    assert_eq!(
        s.get_task(committed.task.id).await.unwrap().status,
        TaskStatus::Queued
    );
    assert_eq!(
        next_event(&mut events, committed.task.id).await.kind,
        TaskEventKind::Queued { trigger: None },
        "notified at commit"
    );
    s.close().await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn concurrent_enqueues_with_one_key_make_one_task() {
    let db = test_db!();
    let a = db.store().await;
    let b = db.store().await;
    register(&a, "a").await;
    let mut handles = Vec::new();
    for i in 0..10 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        handles.push(tokio::spawn(async move {
            let mut t = task("a", "u");
            t.idempotency_key = Some("same".into());
            s.enqueue(t).await.unwrap()
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for h in handles {
        let e = h.await.unwrap();
        ids.insert(e.task.id);
        created += usize::from(e.created);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(created, 1);
    a.close().await;
    b.close().await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn the_listener_reconnects_after_losing_its_connection() {
    let db = test_db!();
    let watcher = db.store().await;
    let other = db.store_options().listen(false).connect().await.unwrap();
    register(&other, "a").await;
    let mut events = watcher.subscribe();
    let mut wake = watcher.wakeups();

    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'capecontrol-listen' AND datname = current_database()",
    )
    .fetch_all(other.pool())
    .await
    .unwrap();
    assert_eq!(killed, [true]);
    // The reconnect announces itself with a wake-up (notifications may have been missed).
    tokio::time::timeout(Duration::from_secs(10), wake.recv())
        .await
        .expect("a wake-up after reconnecting")
        .unwrap();
    // Give the new LISTEN a moment, then events flow again.
    let mut seen = false;
    for _ in 0..50 {
        let t = other.enqueue(task("a", "u")).await.unwrap().task;
        let got = tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                let e = events.recv().await;
                match e {
                    Ok(e) if e.task_id == t.id => return true,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return false,
                }
            }
        })
        .await;
        if got == Ok(true) {
            seen = true;
            break;
        }
    }
    assert!(seen, "events flow after the reconnect");
    watcher.close().await;
    other.close().await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn listings_use_the_read_pool() {
    let db = test_db!();
    // The "replica" is the same database here, reached through its own pool.
    let store = db
        .store_options()
        .read_replica(db.options.clone())
        .replica_max_connections(2)
        .connect()
        .await
        .unwrap();
    store.migrate().await.unwrap();
    register(&store, "a").await;
    assert_eq!(
        store
            .list_agents(&AgentFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.catalog(&CatalogQuery::default()).await.unwrap().total,
        0
    );
    assert!(!store.read_pool().is_closed());
    assert_eq!(store.read_pool().options().get_max_connections(), 2);
    store.close().await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn claims_refuse_to_run_outside_read_committed() {
    let db = test_db!();
    let s = db.store().await;
    register(&s, "a").await;
    s.enqueue(task("a", "u")).await.unwrap();
    let mut tx = s.pool().begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .unwrap();
    let r = sqlx::query("SELECT * FROM capecontrol_claim('w', 1, 1000, NULL)")
        .execute(&mut *tx)
        .await;
    assert!(r.is_err());
    tx.rollback().await.unwrap();
    assert_eq!(s.claim(&claim_req("w", 1, 1000)).await.unwrap().len(), 1);
    s.close().await;
    db.drop().await;
}

/// Not a benchmark (that is the benchmark harness's job), a probe: drains N tasks of one step
/// each through 4 workers on 2 nodes and prints tasks/s and commits per task. Run with
/// `cargo test -p capecontrol-store --release --test postgres -- --ignored --nocapture probe`.
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn probe_throughput_and_commits_per_task() {
    let db = test_db!();
    // Notifications off (unless PROBE_NOTIFY is set): each xact_commit below is a durable write.
    let on = std::env::var_os("PROBE_NOTIFY").is_some();
    let quiet = || async {
        db.store_options()
            .listen(on)
            .notify(on)
            .connect()
            .await
            .unwrap()
    };
    let a = quiet().await;
    a.migrate().await.unwrap();
    let b = quiet().await;
    register(&a, "a").await;
    const N: usize = 2000;
    let t0 = std::time::Instant::now();
    for _ in 0..N {
        a.enqueue(task("a", "u")).await.unwrap();
    }
    let enqueue_s = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let mut handles = Vec::new();
    for w in 0..4 {
        let s = if w % 2 == 0 { a.clone() } else { b.clone() };
        handles.push(tokio::spawn(async move {
            let mut done = 0usize;
            loop {
                let got = s
                    .claim(&claim_req(&format!("w{w}"), 16, 30_000))
                    .await
                    .unwrap();
                if got.is_empty() {
                    return done;
                }
                for c in got {
                    let id = c.task.id;
                    s.journal(
                        &c.lease,
                        JournalWrite {
                            step: Some(step(1, "only", json!(1))),
                            events: vec![ev(
                                id,
                                c.last_seq + 1,
                                TaskEventKind::StepCompleted {
                                    step: 1,
                                    name: "only".into(),
                                },
                            )],
                            audit: vec![],
                        },
                    )
                    .await
                    .unwrap();
                    s.finish(&c.lease, completed(json!(1))).await.unwrap();
                    done += 1;
                }
            }
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    let drain_s = t1.elapsed().as_secs_f64();
    assert_eq!(total, N);
    a.close().await;
    b.close().await;
    // Closed backends have flushed their statistics.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let probe = db.store_options().listen(false).connect().await.unwrap();
    let commits: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(probe.pool())
    .await
    .unwrap();
    eprintln!(
        "probe: enqueue {:.0} tasks/s (one client); drain {:.0} tasks/s (4 workers, 2 nodes, \
         claim batch 16, 1 journaled step); {} commits in the database for {N} tasks \
         ({:.2} per task, migrations, set-up and empty claims included)",
        N as f64 / enqueue_s,
        N as f64 / drain_s,
        commits,
        commits as f64 / N as f64
    );
    probe.close().await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn concurrency_limit_holds_under_churn() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    let db = test_db!();
    let a = db.store().await;
    let b = db.store().await;
    register(&a, "x").await;
    const N: usize = 120;
    const LIMIT: i64 = 2;
    for _ in 0..N {
        let mut t = task("x", "u");
        t.concurrency_limit = LIMIT as u32;
        a.enqueue(t).await.unwrap();
    }
    let running = Arc::new(AtomicI64::new(0));
    let peak = Arc::new(AtomicI64::new(0));
    let mut handles = Vec::new();
    for w in 0..6 {
        let s = if w % 2 == 0 { a.clone() } else { b.clone() };
        let (running, peak) = (running.clone(), peak.clone());
        handles.push(tokio::spawn(async move {
            let mut done = 0;
            let mut idle = 0;
            while idle < 40 {
                let got = s
                    .claim(&claim_req(&format!("w{w}"), 3, 30_000))
                    .await
                    .unwrap();
                if got.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                idle = 0;
                let now = running.fetch_add(got.len() as i64, Ordering::SeqCst) + got.len() as i64;
                peak.fetch_max(now, Ordering::SeqCst);
                for c in got {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    s.finish(
                        &c.lease,
                        Finish {
                            outcome: Outcome::Completed {
                                output: json!(null),
                            },
                            steps: Vec::new(),
                            events: vec![],
                            audit: vec![],
                        },
                    )
                    .await
                    .unwrap();
                    done += 1;
                }
            }
            done
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    assert_eq!(total, N);
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= LIMIT, "peak {peak} running tasks, limit {LIMIT}");
    a.close().await;
    b.close().await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn reapers_on_two_nodes_reclaim_each_task_once() {
    let db = test_db!();
    let a = db.store().await;
    let b = db.store().await;
    register(&a, "x").await;
    for _ in 0..60 {
        a.enqueue(task("x", "u")).await.unwrap();
    }
    assert_eq!(a.claim(&claim_req("w", 60, 50)).await.unwrap().len(), 60);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (x, y) = tokio::join!(a.reclaim_expired(), b.reclaim_expired());
    let mut all = x.unwrap();
    all.extend(y.unwrap());
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 60);
    assert_eq!(unique.len(), 60);
    assert_eq!(a.queue_depth().await.unwrap(), 60);
    a.close().await;
    b.close().await;
    db.drop().await;
}

/// Index entries of `idx_tasks_running_agent` read so far, and the scans that read them (this
/// backend's pending statistics flushed first: `pg_stat_force_next_flush`, then a fresh read).
async fn running_index_reads(conn: &mut sqlx::PgConnection) -> (i64, i64) {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    // The flush happens when the next transaction ends: this one.
    sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_as(
        "SELECT idx_tup_read, idx_scan FROM pg_stat_user_indexes \
         WHERE indexrelname = 'idx_tasks_running_agent'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

/// A claim counts the running tasks of an agent (its concurrency limit) by reading that agent's
/// entries of the running tasks' index alone: with 300 tasks of another agent running, the
/// count of an agent running one reads a few entries by that index (before migration `…034`
/// it read every running task: here a scan of the whole table, no index scan at all).
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counting_an_agents_running_tasks_reads_only_its_own() {
    use sqlx::Connection;

    let db = test_db!();
    let store = db.store().await;
    register(&store, "busy").await;
    register(&store, "idle").await;
    for _ in 0..300 {
        store.enqueue(task("busy", "u")).await.unwrap();
    }
    store.enqueue(task("idle", "u")).await.unwrap();
    let claimed = store.claim(&claim_req("w", 400, 600_000)).await.unwrap();
    assert_eq!(claimed.len(), 301);
    let mut conn = sqlx::PgConnection::connect_with(&db.options).await.unwrap();
    sqlx::query("ANALYZE tasks")
        .execute(&mut conn)
        .await
        .unwrap();
    let (idle, busy, none): (i64, i64, i64) = sqlx::query_as(
        "SELECT capecontrol_running('idle'), capecontrol_running('busy'), \
                capecontrol_running(NULL)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((idle, busy, none), (1, 300, 0));
    // Past the session's first five custom plans: a claim's counts run the cached (generic)
    // plan.
    for _ in 0..6 {
        sqlx::query("SELECT capecontrol_running('idle')")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let (read0, scans0) = running_index_reads(&mut conn).await;
    sqlx::query("SELECT capecontrol_running('idle')")
        .execute(&mut conn)
        .await
        .unwrap();
    let (read1, scans1) = running_index_reads(&mut conn).await;
    assert!(
        scans1 > scans0,
        "the count scans the running tasks' index ({scans0} -> {scans1} scans)"
    );
    assert!(
        read1 - read0 <= 5,
        "counting the one running task of `idle` read {} entries of the index",
        read1 - read0
    );
    conn.close().await.unwrap();
    store.close().await;
    db.drop().await;
}
