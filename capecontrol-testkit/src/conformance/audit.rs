//! Audit cases: the hash chain and its paging, one row for every task state change.

use super::helpers::*;

/// The audit trail is a chain that verifies, whatever wrote the rows; `list_audit` pages by its
/// `after` cursor in chain order, and a limit past [`capecontrol_core::store::MAX_AUDIT_PAGE`] is capped.
pub async fn audit_chain_is_intact_and_pages(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let principal = Principal::new("chain-user")
        .with_ip("2001:db8::7".parse().unwrap())
        .with_user_agent("chain/1.0 \"quoted\"");
    let payloads = [
        json!({ "float": 1.5, "tiny": 1e-7, "big": 1.5e20, "int": -42, "u": u64::MAX }),
        json!({ "text": "é ✓ \u{1} \t \\ \"", "nested": { "bb": [1, {"a": null}], "a": true } }),
        json!(null),
        json!([]),
        json!("plain"),
    ];
    let mut appended = Vec::new();
    for i in 0..25 {
        let e = store
            .append_audit(
                NewAuditEvent::by(
                    &principal,
                    "chain.test",
                    payloads[i % payloads.len()].clone(),
                )
                .agent(agent.clone()),
            )
            .await
            .unwrap();
        assert!(e.seq > 0, "an appended row is chained");
        assert_eq!(
            e.hash,
            capecontrol_core::audit::row_hash(&e),
            "its hash is its content's"
        );
        appended.push(e);
    }
    for pair in appended.windows(2) {
        assert!(pair[1].seq > pair[0].seq, "chain order follows appends");
    }
    // Rows written by the queue's own statements are chained too.
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    store
        .finish(&c.lease, completed(json!(0.25)))
        .await
        .unwrap();
    let report = capecontrol_core::audit::verify_chain(&*store)
        .await
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert!(report.rows >= 28, "{report:?}");
    let head = store.audit_head().await.unwrap();
    assert_eq!(report.last, head);

    // Pages of 10 by the cursor give every row of the agent once, in chain order.
    let all = store
        .list_audit(&AuditFilter {
            agent_id: Some(agent.clone()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(all.iter().any(|e| e.task_id == Some(id)));
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_audit(&AuditFilter {
                agent_id: Some(agent.clone()),
                after,
                limit: Some(10),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert!(page.len() <= 10);
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        AuditFilter {
            limit: Some(usize::MAX),
            ..AuditFilter::default()
        }
        .page_size(),
        capecontrol_core::store::MAX_AUDIT_PAGE
    );
}

/// Every task state change writes one audit event in the same transaction; extra audit events
/// of an enqueue, a journal write or a finish are written with the task.
pub async fn audit_rows_for_every_state_change(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let mut t = new_task(&agent);
    t.principal = Principal::new("auditor")
        .with_ip("10.0.0.7".parse().unwrap())
        .with_user_agent("conformance/1.0");
    t.audit = vec![
        NewAuditEvent::by(
            &t.principal,
            "policy.allowed",
            json!({ "scopes": ["a:read"] }),
        )
        .agent(agent.clone())
        .task(t.id),
    ];
    let id = store.enqueue(t).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Completed { output: json!(1) },
                steps: Vec::new(),
                events: Vec::new(),
                audit: vec![
                    NewAuditEvent {
                        event_type: "moderation.passed".into(),
                        ..NewAuditEvent::default()
                    }
                    .task(id),
                ],
            },
        )
        .await
        .unwrap();
    let rows = store
        .list_audit(&AuditFilter {
            task_id: Some(id),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    let pos = |t: &str| {
        types
            .iter()
            .position(|x| *x == t)
            .unwrap_or_else(|| panic!("no `{t}` audit row in {types:?}"))
    };
    assert!(pos("task.queued") < pos("task.started"));
    assert!(pos("task.started") < pos("task.completed"));
    assert!(
        pos("policy.allowed") < pos("task.queued"),
        "the caller's audit first"
    );
    pos("moderation.passed");
    for extra in ["policy.allowed", "moderation.passed"] {
        let row = &rows[pos(extra)];
        assert_eq!(row.agent_id.as_deref(), Some(agent.as_str()), "{extra}");
    }
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    let queued = &rows[pos("task.queued")];
    assert_eq!(queued.user_id.as_deref(), Some("auditor"));
    assert_eq!(queued.agent_id.as_deref(), Some(agent.as_str()));
    assert_eq!(queued.ip_address, Some("10.0.0.7".parse().unwrap()));
    assert_eq!(queued.user_agent.as_deref(), Some("conformance/1.0"));
    let completed_rows = store
        .list_audit(&AuditFilter {
            agent_id: Some(agent.clone()),
            event_type: Some("task.completed".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(completed_rows.len(), 1);
    let limited = store
        .list_audit(&AuditFilter {
            task_id: Some(id),
            limit: Some(2),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);

    let appended = store
        .append_audit(NewAuditEvent {
            agent_id: Some(agent.clone()),
            event_type: "agent.created".into(),
            payload: json!({ "name": "x" }),
            ..NewAuditEvent::default()
        })
        .await
        .unwrap();
    assert!(appended.id > rows.last().map_or(0, |r| r.id));
    assert_eq!(appended.payload, json!({ "name": "x" }));
}

/// `NewTask::policy_allowed` makes the store write the task's `policy.allowed` row itself,
/// exactly the row the gateway's `NewAuditEvent` of that decision would be (principal, address,
/// user agent, agent, task, payload `{"task", "version"}` in that key order), first of the
/// enqueue's rows: before the caller's audit and `task.queued`. Without it, no such row.
pub async fn the_store_writes_the_policy_decision_it_is_asked_to(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let principal = Principal::new("decided")
        .with_ip("10.1.2.3".parse().unwrap())
        .with_user_agent("policy \"test\"/1.0");
    let triggered = |id: Uuid| {
        NewAuditEvent::by(&principal, "task.triggered", json!({ "by": "schedule" }))
            .agent(agent.clone())
            .task(id)
    };
    // Asked of the store.
    let mut asked = new_task(&agent);
    asked.task = "add \"quoted\"".into();
    asked.principal = principal.clone();
    asked.policy_allowed = true;
    asked.audit = vec![triggered(asked.id)];
    // The row as the caller used to give it.
    let mut given = new_task(&agent);
    given.task = asked.task.clone();
    given.principal = principal.clone();
    given.audit = vec![
        NewAuditEvent::by(
            &principal,
            "policy.allowed",
            json!({ "task": given.task, "version": given.version }),
        )
        .agent(agent.clone())
        .task(given.id),
        triggered(given.id),
    ];
    // Neither.
    let plain = new_task(&agent);
    let mut rows = Vec::new();
    for t in [asked, given, plain] {
        let id = store.enqueue(t).await.unwrap().task.id;
        rows.push(
            store
                .list_audit(&AuditFilter {
                    task_id: Some(id),
                    ..AuditFilter::default()
                })
                .await
                .unwrap(),
        );
    }
    let types = |rows: &[capecontrol_core::store::AuditEvent]| {
        rows.iter()
            .map(|r| r.event_type.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        types(&rows[0]),
        ["policy.allowed", "task.triggered", "task.queued"]
    );
    assert_eq!(types(&rows[0]), types(&rows[1]));
    assert_eq!(types(&rows[2]), ["task.queued"]);
    let (written, expected) = (&rows[0][0], &rows[1][0]);
    assert_eq!(written.user_id.as_deref(), Some("decided"));
    assert_eq!(written.agent_id.as_deref(), Some(agent.as_str()));
    assert_eq!(written.task_id, rows[0][2].task_id);
    assert_eq!(written.ip_address, expected.ip_address);
    assert_eq!(written.user_agent, expected.user_agent);
    assert_eq!(
        (&written.user_id, &written.agent_id, &written.payload),
        (&expected.user_id, &expected.agent_id, &expected.payload)
    );
    // The same text: keys in the same order, which the row's hash covers.
    assert_eq!(
        serde_json::to_string(&written.payload).unwrap(),
        r#"{"task":"add \"quoted\"","version":"1.0.0"}"#
    );
    let report = capecontrol_core::audit::verify_chain(&*store)
        .await
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
}
