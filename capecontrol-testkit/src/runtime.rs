//! Runtime fixtures: a hand-written test agent whose behaviour is a closure, its manifest, a
//! fast `PlatformConfig`, the test user and its installation, and helpers that read a task's
//! events. Used by core's `tests/runtime.rs` (MemoryStore) and `capecontrol-store`'s
//! `tests/platform.rs` (PostgreSQL).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capecontrol_core::agent::{AgentBase, TaskContext, ToolContext};
use capecontrol_core::events::TaskEvent;
use capecontrol_core::manifest::{Config, Manifest, Permissions};
use capecontrol_core::runtime::middleware::rate_limit::{Rate, RateLimitConfig};
use capecontrol_core::runtime::{Platform, PlatformConfig, TaskRequest};
use capecontrol_core::store::{InstallationRecord, RegistryStore, Store, TaskRecord};
use capecontrol_core::{Error, Principal, Result};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use uuid::Uuid;

/// What a [`TestAgent`] does with a task: `(task name, input, context) -> output`.
pub type Behaviour = Arc<
    dyn for<'a> Fn(&'a str, Value, &'a TaskContext) -> BoxFuture<'a, Result<Value>> + Send + Sync,
>;

/// An agent whose tasks run a closure; it has no tools.
pub struct TestAgent {
    /// Its manifest.
    pub manifest: Manifest,
    /// What its tasks do.
    pub behaviour: Behaviour,
}

impl std::fmt::Debug for TestAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestAgent")
            .field("manifest", &self.manifest.name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl AgentBase for TestAgent {
    fn manifest(&self) -> Manifest {
        self.manifest.clone()
    }
    async fn run_task(&self, name: &str, input: Value, cx: &TaskContext) -> Result<Value> {
        (self.behaviour)(name, input, cx).await
    }
    async fn call_tool(&self, name: &str, _input: Value, _cx: &ToolContext) -> Result<Value> {
        Err(Error::not_found("tool", name))
    }
}

/// A [`TestAgent`] with `manifest` whose tasks run `f`.
pub fn agent<F>(manifest: Manifest, f: F) -> TestAgent
where
    F: for<'a> Fn(&'a str, Value, &'a TaskContext) -> BoxFuture<'a, Result<Value>>
        + Send
        + Sync
        + 'static,
{
    TestAgent {
        manifest,
        behaviour: Arc::new(f),
    }
}

/// Version 1.0.0 of agent `name` with `config` and the permission `scopes`.
pub fn manifest(name: &str, config: Config, scopes: &[&str]) -> Manifest {
    Manifest {
        name: name.into(),
        version: "1.0.0".into(),
        description: format!("{name} for tests"),
        placement: None,
        category: None,
        tools: vec![],
        dependencies: None,
        config: Some(config),
        permissions: Some(Permissions {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Permissions::default()
        }),
        triggers: None,
        ui: None,
        runtime: None,
        tasks: vec![],
        tool_specs: vec![],
    }
}

/// A platform configuration for tests: 8 workers, a 600 ms lease, 20 ms polls, short backoff
/// and cancellation grace.
pub fn fast_config() -> PlatformConfig {
    PlatformConfig {
        workers: 8,
        claim_batch: 8,
        lease: Duration::from_millis(600),
        poll_interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        cancel_grace: Duration::from_millis(100),
        ..PlatformConfig::default()
    }
}

/// Rate limits that are checked on every submit but high enough never to reject a benchmark's
/// load.
pub fn unlimited_rates() -> RateLimitConfig {
    RateLimitConfig {
        per_principal: Some(Rate::per_second(1_000_000_000)),
        per_agent: Some(Rate::per_second(1_000_000_000)),
    }
}

/// The test user `alice`, role `user`.
pub fn user() -> Principal {
    Principal::new("alice").with_roles(["user"])
}

/// Installs version 1.0.0 of `agent_id` for `user`, granting `scopes`.
pub async fn install(store: &Arc<dyn Store>, agent_id: &str, user: &str, scopes: &[&str]) {
    install_in(store.as_ref(), agent_id, user, scopes).await;
}

/// [`install`] on any registry store (a `PostgresStore`, say), not only an `Arc<dyn Store>`.
pub async fn install_in<S: RegistryStore + ?Sized>(
    store: &S,
    agent_id: &str,
    user: &str,
    scopes: &[&str],
) {
    let now = chrono::Utc::now();
    store
        .upsert_installation(InstallationRecord {
            id: Uuid::new_v4(),
            agent_id: agent_id.into(),
            user_id: user.into(),
            version: "1.0.0".into(),
            granted_scopes: scopes.iter().map(|s| s.to_string()).collect(),
            settings: json!({}),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
}

/// Every event of task `id` up to its terminal one, through `Platform::watch`; panics after
/// `within`.
pub async fn events_within(p: &Platform, id: Uuid, within: Duration) -> Vec<TaskEvent> {
    let stream = p.trusted().watch(id).await.unwrap();
    tokio::time::timeout(within, stream.map(|e| e.unwrap()).collect::<Vec<_>>())
        .await
        .expect("watch ends after the terminal event")
}

/// A platform over `store` with `agents` registered and `config`, its workers started.
pub async fn platform_with(
    store: Arc<dyn Store>,
    agents: Vec<TestAgent>,
    config: PlatformConfig,
) -> Platform {
    let mut b = Platform::builder().store(store).config(config);
    for a in agents {
        b = b.agent(a);
    }
    b.build().await.unwrap()
}

/// Submits task `run` of `agent_id` with input `{}` as [`user`] and returns the task once it
/// has ended; panics if it has not ended `within`.
pub async fn run_within(p: &Platform, agent_id: &str, within: Duration) -> TaskRecord {
    let id = p
        .submit(TaskRequest::new(agent_id, "run", json!({}), user()))
        .await
        .unwrap();
    tokio::time::timeout(within, p.wait(id, &user()))
        .await
        .expect("the task ends in time")
        .unwrap()
}

/// A task submitted to a node with a free worker slot, its dispatcher waiting for work, starts in its
/// enqueue: it runs without a wake-up for the dispatcher's claim (none is sent). A task
/// submitted while every slot is taken is queued, the dispatcher woken, and it runs once a slot
/// frees. For any store (core's `tests/runtime.rs` on `MemoryStore`, `capecontrol-store`'s
/// `tests/platform.rs` on PostgreSQL).
pub async fn check_a_submission_to_an_idle_node_starts_in_its_enqueue(store: Arc<dyn Store>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<i64>();
    let a = {
        let gate = Arc::clone(&gate);
        agent(
            manifest("Gated", Config::default(), &[]),
            move |_, input, _| {
                let (gate, started_tx) = (Arc::clone(&gate), started_tx.clone());
                Box::pin(async move {
                    let n = input["n"].as_i64().unwrap_or(0);
                    let _ = started_tx.send(n);
                    if n > 0 {
                        gate.acquire().await.expect("gate").forget();
                    }
                    Ok(json!(n))
                })
            },
        )
    };
    let config = PlatformConfig {
        workers: 1,
        claim_batch: 1,
        // Long polls: a queued task runs only after a wake-up (or a poll long after the test).
        poll_interval: Duration::from_secs(30),
        ..fast_config()
    };
    let p = platform_with(Arc::clone(&store), vec![a], config).await;
    install(&store, "gated", "alice", &[]).await;
    let submit = |n: i64| p.submit(TaskRequest::new("gated", "run", json!({ "n": n }), user()));
    let alice = user();
    let within = |id| tokio::time::timeout(Duration::from_secs(20), p.wait(id, &alice));
    // A first task; then the dispatcher's claims find nothing more.
    let warm = submit(0).await.unwrap();
    within(warm).await.expect("in time").unwrap();
    assert_eq!(started.recv().await, Some(0));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut wakeups = store.wakeups();
    let first = submit(1).await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(20), started.recv()).await,
        Ok(Some(1)),
        "the task starts"
    );
    assert!(
        matches!(
            wakeups.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ),
        "a task started in its enqueue sends no wake-up for a claim"
    );
    let names: Vec<&str> = p
        .store()
        .events(first, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(names, ["queued", "started"]);

    // The one slot is taken: the next one is queued and the dispatcher woken.
    let second = submit(2).await.unwrap();
    assert_eq!(
        p.store().get_task(second).await.unwrap().status,
        capecontrol_core::TaskStatus::Queued
    );
    tokio::time::timeout(Duration::from_secs(5), wakeups.recv())
        .await
        .expect("a queued task wakes the dispatcher")
        .expect("wake-up");
    gate.add_permits(2);
    for id in [first, second] {
        let done = within(id).await.expect("in time").unwrap();
        assert_eq!(done.status, capecontrol_core::TaskStatus::Completed);
    }
    assert_eq!(started.recv().await, Some(2));
    p.shutdown(Duration::from_secs(5)).await;
}
