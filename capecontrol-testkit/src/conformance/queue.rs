//! Queue cases: enqueue and its bounds, claims, leases, heartbeats, fencing, reclaim and concurrency.

use super::helpers::*;

/// Enqueue writes a queued task; an idempotency key (per user) returns the first task.
pub async fn enqueue_and_idempotency(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let mut wakeups = store.wakeups();
    let mut task = new_task(&agent);
    task.idempotency_key = Some("key-1".into());
    let first = store.enqueue(task.clone()).await.unwrap();
    assert!(first.created);
    assert_eq!(first.task.status, TaskStatus::Queued);
    assert_eq!(first.task.attempts, 0);
    assert_eq!(first.task.user_id, "user-1");
    tokio::time::timeout(Duration::from_secs(5), wakeups.recv())
        .await
        .expect("an enqueue wakes the workers")
        .unwrap();

    let again = store
        .enqueue(NewTask {
            id: Uuid::new_v4(),
            ..task.clone()
        })
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.task.id, first.task.id);
    assert_eq!(first.task.traceparent.as_deref(), Some(TRACEPARENT));
    let read = store.get_task(first.task.id).await.unwrap();
    assert_eq!(read.traceparent.as_deref(), Some(TRACEPARENT));

    let mut other_user = task.clone();
    other_user.id = Uuid::new_v4();
    other_user.principal = Principal::new("user-2");
    let other = store.enqueue(other_user).await.unwrap();
    assert!(other.created, "keys are per user");
    assert_ne!(other.task.id, first.task.id);

    let listed = store
        .list_tasks(&TaskFilter {
            agent_id: Some(agent.clone()),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|t| t.id).collect::<Vec<_>>(),
        [other.task.id, first.task.id],
        "newest first"
    );
    let mine = store
        .list_tasks(&TaskFilter {
            agent_id: Some(agent.clone()),
            user_id: Some("user-2".into()),
            status: Some(TaskStatus::Queued),
            parent_id: None,
            limit: Some(10),
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert!(store.queue_depth().await.unwrap() >= 2);
    assert_eq!(
        store.get_task(first.task.id).await.unwrap().status,
        TaskStatus::Queued
    );
    assert_category(
        store.get_task(Uuid::new_v4()).await,
        ErrorCategory::NotFound,
    );
}

/// Each bound of [`NewTask::check`]: the limit is accepted, the limit + 1 is a validation error
/// at the field's pointer, and nothing is stored.
pub async fn enqueue_enforces_the_task_bounds(store: Arc<dyn Store>) {
    use capecontrol_core::store::{
        MAX_IDEMPOTENCY_KEY_BYTES, MAX_TASK_NAME_BYTES, MAX_USER_AGENT_BYTES, MAX_USER_ID_BYTES,
    };
    let agent = fresh_agent(&store).await;
    type Set = fn(&mut NewTask, usize);
    let bounds: [(&str, usize, Set); 4] = [
        ("/idempotency_key", MAX_IDEMPOTENCY_KEY_BYTES, |t, n| {
            t.idempotency_key = Some(format!("{}{}", t.id.simple(), "k".repeat(n - 32)));
        }),
        ("/task", MAX_TASK_NAME_BYTES, |t, n| t.task = "t".repeat(n)),
        ("/principal/user_id", MAX_USER_ID_BYTES, |t, n| {
            t.principal.user_id = "u".repeat(n);
        }),
        ("/principal/user_agent", MAX_USER_AGENT_BYTES, |t, n| {
            // Multi-byte characters: the bound is in bytes.
            t.principal.user_agent = Some(format!("{}{}", "é".repeat(n / 2), "a".repeat(n % 2)));
            assert_eq!(t.principal.user_agent.as_ref().unwrap().len(), n);
        }),
    ];
    for (pointer, max, set) in bounds {
        let mut ok = new_task(&agent);
        set(&mut ok, max);
        let id = ok.id;
        assert!(
            store.enqueue(ok).await.unwrap().created,
            "{pointer} at its limit"
        );
        let mut over = new_task(&agent);
        set(&mut over, max + 1);
        let over_id = over.id;
        let e = store.enqueue(over).await.unwrap_err();
        assert_eq!(e.category(), ErrorCategory::Validation, "{pointer}: {e}");
        assert_eq!(e.category().http_status(), 400);
        let pointers: Vec<_> = e.field_errors().iter().map(|f| f.pointer.clone()).collect();
        assert_eq!(pointers, vec![pointer.to_owned()]);
        assert!(
            !e.to_string().contains("kkkkkkkk"),
            "never echoes the value"
        );
        assert_category(store.get_task(over_id).await, ErrorCategory::NotFound);
        store.get_task(id).await.unwrap();
    }
}

/// Claims take due tasks only, by priority (higher first) then age.
pub async fn claim_by_priority_age_and_run_at(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let mut ids = Vec::new();
    for (priority, delay) in [(0, None), (5, None), (1, None), (9, Some(3600)), (5, None)] {
        let mut t = new_task(&agent);
        t.priority = priority;
        t.run_at = delay.map(|s| Utc::now() + chrono::Duration::seconds(s));
        if delay.is_none() {
            t.run_at = Some(Utc::now() - chrono::Duration::seconds(1));
        }
        ids.push(store.enqueue(t).await.unwrap().task.id);
    }
    let mut order = Vec::new();
    loop {
        let claimed = store.claim(&claim_request("w1", &agent, 1)).await.unwrap();
        let Some(c) = claimed.into_iter().next() else {
            break;
        };
        assert_eq!(c.task.status, TaskStatus::Running);
        assert_eq!(c.task.attempts, 1);
        assert_eq!(c.task.lease_owner.as_deref(), Some("w1"));
        assert_eq!(c.lease.owner, "w1");
        order.push(c.task.id);
    }
    assert_eq!(
        order,
        [ids[1], ids[4], ids[2], ids[0]],
        "priority, then age; the future task is not due"
    );
    assert_eq!(
        store.get_task(ids[3]).await.unwrap().status,
        TaskStatus::Queued
    );
    let other_agent = store
        .claim(&ClaimRequest {
            agents: Some(vec![unique("nobody")]),
            ..claim_request("w1", &agent, 10)
        })
        .await
        .unwrap();
    assert!(other_agent.is_empty());
}

/// A heartbeat extends the lease past its first expiry; reclaim leaves the task alone.
pub async fn heartbeat_extends_the_lease(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    assert_eq!(c.lease.task_id, id);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let hb = store.heartbeat(&c.lease, SHORT_LEASE).await.unwrap();
        assert!(!hb.cancel_requested);
        assert!(hb.expires_at > c.lease.expires_at - chrono::Duration::seconds(1));
    }
    let hb = store
        .heartbeat(&c.lease, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(hb.expires_at > Utc::now() + chrono::Duration::seconds(20));
    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(100)).await;
    assert!(!store.reclaim_expired().await.unwrap().contains(&id));
    let done = store.finish(&c.lease, completed(json!(1))).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
}

/// After the lease is lost (expired and reclaimed, then claimed by another worker), the stale
/// worker's heartbeat, journal, finish and release are conflicts and change nothing.
pub async fn fencing_after_lease_loss(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let stale = claim_one(&store, "w1", &agent).await;
    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(150)).await;
    let reclaimed = store.reclaim_expired().await.unwrap();
    assert!(reclaimed.contains(&id));
    let task = store.get_task(id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Queued, "requeued: attempts remain");
    assert_eq!(task.attempts, 1);
    assert!(task.lease_owner.is_none());
    assert!(task.error_message.is_some());
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(kinds(&events), ["queued", "started", "retrying"]);
    let audit = store
        .list_audit(&AuditFilter {
            task_id: Some(id),
            event_type: Some("task.retrying".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "a reclaim writes a task.retrying audit row");
    assert_eq!(audit[0].payload["reason"], json!("lease_expired"));
    assert_eq!(audit[0].payload["worker"], json!("w1"));
    assert_eq!(audit[0].payload["attempt"], json!(1));

    let stale_calls = |store: Arc<dyn Store>, lease: capecontrol_core::store::Lease| async move {
        assert_category(
            store.heartbeat(&lease, SHORT_LEASE).await,
            ErrorCategory::Conflict,
        );
        let step = StepRecord {
            step: 1,
            name: "stale".into(),
            status: RunStatus::Completed,
            output: Some(json!("stale")),
            error: None,
            started_at: None,
            finished_at: None,
        };
        assert_category(
            store
                .journal(
                    &lease,
                    JournalWrite {
                        step: Some(step),
                        events: Vec::new(),
                        audit: Vec::new(),
                    },
                )
                .await,
            ErrorCategory::Conflict,
        );
        assert_category(
            store.finish(&lease, completed(json!("stale"))).await,
            ErrorCategory::Conflict,
        );
        assert_category(
            store.release(&lease, Vec::new(), Vec::new()).await,
            ErrorCategory::Conflict,
        );
    };

    // Lost and not yet claimed again.
    let before = store.get_task(id).await.unwrap();
    stale_calls(store.clone(), stale.lease.clone()).await;
    assert_eq!(store.get_task(id).await.unwrap(), before);
    assert!(store.steps(id).await.unwrap().is_empty());

    // Claimed again, by the same worker name even: a new token; the stale one still changes
    // nothing.
    let fresh = claim_one(&store, "w1", &agent).await;
    assert_eq!(fresh.task.id, id);
    assert_eq!(fresh.task.attempts, 2);
    assert_ne!(fresh.lease.token, stale.lease.token);
    let before = store.get_task(id).await.unwrap();
    let events_before = store.events(id, 0).await.unwrap();
    stale_calls(store.clone(), stale.lease.clone()).await;
    assert_eq!(store.get_task(id).await.unwrap(), before);
    assert_eq!(store.events(id, 0).await.unwrap(), events_before);
    assert!(store.steps(id).await.unwrap().is_empty());

    // The holder of the lease finishes.
    let done = store
        .finish(&fresh.lease, completed(json!("fresh")))
        .await
        .unwrap();
    assert_eq!(done.output, Some(json!("fresh")));
    // Finished: the lease is gone for the holder too.
    assert_category(
        store.finish(&fresh.lease, completed(json!(2))).await,
        ErrorCategory::Conflict,
    );
    assert_category(
        store.heartbeat(&fresh.lease, SHORT_LEASE).await,
        ErrorCategory::Conflict,
    );
}

/// A task whose lease expires on its last attempt fails for good.
pub async fn reclaim_fails_when_no_attempt_is_left(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let mut t = new_task(&agent);
    t.max_attempts = 1;
    let id = store.enqueue(t).await.unwrap().task.id;
    let _c = claim_one(&store, "w1", &agent).await;
    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(150)).await;
    assert!(store.reclaim_expired().await.unwrap().contains(&id));
    let task = store.get_task(id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    assert!(task.error.is_some());
    assert!(task.error_message.is_some());
    assert!(task.completed_at.is_some());
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(kinds(&events), ["queued", "started", "failed"]);
    let audit = store
        .list_audit(&AuditFilter {
            task_id: Some(id),
            event_type: Some("task.failed".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        audit.len(),
        1,
        "a final reclaim writes a task.failed audit row"
    );
    assert_eq!(audit[0].payload["reason"], json!("lease_expired"));
    assert!(!store.reclaim_expired().await.unwrap().contains(&id));
}

/// At most `concurrency_limit` tasks of one agent run at once, across claims and workers.
pub async fn concurrency_limit_per_agent(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    for _ in 0..5 {
        let mut t = new_task(&agent);
        t.concurrency_limit = 2;
        store.enqueue(t).await.unwrap();
    }
    let first = store.claim(&claim_request("w1", &agent, 10)).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(
        store
            .claim(&claim_request("w2", &agent, 10))
            .await
            .unwrap()
            .is_empty(),
        "the limit holds across workers"
    );
    store
        .finish(&first[0].lease, completed(json!(1)))
        .await
        .unwrap();
    let next = store.claim(&claim_request("w2", &agent, 10)).await.unwrap();
    assert_eq!(next.len(), 1);
    let running = store
        .list_tasks(&TaskFilter {
            agent_id: Some(agent.clone()),
            status: Some(TaskStatus::Running),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 2);
}

/// `claimers` concurrent claim loops over `tasks` tasks: every task is claimed exactly once.
pub async fn concurrent_claimers_never_share_a_task(
    store: Arc<dyn Store>,
    claimers: usize,
    tasks: usize,
) {
    let agent = fresh_agent(&store).await;
    let mut expected = HashSet::new();
    for _ in 0..tasks {
        let mut t = new_task(&agent);
        t.concurrency_limit = u32::try_from(tasks * 2).unwrap_or(u32::MAX);
        expected.insert(store.enqueue(t).await.unwrap().task.id);
    }
    let mut handles = Vec::new();
    for w in 0..claimers {
        let store = store.clone();
        let agent = agent.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store
                    .claim(&ClaimRequest {
                        worker: format!("w{w}"),
                        limit: 1 + w % 4,
                        lease: Duration::from_secs(60),
                        agents: Some(vec![agent.clone()]),
                    })
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    break;
                }
                for c in claimed {
                    mine.push(c.task.id);
                    store.finish(&c.lease, completed(json!(w))).await.unwrap();
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let distinct: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "a task was claimed twice");
    assert_eq!(distinct, expected, "every task was claimed");
    let left = store
        .list_tasks(&TaskFilter {
            agent_id: Some(agent),
            status: Some(TaskStatus::Queued),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert!(left.is_empty());
}

/// A claim reads the attempt's registry rows with the task (`Claimed::catalog`), as
/// `version_status` and `get_installation` answer at that moment: the version's status, the
/// user's installation, and `None` for one that does not exist (uninstalled after the
/// submission: the attempt's checks then refuse it as they would after reading it). The
/// contract lets a store leave the catalog out (the worker then reads it); both stores of this
/// workspace read it, and this case holds them to it.
pub async fn the_claim_reads_the_attempt_s_catalog(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let now = Utc::now();
    let installed = store
        .upsert_installation(InstallationRecord {
            id: Uuid::new_v4(),
            agent_id: agent.clone(),
            user_id: "user-1".into(),
            version: "1.0.0".into(),
            granted_scopes: vec!["chat:send".into()],
            settings: json!({ "token": "s3cret", "n": 2 }),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    store.enqueue(new_task(&agent)).await.unwrap();
    let c = claim_one(&store, "w1", &agent).await;
    let catalog = c.catalog.expect("the claim reads the catalog");
    assert_eq!(catalog.version_status, Some(VersionStatus::Published));
    assert_eq!(catalog.installation.as_deref(), Some(&installed));

    // Not installed, and the version archived: both absent or as the registry says.
    store.delete_installation(&agent, "user-1").await.unwrap();
    store
        .set_version_status(
            &agent,
            "1.0.0",
            VersionStatus::Published,
            VersionStatus::Archived,
        )
        .await
        .unwrap();
    store.enqueue(new_task(&agent)).await.unwrap();
    let c = claim_one(&store, "w1", &agent).await;
    let catalog = c.catalog.expect("the claim reads the catalog");
    assert_eq!(catalog.version_status, Some(VersionStatus::Archived));
    assert_eq!(catalog.installation, None);
}
