//! The poison task of the fault matrix (issue 11): a task whose agent aborts its worker process
//! on every attempt. Worker nodes are child processes (this test binary run again, as in
//! `crash.rs`); a dead one is replaced at once. The poison task ends `failed` after its attempts
//! with a message saying its lease expired with its worker; every other task completes and none
//! is lost.

mod common;

use common::{Worker, spawn_test_process, unfinished};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use capecontrol_core::agent::{AgentBase, TaskContext, ToolContext};
use capecontrol_core::manifest::{Config, Manifest};
use capecontrol_core::runtime::{Platform, PlatformConfig, TaskRequest};
use capecontrol_core::{Error, Principal, Result};
use capecontrol_store::{PostgresStore, PostgresStoreOptions};
use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

use capecontrol_testkit::runtime::{install_in, manifest};

const URL_ENV: &str = "CAPECONTROL_POISON_URL";
const NODE_ENV: &str = "CAPECONTROL_POISON_NODE";
const TASKS: usize = 100;
const POISON_ATTEMPTS: u32 = 3;

/// Aborts the process (`poison`) or doubles its input in two steps (`worker`).
struct Agent {
    name: &'static str,
    retries: u32,
}

#[async_trait]
impl AgentBase for Agent {
    fn manifest(&self) -> Manifest {
        manifest(
            self.name,
            Config {
                retries: self.retries,
                concurrent_tasks: 100,
                ..Config::default()
            },
            &[],
        )
    }

    async fn run_task(&self, _name: &str, input: Value, cx: &TaskContext) -> Result<Value> {
        if self.name == "Poison" {
            std::process::abort();
        }
        let n = input["n"].as_u64().unwrap_or(0);
        let mut total = 0;
        for step in 1..=2u64 {
            total += cx
                .step(&format!("s{step}"), async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, Error>(n * step)
                })
                .await?;
        }
        Ok(json!(total))
    }

    async fn call_tool(&self, name: &str, _input: Value, _cx: &ToolContext) -> Result<Value> {
        Err(Error::not_found("tool", name))
    }
}

fn agents() -> [Agent; 2] {
    [
        Agent {
            name: "Poison",
            retries: POISON_ATTEMPTS - 1,
        },
        // Killed with the poison's node now and then: many attempts.
        Agent {
            name: "Worker",
            retries: 10,
        },
    ]
}

fn config(node: &str) -> PlatformConfig {
    PlatformConfig {
        workers: 8,
        claim_batch: 4,
        lease: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        node_id: node.to_owned(),
        ..PlatformConfig::default()
    }
}

async fn platform(store: PostgresStore, node: &str, workers: bool) -> Platform {
    let mut b = Platform::builder()
        .store(Arc::new(store))
        .config(config(node));
    for a in agents() {
        b = b.agent(a);
    }
    if !workers {
        b = b.without_workers();
    }
    b.build().await.unwrap()
}

/// A worker node (a no-op unless run by [`a_poison_task_fails_and_the_rest_completes`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_worker_process() {
    let (Ok(url), Ok(node)) = (std::env::var(URL_ENV), std::env::var(NODE_ENV)) else {
        return;
    };
    let store = PostgresStoreOptions::from_url(&url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let pool = store.pool().clone();
    let p = platform(store, &node, true).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while unfinished(&pool).await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.shutdown(Duration::from_secs(1)).await;
}

fn spawn_worker(url: &str, node: &str) -> Worker {
    spawn_test_process(
        "poison_worker_process",
        &[(URL_ENV, url), (NODE_ENV, node)],
        true,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_task_fails_and_the_rest_completes() {
    let db = test_db!();
    let url = db.url();
    let store = db.store().await;
    let pool = store.pool().clone();
    let submitter = platform(store.clone(), "submitter", false).await;
    for agent in ["poison", "worker"] {
        install_in(&store, agent, "alice", &[]).await;
    }
    let user = Principal::new("alice").with_roles(["user"]);
    let poison = submitter
        .submit(TaskRequest::new("poison", "run", json!({}), user.clone()))
        .await
        .unwrap();
    let ids: Vec<Uuid> = futures::stream::iter(0..TASKS)
        .map(|n| {
            let req = TaskRequest::new("worker", "run", json!({ "n": n }), user.clone());
            let submitter = &submitter;
            async move { submitter.submit(req).await.unwrap() }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    // Two worker nodes; a node that dies is replaced by a new one.
    let mut spawned = 0usize;
    let mut workers: Vec<Worker> = (0..2)
        .map(|_| {
            spawned += 1;
            spawn_worker(&url, &format!("node-{spawned}"))
        })
        .collect();
    let mut deaths = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while unfinished(&pool).await > 0 {
        assert!(Instant::now() < deadline, "not every task ended in time");
        for w in &mut workers {
            if let Ok(Some(status)) = w.0.try_wait() {
                assert!(!status.success(), "a worker ended while tasks were left");
                deaths += 1;
                spawned += 1;
                *w = spawn_worker(&url, &format!("node-{spawned}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(workers);

    let (status, attempts, message): (String, i32, Option<String>) =
        sqlx::query_as("SELECT status, attempts, error_message FROM tasks WHERE id = $1")
            .bind(poison)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert_eq!(attempts, POISON_ATTEMPTS as i32);
    let message = message.unwrap_or_default();
    assert!(
        message.contains("lease") && message.contains("expired") && message.contains("worker"),
        "the failure says the worker was lost: {message}"
    );
    assert!(
        deaths >= POISON_ATTEMPTS as usize,
        "each attempt killed its node"
    );

    let rows: Vec<(Uuid, String, Value, Option<Value>)> =
        sqlx::query_as("SELECT id, status, input, output FROM tasks WHERE agent_id = 'worker'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), ids.len(), "no task lost");
    for (id, status, input, output) in rows {
        assert_eq!(status, "completed", "task {id}");
        let n = input["n"].as_u64().unwrap();
        assert_eq!(output, Some(json!(3 * n)), "task {id}");
    }
    db.drop().await;
}
