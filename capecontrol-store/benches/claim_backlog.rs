//! Claim latency against a large backlog that cannot run: does a claim for an idle agent stay
//! fast when 100,000 queued tasks are delayed or wait on an agent at its concurrency limit?
//!
//! ```sh
//! eval "$(scripts/pg.sh start)"      # DATABASE_URL may CREATE DATABASE; without it, memory only
//! cargo bench -p capecontrol-store --bench claim_backlog
//! ```
//!
//! For each store (MemoryStore, PostgresStore) and each backlog size (`BENCH_SMALL` [1000],
//! `BENCH_LARGE` [100000]): half the backlog is due in a day, half is due now but for an agent
//! whose one allowed task is running; all of it has a higher priority and is older than the
//! probe, so a claim that walks the queue in order meets all of it first. Then `BENCH_SAMPLES`
//! [50] times: one task of another agent is enqueued and a claim for any agent is timed (it must
//! return exactly that task), then the task is finished. Prints p50/p90 per size and the ratio
//! of the large backlog's p50 to the small one's. Without `--bench` (under `cargo test`), a
//! smoke round with 200 and 2000 tasks.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capecontrol_core::Principal;
use capecontrol_core::state::{AgentStatus, VersionStatus};
use capecontrol_core::store::memory::MemoryStore;
use capecontrol_core::store::{AgentRecord, ClaimRequest, NewTask, Store, VersionRecord};
use capecontrol_store::PostgresStore;
use capecontrol_store::sqlx::postgres::PgConnectOptions;
use capecontrol_store::sqlx::{self, AssertSqlSafe, ConnectOptions, Executor};
use capecontrol_testkit::fixtures::completed;
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

const BUSY: &str = "bench-busy";
const IDLE: &str = "bench-idle";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn agent(store: &Arc<dyn Store>, id: &str) {
    let now = Utc::now();
    store
        .insert_agent(AgentRecord {
            id: id.into(),
            name: id.into(),
            slug: id.into(),
            description: None,
            category: None,
            capabilities: None,
            policy_scopes: Vec::new(),
            manifest: None,
            status: AgentStatus::Draft,
            owner: None,
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("insert agent");
    store
        .insert_version(VersionRecord {
            id: Uuid::new_v4(),
            agent_id: id.into(),
            version: "1.0.0".into(),
            manifest: json!({"name": id, "version": "1.0.0", "description": "d", "placement": "chat"}),
            status: VersionStatus::Draft,
            changelog: None,
            published_at: None,
            created_at: now,
        })
        .await
        .expect("insert version");
    store
        .publish_version(id, "1.0.0")
        .await
        .expect("publish version");
}

fn task(agent: &str, priority: i32, delayed: bool, limit: u32) -> NewTask {
    NewTask {
        id: Uuid::new_v4(),
        agent_id: agent.into(),
        version: "1.0.0".into(),
        task: "run".into(),
        input: json!({}),
        principal: Principal::new("bench"),
        priority,
        run_at: delayed.then(|| Utc::now() + chrono::Duration::days(1)),
        idempotency_key: None,
        max_attempts: 1,
        concurrency_limit: limit,
        timeout: Duration::from_secs(30),
        traceparent: None,
        trigger: None,
        policy_allowed: false,
        audit: Vec::new(),
        parent_id: None,
    }
}

fn claim(agents: Option<Vec<String>>) -> ClaimRequest {
    ClaimRequest {
        worker: "bench".into(),
        limit: 1,
        lease: Duration::from_secs(60),
        agents,
    }
}

/// Fills the backlog: `n / 2` delayed tasks and `n / 2` due tasks of an agent at its limit.
/// `bulk` copies a template task `count` times with the given delay (PostgreSQL); without it
/// every task is enqueued.
async fn backlog(store: &Arc<dyn Store>, n: usize, pg: Option<&PostgresStore>) {
    // The busy agent's one allowed task, running.
    store
        .enqueue(task(BUSY, 100, false, 1))
        .await
        .expect("enqueue");
    let running = store
        .claim(&claim(Some(vec![BUSY.into()])))
        .await
        .expect("claim");
    assert_eq!(running.len(), 1);
    let half = n / 2;
    match pg {
        Some(pg) => {
            for delayed in [true, false] {
                let template = store
                    .enqueue(task(BUSY, 10, delayed, 1))
                    .await
                    .expect("enqueue")
                    .task
                    .id;
                sqlx::query(
                    "INSERT INTO tasks (id, user_id, agent_id, goal, input, status, version, \
                       principal, priority, run_at, max_attempts, concurrency_limit, timeout_ms, \
                       created_at) \
                     SELECT gen_random_uuid(), user_id, agent_id, goal, input, 'queued', version, \
                       principal, priority, run_at, max_attempts, concurrency_limit, timeout_ms, \
                       created_at + g * interval '1 microsecond' \
                     FROM tasks, generate_series(1, $2) AS g WHERE id = $1",
                )
                .bind(template)
                .bind(i64::try_from(half.saturating_sub(1)).unwrap_or(0))
                .execute(pg.pool())
                .await
                .expect("bulk insert");
            }
            pg.pool().execute("ANALYZE tasks").await.expect("analyze");
        }
        None => {
            for i in 0..n {
                store
                    .enqueue(task(BUSY, 10, i < half, 1))
                    .await
                    .expect("enqueue");
            }
        }
    }
}

/// Times `samples` claims that each must find the one due task of the idle agent.
async fn probe(store: &Arc<dyn Store>, samples: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let id = store
            .enqueue(task(IDLE, 0, false, 100))
            .await
            .expect("enqueue")
            .task
            .id;
        let start = Instant::now();
        let claimed = store.claim(&claim(None)).await.expect("claim");
        times.push(start.elapsed());
        assert_eq!(claimed.len(), 1, "the probe is claimed");
        assert_eq!(claimed[0].task.id, id, "only the probe can run");
        store
            .finish(&claimed[0].lease, completed(json!(1)))
            .await
            .expect("finish");
    }
    times.sort();
    times
}

fn pct(times: &[Duration], p: f64) -> Duration {
    let i = ((times.len() as f64 - 1.0) * p).round() as usize;
    times[i.min(times.len() - 1)]
}

async fn measure<F, Fut>(name: &str, sizes: [usize; 2], samples: usize, make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (Arc<dyn Store>, Option<PostgresStore>)>,
{
    let mut p50s = Vec::new();
    for n in sizes {
        let (store, pg) = make().await;
        agent(&store, BUSY).await;
        agent(&store, IDLE).await;
        let filled = Instant::now();
        backlog(&store, n, pg.as_ref()).await;
        let fill = filled.elapsed();
        let times = probe(&store, samples).await;
        let (p50, p90) = (pct(&times, 0.5), pct(&times, 0.9));
        println!(
            "{name:<14} backlog {n:>7}: claim p50 {:>9.3} ms  p90 {:>9.3} ms  max {:>9.3} ms  \
             (backlog filled in {:.1} s)",
            p50.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3,
            times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            fill.as_secs_f64(),
        );
        p50s.push(p50);
    }
    println!(
        "{name:<14} p50 ratio {} / {}: {:.2}",
        sizes[1],
        sizes[0],
        p50s[1].as_secs_f64() / p50s[0].as_secs_f64().max(1e-9)
    );
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes = if bench {
        [env("BENCH_SMALL", 1000), env("BENCH_LARGE", 100_000)]
    } else {
        [200, 2000]
    };
    let samples = env("BENCH_SAMPLES", if bench { 50 } else { 5 });
    measure("MemoryStore", sizes, samples, || async {
        (Arc::new(MemoryStore::new()) as Arc<dyn Store>, None)
    })
    .await;
    let Ok(url) = std::env::var("DATABASE_URL") else {
        println!(
            "PostgresStore: skipped, DATABASE_URL is not set (eval \"$(scripts/pg.sh start)\")"
        );
        return;
    };
    let admin_options = PgConnectOptions::from_str(&url).expect("DATABASE_URL is a PostgreSQL URL");
    let mut admin = admin_options
        .connect()
        .await
        .expect("connect to DATABASE_URL");
    let mut created = Vec::new();
    for n in sizes {
        let name = format!("cc_claim_{n}_{}", Uuid::new_v4().simple());
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("CREATE DATABASE (DATABASE_URL needs the right to)");
        created.push(name);
    }
    let names = std::sync::Mutex::new(created.clone().into_iter());
    measure("PostgresStore", sizes, samples, || async {
        let name = names
            .lock()
            .expect("names")
            .next()
            .expect("a database per size");
        let options = admin_options.clone().database(&name);
        let pg = capecontrol_store::PostgresStoreOptions::new(options)
            .connect()
            .await
            .expect("connect");
        pg.migrate().await.expect("migrate");
        let store: Arc<dyn Store> = Arc::new(pg.clone());
        (store, Some(pg))
    })
    .await;
    for name in created {
        let _ = admin
            .execute(AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
            .await;
    }
}
