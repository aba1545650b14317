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
use capecontrol_core::store::{ClaimRequest, NewTask, Store};

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
