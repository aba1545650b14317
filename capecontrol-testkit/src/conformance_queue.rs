//! Conformance cases of the queue's batched paths (issue 12): one heartbeat write for many
//! leases, and claims that pass over backlogs that cannot run (delayed tasks, an agent at its
//! concurrency limit) while still taking due tasks in priority-then-age order, as many as asked.
//! Run by [`crate::conformance::run_all`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use capecontrol_core::error::ErrorCategory;
use capecontrol_core::events::TaskEventKind;
use capecontrol_core::state::TaskStatus;
use capecontrol_core::store::{
    AuditFilter, ClaimRequest, Finish, JournalWrite, MAX_VALUE_DEPTH, NewAuditEvent, NewTask,
    Outcome, Store,
};

use crate::conformance::completed;
use crate::fixtures;

/// Runs this module's cases, each on a fresh store from `make`.
pub async fn run_all<F, Fut>(make: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    heartbeat_many_renews_live_leases_and_reports_lost_ones(make().await).await;
    claims_pass_over_delayed_and_blocked_backlogs(make().await).await;
    a_claim_takes_as_many_due_tasks_as_asked_in_order(make().await).await;
    delayed_tasks_ahead_of_due_ones_do_not_hide_them(make().await).await;
    values_nested_too_deep_are_refused_where_written(make().await).await;
}

async fn fresh_agent(store: &Arc<dyn Store>, prefix: &str) -> String {
    let id = format!("{prefix}-{}", Uuid::new_v4().simple());
    store
        .insert_agent(fixtures::agent(&id))
        .await
        .expect("insert agent");
    store
        .insert_version(fixtures::version(&id, "1.0.0", "chat"))
        .await
        .expect("insert version");
    store
        .publish_version(&id, "1.0.0")
        .await
        .expect("publish version");
    id
}

fn task(agent: &str, priority: i32, delayed: bool, limit: u32) -> NewTask {
    let mut t = fixtures::task(agent, "user-1");
    t.priority = priority;
    t.concurrency_limit = limit;
    t.run_at = delayed.then(|| Utc::now() + chrono::Duration::hours(1));
    t
}

fn claim(agents: &[&str], limit: usize) -> ClaimRequest {
    ClaimRequest {
        worker: "w1".into(),
        limit,
        lease: Duration::from_secs(30),
        agents: Some(agents.iter().map(|a| (*a).to_owned()).collect()),
    }
}

/// `heartbeat_many` answers per lease, in order: a live lease renewed (and a requested cancel
/// reported), a finished task's lease and a stale token lost.
pub async fn heartbeat_many_renews_live_leases_and_reports_lost_ones(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store, "hb-many").await;
    for _ in 0..3 {
        store.enqueue(task(&agent, 0, false, 100)).await.unwrap();
    }
    let claimed = store.claim(&claim(&[&agent], 3)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let (live, cancelled, finished) = (&claimed[0], &claimed[1], &claimed[2]);
    store
        .cancel(
            cancelled.task.id,
            &capecontrol_core::Principal::new("user-1"),
        )
        .await
        .unwrap();
    store
        .finish(&finished.lease, completed(json!(1)))
        .await
        .unwrap();
    let mut stale = live.lease.clone();
    stale.token = Uuid::new_v4();
    let leases = [
        live.lease.clone(),
        cancelled.lease.clone(),
        finished.lease.clone(),
        stale,
    ];
    let beats = store
        .heartbeat_many(&leases, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(beats.len(), 4, "one answer per lease");
    let renewed = beats[0].as_ref().expect("the live lease is renewed");
    assert!(!renewed.cancel_requested);
    assert!(renewed.expires_at > Utc::now() + chrono::Duration::seconds(50));
    assert!(
        beats[1].as_ref().expect("renewed").cancel_requested,
        "a requested cancel is reported"
    );
    for (i, beat) in beats.iter().enumerate().skip(2) {
        match beat {
            Err(e) => assert_eq!(e.category(), ErrorCategory::Conflict, "lease {i}"),
            Ok(hb) => panic!("lease {i} should be lost, got {hb:?}"),
        }
    }
    assert!(
        store
            .heartbeat_many(&[], Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Higher-priority, older backlogs that cannot run — one agent's tasks all delayed, another's
/// due but the agent at its limit — do not stop a claim from taking the one runnable task, and
/// are not claimed.
pub async fn claims_pass_over_delayed_and_blocked_backlogs(store: Arc<dyn Store>) {
    let blocked = fresh_agent(&store, "blocked").await;
    let later = fresh_agent(&store, "later").await;
    let idle = fresh_agent(&store, "idle").await;
    store.enqueue(task(&blocked, 100, false, 1)).await.unwrap();
    let running = store.claim(&claim(&[&blocked], 1)).await.unwrap();
    assert_eq!(running.len(), 1);
    for _ in 0..120 {
        store.enqueue(task(&blocked, 50, false, 1)).await.unwrap();
        store.enqueue(task(&blocked, 50, true, 1)).await.unwrap();
        store.enqueue(task(&later, 50, true, 100)).await.unwrap();
    }
    let probe = store
        .enqueue(task(&idle, 0, false, 100))
        .await
        .unwrap()
        .task
        .id;
    let claimed = store
        .claim(&claim(&[&blocked, &later, &idle], 5))
        .await
        .unwrap();
    let ids: Vec<Uuid> = claimed.iter().map(|c| c.task.id).collect();
    assert_eq!(ids, [probe], "only the idle agent's task can run");
}

/// One claim takes up to `limit` due tasks, by priority then age, across agents.
pub async fn a_claim_takes_as_many_due_tasks_as_asked_in_order(store: Arc<dyn Store>) {
    let a = fresh_agent(&store, "many-a").await;
    let b = fresh_agent(&store, "many-b").await;
    let mut expected = Vec::new();
    for i in 0..6 {
        let (agent, priority) = if i % 2 == 0 { (&a, 1) } else { (&b, 2) };
        expected.push((
            priority,
            store
                .enqueue(task(agent, priority, false, 100))
                .await
                .unwrap()
                .task
                .id,
        ));
    }
    // Priority 2 (b's, in age order) first, then priority 1 (a's).
    let mut order: Vec<Uuid> = expected
        .iter()
        .filter(|(p, _)| *p == 2)
        .chain(expected.iter().filter(|(p, _)| *p == 1))
        .map(|(_, id)| *id)
        .collect();
    let claimed = store.claim(&claim(&[&a, &b], 4)).await.unwrap();
    let ids: Vec<Uuid> = claimed.iter().map(|c| c.task.id).collect();
    assert_eq!(ids, order[..4], "four tasks in one claim, in order");
    let rest = store.claim(&claim(&[&a, &b], 10)).await.unwrap();
    let ids: Vec<Uuid> = rest.iter().map(|c| c.task.id).collect();
    order.drain(..4);
    assert_eq!(ids, order, "the remaining two");
}

/// More delayed tasks than a claim looks at ahead of an agent's due ones (older, higher
/// priority) do not hide the due ones, which come in priority-then-age order.
pub async fn delayed_tasks_ahead_of_due_ones_do_not_hide_them(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store, "delayed-ahead").await;
    for _ in 0..150 {
        store.enqueue(task(&agent, 9, true, 100)).await.unwrap();
    }
    let mut due = Vec::new();
    for priority in [0, 1, 1] {
        due.push(
            store
                .enqueue(task(&agent, priority, false, 100))
                .await
                .unwrap()
                .task
                .id,
        );
    }
    let claimed = store.claim(&claim(&[&agent], 2)).await.unwrap();
    let ids: Vec<Uuid> = claimed.iter().map(|c| c.task.id).collect();
    assert_eq!(ids, [due[1], due[2]]);
    let claimed = store.claim(&claim(&[&agent], 2)).await.unwrap();
    let ids: Vec<Uuid> = claimed.iter().map(|c| c.task.id).collect();
    assert_eq!(ids, [due[0]]);
}

/// For a store that claims in its enqueue (`PostgresStore`; not run by
/// [`crate::conformance::run_all`], since a store may leave every task to a claim):
/// `enqueue_claimed` claims the new task in its enqueue exactly when a claim by that worker
/// would take it now: due, of an allowed agent, nothing due of its agent with at least its
/// priority queued, the agent under its limit. A claimed task is `running` under a working
/// lease, with `queued` then `started` events and `task.queued` then `task.started` audit
/// rows; an unclaimed one is queued as by `enqueue`; an idempotent repeat is never claimed.
pub async fn an_enqueue_claims_its_task_only_when_a_claim_would(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store, "start-here").await;
    let other = fresh_agent(&store, "start-other").await;
    let request = claim(&[&agent], 1);

    // Nothing queued, the agent idle: claimed in the enqueue.
    let (enqueued, claimed) = store
        .enqueue_claimed(task(&agent, 0, false, 2), &request)
        .await
        .unwrap();
    let first = claimed.expect("a task a claim would take now is claimed by its enqueue");
    assert!(enqueued.created);
    assert_eq!(enqueued.task.id, first.task.id);
    assert_eq!(first.task.status, TaskStatus::Running);
    assert_eq!(first.task.attempts, 1);
    assert_eq!(first.lease.owner, "w1");
    assert_eq!(first.task.lease_owner.as_deref(), Some("w1"));
    assert!(first.steps.is_empty());
    assert_eq!(first.last_seq, 2, "queued is event 1, started event 2");
    let stored = store.get_task(first.task.id).await.unwrap();
    assert_eq!(stored.status, TaskStatus::Running);
    let events = store.events(first.task.id, 0).await.unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(events[0].kind, TaskEventKind::Queued { .. }));
    assert!(
        matches!(&events[1].kind, TaskEventKind::Started { attempt: 1, worker } if worker == "w1"),
        "{events:?}"
    );
    let audit = store
        .list_audit(&AuditFilter {
            task_id: Some(first.task.id),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let types: Vec<&str> = audit.iter().map(|a| a.event_type.as_str()).collect();
    assert_eq!(types, ["task.queued", "task.started"]);
    assert_eq!(audit[1].payload, json!({"attempt": 1, "worker": "w1"}));
    // Nothing is left for a claim (its lease finishes it below).
    assert!(store.claim(&claim(&[&agent], 10)).await.unwrap().is_empty());

    // A second one while the first runs (limit 2); a third finds the agent at its limit.
    let (_, second) = store
        .enqueue_claimed(task(&agent, 0, false, 2), &request)
        .await
        .unwrap();
    let second = second.expect("under the limit");
    let (third, none) = store
        .enqueue_claimed(task(&agent, 0, false, 2), &request)
        .await
        .unwrap();
    assert!(none.is_none(), "the agent runs as many as its limit");
    assert_eq!(third.task.status, TaskStatus::Queued);
    assert_eq!(
        store.events(third.task.id, 0).await.unwrap().len(),
        1,
        "only `queued`"
    );
    store
        .finish(&first.lease, completed(json!(1)))
        .await
        .unwrap();

    // Room again, but the third is queued ahead with the same priority: a claim takes it first.
    let (fourth, none) = store
        .enqueue_claimed(task(&agent, 0, false, 2), &request)
        .await
        .unwrap();
    assert!(none.is_none(), "a due task of its agent is queued ahead");
    // A higher priority goes ahead of them, as a claim would take it.
    let (_, urgent) = store
        .enqueue_claimed(task(&agent, 5, false, 2), &request)
        .await
        .unwrap();
    let urgent = urgent.expect("nothing of priority 5 is queued");
    store
        .finish(&urgent.lease, completed(json!(1)))
        .await
        .unwrap();
    let next = store.claim(&claim(&[&agent], 10)).await.unwrap();
    let ids: Vec<Uuid> = next.iter().map(|c| c.task.id).collect();
    assert_eq!(
        ids,
        [third.task.id],
        "the claim takes the older one (limit 2, one runs)"
    );

    // Not due, not an agent of the worker, or a repeat: queued, not claimed.
    let (delayed, none) = store
        .enqueue_claimed(task(&other, 0, true, 10), &claim(&[&other], 1))
        .await
        .unwrap();
    assert!(none.is_none(), "a delayed task waits for its time");
    assert_eq!(delayed.task.status, TaskStatus::Queued);
    let (elsewhere, none) = store
        .enqueue_claimed(task(&other, 0, false, 10), &claim(&[&agent], 1))
        .await
        .unwrap();
    assert!(none.is_none(), "not an agent of this worker");
    assert_eq!(elsewhere.task.status, TaskStatus::Queued);
    let mut keyed = task(&other, 0, false, 10);
    keyed.idempotency_key = Some("start-here-key".into());
    let (original, _) = store.enqueue(keyed.clone()).await.map(|e| (e, ())).unwrap();
    keyed.id = Uuid::new_v4();
    let (repeat, none) = store
        .enqueue_claimed(keyed, &claim(&[&other], 1))
        .await
        .unwrap();
    assert!(none.is_none(), "an idempotent repeat is never claimed");
    assert!(!repeat.created);
    assert_eq!(repeat.task.id, original.task.id);
    for c in [second].into_iter().chain(next) {
        store.finish(&c.lease, completed(json!(1))).await.unwrap();
    }
    assert_eq!(
        store.get_task(fourth.task.id).await.unwrap().status,
        TaskStatus::Queued
    );
}

/// A value `levels` deep (arrays and objects alternating) around a string.
fn nested(levels: usize) -> serde_json::Value {
    (0..levels).fold(json!("bottom"), |v, i| {
        if i % 2 == 0 {
            json!([v])
        } else {
            json!({ "n": v })
        }
    })
}

/// The pointers of a validation error (anything else fails the case).
fn pointers<T: std::fmt::Debug>(r: capecontrol_core::Result<T>) -> Vec<String> {
    let e = r.expect_err("refused");
    assert_eq!(e.category(), ErrorCategory::Validation, "{e}");
    e.field_errors().iter().map(|f| f.pointer.clone()).collect()
}

/// A value nested deeper than [`MAX_VALUE_DEPTH`] levels is refused where it would be
/// written (a task's input, an audit payload, an attempt's output, a step's output in a
/// journal write, a finish or a release) with a validation error at its field, and nothing of
/// the write is kept: the task stays running under its lease, the audit trail stays readable.
/// A value of exactly that depth is stored and read back whole. (PostgreSQL would keep the
/// deeper value, and every read of its row would fail from then on.)
pub async fn values_nested_too_deep_are_refused_where_written(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store, "deep").await;
    let (edge, over) = (nested(MAX_VALUE_DEPTH), nested(MAX_VALUE_DEPTH + 1));

    let mut t = task(&agent, 0, false, 10);
    t.input = over.clone();
    assert_eq!(pointers(store.enqueue(t).await), ["/input"]);
    let head = store.audit_head().await.expect("head");
    let event = |payload| NewAuditEvent {
        event_type: "test.deep".into(),
        payload,
        ..NewAuditEvent::default()
    };
    assert_eq!(
        pointers(store.append_audit(event(over.clone())).await),
        ["/payload"]
    );
    assert_eq!(
        store.audit_head().await.expect("head"),
        head,
        "nothing appended"
    );
    let kept = store
        .append_audit(event(edge.clone()))
        .await
        .expect("at the edge");
    assert_eq!(kept.payload, edge);

    let mut t = task(&agent, 0, false, 10);
    t.input = edge.clone();
    let id = store.enqueue(t).await.expect("input at the edge").task.id;
    let c = store
        .claim(&claim(&[&agent], 1))
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(c.task.input, edge);
    let journal = JournalWrite {
        step: Some(fixtures::step(1, "s", over.clone())),
        events: Vec::new(),
        audit: vec![event(over.clone())],
    };
    assert_eq!(
        pointers(store.journal(&c.lease, journal).await),
        ["/step/output", "/audit/0/payload"]
    );
    let deep_end = Finish {
        outcome: Outcome::Completed {
            output: over.clone(),
        },
        steps: vec![fixtures::step(1, "s", over.clone())],
        events: Vec::new(),
        audit: Vec::new(),
    };
    assert_eq!(
        pointers(store.finish(&c.lease, deep_end).await),
        ["/outcome/output", "/steps/0/output"]
    );
    assert_eq!(
        pointers(
            store
                .release(
                    &c.lease,
                    Vec::new(),
                    vec![fixtures::step(1, "s", over.clone())]
                )
                .await
        ),
        ["/steps/0/output"]
    );
    let still = store.get_task(id).await.expect("readable");
    assert_eq!(
        still.status,
        TaskStatus::Running,
        "the refused end wrote nothing"
    );
    assert!(store.steps(id).await.expect("steps").is_empty());
    let mut end = completed(edge.clone());
    end.steps = vec![fixtures::step(1, "s", edge.clone())];
    let done = store
        .finish(&c.lease, end)
        .await
        .expect("outputs at the edge");
    assert_eq!(done.output.as_ref(), Some(&edge));
    assert_eq!(
        store.get_task(id).await.expect("get").output,
        Some(edge.clone())
    );
    assert_eq!(
        store.steps(id).await.expect("steps")[0].output,
        Some(edge.clone())
    );
    let events = store.events(id, 0).await.expect("events readable");
    let last = events.last().expect("events");
    assert_eq!(
        last.kind,
        TaskEventKind::Completed {
            output: edge.clone()
        }
    );
    assert!(
        store.list_audit(&AuditFilter::default()).await.is_ok(),
        "the trail stays readable"
    );
}
