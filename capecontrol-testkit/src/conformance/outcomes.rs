//! Outcome cases: finish, release, their step rows, and cancellation.

use super::helpers::*;

/// Finish: completed; failed with a retry (queued again at `retry_at`, error kept); failed for
/// good; cancelled. A final task cannot be finished again.
pub async fn finish_outcomes(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;

    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    let done = store
        .finish(&c.lease, completed(json!({ "ok": true })))
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.output, Some(json!({ "ok": true })));
    assert!(done.completed_at.is_some());
    assert!(done.lease_owner.is_none());
    assert_eq!(store.get_task(id).await.unwrap(), *done);

    // Failed with a retry in the future: queued, not due.
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    let retry_at = Utc::now() + chrono::Duration::seconds(3600);
    let error = Error::agent("boom");
    let retried = store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Failed {
                    error: error.clone(),
                    retry_at: Some(retry_at),
                },
                steps: Vec::new(),
                events: Vec::new(),
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(retried.status, TaskStatus::Queued);
    assert_eq!(retried.error, Some(error.clone()));
    assert_eq!(retried.error_message, Some(error.to_string()));
    assert!(
        (retried.run_at - retry_at).num_milliseconds().abs() < 5,
        "run_at is retry_at"
    );
    assert!(
        store
            .claim(&claim_request("w1", &agent, 10))
            .await
            .unwrap()
            .is_empty()
    );
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(kinds(&events), ["queued", "started", "retrying"]);

    // Failed with a retry now: claimed again as attempt 2, then failed for good.
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Failed {
                    error: Error::resource("timeout"),
                    retry_at: Some(Utc::now() - chrono::Duration::seconds(1)),
                },
                steps: Vec::new(),
                events: Vec::new(),
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    let c = claim_one(&store, "w1", &agent).await;
    assert_eq!((c.task.id, c.task.attempts), (id, 2));
    let failed = store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Failed {
                    error: Error::validation("bad input", Vec::new()),
                    retry_at: None,
                },
                steps: Vec::new(),
                events: Vec::new(),
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(
        failed.error.as_ref().map(Error::category),
        Some(ErrorCategory::Validation)
    );
    assert!(failed.error_message.is_some());
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(
        kinds(&events),
        ["queued", "started", "retrying", "started", "failed"]
    );

    // Cancelled by the worker.
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    let cancelled = store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Cancelled,
                steps: Vec::new(),
                events: Vec::new(),
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(
        kinds(&store.events(id, 0).await.unwrap()),
        ["queued", "started", "cancelled"]
    );
}

/// Release puts a running task back without counting the attempt.
pub async fn release_does_not_count_the_attempt(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let mut wakeups = store.wakeups();
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    while wakeups.try_recv().is_ok() {}
    store
        .release(&c.lease, Vec::new(), Vec::new())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), wakeups.recv())
        .await
        .expect("a release wakes the workers")
        .unwrap();
    let task = store.get_task(id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Queued);
    assert_eq!(task.attempts, 0);
    assert!(task.lease_owner.is_none());
    assert_category(
        store.heartbeat(&c.lease, SHORT_LEASE).await,
        ErrorCategory::Conflict,
    );
    let again = claim_one(&store, "w2", &agent).await;
    assert_eq!((again.task.id, again.task.attempts), (id, 1));
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(seqs(&events), (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(events.last().map(|e| e.kind.name()), Some("started"));
}

fn step_row(step: u32, output: Value) -> StepRecord {
    let now = Utc::now().trunc_subsecs(6);
    StepRecord {
        step,
        name: format!("step-{step}"),
        status: RunStatus::Completed,
        output: Some(output),
        error: None,
        started_at: Some(now),
        finished_at: Some(now),
    }
}

/// A finish or release carrying step rows writes them with its events and outcome in one
/// transaction; a stale lease's or a misnumbered one writes nothing.
pub async fn finish_and_release_write_steps_atomically(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;

    // Finish with two steps (one replacing an earlier row of the same step) and their events.
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    store
        .journal(
            &c.lease,
            JournalWrite {
                step: Some(step_row(1, json!("first"))),
                events: Vec::new(),
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    let steps = vec![step_row(1, json!("one")), step_row(2, json!("two"))];
    let n = c.last_seq;
    let started = |seq, step| {
        event(
            id,
            seq,
            TaskEventKind::StepStarted {
                step,
                name: format!("step-{step}"),
            },
        )
    };
    let done = |seq, step| {
        event(
            id,
            seq,
            TaskEventKind::StepCompleted {
                step,
                name: format!("step-{step}"),
            },
        )
    };
    let task = store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Completed { output: json!(2) },
                steps: steps.clone(),
                events: vec![started(n + 1, 2), done(n + 2, 2)],
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(store.steps(id).await.unwrap(), steps);
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(
        kinds(&events),
        [
            "queued",
            "started",
            "step_started",
            "step_completed",
            "completed"
        ]
    );
    assert_eq!(seqs(&events), (1..=5).collect::<Vec<_>>());

    // A stale lease (expired and reclaimed) finishes or releases with steps: nothing written.
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let stale = claim_one(&store, "w1", &agent).await;
    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(150)).await;
    assert!(store.reclaim_expired().await.unwrap().contains(&id));
    let before = store.get_task(id).await.unwrap();
    let events_before = store.events(id, 0).await.unwrap();
    let n = stale.last_seq;
    let stale_finish = Finish {
        outcome: Outcome::Completed { output: json!(1) },
        steps: vec![step_row(1, json!("stale"))],
        events: vec![event(
            id,
            n + 1,
            TaskEventKind::StepCompleted {
                step: 1,
                name: "step-1".into(),
            },
        )],
        audit: Vec::new(),
    };
    assert_category(
        store.finish(&stale.lease, stale_finish.clone()).await,
        ErrorCategory::Conflict,
    );
    assert_category(
        store
            .release(
                &stale.lease,
                stale_finish.events.clone(),
                stale_finish.steps.clone(),
            )
            .await,
        ErrorCategory::Conflict,
    );
    assert_eq!(store.get_task(id).await.unwrap(), before);
    assert_eq!(store.events(id, 0).await.unwrap(), events_before);
    assert!(store.steps(id).await.unwrap().is_empty());

    // The holder's misnumbered finish with steps writes nothing either.
    let fresh = claim_one(&store, "w2", &agent).await;
    assert_eq!(fresh.task.id, id);
    let misnumbered = Finish {
        outcome: Outcome::Completed { output: json!(1) },
        steps: vec![step_row(1, json!("early"))],
        events: vec![event(
            id,
            fresh.last_seq + 2,
            TaskEventKind::StepCompleted {
                step: 1,
                name: "step-1".into(),
            },
        )],
        audit: Vec::new(),
    };
    assert_category(
        store.finish(&fresh.lease, misnumbered).await,
        ErrorCategory::Conflict,
    );
    assert!(store.steps(id).await.unwrap().is_empty());

    // A release with a step: written with the release, the attempt not counted.
    let row = step_row(1, json!("kept"));
    store
        .release(
            &fresh.lease,
            vec![event(
                id,
                fresh.last_seq + 1,
                TaskEventKind::StepCompleted {
                    step: 1,
                    name: "step-1".into(),
                },
            )],
            vec![row.clone()],
        )
        .await
        .unwrap();
    assert_eq!(store.steps(id).await.unwrap(), vec![row]);
    let task = store.get_task(id).await.unwrap();
    assert_eq!((task.status, task.attempts), (TaskStatus::Queued, 1));
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(seqs(&events), (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        events
            .iter()
            .rev()
            .take(2)
            .map(|e| e.kind.name())
            .collect::<Vec<_>>(),
        ["queued", "step_completed"]
    );
}

/// Cancel: a queued task at once; a running one by a flag its worker learns from a heartbeat;
/// a final task is a conflict.
pub async fn cancel_queued_and_running(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let admin = Principal::new("admin-1");

    let queued = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let t = store.cancel(queued, &admin).await.unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert_eq!(
        kinds(&store.events(queued, 0).await.unwrap()),
        ["queued", "cancelled"]
    );
    assert!(
        store
            .claim(&claim_request("w1", &agent, 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_category(store.cancel(queued, &admin).await, ErrorCategory::Conflict);
    assert_category(
        store.cancel(Uuid::new_v4(), &admin).await,
        ErrorCategory::NotFound,
    );

    let running = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    let t = store.cancel(running, &admin).await.unwrap();
    assert_eq!(t.status, TaskStatus::Running);
    assert!(t.cancel_requested);
    let hb = store.heartbeat(&c.lease, SHORT_LEASE).await.unwrap();
    assert!(hb.cancel_requested);
    let done = store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Cancelled,
                steps: Vec::new(),
                events: Vec::new(),
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Cancelled);
    assert_category(store.cancel(running, &admin).await, ErrorCategory::Conflict);
    let audit = store
        .list_audit(&AuditFilter {
            task_id: Some(queued),
            event_type: Some("task.cancelled".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].user_id.as_deref(), Some("admin-1"));
}

/// A task whose cancellation was requested while it ran is cancelled, not requeued, when its
/// worker releases it or when its lease expires and it is reclaimed.
pub async fn cancel_requested_ends_the_task_on_release_or_reclaim(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let admin = Principal::new("admin-1");
    let released = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let reclaimed = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let claimed = store.claim(&claim_request("w1", &agent, 2)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    store.cancel(released, &admin).await.unwrap();
    store.cancel(reclaimed, &admin).await.unwrap();
    let lease = |id: Uuid| {
        claimed
            .iter()
            .find(|c| c.task.id == id)
            .map(|c| c.lease.clone())
            .unwrap()
    };

    store
        .release(&lease(released), Vec::new(), Vec::new())
        .await
        .unwrap();
    let t = store.get_task(released).await.unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert!(t.completed_at.is_some());
    assert!(t.lease_owner.is_none());
    assert_eq!(
        kinds(&store.events(released, 0).await.unwrap()),
        ["queued", "started", "cancelled"]
    );

    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(150)).await;
    assert!(store.reclaim_expired().await.unwrap().contains(&reclaimed));
    let t = store.get_task(reclaimed).await.unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert!(t.completed_at.is_some());
    assert_eq!(
        kinds(&store.events(reclaimed, 0).await.unwrap()),
        ["queued", "started", "cancelled"]
    );
    for id in [released, reclaimed] {
        let audit = store
            .list_audit(&AuditFilter {
                task_id: Some(id),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let types: Vec<&str> = audit.iter().map(|a| a.event_type.as_str()).collect();
        assert_eq!(types.last().copied(), Some("task.cancelled"), "{types:?}");
    }
    assert!(
        store
            .claim(&claim_request("w2", &agent, 10))
            .await
            .unwrap()
            .is_empty(),
        "nothing was requeued"
    );
}

/// A cancel requested while a task runs ends it `cancelled` when its attempt finishes with a
/// retry or a failure (timed out, say); a completion that got there first stays completed.
/// Either way exactly one terminal state, the same in the row, the events and the audit rows.
pub async fn cancel_requested_wins_over_a_retry_or_a_failure_not_a_completion(
    store: Arc<dyn Store>,
) {
    let agent = fresh_agent(&store).await;
    let admin = Principal::new("admin-1");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(store.enqueue(new_task(&agent)).await.unwrap().task.id);
    }
    let claimed = store.claim(&claim_request("w1", &agent, 3)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    for id in &ids {
        let t = store.cancel(*id, &admin).await.unwrap();
        assert!(t.cancel_requested);
        assert_eq!(t.status, TaskStatus::Running);
    }
    let lease = |id: Uuid| {
        claimed
            .iter()
            .find(|c| c.task.id == id)
            .map(|c| c.lease.clone())
            .unwrap()
    };
    let failed = |retry_at| Finish {
        outcome: Outcome::Failed {
            error: Error::resource("attempt timed out"),
            retry_at,
        },
        steps: Vec::new(),
        events: Vec::new(),
        audit: Vec::new(),
    };
    let (retried, failed_for_good, done) = (ids[0], ids[1], ids[2]);
    let at = Utc::now() + chrono::Duration::milliseconds(10);
    let r = store
        .finish(&lease(retried), failed(Some(at)))
        .await
        .unwrap();
    assert_eq!(r.status, TaskStatus::Cancelled);
    let r = store
        .finish(&lease(failed_for_good), failed(None))
        .await
        .unwrap();
    assert_eq!(r.status, TaskStatus::Cancelled);
    let r = store
        .finish(&lease(done), completed(json!("won the race")))
        .await
        .unwrap();
    assert_eq!(r.status, TaskStatus::Completed);

    for (id, status, last_event, last_audit) in [
        (
            retried,
            TaskStatus::Cancelled,
            "cancelled",
            "task.cancelled",
        ),
        (
            failed_for_good,
            TaskStatus::Cancelled,
            "cancelled",
            "task.cancelled",
        ),
        (done, TaskStatus::Completed, "completed", "task.completed"),
    ] {
        let t = store.get_task(id).await.unwrap();
        assert_eq!(t.status, status);
        assert!(t.completed_at.is_some());
        assert!(t.lease_owner.is_none());
        let events = store.events(id, 0).await.unwrap();
        let terminal: Vec<&str> = events
            .iter()
            .filter(|e| e.kind.is_terminal())
            .map(|e| e.kind.name())
            .collect();
        assert_eq!(terminal, [last_event], "{:?}", kinds(&events));
        assert!(!kinds(&events).contains(&"retrying"));
        let audit = store
            .list_audit(&AuditFilter {
                task_id: Some(id),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let types: Vec<&str> = audit.iter().map(|a| a.event_type.as_str()).collect();
        let ends: Vec<&str> = types
            .iter()
            .copied()
            .filter(|t| {
                [
                    "task.completed",
                    "task.failed",
                    "task.cancelled",
                    "task.retrying",
                ]
                .contains(t)
            })
            .collect();
        assert_eq!(ends, [last_audit], "{types:?}");
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        store
            .claim(&claim_request("w2", &agent, 10))
            .await
            .unwrap()
            .is_empty(),
        "nothing was requeued"
    );
}
