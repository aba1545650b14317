//! Unit tests of [`MemoryStore`] (its clock, indexes and channels).

use serde_json::json;

use super::*;

struct Manual(Arc<Mutex<DateTime<Utc>>>);

impl Manual {
    fn advance(&self, d: Duration) {
        let mut now = self.0.lock().unwrap();
        *now += to_chrono(d);
    }
}

fn manual_store() -> (MemoryStore, Manual) {
    let now = Arc::new(Mutex::new(Utc::now()));
    let clock = now.clone();
    let store = MemoryStore::with_clock(Arc::new(move || *clock.lock().unwrap()));
    with_agent(&store);
    (store, Manual(now))
}

/// Registers agent `a`.
fn with_agent(store: &MemoryStore) {
    let now = Utc::now();
    store.lock().agents.insert(
        "a".into(),
        AgentRecord {
            id: "a".into(),
            name: "A".into(),
            slug: "a".into(),
            description: None,
            category: None,
            capabilities: None,
            policy_scopes: Vec::new(),
            manifest: None,
            status: AgentStatus::Draft,
            owner: None,
            created_at: now,
            updated_at: now,
        },
    );
}

fn task(agent: &str) -> NewTask {
    NewTask {
        id: Uuid::new_v4(),
        agent_id: agent.into(),
        version: "1.0.0".into(),
        task: "t".into(),
        input: json!(null),
        principal: Principal::new("u"),
        priority: 0,
        run_at: None,
        idempotency_key: None,
        max_attempts: 2,
        concurrency_limit: 10,
        timeout: Duration::from_secs(1),
        traceparent: None,
        trigger: None,
        policy_allowed: false,
        audit: Vec::new(),
        parent_id: None,
    }
}

fn claim(limit: usize) -> ClaimRequest {
    ClaimRequest {
        worker: "w".into(),
        limit,
        lease: Duration::from_secs(30),
        agents: None,
    }
}

#[tokio::test]
async fn lease_expiry_and_run_at_follow_the_injected_clock() {
    let (store, clock) = manual_store();
    let later = store.now() + chrono::Duration::seconds(60);
    let mut t = task("a");
    t.run_at = Some(later);
    let id = store.enqueue(t).await.unwrap().task.id;
    assert!(store.claim(&claim(1)).await.unwrap().is_empty());
    clock.advance(Duration::from_secs(60));
    let c = store.claim(&claim(1)).await.unwrap().remove(0);
    assert_eq!(
        c.lease.expires_at,
        store.now() + chrono::Duration::seconds(30)
    );
    clock.advance(Duration::from_secs(29));
    assert!(store.reclaim_expired().await.unwrap().is_empty());
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.reclaim_expired().await.unwrap(), [id]);
    let t = store.get_task(id).await.unwrap();
    assert_eq!((t.status, t.attempts), (TaskStatus::Queued, 1));
    // The second attempt is the last: its expiry fails the task.
    let c = store.claim(&claim(1)).await.unwrap().remove(0);
    assert_eq!(c.task.attempts, 2);
    clock.advance(Duration::from_secs(31));
    assert_eq!(store.reclaim_expired().await.unwrap(), [id]);
    let t = store.get_task(id).await.unwrap();
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(
        t.error.map(|e| e.category()),
        Some(crate::ErrorCategory::Resource)
    );
}

#[tokio::test]
async fn a_cancel_requested_task_is_cancelled_on_release_or_reclaim() {
    let (store, clock) = manual_store();
    let by = Principal::new("admin").with_roles(["admin"]);
    let a = store.enqueue(task("a")).await.unwrap().task.id;
    let b = store.enqueue(task("a")).await.unwrap().task.id;
    let claimed = store.claim(&claim(2)).await.unwrap();
    store.cancel(a, &by).await.unwrap();
    store.cancel(b, &by).await.unwrap();
    let lease_a = claimed
        .iter()
        .find(|c| c.task.id == a)
        .unwrap()
        .lease
        .clone();
    store
        .release(&lease_a, Vec::new(), Vec::new())
        .await
        .unwrap();
    assert_eq!(
        store.get_task(a).await.unwrap().status,
        TaskStatus::Cancelled
    );
    clock.advance(Duration::from_secs(31));
    assert_eq!(store.reclaim_expired().await.unwrap(), [b]);
    let t = store.get_task(b).await.unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    let events = store.events(b, 0).await.unwrap();
    assert_eq!(events.last().unwrap().kind, TaskEventKind::Cancelled);
}

#[tokio::test]
async fn misnumbered_worker_events_change_nothing() {
    let (store, _) = manual_store();
    let id = store.enqueue(task("a")).await.unwrap().task.id;
    let c = store.claim(&claim(1)).await.unwrap().remove(0);
    let e = |task_id, seq| TaskEvent {
        task_id,
        seq,
        at: Utc::now(),
        kind: TaskEventKind::ToolCalled {
            tool: "x".into(),
            allowed: false,
        },
    };
    let write = |events| JournalWrite {
        step: None,
        events,
        audit: Vec::new(),
    };
    let gap = store
        .journal(&c.lease, write(vec![e(id, 3), e(id, 5)]))
        .await;
    assert_eq!(gap.unwrap_err().field_errors()[0].pointer, "/events/1/seq");
    let other = store
        .journal(&c.lease, write(vec![e(Uuid::new_v4(), 3)]))
        .await;
    assert_eq!(
        other.unwrap_err().field_errors()[0].pointer,
        "/events/0/task_id"
    );
    let stale = store.journal(&c.lease, write(vec![e(id, 2)])).await;
    assert_eq!(
        stale.unwrap_err().category(),
        crate::ErrorCategory::Conflict
    );
    let ahead = store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Cancelled,
                steps: Vec::new(),
                events: vec![e(id, 4)],
                audit: Vec::new(),
            },
        )
        .await;
    assert_eq!(
        ahead.unwrap_err().category(),
        crate::ErrorCategory::Conflict
    );
    assert_eq!(store.events(id, 0).await.unwrap().len(), 2);
    assert_eq!(
        store.get_task(id).await.unwrap().status,
        TaskStatus::Running
    );
    store
        .journal(&c.lease, write(vec![e(id, 3), e(id, 4)]))
        .await
        .unwrap();
    assert_eq!(store.events(id, 2).await.unwrap().len(), 2);
}

#[tokio::test]
async fn listings_are_capped() {
    let store = MemoryStore::new();
    with_agent(&store);
    for _ in 0..(super::super::MAX_LIST_TASKS + 5) {
        store.enqueue(task("a")).await.unwrap();
    }
    let all = TaskFilter {
        limit: Some(usize::MAX),
        ..TaskFilter::default()
    };
    assert_eq!(
        store.list_tasks(&all).await.unwrap().len(),
        super::super::MAX_LIST_TASKS
    );
    let audit = AuditFilter {
        limit: Some(usize::MAX),
        ..AuditFilter::default()
    };
    assert_eq!(
        store.list_audit(&audit).await.unwrap().len(),
        super::super::MAX_AUDIT_PAGE
    );
}

#[tokio::test]
async fn enqueue_rejects_bad_limits_and_duplicate_ids() {
    let store = MemoryStore::new();
    assert_eq!(
        store.enqueue(task("a")).await.unwrap_err().category(),
        crate::ErrorCategory::NotFound
    );
    with_agent(&store);
    let mut t = task("a");
    t.max_attempts = 0;
    assert_eq!(
        store.enqueue(t).await.unwrap_err().field_errors()[0].pointer,
        "/max_attempts"
    );
    let mut t = task("a");
    t.concurrency_limit = 0;
    assert_eq!(
        store.enqueue(t).await.unwrap_err().field_errors()[0].pointer,
        "/concurrency_limit"
    );
    let t = task("a");
    store.enqueue(t.clone()).await.unwrap();
    assert_eq!(
        store.enqueue(t).await.unwrap_err().category(),
        crate::ErrorCategory::Conflict
    );
    assert!(store.claim(&claim(0)).await.unwrap().is_empty());
    assert_eq!(store.queue_depth().await.unwrap(), 1);
    assert!(format!("{store:?}").contains("tasks: 1"));
}

/// Audit rows are chained in batches, after the operations that write them: whatever the
/// number of rows waiting (none, fewer than a batch, exactly a batch, more), every read of the
/// trail or its head sees them all chained, in insertion order, and the chain verifies.
#[tokio::test]
async fn audit_rows_are_chained_by_the_batch_or_the_next_read() {
    use crate::audit::{GENESIS, verify_chain};
    let store = MemoryStore::new();
    with_agent(&store);
    assert_eq!(store.audit_head().await.unwrap().seq, 0);
    let mut written = 0u64;
    // Each enqueue writes one row (`task.queued`).
    for waiting in [
        1,
        SEAL_BATCH - 1,
        SEAL_BATCH,
        SEAL_BATCH + 1,
        2 * SEAL_BATCH + 3,
    ] {
        for _ in 0..waiting {
            store.enqueue(task("a")).await.unwrap();
        }
        written += waiting as u64;
        {
            // What the writes left: whole batches chained, the rest waiting, none lost.
            let state = store.lock();
            assert_eq!(state.audit_len as u64, written);
            assert!(state.audit_pending.len() < SEAL_BATCH);
            assert!(state.audit_full.is_empty());
            assert!(state.audit_pending.iter().all(|r| match r {
                trail::Pending::Event(e) => e.seq == 0,
                trail::Pending::Task(_) => true,
            }));
            let chained = store.trail.lock().unwrap().len();
            assert_eq!(chained + state.audit_pending.len(), state.audit_len);
        }
        let head = store.audit_head().await.unwrap();
        assert_eq!(head.seq, written, "after {waiting} more rows");
        let report = verify_chain(&store).await.unwrap();
        assert_eq!(report.first_bad, None, "after {waiting} more rows");
        assert_eq!(report.rows, written);
    }
    {
        // The sealer gave the batches it emptied back to be filled again: a few, empty, whole.
        let state = store.lock();
        let handoff = store.handoff.lock().unwrap();
        let mut spare = state.audit_spare.iter().chain(&handoff.spare);
        assert!((1..=2 * SPARE_BATCHES).contains(&spare.clone().count()));
        assert!(spare.all(|b| b.is_empty() && b.capacity() == SEAL_BATCH));
    }
    // Rows are chained in the order they were written, each linked to the one before.
    let page = store
        .list_audit(&AuditFilter {
            limit: Some(10),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page[0].prev_hash, GENESIS);
    for (i, pair) in page.windows(2).enumerate() {
        assert_eq!((pair[0].id, pair[0].seq), (i as i64 + 1, i as u64 + 1));
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    // `append_audit` returns its row in its place, chained after the waiting ones.
    store.enqueue(task("a")).await.unwrap();
    let row = store
        .append_audit(NewAuditEvent {
            event_type: "hello".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(row.seq, written + 2);
    assert_eq!(store.audit_head().await.unwrap().hash, row.hash);
}

/// A task context built from a claimed record reads its task id, attempt, agent, version,
/// `traceparent` and principal from it (shared, not copied); a setter called afterwards
/// overrides its own field and keeps the record's others.
#[tokio::test]
async fn a_task_context_reads_its_identity_from_the_claimed_record() {
    use crate::agent::{MemoryJournal, TaskContext};
    let store = MemoryStore::new();
    with_agent(&store);
    let mut t = task("a");
    t.principal = Principal::new("ada").with_roles(["admin"]);
    t.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    store.enqueue(t).await.unwrap();
    let claimed = store.claim(&claim(1)).await.unwrap().pop().unwrap();
    let record = claimed.task;
    let journal = Arc::new(MemoryJournal::default());
    let cx = TaskContext::builder(Uuid::nil())
        .task(Arc::clone(&record))
        .build(journal.clone());
    assert_eq!(cx.task_id(), record.id);
    assert_eq!(cx.attempt(), 1);
    assert_eq!(
        (cx.agent_id(), cx.version()),
        ("a", record.version.as_str())
    );
    assert_eq!(cx.traceparent(), record.traceparent.as_deref());
    assert_eq!(cx.principal(), &record.principal);
    assert_eq!(
        Arc::strong_count(&record),
        3,
        "shared: the store's, ours, the context's"
    );
    let cx = TaskContext::builder(Uuid::nil())
        .task(Arc::clone(&record))
        .version("9.9.9")
        .build(journal);
    assert_eq!((cx.agent_id(), cx.version()), ("a", "9.9.9"));
    assert_eq!(cx.principal().user_id, "ada");
    assert_eq!(cx.traceparent(), record.traceparent.as_deref());
}
