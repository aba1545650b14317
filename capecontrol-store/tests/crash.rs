//! The crash test across processes (issue 6, item 7): three worker processes on one database
//! take 1,000 three-step tasks; one is killed with SIGKILL mid-run. Then every task ends
//! completed, none is lost, no completed step runs again, and the killed node's tasks are
//! picked up again within about two lease periods.
//!
//! The worker processes are this test binary run again: [`worker_process`] is an ordinary test
//! that returns at once, unless the parent sets `CAPECONTROL_CRASH_URL`, in which case it runs a
//! worker node (a `Platform` on a `PostgresStore`, with an agent written with the macros) until
//! every task is final. No other build target is needed, and the child is exactly the code
//! under test.
//!
//! Detecting a step run twice: every execution of a step inserts a row into `crash_effects`
//! (the agent's side effect, with the node and the attempt), and every completed step is a
//! `step_completed` event. A step may run twice only when the killed node was running it (not
//! yet journaled) — so a repeated execution is allowed only for a task the killed node held, at
//! most once, for the step it was in, with the first execution on the killed node; and each
//! step of each task is `step_completed` exactly once.

mod common;

use common::{Worker, spawn_test_process, unfinished};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capecontrol_core::Principal;
use capecontrol_core::TaskContext;
use capecontrol_core::runtime::{Platform, PlatformConfig, TaskRequest};
use capecontrol_macros::{Agent, agent_impl};
use capecontrol_store::sqlx::{self, PgPool, Row};
use capecontrol_store::{PostgresStore, PostgresStoreOptions};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use capecontrol_testkit::poll::{eventually, until};
use capecontrol_testkit::runtime::install_in;

const URL_ENV: &str = "CAPECONTROL_CRASH_URL";
const NODE_ENV: &str = "CAPECONTROL_CRASH_NODE";
const TASKS: usize = 1000;
const STEPS: u32 = 3;
const NODES: usize = 3;
const LEASE: Duration = Duration::from_secs(2);
const WORKERS_PER_NODE: usize = 16;

/// Crunches a number in three durable steps; each execution of a step leaves a row.
#[derive(Agent)]
#[agent(
    name = "Cruncher",
    version = "1.0.0",
    retries = 3,
    concurrent_tasks = 64,
    timeout = 60
)]
struct Cruncher {
    pool: PgPool,
    node: String,
}

/// The job.
#[derive(Deserialize, JsonSchema)]
struct Job {
    /// The number.
    n: u64,
}

#[agent_impl]
impl Cruncher {
    /// Three steps; the output is `6 * n`.
    #[task]
    async fn crunch(&self, cx: &TaskContext, job: Job) -> Result<u64, capecontrol_core::Error> {
        let mut total = 0;
        for step in 1..=STEPS {
            let v: u64 = cx
                .step(&format!("s{step}"), self.effect(cx, step, job.n))
                .await?;
            total += v;
        }
        Ok(total)
    }
}

impl Cruncher {
    /// One execution of a step: a little work and a row in `crash_effects`.
    async fn effect(
        &self,
        cx: &TaskContext,
        step: u32,
        n: u64,
    ) -> Result<u64, capecontrol_core::Error> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        sqlx::query(
            "INSERT INTO crash_effects (task_id, step, attempt, node) VALUES ($1, $2, $3, $4)",
        )
        .bind(cx.task_id())
        .bind(i32::try_from(step).unwrap_or(i32::MAX))
        .bind(i32::try_from(cx.attempt()).unwrap_or(i32::MAX))
        .bind(&self.node)
        .execute(&self.pool)
        .await
        .map_err(|e| capecontrol_core::Error::agent(format!("effect: {e}")))?;
        Ok(n * u64::from(step))
    }
}

fn config(node: &str) -> PlatformConfig {
    PlatformConfig {
        workers: WORKERS_PER_NODE,
        claim_batch: 8,
        lease: LEASE,
        poll_interval: Duration::from_millis(200),
        node_id: node.to_owned(),
        ..PlatformConfig::default()
    }
}

async fn connect(url: &str) -> PostgresStore {
    PostgresStoreOptions::from_url(url)
        .unwrap()
        .max_connections(WORKERS_PER_NODE as u32 + 8)
        .connect()
        .await
        .unwrap()
}

/// The worker process (a no-op unless run by [`three_processes_one_killed`]).
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process() {
    let (Ok(url), Ok(node)) = (std::env::var(URL_ENV), std::env::var(NODE_ENV)) else {
        return;
    };
    let store = connect(&url).await;
    let pool = store.pool().clone();
    let platform = Platform::builder()
        .store(Arc::new(store))
        .agent(Cruncher {
            pool: pool.clone(),
            node: node.clone(),
        })
        .config(config(&node))
        .build()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while unfinished(&pool).await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    platform.shutdown(Duration::from_secs(1)).await;
}

/// The `application_name` a worker node's connections carry (to see them in
/// `pg_stat_activity`).
fn app_name(node: &str) -> String {
    format!("capecontrol-crash-{node}")
}

fn spawn_worker(url: &str, node: &str) -> Worker {
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}application_name={}", app_name(node));
    spawn_test_process(
        "worker_process",
        &[(URL_ENV, &url), (NODE_ENV, node)],
        false,
    )
}

async fn db_now(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_one_killed() {
    let db = test_db!();
    let url = db.url();
    let store = db.store().await;
    let pool = store.pool().clone();
    sqlx::query(
        "CREATE TABLE crash_effects (id BIGSERIAL PRIMARY KEY, task_id UUID NOT NULL, \
         step INT NOT NULL, attempt INT NOT NULL, node TEXT NOT NULL, \
         at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), UNIQUE (task_id, step, attempt))",
    )
    .execute(&pool)
    .await
    .unwrap();

    // Submit everything from a node without workers (it registers the agent), then start the
    // three worker processes.
    let submitter = Platform::builder()
        .store(Arc::new(store.clone()))
        .agent(Cruncher {
            pool: pool.clone(),
            node: "submitter".into(),
        })
        .config(config("submitter"))
        .without_workers()
        .build()
        .await
        .unwrap();
    install_in(&store, "cruncher", "alice", &[]).await;
    let user = Principal::new("alice").with_roles(["user"]);
    let ids: Vec<Uuid> = futures::stream::iter(0..TASKS)
        .map(|n| {
            let req = TaskRequest::new("cruncher", "crunch", json!({ "n": n }), user.clone());
            let submitter = &submitter;
            async move { submitter.submit(req).await.unwrap() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(ids.len(), TASKS);

    let started = Instant::now();
    let mut workers: Vec<Option<Worker>> = (0..NODES)
        .map(|i| Some(spawn_worker(&url, &format!("node-{i}"))))
        .collect();

    // Mid-run: once a quarter is done, while node-0 holds tasks.
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(20),
        async || {
            let done: i64 =
                sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = 'completed'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            let held: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM tasks WHERE status = 'running' AND lease_owner = 'node-0'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if done >= (TASKS / 4) as i64 && held > 0 {
                Ok(())
            } else {
                Err(format!(
                    "the workers made no progress: {done} completed, {held} held by node-0"
                ))
            }
        },
    )
    .await;
    let node0_backends = || {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = $1 OR application_name LIKE $1 || '-%'",
        )
        .bind(app_name("node-0"))
        .fetch_one(&pool)
    };
    assert!(
        node0_backends().await.unwrap() > 0,
        "node-0's connections are named in pg_stat_activity"
    );
    let killed_at = db_now(&pool).await;
    drop(workers[0].take()); // SIGKILL, then reaped
    // A COMMIT node-0 sent just before it died may still be applied by its server backend, so
    // the orphans are read only once every backend of node-0 has ended: from then on, what
    // node-0 held is what it left behind.
    until(
        Duration::from_secs(30),
        Duration::from_millis(10),
        "node-0's backends end",
        async || node0_backends().await.unwrap() == 0,
    )
    .await;
    let orphans: HashSet<Uuid> = sqlx::query_scalar(
        "SELECT id FROM tasks WHERE status = 'running' AND lease_owner = 'node-0'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert!(!orphans.is_empty(), "node-0 held tasks when it was killed");

    until(
        Duration::from_secs(90),
        Duration::from_millis(50),
        "every task ends",
        async || unfinished(&pool).await == 0,
    )
    .await;
    let elapsed = started.elapsed();
    for w in workers.iter_mut().flatten() {
        let status = w.0.wait().unwrap();
        assert!(status.success(), "a surviving worker failed: {status}");
    }

    // Every task completed with the right output; none lost.
    let rows = sqlx::query("SELECT id, status, output, input, attempts FROM tasks")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), TASKS, "no task lost or added");
    let mut attempts: HashMap<Uuid, i32> = HashMap::new();
    for r in &rows {
        let id: Uuid = r.get("id");
        let status: String = r.get("status");
        assert_eq!(status, "completed", "task {id}");
        let input: serde_json::Value = r.get("input");
        let output: Option<serde_json::Value> = r.get("output");
        let n = input["n"].as_u64().unwrap();
        assert_eq!(output, Some(json!(6 * n)), "task {id}");
        attempts.insert(id, r.get("attempts"));
    }
    assert_eq!(
        ids.iter().copied().collect::<HashSet<_>>(),
        attempts.keys().copied().collect::<HashSet<_>>()
    );

    // Each step of each task journaled once and completed once.
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'completed'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, (TASKS * STEPS as usize) as i64, "runs rows");
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT task_id, kind->>'step' FROM task_events \
         WHERE kind->>'type' = 'step_completed' GROUP BY 1, 2 HAVING count(*) <> 1) x",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(twice, 0, "a step completed twice (or never)");
    let completed_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_events WHERE kind->>'type' = 'step_completed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(completed_events, (TASKS * STEPS as usize) as i64);

    // Executions of steps (the side effects): one per step, except the step the killed node
    // was running, which may have run again.
    let effects = sqlx::query(
        "SELECT task_id, step, array_agg(node ORDER BY at) AS nodes FROM crash_effects \
         GROUP BY task_id, step",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(effects.len(), TASKS * STEPS as usize, "every step ran");
    let mut last_on_killed: HashMap<Uuid, i32> = HashMap::new();
    let mut repeated: HashMap<Uuid, Vec<i32>> = HashMap::new();
    for r in &effects {
        let task: Uuid = r.get("task_id");
        let step: i32 = r.get("step");
        let nodes: Vec<String> = r.get("nodes");
        if nodes.iter().any(|n| n == "node-0") {
            let e = last_on_killed.entry(task).or_insert(step);
            *e = (*e).max(step);
        }
        if nodes.len() > 1 {
            assert!(
                orphans.contains(&task),
                "task {task} step {step} ran on {nodes:?}"
            );
            assert_eq!(nodes.len(), 2, "task {task} step {step} ran on {nodes:?}");
            assert_eq!(
                nodes[0], "node-0",
                "task {task} step {step} ran on {nodes:?}"
            );
            assert_ne!(nodes[1], "node-0");
            repeated.entry(task).or_default().push(step);
        }
    }
    for (task, steps) in &repeated {
        assert_eq!(steps.len(), 1, "task {task}: steps {steps:?} ran again");
        assert_eq!(
            Some(&steps[0]),
            last_on_killed.get(task),
            "task {task}: only the step in flight may run again"
        );
    }

    // The killed node's tasks: attempt 2 started within about two leases of the kill.
    let restarts: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT min(at) FROM task_events WHERE task_id = ANY($1) \
         AND kind->>'type' = 'started' AND (kind->>'attempt')::int = 2 GROUP BY task_id",
    )
    .bind(orphans.iter().copied().collect::<Vec<_>>())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(restarts.len(), orphans.len(), "every orphan started again");
    for id in &orphans {
        assert_eq!(attempts[id], 2, "orphan {id}: attempts");
    }
    let delays: Vec<f64> = restarts
        .iter()
        .map(|at| (*at - killed_at).num_milliseconds() as f64 / 1000.0)
        .collect();
    let max = delays.iter().copied().fold(0.0, f64::max);
    let min = delays.iter().copied().fold(f64::MAX, f64::min);
    let lease = LEASE.as_secs_f64();
    eprintln!(
        "crash test: {TASKS} tasks x {STEPS} steps on {NODES} processes in {:.1} s; node-0 \
         killed holding {} tasks; restarted {min:.2}..{max:.2} s after the kill (lease {lease} s, \
         {:.2} leases at most); {} steps ran again (in flight at the kill), 0 completed twice",
        elapsed.as_secs_f64(),
        orphans.len(),
        max / lease,
        repeated.len(),
    );
    assert!(
        max <= 2.5 * lease,
        "the last orphan restarted {max:.2} s after the kill (lease {lease} s)"
    );

    drop(submitter);
    store.close().await;
    db.drop().await;
}
