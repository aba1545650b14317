//! The batched completer (`PostgresStoreOptions::batch_writes`): concurrent journal writes and
//! finishes of many attempts share commits, each attempt learns its own result (a fenced-out
//! one gets its 409, the others commit), and a write that fails deterministically fails alone.

mod common;

use std::collections::HashSet;

use capecontrol_core::Principal;
use capecontrol_core::audit::verify_chain;
use capecontrol_core::events::TaskEventKind;
use capecontrol_core::store::{
    Claimed, Finish, JournalWrite, Lease, NewAuditEvent, Outcome, QueueStore,
};
use capecontrol_core::{ErrorCategory, TaskStatus};
use capecontrol_store::PostgresStore;
use capecontrol_store::sqlx;
use capecontrol_testkit::fixtures::{claim_req, ev, register, step, task};
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

/// `n` tasks of agent `a`, enqueued and claimed.
async fn claimed(store: &PostgresStore, n: usize) -> Vec<Claimed> {
    register(store, "a").await;
    for _ in 0..n {
        store.enqueue(task("a", "u")).await.unwrap();
    }
    let c = store.claim(&claim_req("w", n, 60_000)).await.unwrap();
    assert_eq!(c.len(), n);
    c
}

/// A completion with one step, its events and an audit row.
fn completion(c: &Claimed, i: usize) -> Finish {
    let id = c.task.id;
    Finish {
        outcome: Outcome::Completed {
            output: json!({ "i": i }),
        },
        steps: vec![step(1, "work", json!(i))],
        events: vec![ev(
            id,
            c.last_seq + 1,
            TaskEventKind::StepCompleted {
                step: 1,
                name: "work".into(),
            },
        )],
        audit: vec![
            NewAuditEvent::by(&Principal::new("u"), "tool.called", json!({ "i": i })).task(id),
        ],
    }
}

/// How many distinct transactions wrote the tasks' completions (`completed_at` is `now()`, the
/// start time of the writing transaction).
async fn commits_of(store: &PostgresStore, ids: &[Uuid]) -> usize {
    let at: Vec<Option<DateTime<Utc>>> =
        sqlx::query_scalar("SELECT completed_at FROM tasks WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert!(at.iter().all(Option::is_some), "every task completed");
    at.into_iter().collect::<HashSet<_>>().len()
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_finishes_share_commits_and_a_fenced_out_one_fails_alone() {
    let db = test_db!();
    let store = db.store().await;
    let n = 40;
    let tasks = claimed(&store, n).await;
    // One attempt lost its lease (a stale token): it alone gets the conflict.
    let stale = Lease {
        token: Uuid::new_v4(),
        ..tasks[7].lease.clone()
    };
    let results = futures::future::join_all(tasks.iter().enumerate().map(|(i, c)| {
        let (store, lease) = (&store, if i == 7 { &stale } else { &c.lease });
        async move { store.finish(lease, completion(c, i)).await }
    }))
    .await;
    let mut done = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        if i == 7 {
            let e = r.unwrap_err();
            assert_eq!(e.category(), ErrorCategory::Conflict, "{e}");
            assert_eq!(e.http_status(), 409);
        } else {
            let t = r.unwrap();
            assert_eq!(t.status, TaskStatus::Completed);
            assert_eq!(t.output, Some(json!({ "i": i })));
            done.push(t.id);
        }
    }
    // The fenced-out task wrote nothing: still running, no step, no event past its start.
    let lost = store.get_task(tasks[7].task.id).await.unwrap();
    assert_eq!(lost.status, TaskStatus::Running);
    assert!(store.steps(lost.id).await.unwrap().is_empty());
    assert_eq!(
        store.events(lost.id, tasks[7].last_seq).await.unwrap(),
        vec![]
    );
    // Every other one: its step, its events (numbered on), its audit rows.
    for (i, c) in tasks.iter().enumerate().filter(|(i, _)| *i != 7) {
        let steps = store.steps(c.task.id).await.unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].output, Some(json!(i)));
        let events = store.events(c.task.id, c.last_seq).await.unwrap();
        let kinds: Vec<_> = events.iter().map(|e| (e.seq, e.kind.clone())).collect();
        assert!(
            matches!(kinds.as_slice(), [(s1, TaskEventKind::StepCompleted { .. }), (s2, TaskEventKind::Completed { .. })]
                if *s1 == c.last_seq + 1 && *s2 == c.last_seq + 2),
            "{kinds:?}"
        );
        let audit: Vec<String> = sqlx::query_scalar(
            "SELECT event_type FROM audit_events WHERE task_id = $1 AND event_type IN \
             ('tool.called', 'task.completed') ORDER BY id",
        )
        .bind(c.task.id)
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(audit, ["task.completed", "tool.called"]);
    }
    // Fewer commits than finishes (the lone first write goes at once, the rest pile up).
    let commits = commits_of(&store, &done).await;
    assert!(
        commits < done.len() / 2,
        "{commits} commits for {} finishes",
        done.len()
    );
    assert!(verify_chain(&store).await.unwrap().is_intact());
    store.close().await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_that_fails_deterministically_does_not_block_the_others() {
    let db = test_db!();
    let store = db.store().await;
    let n = 24;
    let tasks = claimed(&store, n).await;
    let results = futures::future::join_all(tasks.iter().enumerate().map(|(i, c)| {
        let store = &store;
        async move {
            let mut f = completion(c, i);
            if i == 11 {
                // An audit row naming an agent that does not exist: a foreign-key violation.
                f.audit.push(
                    NewAuditEvent::by(&Principal::new("u"), "tool.called", json!({}))
                        .agent("no-such-agent"),
                );
            }
            store.finish(&c.lease, f).await
        }
    }))
    .await;
    for (i, r) in results.into_iter().enumerate() {
        if i == 11 {
            let e = r.unwrap_err();
            assert_eq!(e.category(), ErrorCategory::NotFound, "{e}");
            let t = store.get_task(tasks[i].task.id).await.unwrap();
            assert_eq!(t.status, TaskStatus::Running, "the bad write wrote nothing");
            assert!(store.steps(t.id).await.unwrap().is_empty());
        } else {
            assert_eq!(r.unwrap().status, TaskStatus::Completed, "task {i}");
        }
    }
    // The same attempt finishes once its write is fixed.
    let c = &tasks[11];
    let t = store.finish(&c.lease, completion(c, 11)).await.unwrap();
    assert_eq!(t.status, TaskStatus::Completed);
    assert!(verify_chain(&store).await.unwrap().is_intact());
    store.close().await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn journal_writes_and_finishes_of_different_tasks_batch_together() {
    let db = test_db!();
    let store = db.store().await;
    let n = 30;
    let tasks = claimed(&store, n).await;
    // Even tasks journal a step, odd ones finish; then the even ones finish too.
    futures::future::join_all(tasks.iter().enumerate().map(|(i, c)| {
        let store = &store;
        async move {
            if i % 2 == 0 {
                let write = JournalWrite {
                    step: Some(step(1, "work", json!(i))),
                    events: vec![ev(
                        c.task.id,
                        c.last_seq + 1,
                        TaskEventKind::StepCompleted {
                            step: 1,
                            name: "work".into(),
                        },
                    )],
                    audit: vec![
                        NewAuditEvent::by(&Principal::new("u"), "tool.called", json!({}))
                            .task(c.task.id),
                    ],
                };
                store.journal(&c.lease, write).await.unwrap();
                // The task's next write follows its committed journal write.
                let f = Finish {
                    outcome: Outcome::Completed { output: json!(i) },
                    steps: vec![],
                    events: vec![],
                    audit: vec![],
                };
                store.finish(&c.lease, f).await.unwrap();
            } else {
                store.finish(&c.lease, completion(c, i)).await.unwrap();
            }
        }
    }))
    .await;
    for (i, c) in tasks.iter().enumerate() {
        let t = store.get_task(c.task.id).await.unwrap();
        assert_eq!(t.status, TaskStatus::Completed, "task {i}");
        let steps = store.steps(c.task.id).await.unwrap();
        assert_eq!(steps.len(), 1, "task {i}");
        let seqs: Vec<u64> = store
            .events(c.task.id, 0)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (1..=c.last_seq + 2).collect::<Vec<_>>(), "task {i}");
    }
    assert!(verify_chain(&store).await.unwrap().is_intact());
    store.close().await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_batching_every_finish_commits_alone() {
    let db = test_db!();
    let store = db
        .store_options()
        .batch_writes(false)
        .connect()
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let n = 12;
    let tasks = claimed(&store, n).await;
    futures::future::join_all(tasks.iter().enumerate().map(|(i, c)| {
        let store = &store;
        async move { store.finish(&c.lease, completion(c, i)).await.unwrap() }
    }))
    .await;
    let ids: Vec<Uuid> = tasks.iter().map(|c| c.task.id).collect();
    assert_eq!(commits_of(&store, &ids).await, n);
    store.close().await;
    db.drop().await;
}
