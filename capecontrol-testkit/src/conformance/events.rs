//! Event cases: numbering without gaps, refused misnumbered writes, timestamp precision.

use super::helpers::*;

/// Events: per task, from 1, without gaps; the worker numbers its own after `last_seq`, the
/// store its lifecycle events after those; committed events reach subscribers; steps are
/// journaled by number.
pub async fn events_are_numbered_without_gaps(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let mut live = store.subscribe();
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    assert_eq!(c.last_seq, 2, "queued, started");
    assert!(c.steps.is_empty());

    let mut seq = c.last_seq;
    let mut next = |kind| {
        seq += 1;
        event(id, seq, kind)
    };
    let started = next(TaskEventKind::StepStarted {
        step: 1,
        name: "ingest".into(),
    });
    store.publish(started.clone()).await.unwrap();
    let step = StepRecord {
        step: 1,
        name: "ingest".into(),
        status: RunStatus::Completed,
        output: Some(json!([1, 2, 3])),
        error: None,
        // Microseconds: what the stores keep (see `timestamps_are_kept_to_the_microsecond`).
        started_at: Some(Utc::now().trunc_subsecs(6)),
        finished_at: Some(Utc::now().trunc_subsecs(6)),
    };
    let step_done = next(TaskEventKind::StepCompleted {
        step: 1,
        name: "ingest".into(),
    });
    store
        .journal(
            &c.lease,
            JournalWrite {
                step: Some(step.clone()),
                events: vec![started, step_done],
                audit: vec![NewAuditEvent {
                    event_type: "tool.called".into(),
                    payload: json!({ "tool": "ingest" }),
                    ..NewAuditEvent::default()
                }],
            },
        )
        .await
        .unwrap();
    assert_eq!(store.steps(id).await.unwrap(), [step]);
    let tool = next(TaskEventKind::ToolCalled {
        tool: "report".into(),
        allowed: true,
    });
    store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Completed { output: json!(6) },
                steps: Vec::new(),
                events: vec![tool],
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();

    let events = store.events(id, 0).await.unwrap();
    assert_eq!(seqs(&events), [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        kinds(&events),
        [
            "queued",
            "started",
            "step_started",
            "step_completed",
            "tool_called",
            "completed"
        ]
    );
    assert!(events.iter().all(|e| e.task_id == id));
    assert_eq!(seqs(&store.events(id, 4).await.unwrap()), [5, 6]);
    assert!(store.events(id, 6).await.unwrap().is_empty());

    // Subscribers saw every committed event (and the live one), in order per task.
    let mut seen: Vec<u64> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains(&6) {
        match tokio::time::timeout_at(deadline, live.recv()).await {
            Ok(Ok(e)) if e.task_id == id => seen.push(e.seq),
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("subscription closed: {e}"),
            Err(_) => panic!("timed out waiting for events; saw {seen:?}"),
        }
    }
    seen.dedup();
    let mut unique_seen = seen.clone();
    unique_seen.sort_unstable();
    unique_seen.dedup();
    assert_eq!(unique_seen, [1, 2, 3, 4, 5, 6]);
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "in order per task: {seen:?}"
    );
}

/// The `queued` event names the trigger that started the task ([`NewTask::trigger`]), as stored
/// and as broadcast; a task enqueued without one has a bare `{"type": "queued"}`; an idempotent
/// re-enqueue with another trigger changes nothing; a released task's second `queued` carries
/// none.
pub async fn the_queued_event_carries_the_trigger(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let mut live = store.subscribe();
    let instant = Utc::now().trunc_subsecs(0);
    let schedule = TriggerSource::Schedule {
        schedule: "0 */6 * * *".into(),
        instant,
        missed: 2,
    };
    let triggered = NewTask {
        idempotency_key: Some(unique("schedule")),
        trigger: Some(schedule.clone()),
        ..new_task(&agent)
    };
    let id = store.enqueue(triggered.clone()).await.unwrap().task.id;
    let plain = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let webhook = TriggerSource::Webhook {
        path: "/payments/{id}".into(),
        delivery_id: "d-1".into(),
    };
    let hooked = store
        .enqueue(NewTask {
            trigger: Some(webhook.clone()),
            ..new_task(&agent)
        })
        .await
        .unwrap()
        .task
        .id;

    let queued = |trigger: Option<TriggerSource>| TaskEventKind::Queued { trigger };
    let stored = store.events(id, 0).await.unwrap();
    assert_eq!(seqs(&stored), [1]);
    assert_eq!(stored[0].kind, queued(Some(schedule.clone())));
    assert_eq!(
        serde_json::to_value(&stored[0].kind).unwrap(),
        json!({"type": "queued", "trigger": {"kind": "schedule", "schedule": "0 */6 * * *",
               "instant": instant, "missed": 2}})
    );
    assert_eq!(
        store.events(hooked, 0).await.unwrap()[0].kind,
        queued(Some(webhook.clone()))
    );
    let bare = store.events(plain, 0).await.unwrap();
    assert_eq!(bare[0].kind, queued(None));
    assert_eq!(
        serde_json::to_value(&bare[0].kind).unwrap(),
        json!({"type": "queued"})
    );

    // The same key again, with another trigger: the first task and its event, unchanged.
    let again = store
        .enqueue(NewTask {
            id: Uuid::new_v4(),
            trigger: Some(webhook),
            ..triggered
        })
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.task.id, id);
    assert_eq!(store.events(id, 0).await.unwrap(), stored);

    // Subscribers got the trigger with the event.
    let mut heard: Vec<TaskEvent> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while heard.len() < 2 {
        match tokio::time::timeout_at(deadline, live.recv()).await {
            Ok(Ok(e)) if (e.task_id == id || e.task_id == plain) && e.seq == 1 => heard.push(e),
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("subscription closed: {e}"),
            Err(_) => panic!("timed out waiting for the queued events; heard {heard:?}"),
        }
    }
    for e in &heard {
        let expected = if e.task_id == id {
            queued(Some(schedule.clone()))
        } else {
            queued(None)
        };
        assert_eq!(e.kind, expected);
    }

    // Released (claimed, then given back): the second `queued` names no trigger.
    let c = store
        .claim(&claim_request("w1", &agent, 3))
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.task.id == id)
        .expect("the triggered task is claimed");
    store
        .release(&c.lease, Vec::new(), Vec::new())
        .await
        .unwrap();
    let after = store.events(id, 0).await.unwrap();
    assert_eq!(kinds(&after), ["queued", "started", "queued"]);
    assert_eq!(after[0].kind, queued(Some(schedule)));
    assert_eq!(after[2].kind, queued(None));
}

/// A fenced write whose events do not continue the task's sequence is a conflict (a gap inside
/// the batch, or another task's event, a validation error) and writes nothing: no event, no
/// step, no state change.
pub async fn misnumbered_events_change_nothing(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    let tool = || TaskEventKind::ToolCalled {
        tool: "t".into(),
        allowed: true,
    };
    let step = StepRecord {
        step: 1,
        name: "s".into(),
        status: RunStatus::Completed,
        output: Some(json!(1)),
        error: None,
        started_at: None,
        finished_at: None,
    };
    let write = |events: Vec<TaskEvent>| JournalWrite {
        step: Some(step.clone()),
        events,
        audit: Vec::new(),
    };
    let next = c.last_seq + 1;
    assert_category(
        store
            .journal(&c.lease, write(vec![event(id, next + 1, tool())]))
            .await,
        ErrorCategory::Conflict,
    );
    assert_category(
        store
            .journal(&c.lease, write(vec![event(id, c.last_seq, tool())]))
            .await,
        ErrorCategory::Conflict,
    );
    assert_category(
        store
            .journal(
                &c.lease,
                write(vec![event(id, next, tool()), event(id, next + 2, tool())]),
            )
            .await,
        ErrorCategory::Validation,
    );
    assert_category(
        store
            .journal(&c.lease, write(vec![event(Uuid::new_v4(), next, tool())]))
            .await,
        ErrorCategory::Validation,
    );
    assert_category(
        store
            .finish(
                &c.lease,
                Finish {
                    outcome: Outcome::Completed { output: json!(1) },
                    steps: Vec::new(),
                    events: vec![event(id, next + 5, tool())],
                    audit: Vec::new(),
                },
            )
            .await,
        ErrorCategory::Conflict,
    );
    assert_eq!(seqs(&store.events(id, 0).await.unwrap()), [1, 2]);
    assert!(store.steps(id).await.unwrap().is_empty());
    assert_eq!(
        store.get_task(id).await.unwrap().status,
        TaskStatus::Running
    );
    // The lease still holds: a correctly numbered write goes through.
    store
        .journal(&c.lease, write(vec![event(id, next, tool())]))
        .await
        .unwrap();
    assert_eq!(seqs(&store.events(id, 0).await.unwrap()), [1, 2, 3]);
}

/// Timestamps are kept to the microsecond (PostgreSQL's resolution): what a write returns, what
/// is read back and what subscribers see are equal.
pub async fn timestamps_are_kept_to_the_microsecond(store: Arc<dyn Store>) {
    use chrono::Timelike;
    let fine = |t: chrono::DateTime<Utc>| {
        t.with_nanosecond(t.nanosecond() / 1000 * 1000 + 789)
            .unwrap()
    };
    let agent = fresh_agent(&store).await;
    let mut t = new_task(&agent);
    let run_at = fine(Utc::now() - chrono::Duration::seconds(1));
    t.run_at = Some(run_at);
    let enqueued = store.enqueue(t).await.unwrap().task;
    assert_eq!(enqueued.run_at, run_at.trunc_subsecs(6));
    assert_eq!(store.get_task(enqueued.id).await.unwrap(), *enqueued);

    let c = claim_one(&store, "w1", &agent).await;
    let at = fine(Utc::now());
    let step = StepRecord {
        step: 1,
        name: "s".into(),
        status: RunStatus::Completed,
        output: None,
        error: None,
        started_at: Some(at),
        finished_at: Some(at),
    };
    let e = event(
        c.task.id,
        c.last_seq + 1,
        TaskEventKind::StepCompleted {
            step: 1,
            name: "s".into(),
        },
    );
    let e = TaskEvent { at, ..e };
    store
        .journal(
            &c.lease,
            JournalWrite {
                step: Some(step),
                events: vec![e],
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    let steps = store.steps(c.task.id).await.unwrap();
    assert_eq!(steps[0].started_at, Some(at.trunc_subsecs(6)));
    assert_eq!(steps[0].finished_at, Some(at.trunc_subsecs(6)));
    let events = store.events(c.task.id, c.last_seq).await.unwrap();
    assert_eq!(events[0].at, at.trunc_subsecs(6));
    let done = store.finish(&c.lease, completed(json!(1))).await.unwrap();
    assert_eq!(store.get_task(c.task.id).await.unwrap(), *done);

    let mut agent_record = agent_record(&unique("micro"), "Micro");
    agent_record.created_at = fine(agent_record.created_at);
    let inserted = store.insert_agent(agent_record.clone()).await.unwrap();
    assert_eq!(
        inserted.created_at,
        agent_record.created_at.trunc_subsecs(6)
    );
    assert_eq!(store.get_agent(&inserted.id).await.unwrap(), inserted);
}
