//! Conformance cases of [`WaitStore`](capecontrol_core::store::WaitStore) (durable waits),
//! run by [`crate::conformance::run_all`] on every backend.
//!
//! What they pin down:
//! - A suspend is fenced by the lease: the task becomes `waiting` with no lease, the attempt is
//!   given back, the pending steps and events are written with a `waiting_for_input` (or
//!   `sleeping`) event and a `task.waiting` audit row; a stale lease changes nothing.
//! - A waiting task is not claimable and not in the queue depth; the waiting count counts it.
//! - A wake on the waited step completes that journal step with the value, queues the task
//!   (`resumed` event, `task.resumed` and extra audit rows), and the next claim replays it; a
//!   wake on another step, or of a task not waiting, is a conflict that changes nothing.
//! - The deadline sweep wakes a wait whose deadline passed with its `on_timeout` value, once;
//!   a later answer is a conflict. A wait whose deadline is ahead is not woken.
//! - Cancelling a waiting task cancels it at once; a suspend of a task whose cancellation was
//!   requested cancels it.
//! - Child tasks: a task enqueued with a `parent_id` is listed by that parent (an unknown
//!   parent is not-found); a parent waiting on children is joinable once they are all final
//!   (not before), and its wake is audited with the reason `children`. Cancelling a task
//!   cancels its descendants that are not final (a running one is flagged), each audited with
//!   `cascade_from`; a final task's cancel is a conflict that leaves its children alone.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use capecontrol_core::error::ErrorCategory;
use capecontrol_core::events::TaskEventKind;
use capecontrol_core::state::{RunStatus, TaskStatus};
use capecontrol_core::store::{
    AuditFilter, Claimed, Lease, MAX_VALUE_DEPTH, NewAuditEvent, Store, Suspend, Wait, WaitFor,
    Wake,
};
use capecontrol_core::{Principal, StepRecord};

use crate::fixtures::{assert_category, claim_req, ev, step, task};

/// Runs every wait case, each on a fresh store from `make`.
pub async fn run_all<F, Fut>(make: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    suspend_then_wake_replays_the_answer(make().await).await;
    deadline_wakes_once_and_an_answer_then_conflicts(make().await).await;
    cancel_a_waiting_task(make().await).await;
    suspend_is_fenced_and_honours_a_requested_cancel(make().await).await;
    children_join_and_cancel_cascade(make().await).await;
}

async fn agent_with_task(store: &Arc<dyn Store>) -> (String, Uuid) {
    let id = format!("wait-agent-{}", Uuid::new_v4().simple());
    store
        .insert_agent(crate::fixtures::agent(&id))
        .await
        .unwrap();
    let mut t = task(&id, "alice");
    t.max_attempts = 1;
    let task_id = t.id;
    store.enqueue(t).await.unwrap();
    (id, task_id)
}

async fn claim(store: &Arc<dyn Store>, agent: &str) -> Claimed {
    let mut req = claim_req("w1", 1, 30_000);
    req.agents = Some(vec![agent.to_owned()]);
    let mut c = store.claim(&req).await.unwrap();
    assert_eq!(c.len(), 1, "one task to claim");
    c.remove(0)
}

fn question(step: u32, until: Option<chrono::DateTime<Utc>>) -> Wait {
    Wait {
        step,
        name: "ask_user".into(),
        until,
        on_timeout: json!({"outcome": "timed_out"}),
        waiting_for: WaitFor::Input {
            prompt: "Approve?".into(),
            schema: json!({"type": "object", "required": ["ok"]}),
            answerers: vec!["bob".into()],
        },
    }
}

fn suspend(c: &Claimed, wait: Wait) -> Suspend {
    let id = c.task.id;
    Suspend {
        wait,
        steps: vec![step(1, "before", json!(1))],
        events: vec![
            ev(
                id,
                c.last_seq + 1,
                TaskEventKind::StepStarted {
                    step: 1,
                    name: "before".into(),
                },
            ),
            ev(
                id,
                c.last_seq + 2,
                TaskEventKind::StepCompleted {
                    step: 1,
                    name: "before".into(),
                },
            ),
        ],
        audit: vec![NewAuditEvent::by(
            &Principal::new("alice"),
            "test.extra",
            json!({}),
        )],
    }
}

async fn audit_types(store: &Arc<dyn Store>, task_id: Uuid) -> Vec<String> {
    store
        .list_audit(&AuditFilter {
            task_id: Some(task_id),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.event_type)
        .collect()
}

fn names(events: &[capecontrol_core::events::TaskEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

/// Suspend → waiting (no lease, attempt given back, not claimable, not queued, counted as
/// waiting) → a wake on the wrong step conflicts → the right wake queues it with the step
/// completed → the next claim replays the answer.
pub async fn suspend_then_wake_replays_the_answer(store: Arc<dyn Store>) {
    let (agent, id) = agent_with_task(&store).await;
    let waiting_before = store.waiting_count().await.unwrap();
    let c = claim(&store, &agent).await;
    assert_eq!(c.task.attempts, 1);
    let until = Utc::now() + chrono::Duration::hours(1);
    let wait = question(2, Some(until));
    let t = store
        .suspend(&c.lease, suspend(&c, wait.clone()))
        .await
        .unwrap();
    assert_eq!(t.status, TaskStatus::Waiting);
    assert_eq!(t.attempts, 0, "a wait does not count an attempt");
    assert_eq!(t.lease_owner, None);
    assert_eq!(t.lease_expires_at, None);
    let stored = store
        .current_wait(id)
        .await
        .unwrap()
        .expect("a stored wait");
    assert_eq!(stored.step, 2);
    assert_eq!(stored.waiting_for, wait.waiting_for);
    assert_eq!(
        stored.until.map(|u| u.timestamp_micros()),
        Some(until.timestamp_micros())
    );
    assert_eq!(store.waiting_count().await.unwrap(), waiting_before + 1);
    let mut req = claim_req("w2", 10, 30_000);
    req.agents = Some(vec![agent.clone()]);
    assert!(store.claim(&req).await.unwrap().is_empty(), "not claimable");
    let queued = store
        .list_tasks(&capecontrol_core::store::TaskFilter {
            agent_id: Some(agent.clone()),
            status: Some(TaskStatus::Queued),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(queued.is_empty(), "not queued");
    // The lease is gone.
    assert_category(
        store.heartbeat(&c.lease, Duration::from_secs(1)).await,
        ErrorCategory::Conflict,
    );
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(
        names(&events),
        [
            "queued",
            "started",
            "step_started",
            "step_completed",
            "waiting_for_input"
        ]
    );
    match &events[4].kind {
        TaskEventKind::WaitingForInput {
            step,
            prompt,
            schema,
            ..
        } => {
            assert_eq!((*step, prompt.as_str()), (2, "Approve?"));
            assert_eq!(schema, &json!({"type": "object", "required": ["ok"]}));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.steps(id).await.unwrap().len(),
        1,
        "the pending step is written"
    );

    // Wrong step: nothing changes.
    let wrong = Wake {
        task_id: id,
        step: 3,
        output: json!(1),
        by: Some("alice".into()),
        audit: Vec::new(),
    };
    assert_category(store.wake(wrong).await, ErrorCategory::Conflict);
    assert_eq!(
        store.get_task(id).await.unwrap().status,
        TaskStatus::Waiting
    );

    // A value no store could read back is refused, and the task keeps waiting.
    let deep = (0..=MAX_VALUE_DEPTH).fold(json!(true), |v, _| json!([v]));
    let too_deep = Wake {
        task_id: id,
        step: 2,
        output: json!({"outcome": "answered", "answer": deep, "by": "bob"}),
        by: Some("bob".into()),
        audit: Vec::new(),
    };
    let e = store.wake(too_deep).await.unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Validation, "{e}");
    assert_eq!(e.field_errors()[0].pointer, "/output");
    assert_eq!(
        store.get_task(id).await.unwrap().status,
        TaskStatus::Waiting
    );

    let answer = json!({"outcome": "answered", "answer": {"ok": true}, "by": "bob"});
    let woken = store
        .wake(Wake {
            task_id: id,
            step: 2,
            output: answer.clone(),
            by: Some("bob".into()),
            audit: vec![NewAuditEvent::by(
                &Principal::new("bob"),
                "task.answered",
                json!({"step": 2}),
            )],
        })
        .await
        .unwrap();
    assert_eq!(woken.status, TaskStatus::Queued);
    assert_eq!(store.current_wait(id).await.unwrap(), None);
    assert_eq!(store.waiting_count().await.unwrap(), waiting_before);
    // A second wake of the same wait conflicts.
    let again = Wake {
        task_id: id,
        step: 2,
        output: json!(2),
        by: Some("alice".into()),
        audit: Vec::new(),
    };
    assert_category(store.wake(again).await, ErrorCategory::Conflict);
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(names(&events).last(), Some(&"resumed"));
    assert!(matches!(
        &events.last().unwrap().kind,
        TaskEventKind::Resumed { step: 2, by: Some(b) } if b == "bob"
    ));
    let types = audit_types(&store, id).await;
    for t in [
        "test.extra",
        "task.waiting",
        "task.resumed",
        "task.answered",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} in {types:?}");
    }

    // The next claim replays the journal with the answer at its position.
    let c2 = claim(&store, &agent).await;
    assert_eq!(
        c2.task.attempts, 1,
        "the resumed attempt is the first counted"
    );
    let answered: Vec<&StepRecord> = c2.steps.iter().filter(|s| s.step == 2).collect();
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].status, RunStatus::Completed);
    assert_eq!(answered[0].name, "ask_user");
    assert_eq!(answered[0].output, Some(answer));
    assert_eq!(c2.last_seq, events.len() as u64 + 1, "numbering continues");
}

/// A deadline in the past: the sweep wakes it once with `on_timeout`; an answer after that
/// conflicts. A wait whose deadline is ahead stays.
pub async fn deadline_wakes_once_and_an_answer_then_conflicts(store: Arc<dyn Store>) {
    let (agent, id) = agent_with_task(&store).await;
    let c = claim(&store, &agent).await;
    let past = Utc::now() - chrono::Duration::seconds(5);
    store
        .suspend(&c.lease, suspend(&c, question(2, Some(past))))
        .await
        .unwrap();

    let (agent2, id2) = agent_with_task(&store).await;
    let c2 = claim(&store, &agent2).await;
    let ahead = Utc::now() + chrono::Duration::hours(1);
    store
        .suspend(&c2.lease, suspend(&c2, question(2, Some(ahead))))
        .await
        .unwrap();

    let woken = store.wake_due().await.unwrap();
    assert!(woken.contains(&id), "{woken:?}");
    assert!(!woken.contains(&id2), "a deadline ahead is not due");
    assert!(!store.wake_due().await.unwrap().contains(&id), "woken once");
    assert_eq!(store.get_task(id).await.unwrap().status, TaskStatus::Queued);
    assert_eq!(
        store.get_task(id2).await.unwrap().status,
        TaskStatus::Waiting
    );
    let steps = store.steps(id).await.unwrap();
    let s = steps.iter().find(|s| s.step == 2).expect("the wait's step");
    assert_eq!(s.output, Some(json!({"outcome": "timed_out"})));
    assert!(matches!(
        store.events(id, 0).await.unwrap().last().unwrap().kind,
        TaskEventKind::Resumed { step: 2, by: None }
    ));
    let late = Wake {
        task_id: id,
        step: 2,
        output: json!({}),
        by: Some("alice".into()),
        audit: Vec::new(),
    };
    assert_category(store.wake(late).await, ErrorCategory::Conflict);

    // A timer: the same sweep, `null` as its value.
    let (agent3, id3) = agent_with_task(&store).await;
    let c3 = claim(&store, &agent3).await;
    let timer = Wait {
        step: 1,
        name: "sleep".into(),
        until: Some(Utc::now() - chrono::Duration::milliseconds(1)),
        on_timeout: Value::Null,
        waiting_for: WaitFor::Timer,
    };
    // A value on timeout no store could read back is refused; the task stays running.
    let deep = Suspend {
        wait: Wait {
            on_timeout: (0..=MAX_VALUE_DEPTH).fold(json!(1), |v, _| json!([v])),
            ..timer.clone()
        },
        steps: Vec::new(),
        events: Vec::new(),
        audit: Vec::new(),
    };
    let e = store.suspend(&c3.lease, deep).await.unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Validation, "{e}");
    assert_eq!(e.field_errors()[0].pointer, "/wait/on_timeout");
    assert_eq!(
        store.get_task(id3).await.unwrap().status,
        TaskStatus::Running
    );
    let s = Suspend {
        wait: timer,
        steps: Vec::new(),
        events: Vec::new(),
        audit: Vec::new(),
    };
    store.suspend(&c3.lease, s).await.unwrap();
    assert!(matches!(
        store.events(id3, 0).await.unwrap().last().unwrap().kind,
        TaskEventKind::Sleeping { step: 1, .. }
    ));
    assert!(store.wake_due().await.unwrap().contains(&id3));
    let steps = store.steps(id3).await.unwrap();
    assert_eq!(steps[0].name, "sleep");
    assert_eq!(steps[0].status, RunStatus::Completed);
    // A `null` output reads back as `null` or as no output (PostgreSQL's JSON path): the same
    // value for the replay.
    assert_eq!(steps[0].output.clone().unwrap_or(Value::Null), Value::Null);
}

/// Cancelling a waiting task cancels it at once; it can no longer be woken.
pub async fn cancel_a_waiting_task(store: Arc<dyn Store>) {
    let (agent, id) = agent_with_task(&store).await;
    let c = claim(&store, &agent).await;
    store
        .suspend(&c.lease, suspend(&c, question(2, None)))
        .await
        .unwrap();
    let t = store.cancel(id, &Principal::new("alice")).await.unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert_eq!(store.current_wait(id).await.unwrap(), None);
    let wake = Wake {
        task_id: id,
        step: 2,
        output: json!({}),
        by: Some("alice".into()),
        audit: Vec::new(),
    };
    assert_category(store.wake(wake).await, ErrorCategory::Conflict);
    assert_eq!(
        names(&store.events(id, 0).await.unwrap()).last(),
        Some(&"cancelled")
    );
    assert!(
        audit_types(&store, id)
            .await
            .iter()
            .any(|t| t == "task.cancelled")
    );
}

/// A suspend under a stale lease writes nothing; a suspend of a task whose cancellation was
/// requested cancels it.
pub async fn suspend_is_fenced_and_honours_a_requested_cancel(store: Arc<dyn Store>) {
    let (agent, id) = agent_with_task(&store).await;
    let c = claim(&store, &agent).await;
    let stale = Lease {
        token: Uuid::new_v4(),
        ..c.lease.clone()
    };
    assert_category(
        store.suspend(&stale, suspend(&c, question(2, None))).await,
        ErrorCategory::Conflict,
    );
    assert_eq!(
        store.get_task(id).await.unwrap().status,
        TaskStatus::Running
    );
    assert_eq!(
        store.events(id, 0).await.unwrap().len(),
        2,
        "nothing written"
    );
    assert!(store.steps(id).await.unwrap().is_empty());

    store.cancel(id, &Principal::new("alice")).await.unwrap();
    let t = store
        .suspend(&c.lease, suspend(&c, question(2, None)))
        .await
        .unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert_eq!(store.current_wait(id).await.unwrap(), None);
    assert_eq!(
        names(&store.events(id, 0).await.unwrap()).last(),
        Some(&"cancelled")
    );
}

/// A child of `parent` for `agent`, enqueued; returns its id.
async fn child(store: &Arc<dyn Store>, agent: &str, parent: Uuid) -> Uuid {
    let mut t = task(agent, "alice");
    t.parent_id = Some(parent);
    let id = t.id;
    let queued = store.enqueue(t).await.unwrap();
    assert_eq!(queued.task.parent_id, Some(parent));
    id
}

/// Children listed by their parent, joinable once final, woken with the reason `children`;
/// the cancel cascade over descendants (see the module docs).
pub async fn children_join_and_cancel_cascade(store: Arc<dyn Store>) {
    let alice = Principal::new("alice");
    let (agent, parent) = agent_with_task(&store).await;
    let c = claim(&store, &agent).await;
    let mut orphan = task(&agent, "alice");
    orphan.parent_id = Some(Uuid::new_v4());
    assert_category(store.enqueue(orphan).await, ErrorCategory::NotFound);
    let (a, b) = (
        child(&store, &agent, parent).await,
        child(&store, &agent, parent).await,
    );
    let listed = store
        .list_tasks(&capecontrol_core::store::TaskFilter {
            parent_id: Some(parent),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut listed: Vec<Uuid> = listed.iter().map(|t| t.id).collect();
    listed.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(store.get_task(a).await.unwrap().parent_id, Some(parent));

    let join = Wait {
        step: 3,
        name: "join".into(),
        until: None,
        on_timeout: Value::Null,
        waiting_for: WaitFor::Children { ids: vec![a, b] },
    };
    store
        .suspend(&c.lease, suspend(&c, join.clone()))
        .await
        .unwrap();
    assert!(matches!(
        names(&store.events(parent, 0).await.unwrap()).last(),
        Some(&"waiting_for_children")
    ));
    assert!(store.joinable(None, 100).await.unwrap().is_empty());
    // One child ends, the other not yet.
    let ca = claim(&store, &agent).await;
    assert_eq!(ca.task.id, a);
    store
        .finish(&ca.lease, crate::conformance::completed(json!(1)))
        .await
        .unwrap();
    assert!(store.joinable(Some(parent), 100).await.unwrap().is_empty());
    store.cancel(b, &alice).await.unwrap();
    assert_eq!(
        store.joinable(None, 100).await.unwrap(),
        vec![(parent, join.clone())]
    );
    assert_eq!(
        store.joinable(Some(parent), 100).await.unwrap(),
        vec![(parent, join)]
    );
    store
        .wake(Wake {
            task_id: parent,
            step: 3,
            output: json!([]),
            by: None,
            audit: Vec::new(),
        })
        .await
        .unwrap();
    assert!(store.joinable(None, 100).await.unwrap().is_empty());
    let resumed = store
        .list_audit(&AuditFilter {
            task_id: Some(parent),
            event_type: Some("task.resumed".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].payload["reason"], "children");
    assert_eq!(resumed[0].payload["kind"], "children");

    // The cascade: a running root with a running child, which has a queued grandchild, and a
    // queued sibling of that child.
    let (other, root) = agent_with_task(&store).await;
    let running = child(&store, &other, root).await;
    let grandchild = child(&store, &other, running).await;
    let sibling = child(&store, &other, root).await;
    let mut req = claim_req("w2", 2, 30_000);
    req.agents = Some(vec![other.clone()]);
    let mut claimed: Vec<Uuid> = store
        .claim(&req)
        .await
        .unwrap()
        .iter()
        .map(|c| c.task.id)
        .collect();
    claimed.sort();
    let mut oldest = vec![root, running];
    oldest.sort();
    assert_eq!(claimed, oldest, "the two oldest are claimed");
    let t = store.cancel(root, &alice).await.unwrap();
    assert_eq!(t.status, TaskStatus::Running);
    assert!(t.cancel_requested);
    let d = store.get_task(running).await.unwrap();
    assert_eq!(d.status, TaskStatus::Running);
    assert!(d.cancel_requested, "a running descendant is flagged");
    for id in [grandchild, sibling] {
        assert_eq!(
            store.get_task(id).await.unwrap().status,
            TaskStatus::Cancelled,
            "a queued descendant is cancelled at once"
        );
        assert_eq!(
            names(&store.events(id, 0).await.unwrap()),
            ["queued", "cancelled"]
        );
    }
    for id in [running, grandchild, sibling] {
        let rows = store
            .list_audit(&AuditFilter {
                task_id: Some(id),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let cascaded: Vec<_> = rows
            .iter()
            .filter(|r| r.payload["cascade_from"] == json!(root))
            .collect();
        assert_eq!(cascaded.len(), 1, "{rows:?}");
        assert_eq!(cascaded[0].user_id.as_deref(), Some("alice"));
    }

    // A final parent: its cancel is a conflict, its queued child stays queued.
    let (third, done) = agent_with_task(&store).await;
    let cd = claim(&store, &third).await;
    let kid = child(&store, &third, done).await;
    store
        .finish(&cd.lease, crate::conformance::completed(json!(1)))
        .await
        .unwrap();
    assert_category(store.cancel(done, &alice).await, ErrorCategory::Conflict);
    assert_eq!(
        store.get_task(kid).await.unwrap().status,
        TaskStatus::Queued
    );
}
