//! What the cases share: imports, records, tasks, claims and assertions.

pub(super) use std::collections::HashSet;
pub(super) use std::sync::Arc;
pub(super) use std::time::Duration;

pub(super) use chrono::{SubsecRound, Utc};
pub(super) use serde_json::{Value, json};
pub(super) use uuid::Uuid;

pub(super) use capecontrol_core::agent::StepRecord;
pub(super) use capecontrol_core::error::{Error, ErrorCategory};
pub(super) use capecontrol_core::events::{TaskEvent, TaskEventKind, TriggerSource};
pub(super) use capecontrol_core::policy::Principal;
pub(super) use capecontrol_core::state::{AgentStatus, RunStatus, TaskStatus, VersionStatus};
pub(super) use capecontrol_core::store::{
    AgentFilter, AgentPatch, AgentRecord, AuditFilter, CatalogQuery, CatalogSort, ClaimRequest,
    Claimed, Finish, InstallationRecord, JournalWrite, NewAuditEvent, NewTask, Outcome, Store,
    TaskFilter, VersionRecord,
};

pub(super) use super::SHORT_LEASE;

pub(super) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

pub(super) fn agent_record(id: &str, name: &str) -> AgentRecord {
    let now = Utc::now();
    AgentRecord {
        id: id.to_owned(),
        name: name.to_owned(),
        slug: id.to_owned(),
        description: Some(format!("{name} does things")),
        category: None,
        capabilities: None,
        policy_scopes: Vec::new(),
        manifest: None,
        status: AgentStatus::Draft,
        owner: Some("owner-1".to_owned()),
        created_at: now,
        updated_at: now,
    }
}

pub(super) fn version_record(agent_id: &str, version: &str, manifest: Value) -> VersionRecord {
    VersionRecord {
        id: Uuid::new_v4(),
        agent_id: agent_id.to_owned(),
        version: version.to_owned(),
        manifest,
        status: VersionStatus::Draft,
        changelog: Some(format!("changes of {version}")),
        published_at: None,
        created_at: Utc::now(),
    }
}

pub(super) fn manifest(name: &str, version: &str, placement: &str) -> Value {
    json!({ "name": name, "version": version, "description": "d", "placement": placement })
}

/// Inserts a fresh agent with a published version, for the queue cases.
pub(crate) async fn fresh_agent(store: &Arc<dyn Store>) -> String {
    let id = unique("queue-agent");
    store.insert_agent(agent_record(&id, &id)).await.unwrap();
    store
        .insert_version(version_record(&id, "1.0.0", manifest(&id, "1.0.0", "chat")))
        .await
        .unwrap();
    store.publish_version(&id, "1.0.0").await.unwrap();
    id
}

pub(crate) fn new_task(agent: &str) -> NewTask {
    NewTask {
        id: Uuid::new_v4(),
        agent_id: agent.to_owned(),
        version: "1.0.0".into(),
        task: "run".into(),
        input: json!({ "n": 1 }),
        principal: Principal::new("user-1").with_roles(["user"]),
        priority: 0,
        run_at: None,
        idempotency_key: None,
        max_attempts: 3,
        concurrency_limit: 100,
        timeout: Duration::from_secs(30),
        traceparent: Some(TRACEPARENT.into()),
        trigger: None,
        policy_allowed: false,
        audit: Vec::new(),
        parent_id: None,
    }
}

/// The trace context of [`new_task`]'s tasks (stored and read back with the task).
pub(super) const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

pub(super) fn claim_request(worker: &str, agent: &str, limit: usize) -> ClaimRequest {
    ClaimRequest {
        worker: worker.to_owned(),
        limit,
        lease: SHORT_LEASE,
        agents: Some(vec![agent.to_owned()]),
    }
}

pub(crate) async fn claim_one(store: &Arc<dyn Store>, worker: &str, agent: &str) -> Claimed {
    let mut claimed = store.claim(&claim_request(worker, agent, 1)).await.unwrap();
    assert_eq!(claimed.len(), 1, "expected one task to claim");
    claimed.remove(0)
}

pub(crate) use crate::fixtures::completed;

pub(super) fn assert_category<T: std::fmt::Debug>(r: Result<T, Error>, category: ErrorCategory) {
    match r {
        Err(e) => assert_eq!(e.category(), category, "{e}"),
        Ok(v) => panic!("expected a {category} error, got {v:?}"),
    }
}

pub(super) fn event(task_id: Uuid, seq: u64, kind: TaskEventKind) -> TaskEvent {
    TaskEvent {
        task_id,
        seq,
        at: Utc::now(),
        kind,
    }
}

pub(super) fn seqs(events: &[TaskEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

pub(super) fn kinds(events: &[TaskEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}
