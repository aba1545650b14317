//! Records, tasks, events and requests the store tests build, and an assertion on error
//! categories.

use std::time::Duration;

use capecontrol_core::events::{TaskEvent, TaskEventKind};
use capecontrol_core::store::{
    AgentRecord, ClaimRequest, Finish, NewTask, Outcome, RegistryStore, VersionRecord,
};
use capecontrol_core::{
    AgentStatus, ErrorCategory, Principal, RunStatus, StepRecord, VersionStatus,
};
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

/// An agent record with id and slug `id`.
pub fn agent(id: &str) -> AgentRecord {
    let now = Utc::now();
    AgentRecord {
        id: id.into(),
        name: format!("Agent {id}"),
        slug: id.into(),
        description: Some(format!("The {id} agent")),
        category: Some("domain-specific".into()),
        capabilities: Some(json!({ "tools": [] })),
        policy_scopes: vec!["finance:read".into()],
        manifest: None,
        status: AgentStatus::Draft,
        owner: None,
        created_at: now,
        updated_at: now,
    }
}

/// Registers agent `id`.
pub async fn register<S: RegistryStore>(store: &S, id: &str) {
    store.insert_agent(agent(id)).await.expect("insert agent");
}

/// A task of `agent` for `user`.
pub fn task(agent: &str, user: &str) -> NewTask {
    NewTask {
        id: Uuid::new_v4(),
        agent_id: agent.into(),
        version: "1.0.0".into(),
        task: "run".into(),
        input: json!({ "n": 1 }),
        principal: Principal::new(user).with_roles(["user"]),
        priority: 0,
        run_at: None,
        idempotency_key: None,
        max_attempts: 3,
        concurrency_limit: 1000,
        timeout: Duration::from_secs(30),
        traceparent: None,
        trigger: None,
        policy_allowed: false,
        audit: Vec::new(),
        parent_id: None,
    }
}

/// A claim by `worker` of at most `limit` tasks with a lease of `lease_ms`.
pub fn claim_req(worker: &str, limit: usize, lease_ms: u64) -> ClaimRequest {
    ClaimRequest {
        worker: worker.into(),
        limit,
        lease: Duration::from_millis(lease_ms),
        agents: None,
    }
}

/// Event `seq` of `task_id`.
pub fn ev(task_id: Uuid, seq: u64, kind: TaskEventKind) -> TaskEvent {
    TaskEvent {
        task_id,
        seq,
        at: Utc::now(),
        kind,
    }
}

/// Completed step `n` with its output.
pub fn step(n: u32, name: &str, output: serde_json::Value) -> StepRecord {
    StepRecord {
        step: n,
        name: name.into(),
        status: RunStatus::Completed,
        output: Some(output),
        error: None,
        started_at: Some(Utc::now()),
        finished_at: Some(Utc::now()),
    }
}

/// A finish completing the attempt with `output`, nothing else written with it.
pub fn completed(output: serde_json::Value) -> Finish {
    Finish {
        outcome: Outcome::Completed { output },
        steps: Vec::new(),
        events: Vec::new(),
        audit: Vec::new(),
    }
}

/// Draft version `v` of `agent`, its manifest placed at `placement`.
pub fn version(agent: &str, v: &str, placement: &str) -> VersionRecord {
    VersionRecord {
        id: Uuid::new_v4(),
        agent_id: agent.into(),
        version: v.into(),
        manifest: json!({ "name": agent, "version": v, "description": "d", "placement": placement }),
        status: VersionStatus::Draft,
        changelog: Some(format!("release {v}")),
        published_at: None,
        created_at: Utc::now(),
    }
}

/// Asserts that `r` is an error of category `c`.
pub fn assert_category<T: std::fmt::Debug>(r: capecontrol_core::Result<T>, c: ErrorCategory) {
    match r {
        Err(e) => assert_eq!(e.category(), c, "{e}"),
        Ok(v) => panic!("expected a {c} error, got {v:?}"),
    }
}
