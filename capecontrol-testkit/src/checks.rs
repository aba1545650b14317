//! Generic store checks (`check_*`, any [`Store`]): every port method with fixed agent ids
//! (`finance`, `energy`), so each runs on a fresh store. They were written for PostgreSQL and
//! hold for every backend; `MemoryStore` runs them in core's `tests/store_checks.rs`,
//! `PostgresStore` in `capecontrol-store`'s `tests/postgres.rs`.

use std::time::Duration;

use capecontrol_core::events::TaskEventKind;
use capecontrol_core::store::{
    AgentFilter, AgentPatch, AuditFilter, CatalogQuery, CatalogSort, ClaimRequest, Finish,
    InstallationRecord, JournalWrite, NewAuditEvent, Outcome, Store, TaskFilter,
};
use capecontrol_core::{
    AgentStatus, Error, ErrorCategory, Principal, RunStatus, TaskStatus, VersionStatus,
};
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use crate::fixtures::{assert_category, claim_req, ev, register, step, task, version};

/// Agents: insert, conflicts on id and slug, lookups.
pub async fn check_agents<S: Store>(s: &S) {
    let a = s
        .insert_agent(crate::fixtures::agent("finance"))
        .await
        .unwrap();
    assert_eq!(a.id, "finance");
    assert_eq!(a.policy_scopes, ["finance:read"]);
    assert_category(
        s.insert_agent(crate::fixtures::agent("finance")).await,
        ErrorCategory::Conflict,
    );
    let mut dup_slug = crate::fixtures::agent("other");
    dup_slug.slug = "finance".into();
    assert_category(s.insert_agent(dup_slug).await, ErrorCategory::Conflict);

    let mut by_slug = crate::fixtures::agent("energy-id");
    by_slug.slug = "energy".into();
    by_slug.category = Some("utilities".into());
    s.insert_agent(by_slug).await.unwrap();
    assert_eq!(s.get_agent("energy").await.unwrap().id, "energy-id");
    assert_eq!(s.get_agent("energy-id").await.unwrap().slug, "energy");
    assert_category(s.get_agent("nope").await, ErrorCategory::NotFound);

    tokio::time::sleep(Duration::from_millis(5)).await;
    let updated = s
        .update_agent(
            "finance",
            AgentPatch {
                name: Some("Finance Agent".into()),
                status: Some(AgentStatus::Archived),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.name, "Finance Agent");
    assert_eq!(updated.slug, "finance");
    assert_eq!(updated.description, a.description);
    assert_eq!(updated.status, AgentStatus::Archived);
    assert!(updated.updated_at > a.updated_at);
    assert_category(
        s.update_agent("nope", AgentPatch::default()).await,
        ErrorCategory::NotFound,
    );

    let all = s.list_agents(&AgentFilter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["energy-id", "finance"]
    );
    let archived = s
        .list_agents(&AgentFilter {
            status: Some(AgentStatus::Archived),
            category: None,
        })
        .await
        .unwrap();
    assert_eq!(archived.len(), 1);
    let utilities = s
        .list_agents(&AgentFilter {
            status: None,
            category: Some("utilities".into()),
        })
        .await
        .unwrap();
    assert_eq!(utilities[0].id, "energy-id");
}

/// Versions (insert, publish, archive, conflicts) and the catalog (filters, sort, pages).
pub async fn check_versions_and_catalog<S: Store>(s: &S) {
    register(s, "finance").await;
    register(s, "energy").await;
    assert_category(
        s.insert_version(version("ghost", "1.0.0", "chat")).await,
        ErrorCategory::NotFound,
    );
    let v1 = s
        .insert_version(version("finance", "1.0.0", "dashboard"))
        .await
        .unwrap();
    assert_eq!(v1.changelog.as_deref(), Some("release 1.0.0"));
    assert_category(
        s.insert_version(version("finance", "1.0.0", "dashboard"))
            .await,
        ErrorCategory::Conflict,
    );
    s.insert_version(version("finance", "1.1.0", "dashboard"))
        .await
        .unwrap();
    s.insert_version(version("energy", "0.1.0", "chat"))
        .await
        .unwrap();
    let listed = s.list_versions("finance").await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|v| v.version.as_str())
            .collect::<Vec<_>>(),
        ["1.0.0", "1.1.0"]
    );
    assert_eq!(
        s.get_version("finance", "1.1.0").await.unwrap().version,
        "1.1.0"
    );
    assert_category(
        s.get_version("finance", "9.9.9").await,
        ErrorCategory::NotFound,
    );

    let (p, prev) = s.publish_version("finance", "1.0.0").await.unwrap();
    assert_eq!(p.status, VersionStatus::Published);
    assert!(p.published_at.is_some());
    assert!(prev.is_none());
    let agent = s.get_agent("finance").await.unwrap();
    assert_eq!(agent.status, AgentStatus::Published);
    assert_eq!(agent.manifest.as_ref(), Some(&p.manifest));
    // Publishing it again: no longer a draft.
    assert_category(
        s.publish_version("finance", "1.0.0").await,
        ErrorCategory::Conflict,
    );
    let (p2, prev) = s.publish_version("finance", "1.1.0").await.unwrap();
    assert_eq!(p2.version, "1.1.0");
    let prev = prev.expect("the previous published version is archived");
    assert_eq!(prev.version, "1.0.0");
    assert_eq!(prev.status, VersionStatus::Archived);
    assert_category(
        s.publish_version("finance", "7.0.0").await,
        ErrorCategory::NotFound,
    );

    // set_version_status: from must match; illegal transitions are conflicts.
    let arch = s
        .set_version_status(
            "energy",
            "0.1.0",
            VersionStatus::Draft,
            VersionStatus::Archived,
        )
        .await
        .unwrap();
    assert_eq!(arch.status, VersionStatus::Archived);
    assert_category(
        s.set_version_status(
            "energy",
            "0.1.0",
            VersionStatus::Draft,
            VersionStatus::Archived,
        )
        .await,
        ErrorCategory::Conflict,
    );
    assert_category(
        s.set_version_status(
            "energy",
            "0.1.0",
            VersionStatus::Archived,
            VersionStatus::Published,
        )
        .await,
        ErrorCategory::Conflict,
    );

    // Catalog: only published agents, with their published version.
    s.insert_version(version("energy", "0.2.0", "chat"))
        .await
        .unwrap();
    s.publish_version("energy", "0.2.0").await.unwrap();
    let page = s.catalog(&CatalogQuery::default()).await.unwrap();
    assert_eq!(page.total, 2);
    assert_eq!(
        page.items
            .iter()
            .map(|e| (e.agent.id.as_str(), e.version.version.as_str()))
            .collect::<Vec<_>>(),
        [("energy", "0.2.0"), ("finance", "1.1.0")]
    );
    let chat = s
        .catalog(&CatalogQuery {
            placement: Some("chat".into()),
            ..CatalogQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(chat.total, 1);
    assert_eq!(chat.items[0].agent.id, "energy");
    let text = s
        .catalog(&CatalogQuery {
            text: Some("FINANCE".into()),
            ..CatalogQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(text.items.len(), 1);
    let recent = s
        .catalog(&CatalogQuery {
            sort: CatalogSort::RecentlyPublished,
            limit: 1,
            ..CatalogQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(recent.total, 2);
    assert_eq!(recent.items.len(), 1);
    assert_eq!(recent.items[0].agent.id, "energy");
    let past_end = s
        .catalog(&CatalogQuery {
            offset: 10,
            ..CatalogQuery::default()
        })
        .await
        .unwrap();
    assert!(past_end.items.is_empty());
    assert_eq!(past_end.total, 2);
    let none = s
        .catalog(&CatalogQuery {
            category: Some("nothing".into()),
            ..CatalogQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(none.total, 0);
}

/// Installations: upsert, lookups, listing and removal.
pub async fn check_installations<S: Store>(s: &S) {
    register(s, "finance").await;
    register(s, "energy").await;
    let now = Utc::now();
    let inst = InstallationRecord {
        id: Uuid::new_v4(),
        agent_id: "finance".into(),
        user_id: "u1".into(),
        version: "1.0.0".into(),
        granted_scopes: vec!["finance:read".into()],
        settings: json!({ "api_key": "secret" }),
        created_at: now,
        updated_at: now,
    };
    let first = s.upsert_installation(inst.clone()).await.unwrap();
    assert_eq!(first.granted_scopes, ["finance:read"]);
    let mut again = inst.clone();
    again.id = Uuid::new_v4();
    again.version = "1.1.0".into();
    again.granted_scopes = vec!["finance:read".into(), "finance:write".into()];
    let replaced = s.upsert_installation(again).await.unwrap();
    assert_eq!(replaced.version, "1.1.0");
    assert_eq!(replaced.granted_scopes.len(), 2);
    let got = s.get_installation("finance", "u1").await.unwrap();
    assert_eq!(got.version, "1.1.0");
    let mut other = inst.clone();
    other.id = Uuid::new_v4();
    other.agent_id = "energy".into();
    s.upsert_installation(other).await.unwrap();
    assert_eq!(s.list_installations("u1").await.unwrap().len(), 2);
    assert!(s.list_installations("u2").await.unwrap().is_empty());
    s.delete_installation("finance", "u1").await.unwrap();
    assert_category(
        s.get_installation("finance", "u1").await,
        ErrorCategory::NotFound,
    );
    assert_category(
        s.delete_installation("finance", "u1").await,
        ErrorCategory::NotFound,
    );
}

/// Audit rows: the principal's IP and user agent kept, increasing ids, filters by user, agent
/// and event type, the limit.
pub async fn check_audit<S: Store>(s: &S) {
    register(s, "finance").await;
    let p = Principal {
        ip_address: Some("10.1.2.3".parse().unwrap()),
        user_agent: Some("curl/8".into()),
        ..Principal::new("u1")
    };
    let a = s
        .append_audit(NewAuditEvent::by(&p, "agent.created", json!({ "x": 1 })).agent("finance"))
        .await
        .unwrap();
    assert_eq!(a.ip_address, p.ip_address);
    assert_eq!(a.user_agent.as_deref(), Some("curl/8"));
    let b = s
        .append_audit(NewAuditEvent::by(
            &Principal::new("u2"),
            "policy.denied",
            json!({}),
        ))
        .await
        .unwrap();
    assert!(b.id > a.id);
    let all = s.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    let by_user = s
        .list_audit(&AuditFilter {
            user_id: Some("u2".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_user.len(), 1);
    assert_eq!(by_user[0].event_type, "policy.denied");
    let by_agent = s
        .list_audit(&AuditFilter {
            agent_id: Some("finance".into()),
            event_type: Some("agent.created".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_agent, vec![a]);
    let limited = s
        .list_audit(&AuditFilter {
            limit: Some(1),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
}

/// Enqueue: the task and its `queued` event; an idempotency key per user makes one task.
pub async fn check_enqueue_and_idempotency<S: Store>(s: &S) {
    register(s, "finance").await;
    let mut t = task("finance", "u1");
    t.idempotency_key = Some("k1".into());
    t.audit = vec![NewAuditEvent::by(&t.principal, "policy.allowed", json!({}))];
    let first = s.enqueue(t.clone()).await.unwrap();
    assert!(first.created);
    assert_eq!(first.task.status, TaskStatus::Queued);
    assert_eq!(first.task.attempts, 0);
    assert_eq!(first.task.user_id, "u1");
    assert_eq!(first.task.task, "run");
    assert_eq!(first.task.idempotency_key.as_deref(), Some("k1"));

    let mut same_key = task("finance", "u1");
    same_key.idempotency_key = Some("k1".into());
    let second = s.enqueue(same_key).await.unwrap();
    assert!(!second.created);
    assert_eq!(second.task.id, first.task.id);

    let mut other_user = task("finance", "u2");
    other_user.idempotency_key = Some("k1".into());
    let third = s.enqueue(other_user).await.unwrap();
    assert!(third.created);
    assert_ne!(third.task.id, first.task.id);

    // The same id twice is a conflict; an unknown agent is not found.
    // The same submit again (same id and key): the key wins, nothing new.
    assert!(!s.enqueue(t.clone()).await.unwrap().created);
    let mut dup_id = task("finance", "u3");
    dup_id.id = first.task.id;
    assert_category(s.enqueue(dup_id).await, ErrorCategory::Conflict);
    assert_eq!(
        s.enqueue(task("ghost", "u1")).await.unwrap_err(),
        Error::not_found("agent", "ghost")
    );

    let events = s.events(first.task.id, 0).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].seq, 1);
    assert_eq!(events[0].kind, TaskEventKind::Queued { trigger: None });
    let audit = s
        .list_audit(&AuditFilter {
            task_id: Some(first.task.id),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    // The extra audit is about the task too (its task id defaults to the task's), and first.
    let types: Vec<&str> = audit.iter().map(|a| a.event_type.as_str()).collect();
    assert_eq!(types, ["policy.allowed", "task.queued"]);
    let extra = s
        .list_audit(&AuditFilter {
            event_type: Some("policy.allowed".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(extra.len(), 1);
    assert_eq!(s.queue_depth().await.unwrap(), 2);
    assert_eq!(s.get_task(first.task.id).await.unwrap(), *first.task);
    assert_category(s.get_task(Uuid::new_v4()).await, ErrorCategory::NotFound);
}

/// Claims: priority, age and `run_at` order, agent filters, the limit.
pub async fn check_claim_order_and_filters<S: Store>(s: &S) {
    register(s, "a").await;
    register(s, "b").await;
    let low = s.enqueue(task("a", "u")).await.unwrap().task;
    let mut high = task("a", "u");
    high.priority = 10;
    let high = s.enqueue(high).await.unwrap().task;
    let low2 = s.enqueue(task("a", "u")).await.unwrap().task;
    let mut later = task("a", "u");
    later.run_at = Some(Utc::now() + chrono::Duration::hours(1));
    let later = s.enqueue(later).await.unwrap().task;
    let other = s.enqueue(task("b", "u")).await.unwrap().task;

    let only_b = s
        .claim(&ClaimRequest {
            agents: Some(vec!["b".into()]),
            ..claim_req("w1", 10, 30_000)
        })
        .await
        .unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].task.id, other.id);

    let got = s.claim(&claim_req("w1", 2, 30_000)).await.unwrap();
    assert_eq!(
        got.iter().map(|c| c.task.id).collect::<Vec<_>>(),
        [high.id, low.id],
        "priority first, then age"
    );
    let c = &got[0];
    assert_eq!(c.task.status, TaskStatus::Running);
    assert_eq!(c.task.attempts, 1);
    assert_eq!(c.task.lease_owner.as_deref(), Some("w1"));
    assert_eq!(c.lease.owner, "w1");
    assert_eq!(c.last_seq, 2);
    assert!(c.steps.is_empty());
    let secs = (c.lease.expires_at - Utc::now()).num_seconds();
    assert!((25..=31).contains(&secs), "lease of ~30 s, got {secs}");
    assert_ne!(got[0].lease.token, got[1].lease.token);

    let rest = s.claim(&claim_req("w2", 10, 30_000)).await.unwrap();
    assert_eq!(rest.len(), 1, "the delayed task is not due");
    assert_eq!(rest[0].task.id, low2.id);
    assert_eq!(
        s.get_task(later.id).await.unwrap().status,
        TaskStatus::Queued
    );
    assert!(
        s.claim(&claim_req("w2", 0, 30_000))
            .await
            .unwrap()
            .is_empty()
    );

    let events = s.events(high.id, 0).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        events[1].kind,
        TaskEventKind::Started {
            attempt: 1,
            worker: "w1".into()
        }
    );
    let running = s
        .list_tasks(&TaskFilter {
            status: Some(TaskStatus::Running),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 4);
    let of_b = s
        .list_tasks(&TaskFilter {
            agent_id: Some("b".into()),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(of_b.len(), 1);
    let newest = s
        .list_tasks(&TaskFilter {
            user_id: Some("u".into()),
            limit: Some(2),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        newest.iter().map(|t| t.id).collect::<Vec<_>>(),
        [other.id, later.id]
    );
    assert_eq!(s.queue_depth().await.unwrap(), 1);
}

/// The journal of a claimed task (events, steps, tool calls) and its finish.
pub async fn check_journal_and_finish<S: Store>(s: &S) {
    register(s, "a").await;
    let t = s.enqueue(task("a", "u")).await.unwrap().task;
    let c = s.claim(&claim_req("w", 1, 30_000)).await.unwrap().remove(0);
    let id = t.id;
    let mut seq = c.last_seq;
    let mut next = |kind| {
        seq += 1;
        ev(id, seq, kind)
    };
    // A published (live) event, persisted by the next fenced write with the same number.
    let started = next(TaskEventKind::StepStarted {
        step: 1,
        name: "ingest".into(),
    });
    s.publish(started.clone()).await.unwrap();
    let done = next(TaskEventKind::StepCompleted {
        step: 1,
        name: "ingest".into(),
    });
    s.journal(
        &c.lease,
        JournalWrite {
            step: Some(step(1, "ingest", json!([1, 2, 3]))),
            events: vec![started, done],
            audit: vec![NewAuditEvent::by(&Principal::new("u"), "tool.called", json!({})).task(id)],
        },
    )
    .await
    .unwrap();
    // Updating the same step (by number) replaces it.
    let mut failed_then_fixed = step(2, "report", json!({ "ok": true }));
    failed_then_fixed.status = RunStatus::Running;
    failed_then_fixed.output = None;
    s.journal(
        &c.lease,
        JournalWrite {
            step: Some(failed_then_fixed),
            ..JournalWrite::default()
        },
    )
    .await
    .unwrap();
    s.journal(
        &c.lease,
        JournalWrite {
            step: Some(step(2, "report", json!({ "ok": true }))),
            ..JournalWrite::default()
        },
    )
    .await
    .unwrap();
    let steps = s.steps(id).await.unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].name, "ingest");
    assert_eq!(steps[0].output, Some(json!([1, 2, 3])));
    assert_eq!(steps[1].status, RunStatus::Completed);

    let hb = s
        .heartbeat(&c.lease, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(hb.expires_at > c.lease.expires_at);
    assert!(!hb.cancel_requested);

    let tool = next(TaskEventKind::ToolCalled {
        tool: "t".into(),
        allowed: true,
    });
    let fin = s
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Completed {
                    output: json!({ "total": 6 }),
                },
                steps: Vec::new(),
                events: vec![tool],
                audit: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(fin.status, TaskStatus::Completed);
    assert_eq!(fin.output, Some(json!({ "total": 6 })));
    assert!(fin.completed_at.is_some());
    assert!(fin.lease_owner.is_none());
    let events = s.events(id, 0).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6],
        "numbered without gaps"
    );
    assert_eq!(events[5].kind.name(), "completed");
    assert!(events[5].kind.is_terminal());
    assert_eq!(s.events(id, 4).await.unwrap().len(), 2);
    let audit = s
        .list_audit(&AuditFilter {
            task_id: Some(id),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        audit
            .iter()
            .map(|a| a.event_type.as_str())
            .collect::<Vec<_>>(),
        [
            "task.queued",
            "task.started",
            "tool.called",
            "task.completed"
        ]
    );
    // Finished: the lease is gone.
    assert_category(
        s.heartbeat(&c.lease, Duration::from_secs(1)).await,
        ErrorCategory::Conflict,
    );
}

/// Retry, failure, release and cancellation of claimed tasks.
pub async fn check_retry_fail_release_cancel<S: Store>(s: &S) {
    register(s, "a").await;
    let mut t = task("a", "u");
    t.max_attempts = 2;
    let t = s.enqueue(t).await.unwrap().task;
    let c = s.claim(&claim_req("w", 1, 30_000)).await.unwrap().remove(0);
    let retry_at = Utc::now() + chrono::Duration::milliseconds(300);
    let r = s
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Failed {
                    error: Error::agent("boom"),
                    retry_at: Some(retry_at),
                },
                steps: Vec::new(),
                events: vec![],
                audit: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(r.status, TaskStatus::Queued);
    assert_eq!(r.error, Some(Error::agent("boom")));
    assert_eq!(r.error_message.as_deref(), Some("agent error: boom"));
    let last = s.events(t.id, 0).await.unwrap().pop().unwrap();
    match last.kind {
        TaskEventKind::Retrying {
            attempt,
            delay_ms,
            error,
        } => {
            assert_eq!(attempt, 1);
            assert!(delay_ms <= 300);
            assert_eq!(error, Error::agent("boom"));
        }
        k => panic!("expected retrying, got {k:?}"),
    }
    assert!(
        s.claim(&claim_req("w", 1, 30_000))
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let c2 = s.claim(&claim_req("w", 1, 30_000)).await.unwrap().remove(0);
    assert_eq!(c2.task.attempts, 2);

    // Release: back to the queue without counting the attempt.
    s.release(&c2.lease, vec![], Vec::new()).await.unwrap();
    let released = s.get_task(t.id).await.unwrap();
    assert_eq!(released.status, TaskStatus::Queued);
    assert_eq!(released.attempts, 1);
    assert_eq!(
        s.events(t.id, 0).await.unwrap().pop().unwrap().kind,
        TaskEventKind::Queued { trigger: None }
    );
    assert_category(
        s.release(&c2.lease, vec![], Vec::new()).await,
        ErrorCategory::Conflict,
    );

    let c3 = s.claim(&claim_req("w", 1, 30_000)).await.unwrap().remove(0);
    let failed = s
        .finish(
            &c3.lease,
            Finish {
                outcome: Outcome::Failed {
                    error: Error::validation("bad", vec![]),
                    retry_at: None,
                },
                steps: Vec::new(),
                events: vec![],
                audit: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    assert!(failed.completed_at.is_some());

    // Cancel: queued at once; running by a flag seen by the heartbeat; final is a conflict.
    let q = s.enqueue(task("a", "u")).await.unwrap().task;
    let by = Principal::new("admin").with_roles(["admin"]);
    let cancelled = s.cancel(q.id, &by).await.unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(
        s.events(q.id, 0).await.unwrap().pop().unwrap().kind,
        TaskEventKind::Cancelled
    );
    assert_category(s.cancel(q.id, &by).await, ErrorCategory::Conflict);
    assert_category(s.cancel(Uuid::new_v4(), &by).await, ErrorCategory::NotFound);

    let r = s.enqueue(task("a", "u")).await.unwrap().task;
    let c4 = s.claim(&claim_req("w", 1, 30_000)).await.unwrap().remove(0);
    assert_eq!(c4.task.id, r.id);
    let flagged = s.cancel(r.id, &by).await.unwrap();
    assert_eq!(flagged.status, TaskStatus::Running);
    assert!(flagged.cancel_requested);
    let hb = s
        .heartbeat(&c4.lease, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(hb.cancel_requested);
    let done = s
        .finish(
            &c4.lease,
            Finish {
                outcome: Outcome::Cancelled,
                steps: Vec::new(),
                events: vec![],
                audit: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Cancelled);
    let kinds: Vec<_> = s
        .events(r.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(kinds, ["queued", "started", "cancelled"]);
    let cancel_audit = s
        .list_audit(&AuditFilter {
            task_id: Some(r.id),
            event_type: Some("task.cancel_requested".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(cancel_audit[0].user_id.as_deref(), Some("admin"));
}

/// A worker that lost its lease changes nothing; the next attempt sees the journaled steps.
/// Fencing: a lease lost to a reclaim can no longer write.
pub async fn check_fencing_after_lease_loss<S: Store>(s: &S) {
    register(s, "a").await;
    let mut t = task("a", "u");
    t.max_attempts = 2;
    let t = s.enqueue(t).await.unwrap().task;
    let old = s.claim(&claim_req("w1", 1, 200)).await.unwrap().remove(0);
    s.journal(
        &old.lease,
        JournalWrite {
            step: Some(step(1, "one", json!(1))),
            events: vec![ev(
                t.id,
                3,
                TaskEventKind::StepCompleted {
                    step: 1,
                    name: "one".into(),
                },
            )],
            audit: vec![],
        },
    )
    .await
    .unwrap();
    assert!(
        s.reclaim_expired().await.unwrap().is_empty(),
        "not expired yet"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Expired but not reclaimed: the token still fences, so the holder may renew.
    s.heartbeat(&old.lease, Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.reclaim_expired().await.unwrap(), vec![t.id]);
    let requeued = s.get_task(t.id).await.unwrap();
    assert_eq!(requeued.status, TaskStatus::Queued);
    assert_eq!(
        requeued.error.as_ref().map(Error::category),
        Some(ErrorCategory::Resource)
    );
    assert!(requeued.lease_owner.is_none());
    let before = s.events(t.id, 0).await.unwrap();
    assert_eq!(before.last().unwrap().kind.name(), "retrying");

    let new = s
        .claim(&claim_req("w2", 1, 30_000))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(new.task.attempts, 2);
    assert_eq!(
        new.steps.len(),
        1,
        "the journaled step is handed to the next attempt"
    );
    assert_eq!(new.steps[0].output, Some(json!(1)));
    assert_eq!(new.last_seq, 5);

    // Every write with the old lease is refused and changes nothing.
    let stale_event = ev(
        t.id,
        6,
        TaskEventKind::StepCompleted {
            step: 2,
            name: "two".into(),
        },
    );
    assert_category(
        s.heartbeat(&old.lease, Duration::from_secs(10)).await,
        ErrorCategory::Conflict,
    );
    assert_category(
        s.journal(
            &old.lease,
            JournalWrite {
                step: Some(step(2, "two", json!(2))),
                events: vec![stale_event.clone()],
                audit: vec![NewAuditEvent::by(&Principal::new("u"), "x", json!({})).task(t.id)],
            },
        )
        .await,
        ErrorCategory::Conflict,
    );
    assert_category(
        s.finish(
            &old.lease,
            Finish {
                outcome: Outcome::Completed { output: json!(0) },
                steps: Vec::new(),
                events: vec![stale_event.clone()],
                audit: vec![],
            },
        )
        .await,
        ErrorCategory::Conflict,
    );
    assert_category(
        s.release(&old.lease, vec![stale_event], Vec::new()).await,
        ErrorCategory::Conflict,
    );
    assert_eq!(s.steps(t.id).await.unwrap().len(), 1);
    assert_eq!(s.events(t.id, 0).await.unwrap().len(), 5);
    let now = s.get_task(t.id).await.unwrap();
    assert_eq!(now.status, TaskStatus::Running);
    assert_eq!(now.lease_owner.as_deref(), Some("w2"));
    assert_eq!(
        s.list_audit(&AuditFilter {
            event_type: Some("x".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .len(),
        0
    );

    // Misnumbered events are refused with the lease intact.
    let gap = ev(t.id, 9, TaskEventKind::Cancelled);
    assert_category(
        s.journal(
            &new.lease,
            JournalWrite {
                events: vec![gap],
                ..JournalWrite::default()
            },
        )
        .await,
        ErrorCategory::Conflict,
    );
    let not_consecutive = vec![
        ev(t.id, 6, TaskEventKind::Queued { trigger: None }),
        ev(t.id, 8, TaskEventKind::Queued { trigger: None }),
    ];
    assert_category(
        s.journal(
            &new.lease,
            JournalWrite {
                events: not_consecutive,
                ..JournalWrite::default()
            },
        )
        .await,
        ErrorCategory::Validation,
    );

    // No attempt left: the next expiry fails the task for good.
    let mut short = new.lease.clone();
    short.expires_at = Utc::now();
    s.heartbeat(&new.lease, Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.reclaim_expired().await.unwrap(), vec![t.id]);
    let failed = s.get_task(t.id).await.unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    assert!(failed.completed_at.is_some());
    assert_eq!(
        s.events(t.id, 0).await.unwrap().last().unwrap().kind.name(),
        "failed"
    );
    let _ = short;
}
