//! CapeControl on `PostgresStore` against apalis-postgres 1.0, on the same PostgreSQL server
//! and durability settings, in one run: five systems side by side (and a reference), each round on
//! a fresh database of the same server.
//!
//! ```sh
//! eval "$(scripts/pg.sh start)"      # or any server: DATABASE_URL may CREATE DATABASE
//! cargo bench -p capecontrol-store --bench vs_apalis
//! BENCH_N=5000 BENCH_DRAIN_WORKERS=4,16,64 BENCH_RATES=200,1000 \
//!   cargo bench -p capecontrol-store --bench vs_apalis
//! ```
//!
//! The systems: `cc-inline` (CapeControl, every write its own statement and commit:
//! `batch_writes(false)`), `cc-batched` (the batched completer: `batch_writes(true)`),
//! `cc-prefetch` (the same, claiming as many tasks beyond its free slots as it has workers:
//! `claim_prefetch`), `apalis`
//! (tuned: a fetch batch of 100, a 10 ms poll interval) and `apalis-listen` (the same plus its
//! LISTEN/NOTIFY pubsub, `with_pubsub()`, polling kept). Beside them, in the drain rounds only,
//! `sql-floor`: no system but a reference. The same queue, enqueued by CapeControl, drained by two
//! SQL statements per batch and nothing else (`BENCH_FLOOR_PIPES` connections at once, each
//! claiming `BENCH_FLOOR_BATCH` tasks in one statement and finishing them in the next), writing
//! exactly the rows CapeControl writes for a one-step task (the task's two updates, 4 events,
//! the step row, 2 audit rows) and skipping everything else a claim and a finish do (due
//! times, concurrency limits, the registry rows, fencing order, the audit seal, the agent):
//! what those writes cost this server when batched as far as the SQL allows.
//!
//! The same trivial job on all: read an index, add one. CapeControl runs it as a task with one
//! durable step (`cx.step`; `BENCH_MULTI_STEPS` steps in the multi-step round), so the task row,
//! the step rows, the events and the audit trail are all persisted; apalis runs it as a job (its
//! row locked, then acknowledged with the result). Measurements:
//!
//! 1. drain: `N` tasks enqueued first, then the time until the last completion committed, at
//!    each worker count of `BENCH_DRAIN_WORKERS` (CapeControl's workers; apalis' concurrency only
//!    with `BENCH_APALIS_LIMIT=1`, else every fetched job at once);
//! 2. latency at each fixed offered rate of `BENCH_RATES` (open loop: submissions leave on a
//!    schedule, whatever the system does): submit → start and submit → done, p50/p99/max, and
//!    stalls (starts later than 1 s after their submission). The schedule opens with
//!    `BENCH_WARMUP_SECS` of submissions at the same rate, right after the system starts: their
//!    submit → start p99 and max are reported on rows of their own ("first … s"), the other
//!    rows cover the `BENCH_SECS` after them, and stalls count both. A fresh node's first
//!    submissions meet new connections, each planning the store's statements afresh (at 200/s
//!    on 2 cores, CapeControl's first 300–700 ms of submissions took up to 100–470 ms to start,
//!    1–3 % of a 10 s round, enough to make its p99); the rows apart keep that cost in view
//!    without letting it stand for the steady state.
//!    `BENCH_SLOW_MS=<ms>` also prints, per round, the starts slower than that by 100 ms of the
//!    schedule (a diagnostic). `BENCH_DISK_PROBE_MS=<ms>` runs a disk probe beside each
//!    system's latency round: a thread writes 8 KB to a file in the temp dir (`TMPDIR` picks
//!    the disk: a local server's, to watch the disk its WAL is on) and `fdatasync`s it every
//!    that many ms; the syncs slower than 10 ms get rows of their own (how many, the slowest),
//!    and with `BENCH_SLOW_MS` they are printed by 100 ms of the schedule as the slow starts
//!    are, so that a burst of slow starts can be laid beside the disk's stalls. Off by
//!    default: the probe's own syncs load the disk a little;
//! 3. commits per task while enqueuing and while draining (`pg_stat_database.xact_commit`, every
//!    transaction, reads included), WAL flushes (`pg_stat_wal.wal_sync`, cluster-wide), and CPU
//!    seconds per 1,000 tasks of this process and of the PostgreSQL server (`/proc`: the
//!    postmaster with its reaped backends, plus its live children; a local server only);
//! 4. multi-step: `BENCH_MULTI_N` tasks of `BENCH_MULTI_STEPS` steps drained by CapeControl
//!    (commits per step; apalis has no steps).
//!
//! Environment (defaults in brackets): `BENCH_N` [2000], `BENCH_WORKERS` [16] (latency and
//! multi-step rounds), `BENCH_DRAIN_WORKERS` [BENCH_WORKERS] (comma-separated), `BENCH_BATCH`
//! [100], `BENCH_POLL_MS` [10], `BENCH_RATE` tasks/s [100], `BENCH_RATES` [BENCH_RATE]
//! (comma-separated), `BENCH_SECS` [10], `BENCH_WARMUP_SECS` [1], `BENCH_POOL` connections per
//! pool [20], `BENCH_PREFETCH` [the round's workers: `cc-prefetch`'s `claim_prefetch`],
//! `BENCH_MULTI_STEPS` [10] (0: no multi-step round), `BENCH_MULTI_N` [1000], `BENCH_SYSTEMS`
//! [cc-inline,cc-batched,cc-prefetch,apalis,apalis-listen,sql-floor], `BENCH_FLOOR_PIPES` [2],
//! `BENCH_FLOOR_BATCH` [64], `BENCH_SLOW_MS` [unset],
//! `BENCH_DISK_PROBE_MS` [0: no probe]. Without `DATABASE_URL`, `cargo bench` fails and
//! `cargo test` (which runs this binary without `--bench`) skips it loudly; with one, `cargo
//! test` runs a small smoke round.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use apalis::prelude::{
    BackendExt, BoxDynError, Strategy, TaskSink, WorkerBuilder, WorkerBuilderExt, WorkerContext,
};
use apalis_postgres::{Config as ApalisConfig, PostgresStorage};
use async_trait::async_trait;
use capecontrol_core::agent::{AgentBase, TaskContext, ToolContext};
use capecontrol_core::events::TaskEventKind;
use capecontrol_core::runtime::{Platform, PlatformConfig, TaskRequest};
use capecontrol_core::store::QueueStore;
use capecontrol_core::{Error, Manifest, Principal, Result};
use capecontrol_store::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use capecontrol_store::sqlx::{
    self, AssertSqlSafe, ConnectOptions, Connection, Executor, PgConnection, PgPool,
};
use capecontrol_store::{PostgresStore, PostgresStoreOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use capecontrol_testkit::runtime::{install_in, unlimited_rates};
use tokio::sync::Notify;

// ---------------------------------------------------------------------------------------------
// Settings

#[derive(Debug, Clone)]
struct Settings {
    n: usize,
    workers: usize,
    batch: usize,
    poll: Duration,
    rate: u64,
    secs: u64,
    /// Seconds of submissions at the same rate before the measured ones (reported apart).
    warmup_secs: u64,
    /// `BENCH_DISK_PROBE_MS`: the disk probe's period in latency rounds (zero: no probe).
    disk_probe: Duration,
    pool: u32,
    apalis_limit: bool,
    /// `cc-prefetch`'s `claim_prefetch` (`None`: the round's workers).
    prefetch: Option<usize>,
    drain_workers: Vec<usize>,
    rates: Vec<u64>,
    multi_steps: usize,
    multi_n: usize,
    /// `sql-floor`: statements draining at once (`BENCH_FLOOR_PIPES`) and tasks per statement
    /// (`BENCH_FLOOR_BATCH`).
    floor_pipes: usize,
    floor_batch: usize,
    systems: Vec<System>,
    /// Steps per CapeControl task in the round running now.
    steps: usize,
    /// The system of the round running now.
    system: System,
}

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    CcInline,
    CcBatched,
    CcPrefetch,
    Apalis,
    ApalisListen,
    SqlFloor,
}

impl System {
    const ALL: [System; 6] = [
        System::CcInline,
        System::CcBatched,
        System::CcPrefetch,
        System::Apalis,
        System::ApalisListen,
        System::SqlFloor,
    ];

    fn name(self) -> &'static str {
        match self {
            System::CcInline => "cc-inline",
            System::CcBatched => "cc-batched",
            System::CcPrefetch => "cc-prefetch",
            System::Apalis => "apalis",
            System::ApalisListen => "apalis-listen",
            System::SqlFloor => "sql-floor",
        }
    }

    fn is_cc(self) -> bool {
        matches!(
            self,
            System::CcInline | System::CcBatched | System::CcPrefetch
        )
    }
}

impl FromStr for System {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        System::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown system {s}"))
    }
}

fn env_list<T: FromStr>(name: &str, default: Vec<T>) -> Vec<T> {
    match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v}: {x} is not a valid value"))
            })
            .collect(),
        Err(_) => default,
    }
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Self {
        let workers = env_or("BENCH_WORKERS", 16);
        let rate = env_or("BENCH_RATE", 100);
        Self {
            n: env_or("BENCH_N", 2_000),
            workers,
            batch: env_or("BENCH_BATCH", 100),
            poll: Duration::from_millis(env_or("BENCH_POLL_MS", 10)),
            rate,
            secs: env_or("BENCH_SECS", 10),
            warmup_secs: env_or("BENCH_WARMUP_SECS", 1),
            disk_probe: Duration::from_millis(env_or("BENCH_DISK_PROBE_MS", 0)),
            pool: env_or("BENCH_POOL", 20),
            apalis_limit: env_or("BENCH_APALIS_LIMIT", 0u8) != 0,
            // Set or not: parsed (and refused loudly) by `env_or` as the other knobs are.
            prefetch: std::env::var_os("BENCH_PREFETCH").map(|_| env_or("BENCH_PREFETCH", 0)),
            drain_workers: env_list("BENCH_DRAIN_WORKERS", vec![workers]),
            rates: env_list("BENCH_RATES", vec![rate]),
            multi_steps: env_or("BENCH_MULTI_STEPS", 10),
            multi_n: env_or("BENCH_MULTI_N", 1_000),
            floor_pipes: env_or("BENCH_FLOOR_PIPES", 2),
            floor_batch: env_or("BENCH_FLOOR_BATCH", 64),
            systems: env_list("BENCH_SYSTEMS", System::ALL.to_vec()),
            steps: 1,
            system: System::CcBatched,
        }
    }

    /// Submissions of a latency round, warm-up included.
    fn latency_n(&self) -> usize {
        usize::try_from(self.rate * (self.secs + self.warmup_secs)).unwrap_or(usize::MAX)
    }

    /// Submissions of a latency round's warm-up.
    fn warmup_n(&self) -> usize {
        usize::try_from(self.rate * self.warmup_secs).unwrap_or(usize::MAX)
    }

    /// `cargo test`: a few tasks through the throughput round, to keep the harness working; no
    /// latency round (an apalis worker may sit idle until its 30 s heartbeat, see
    /// [`apalis_worker`]).
    fn smoke() -> Self {
        Self {
            n: 40,
            secs: 0,
            rates: Vec::new(),
            multi_n: 20,
            multi_steps: 3,
            ..Self::from_env()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Time marks, shared by both systems' handlers

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the epoch, plus one: zero means "not yet".
fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
}

/// When each job was submitted, acknowledged (its submission returned), started and handled (the
/// handler returned), by job index.
struct Marks {
    submitted: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
    started: Vec<AtomicU64>,
    handled: Vec<AtomicU64>,
    handled_count: AtomicUsize,
    all_handled: Notify,
}

impl Marks {
    fn new(n: usize) -> Arc<Self> {
        let zeros = || (0..n).map(|_| AtomicU64::new(0)).collect();
        Arc::new(Self {
            submitted: zeros(),
            acked: zeros(),
            started: zeros(),
            handled: zeros(),
            handled_count: AtomicUsize::new(0),
            all_handled: Notify::new(),
        })
    }

    fn start(&self, i: usize) {
        // First start only (a retried attempt would start again).
        let _ = self.started[i].compare_exchange(0, now_ns(), Ordering::SeqCst, Ordering::SeqCst);
    }

    fn handle(&self, i: usize) {
        if self.handled[i]
            .compare_exchange(0, now_ns(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            && self.handled_count.fetch_add(1, Ordering::SeqCst) + 1 == self.handled.len()
        {
            self.all_handled.notify_one();
        }
    }

    async fn wait_all_handled(&self) {
        loop {
            let notified = self.all_handled.notified();
            if self.handled_count.load(Ordering::SeqCst) == self.handled.len() {
                return;
            }
            notified.await;
        }
    }
}

/// The marks of the phase running now.
static MARKS: Mutex<Option<Arc<Marks>>> = Mutex::new(None);

fn marks() -> Arc<Marks> {
    MARKS
        .lock()
        .expect("marks")
        .clone()
        .expect("a phase is running")
}

fn set_marks(n: usize) -> Arc<Marks> {
    let m = Marks::new(n);
    *MARKS.lock().expect("marks") = Some(Arc::clone(&m));
    m
}

/// The trivial work of both systems.
fn work(i: usize) -> u64 {
    std::hint::black_box(i as u64 + 1)
}

// ---------------------------------------------------------------------------------------------
// Database: one fresh database for both systems; statistics read from the admin connection

struct Db {
    admin: PgConnection,
    admin_options: PgConnectOptions,
    name: String,
    options: PgConnectOptions,
    /// The server's postmaster, when it runs on this machine.
    postmaster: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Counters {
    commits: i64,
    wal_syncs: i64,
    /// CPU seconds of this process and of the PostgreSQL server (NaN: not readable).
    cpu_self: f64,
    cpu_pg: f64,
}

/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// The fields of `/proc/<pid>/stat` after the command name (the state is field 0 here).
fn proc_stat(pid: &str) -> Option<Vec<u64>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 2..)?;
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// CPU seconds of this process so far.
fn cpu_self() -> f64 {
    proc_stat("self").map_or(f64::NAN, |f| (f[11] + f[12]) as f64 / TICKS)
}

/// CPU seconds of a local PostgreSQL server so far: the postmaster, its reaped children
/// (every backend that exited) and its live children.
fn cpu_pg(postmaster: Option<u32>) -> f64 {
    let Some(pm) = postmaster else {
        return f64::NAN;
    };
    let Some(f) = proc_stat(&pm.to_string()) else {
        return f64::NAN;
    };
    let mut ticks = f[11] + f[12] + f[13] + f[14];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if let Some(c) = proc_stat(pid)
                && c[1] == u64::from(pm)
            {
                ticks += c[11] + c[12];
            }
        }
    }
    ticks as f64 / TICKS
}

impl Db {
    async fn create(url: &str) -> Self {
        let admin_options =
            PgConnectOptions::from_str(url).expect("DATABASE_URL is a PostgreSQL URL");
        let mut admin = admin_options
            .connect()
            .await
            .expect("connect to DATABASE_URL");
        let name = format!("cc_bench_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("CREATE DATABASE (DATABASE_URL needs the right to)");
        let options = admin_options.clone().database(&name);
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut admin)
            .await
            .expect("pg_backend_pid");
        let postmaster = proc_stat(&backend.to_string()).and_then(|f| u32::try_from(f[1]).ok());
        Self {
            admin,
            admin_options,
            name,
            options,
            postmaster,
        }
    }

    async fn show(&mut self, setting: &str) -> String {
        sqlx::query_scalar::<_, String>(AssertSqlSafe(format!("SHOW {setting}")))
            .fetch_one(&mut self.admin)
            .await
            .unwrap_or_else(|e| format!("? ({e})"))
    }

    /// Waits until no connection to the benchmark database is left: a backend flushes its
    /// statistics when it exits (otherwise up to a second or more later).
    async fn quiesce(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                    .bind(&self.name)
                    .fetch_one(&mut self.admin)
                    .await
                    .expect("pg_stat_activity");
            if n == 0 || Instant::now() > deadline {
                if n != 0 {
                    eprintln!("warning: {n} connections still open; counters may lag");
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn counters(&mut self) -> Counters {
        self.quiesce().await;
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut self.admin)
            .await
            .expect("clear snapshot");
        let commits: i64 =
            sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
                .bind(&self.name)
                .fetch_one(&mut self.admin)
                .await
                .expect("pg_stat_database");
        // pg_stat_wal.wal_sync exists from PostgreSQL 14 to 17.
        let wal_syncs: i64 = sqlx::query_scalar("SELECT wal_sync FROM pg_stat_wal")
            .fetch_one(&mut self.admin)
            .await
            .unwrap_or(-1);
        Counters {
            commits,
            wal_syncs,
            cpu_self: cpu_self(),
            cpu_pg: cpu_pg(self.postmaster),
        }
    }

    async fn pool(&self, size: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(size)
            .connect_with(self.options.clone())
            .await
            .expect("connect the benchmark database")
    }

    async fn scalar(&self, sql: &'static str) -> i64 {
        let mut c = self.options.connect().await.expect("connect");
        let v = sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&mut c)
            .await
            .expect(sql);
        c.close().await.ok();
        v
    }

    async fn drop(self) {
        self.admin.close().await.ok();
        let mut admin = self.admin_options.connect().await.expect("connect");
        admin
            .execute(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .await
            .expect("drop the benchmark database");
        admin.close().await.ok();
    }
}

/// Commits, WAL flushes and CPU seconds of a phase, per task.
#[derive(Debug, Clone, Copy, Default)]
struct PerTask {
    commits: f64,
    wal_syncs: f64,
    cpu_self: f64,
    cpu_pg: f64,
}

fn per_task(before: Counters, after: Counters, n: usize) -> PerTask {
    PerTask {
        commits: (after.commits - before.commits) as f64 / n as f64,
        wal_syncs: if before.wal_syncs < 0 {
            f64::NAN
        } else {
            (after.wal_syncs - before.wal_syncs) as f64 / n as f64
        },
        cpu_self: (after.cpu_self - before.cpu_self) / n as f64,
        cpu_pg: (after.cpu_pg - before.cpu_pg) / n as f64,
    }
}

// ---------------------------------------------------------------------------------------------
// CapeControl

/// One durable step that does the trivial work.
struct Trivial;

#[async_trait]
impl AgentBase for Trivial {
    fn manifest(&self) -> Manifest {
        serde_json::from_value(json!({
            "name": "Trivial", "version": "1.0.0", "description": "adds one in one durable step",
            "config": {"concurrent_tasks": 1_000_000}
        }))
        .expect("manifest")
    }

    async fn run_task(&self, _name: &str, input: Value, cx: &TaskContext) -> Result<Value> {
        let i = usize::try_from(input["i"].as_u64().unwrap_or(0)).unwrap_or(0);
        let steps = input["steps"].as_u64().unwrap_or(1);
        let m = marks();
        m.start(i);
        let mut v = 0;
        for k in 0..steps {
            v = cx
                .step(&format!("work-{k}"), async move { Ok::<_, Error>(work(i)) })
                .await?;
        }
        m.handle(i);
        Ok(json!(v))
    }

    async fn call_tool(&self, name: &str, _input: Value, _cx: &ToolContext) -> Result<Value> {
        Err(Error::not_found("tool", name))
    }
}

const CC_USER: &str = "bench";

/// A single node: no LISTEN/NOTIFY (its own subscribers and wake-ups are served locally).
async fn cc_store(db: &Db, s: &Settings) -> Arc<PostgresStore> {
    let store = PostgresStoreOptions::new(db.options.clone())
        .max_connections(s.pool)
        .event_capacity(1 << 20)
        .listen(false)
        .notify(false)
        .batch_writes(s.system != System::CcInline)
        .connect()
        .await
        .expect("PostgresStore");
    Arc::new(store)
}

async fn cc_platform(store: Arc<PostgresStore>, s: &Settings, workers: bool) -> Arc<Platform> {
    let builder = Platform::builder()
        .store(store)
        .rate_limits(unlimited_rates())
        .config(PlatformConfig {
            workers: s.workers,
            claim_batch: s.batch,
            // cc-prefetch: as many tasks claimed beyond the free slots as there are workers
            // (or `BENCH_PREFETCH`).
            claim_prefetch: if s.system == System::CcPrefetch {
                s.prefetch.unwrap_or(s.workers)
            } else {
                0
            },
            poll_interval: s.poll,
            ..PlatformConfig::default()
        })
        .agent(Trivial);
    let builder = if workers {
        builder
    } else {
        builder.without_workers()
    };
    Arc::new(builder.build().await.expect("platform"))
}

fn cc_request(i: usize, steps: usize) -> TaskRequest {
    TaskRequest::new(
        "trivial",
        "add",
        json!({ "i": i, "steps": steps }),
        Principal::new(CC_USER),
    )
}

async fn cc_setup(db: &Db, s: &Settings) {
    let store = cc_store(db, s).await;
    store.migrate().await.expect("migrate");
    let _platform = cc_platform(Arc::clone(&store), s, false).await;
    install_in(store.as_ref(), "trivial", CC_USER, &[]).await;
    store.close().await;
}

/// Counts `Completed` events and records when each arrived (committed), until `n` did.
fn cc_completions(
    store: &PostgresStore,
    n: usize,
) -> tokio::task::JoinHandle<Vec<(uuid::Uuid, u64)>> {
    let mut events = store.subscribe();
    tokio::spawn(async move {
        let mut done = Vec::with_capacity(n);
        while done.len() < n {
            match events.recv().await {
                Ok(e) => match e.kind {
                    TaskEventKind::Completed { .. } => done.push((e.task_id, now_ns())),
                    ref k if k.is_terminal() => panic!("task did not complete: {e:?}"),
                    _ => {}
                },
                Err(e) => panic!("event stream: {e} (raise event_capacity)"),
            }
        }
        done
    })
}

/// Submits `n` tasks, `concurrency` at a time.
async fn cc_enqueue(platform: &Arc<Platform>, n: usize, concurrency: usize, steps: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..concurrency {
        let (platform, next) = (Arc::clone(platform), Arc::clone(&next));
        handles.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return;
                }
                platform.submit(cc_request(i, steps)).await.expect("submit");
            }
        }));
    }
    for h in handles {
        h.await.expect("submitter");
    }
}

struct Throughput {
    enqueue: PerTask,
    drain: PerTask,
    drain_time: Duration,
    handled_time: Duration,
    steps_per_task: f64,
    audit_per_task: f64,
    events_per_task: f64,
}

/// Enqueues `s.n` tasks of `s.steps` steps through a node without workers; the counters before
/// and after.
async fn cc_enqueued(db: &mut Db, s: &Settings) -> (Counters, Counters) {
    let c0 = db.counters().await;
    {
        let store = cc_store(db, s).await;
        let platform = cc_platform(Arc::clone(&store), s, false).await;
        cc_enqueue(&platform, s.n, s.workers, s.steps).await;
        store.close().await;
    }
    let c1 = db.counters().await;
    (c0, c1)
}

/// A drain's figures, once its `n` tasks are done: the counters of the enqueue (`c0`, `c1`)
/// and of the drain (from `c1` to now), the rows per completed task.
async fn drained(
    db: &mut Db,
    n: usize,
    (c0, c1): (Counters, Counters),
    drain_time: Duration,
    handled_time: Duration,
) -> Throughput {
    let c2 = db.counters().await;
    let completed = db
        .scalar("SELECT count(*) FROM tasks WHERE status = 'completed'")
        .await;
    assert!(completed >= n as i64, "only {completed} of {n} completed");
    let runs = db.scalar("SELECT count(*) FROM runs").await as f64;
    let audit = db
        .scalar("SELECT count(*) FROM audit_events WHERE task_id IS NOT NULL")
        .await as f64;
    let events = db.scalar("SELECT count(*) FROM task_events").await as f64;
    Throughput {
        enqueue: per_task(c0, c1, n),
        drain: per_task(c1, c2, n),
        drain_time,
        handled_time,
        steps_per_task: runs / completed as f64,
        audit_per_task: audit / completed as f64,
        events_per_task: events / completed as f64,
    }
}

async fn cc_throughput(db: &mut Db, s: &Settings) -> Throughput {
    let n = s.n;
    let counters = cc_enqueued(db, s).await;
    let m = set_marks(n);
    let store = cc_store(db, s).await;
    let completions = cc_completions(&store, n);
    let t0 = Instant::now();
    let platform = cc_platform(Arc::clone(&store), s, true).await;
    m.wait_all_handled().await;
    let handled_time = t0.elapsed();
    completions.await.expect("completions");
    let drain_time = t0.elapsed();
    platform.shutdown(Duration::from_secs(5)).await;
    store.close().await;
    drained(db, n, counters, drain_time, handled_time).await
}

/// Submits one task every `1/rate` s for `secs` s (open loop), the same platform running them.
async fn cc_latency(db: &mut Db, s: &Settings) -> Latency {
    let n = s.latency_n();
    let m = set_marks(n);
    let store = cc_store(db, s).await;
    let platform = cc_platform(Arc::clone(&store), s, true).await;
    let completions = cc_completions(&store, n);
    let ids = Arc::new(Mutex::new(HashMap::with_capacity(n)));
    let submitters = offered_load(s, |i| {
        let (platform, m, ids) = (Arc::clone(&platform), Arc::clone(&m), Arc::clone(&ids));
        async move {
            m.submitted[i].store(now_ns(), Ordering::SeqCst);
            // As a client would: a submission refused transiently (an overloaded pool) is
            // repeated; its latency counts from the first try.
            let id = loop {
                match platform.submit(cc_request(i, 1)).await {
                    Ok(id) => break id,
                    Err(e) if e.is_transient() => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => panic!("submit: {e}"),
                }
            };
            m.acked[i].store(now_ns(), Ordering::SeqCst);
            ids.lock().expect("ids").insert(id, i);
        }
    })
    .await;
    for h in submitters {
        h.await.expect("submit");
    }
    let done = completions.await.expect("completions");
    m.wait_all_handled().await;
    platform.shutdown(Duration::from_secs(5)).await;
    store.close().await;
    let ids = ids.lock().expect("ids");
    let mut committed = vec![0u64; n];
    for (id, at) in done {
        if let Some(&i) = ids.get(&id) {
            committed[i] = at;
        }
    }
    Latency::from_marks(&m, Some(&committed), s.warmup_n())
}

// ---------------------------------------------------------------------------------------------
// The SQL floor

/// `sql-floor`'s claim: the rows a CapeControl claim writes for each task (the task `running`
/// under a new lease, its `started` event, its `task.started` audit row), for up to `$2` tasks
/// of agent `$1` in claim order, in one statement; none of the claim's checks (due time,
/// concurrency limits, the agents' skip scan, the registry rows). Committed without waiting for
/// the flush, as CapeControl's claim is.
const FLOOR_CLAIM: &str = r#"
WITH c AS (
  SELECT id FROM tasks WHERE status = 'queued' AND agent_id = $1
  ORDER BY priority DESC, created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
), upd AS (
  UPDATE tasks t SET status = 'running', attempts = t.attempts + 1, lease_owner = 'floor',
    lease_token = gen_random_uuid(), lease_expires_at = now() + interval '30 seconds',
    started_at = now(), last_seq = t.last_seq + 1
  FROM c WHERE t.id = c.id
  RETURNING t.id, t.last_seq, t.attempts, t.agent_id, t.user_id, t.lease_token
), ev AS (
  INSERT INTO task_events (task_id, seq, at, kind)
  SELECT id, last_seq, now(), jsonb_build_object('type', 'started', 'attempt', attempts,
                                                 'worker', 'floor')
  FROM upd
), au AS (
  INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload)
  SELECT id, agent_id, user_id, 'task.started',
         jsonb_build_object('attempt', attempts, 'worker', 'floor')
  FROM upd
)
SELECT id, lease_token FROM upd
"#;

/// `sql-floor`'s finish: the rows a CapeControl finish of a one-step task writes (the task
/// `completed`, fenced by its lease; its `step_started`, `step_completed` and `completed`
/// events; its step row; its `task.completed` audit row), for the tasks of `$1` (with their
/// lease tokens `$2`) in one statement, committed with the flush.
const FLOOR_FINISH: &str = r#"
WITH w AS (
  SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS w(id, token)
), t AS (
  UPDATE tasks SET status = 'completed', output = '{"sum": 1}', completed_at = now(),
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
    last_seq = last_seq + 3, finished_token = w.token
  FROM w
  WHERE tasks.id = w.id AND tasks.lease_token = w.token AND tasks.status = 'running'
  RETURNING tasks.id, tasks.last_seq, tasks.agent_id, tasks.user_id, tasks.attempts
), ev AS (
  INSERT INTO task_events (task_id, seq, at, kind)
  SELECT t.id, t.last_seq - 3 + g, now(),
         CASE g WHEN 1 THEN '{"type": "step_started", "step": 0, "name": "add"}'::jsonb
                WHEN 2 THEN '{"type": "step_completed", "step": 0, "output": 1}'::jsonb
                ELSE '{"type": "completed", "output": {"sum": 1}}'::jsonb END
  FROM t, generate_series(1, 3) AS g
), st AS (
  INSERT INTO runs (task_id, step, state, status, started_at, finished_at)
  SELECT t.id, 0, '{"name": "add", "output": 1}', 'completed', now(), now() FROM t
), au AS (
  INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload)
  SELECT t.id, t.agent_id, t.user_id, 'task.completed',
         jsonb_build_object('attempt', t.attempts, 'duration_ms', 0)
  FROM t
)
SELECT count(*) FROM t
"#;

/// `sql-floor`: the same queue as CapeControl's (enqueued by the platform), drained by SQL
/// alone: `floor_pipes` connections at once, each claiming `floor_batch` tasks in one statement
/// and finishing them in the next, with no process around them (no agent runs, no events
/// announced, no audit sealed). What CapeControl's writes cost PostgreSQL when batched as far
/// as the SQL allows: what a dispatcher and a completer writing these rows could reach on this
/// server in that shape, not a system of its own (its claim checks nothing: no queue to use).
async fn floor_throughput(db: &mut Db, s: &Settings) -> Throughput {
    let counters = cc_enqueued(db, s).await;
    let pool = db
        .pool(u32::try_from(s.floor_pipes).unwrap_or(u32::MAX))
        .await;
    let agent: String = sqlx::query_scalar("SELECT agent_id FROM tasks LIMIT 1")
        .fetch_one(&pool)
        .await
        .expect("a queued task");
    let batch = i64::try_from(s.floor_batch.max(1)).unwrap_or(i64::MAX);
    let t0 = Instant::now();
    let pipes: Vec<_> = (0..s.floor_pipes.max(1))
        .map(|_| {
            let (pool, agent) = (pool.clone(), agent.clone());
            tokio::spawn(async move {
                loop {
                    let mut tx = pool.begin().await.expect("begin");
                    sqlx::query("SET LOCAL synchronous_commit = off")
                        .execute(&mut *tx)
                        .await
                        .expect("async commit");
                    let claimed: Vec<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as(FLOOR_CLAIM)
                        .bind(&agent)
                        .bind(batch)
                        .fetch_all(&mut *tx)
                        .await
                        .expect("floor claim");
                    tx.commit().await.expect("commit the claim");
                    if claimed.is_empty() {
                        return;
                    }
                    let (ids, tokens): (Vec<_>, Vec<_>) = claimed.into_iter().unzip();
                    let done: i64 = sqlx::query_scalar(FLOOR_FINISH)
                        .bind(&ids)
                        .bind(&tokens)
                        .fetch_one(&pool)
                        .await
                        .expect("floor finish");
                    assert_eq!(done, ids.len() as i64, "a claimed task was not finished");
                }
            })
        })
        .collect();
    for p in pipes {
        p.await.expect("floor pipe");
    }
    let drain_time = t0.elapsed();
    pool.close().await;
    drained(db, s.n, counters, drain_time, drain_time).await
}

// ---------------------------------------------------------------------------------------------
// apalis

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    i: usize,
}

async fn apalis_handler(job: Job) -> std::result::Result<u64, BoxDynError> {
    let m = marks();
    m.start(job.i);
    let v = work(job.i);
    m.handle(job.i);
    Ok(v)
}

fn apalis_storage(pool: &PgPool, queue: &str, s: &Settings) -> PostgresStorage<Job> {
    PostgresStorage::new(pool).with_config(ApalisConfig::default().queue(queue).batch_size(s.batch))
}

async fn apalis_setup(db: &Db) {
    let pool = db.pool(2).await;
    PostgresStorage::setup(&pool).await.expect("apalis setup");
    pool.close().await;
}

/// Runs an apalis worker on `queue` until the returned context is stopped; `apalis-listen`
/// adds apalis' LISTEN/NOTIFY pubsub (`with_pubsub()`) to the same polling.
///
/// Without a concurrency limit by default (every job of a fetched batch at once);
/// `BENCH_APALIS_LIMIT=1` adds `.concurrency(workers)`. Seen here, with and without the limit:
/// at a steady offered rate the worker sometimes stops fetching (its jobs stay `Pending`) until
/// its 30 s heartbeat wakes it, so apalis' latency p99/max can be about 25 s. It happened in
/// every full run; a run of the latency round alone (500 jobs) did not show it.
fn apalis_worker(
    pool: &PgPool,
    queue: &str,
    name: &str,
    s: &Settings,
) -> (WorkerContext, tokio::task::JoinHandle<()>) {
    let ctx = WorkerContext::new(name);
    macro_rules! spawn {
        ($backend:expr) => {
            if s.apalis_limit {
                let worker = WorkerBuilder::new(&ctx)
                    .backend($backend)
                    .concurrency(s.workers)
                    .build(apalis_handler);
                tokio::spawn(async move {
                    if let Err(e) = worker.run().await {
                        panic!("apalis worker: {e}");
                    }
                })
            } else {
                let worker = WorkerBuilder::new(&ctx)
                    .backend($backend)
                    .build(apalis_handler);
                tokio::spawn(async move {
                    if let Err(e) = worker.run().await {
                        panic!("apalis worker: {e}");
                    }
                })
            }
        };
    }
    let strategy = Strategy::new().interval(s.poll);
    let handle = if s.system == System::ApalisListen {
        spawn!(
            apalis_storage(pool, queue, s)
                .with_pubsub()
                .poll_with_strategy(strategy)
        )
    } else {
        spawn!(apalis_storage(pool, queue, s).poll_with_strategy(strategy))
    };
    (ctx, handle)
}

/// Until every job of `queue` is recorded done.
async fn apalis_wait_done(pool: &PgPool, queue: &str, n: usize) {
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'",
        )
        .bind(queue)
        .fetch_one(pool)
        .await
        .expect("count done jobs");
        if done >= n as i64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn apalis_stop(ctx: WorkerContext, handle: tokio::task::JoinHandle<()>, pool: PgPool) {
    ctx.stop().ok();
    let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
    pool.close().await;
}

async fn apalis_throughput(db: &mut Db, s: &Settings) -> Throughput {
    let n = s.n;
    let queue = "bench-throughput";
    let c0 = db.counters().await;
    {
        let pool = db.pool(s.pool).await;
        let next = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..s.workers {
            let mut storage = apalis_storage(&pool, queue, s);
            let next = Arc::clone(&next);
            handles.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        return;
                    }
                    storage.push(Job { i }).await.expect("push");
                }
            }));
        }
        for h in handles {
            h.await.expect("pusher");
        }
        pool.close().await;
    }
    let c1 = db.counters().await;
    let m = set_marks(n);
    let pool = db.pool(s.pool).await;
    let t0 = Instant::now();
    let (ctx, handle) = apalis_worker(&pool, queue, "bench-throughput-worker", s);
    m.wait_all_handled().await;
    let handled_time = t0.elapsed();
    apalis_wait_done(&pool, queue, n).await;
    let drain_time = t0.elapsed();
    apalis_stop(ctx, handle, pool).await;
    let c2 = db.counters().await;
    Throughput {
        enqueue: per_task(c0, c1, n),
        drain: per_task(c1, c2, n),
        drain_time,
        handled_time,
        steps_per_task: 0.0,
        audit_per_task: 0.0,
        events_per_task: 0.0,
    }
}

async fn apalis_latency(db: &mut Db, s: &Settings) -> Latency {
    let n = s.latency_n();
    let queue = "bench-latency";
    let m = set_marks(n);
    let pool = db.pool(s.pool).await;
    let (ctx, handle) = apalis_worker(&pool, queue, "bench-latency-worker", s);
    let storage = apalis_storage(&pool, queue, s);
    let submitters = offered_load(s, |i| {
        let (mut storage, m) = (storage.clone(), Arc::clone(&m));
        async move {
            m.submitted[i].store(now_ns(), Ordering::SeqCst);
            storage.push(Job { i }).await.expect("push");
            m.acked[i].store(now_ns(), Ordering::SeqCst);
        }
    })
    .await;
    for h in submitters {
        h.await.expect("push");
    }
    m.wait_all_handled().await;
    apalis_wait_done(&pool, queue, n).await;
    apalis_stop(ctx, handle, pool).await;
    Latency::from_marks(&m, None, s.warmup_n())
}

// ---------------------------------------------------------------------------------------------
// Offered load and latency figures

/// Starts submission `i` at `t0 + i / rate`, each in its own task (a slow submission delays no
/// other).
async fn offered_load<F, Fut>(s: &Settings, submit: F) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let n = s.latency_n();
    let period = Duration::from_secs(1) / u32::try_from(s.rate.max(1)).unwrap_or(u32::MAX);
    let t0 = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(t0 + period * u32::try_from(i).unwrap_or(u32::MAX)).await;
        handles.push(tokio::spawn(submit(i)));
    }
    handles
}

/// p50/p99/max in milliseconds (not a number, printed `-`, when there was no sample).
#[derive(Debug, Clone, Copy)]
struct Dist {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Dist {
    fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self {
                p50: f64::NAN,
                p99: f64::NAN,
                max: f64::NAN,
            };
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
        Self {
            p50: at(0.50),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// `BENCH_DISK_PROBE_MS`: a thread writing 8 KB to a file in the temp dir and `fdatasync`ing
/// it every period while a latency round runs, keeping the syncs slower than [`Self::SLOW`].
struct DiskProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<SlowSync>>,
}

/// One of the disk probe's slow syncs: when it began ([`now_ns`]) and how long it took (ns).
#[derive(Debug, Clone, Copy)]
struct SlowSync {
    at: u64,
    took: u64,
}

impl DiskProbe {
    /// A sync slower than this is kept.
    const SLOW: Duration = Duration::from_millis(10);

    /// A probe syncing every `every`; none when `every` is zero.
    fn start(every: Duration) -> Option<Self> {
        use std::os::unix::fs::FileExt;
        if every.is_zero() {
            return None;
        }
        let path = std::env::temp_dir().join(format!("vs_apalis-disk-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("disk probe: cannot open {}: {e}", path.display()));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let page = [0u8; 8192];
            let mut slow = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let at = now_ns();
                file.write_all_at(&page, 0).expect("disk probe: write");
                file.sync_data().expect("disk probe: fdatasync");
                let took = now_ns() - at;
                if u128::from(took) > Self::SLOW.as_nanos() {
                    slow.push(SlowSync { at, took });
                }
                std::thread::sleep(every);
            }
            drop(file);
            let _ = std::fs::remove_file(&path);
            slow
        });
        Some(Self { stop, thread })
    }

    /// Stops the probe; its slow syncs.
    fn finish(self) -> Vec<SlowSync> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("disk probe thread")
    }
}

struct Latency {
    /// Submit → start of the warm-up's submissions.
    cold_start: Dist,
    /// Submit → the submission returned (the task durable).
    acked: Dist,
    start: Dist,
    handled: Dist,
    committed: Option<Dist>,
    /// Starts later than 1 s after their submission.
    stalls: usize,
    /// When the first submission left ([`now_ns`]): the origin of the diagnostics by 100 ms.
    first_submit: u64,
    /// The disk probe's syncs slower than [`DiskProbe::SLOW`] during the round, when
    /// `BENCH_DISK_PROBE_MS` runs one.
    disk: Option<Vec<SlowSync>>,
}

impl Latency {
    /// The figures of the submissions after the first `warm` (those of the first `warm` apart).
    fn from_marks(m: &Marks, committed: Option<&[u64]>, warm: usize) -> Self {
        let warm = warm.min(m.submitted.len());
        let dist = |range: std::ops::Range<usize>, to: &dyn Fn(usize) -> u64| -> Dist {
            Dist::of(
                range
                    .map(|i| {
                        let from = m.submitted[i].load(Ordering::SeqCst);
                        let to = to(i);
                        assert!(from > 0 && to >= from, "job {i} was not timed");
                        (to - from) as f64 / 1e6
                    })
                    .collect(),
            )
        };
        let ms = |to: &dyn Fn(usize) -> u64| dist(warm..m.submitted.len(), to);
        if let Ok(slow) = std::env::var("BENCH_SLOW_MS") {
            let slow: u64 = slow.parse().unwrap_or(20) * 1_000_000;
            let t0 = m.submitted[0].load(Ordering::SeqCst);
            let mut by_tenth = std::collections::BTreeMap::new();
            for i in 0..m.submitted.len() {
                let from = m.submitted[i].load(Ordering::SeqCst);
                let d = m.started[i].load(Ordering::SeqCst).saturating_sub(from);
                if d > slow {
                    let e = by_tenth
                        .entry(from.saturating_sub(t0) / 100_000_000)
                        .or_insert((0, 0));
                    e.0 += 1;
                    e.1 = e.1.max(d / 1_000_000);
                }
            }
            eprintln!("slow starts by 100 ms of the run (count, max ms): {by_tenth:?}");
        }
        let stalls = (0..m.submitted.len())
            .filter(|&i| {
                let from = m.submitted[i].load(Ordering::SeqCst);
                m.started[i].load(Ordering::SeqCst).saturating_sub(from) > 1_000_000_000
            })
            .count();
        Self {
            stalls,
            first_submit: m.submitted.first().map_or(0, |t| t.load(Ordering::SeqCst)),
            disk: None,
            cold_start: dist(0..warm, &|i| m.started[i].load(Ordering::SeqCst)),
            start: ms(&|i| m.started[i].load(Ordering::SeqCst)),
            handled: ms(&|i| m.handled[i].load(Ordering::SeqCst)),
            acked: ms(&|i| m.acked[i].load(Ordering::SeqCst)),
            committed: committed.map(|c| ms(&|i| c[i])),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rounds and report

/// A drain round of every system (CapeControl only when `steps > 1`), each on a fresh database.
async fn drain_round(
    url: &str,
    base: &Settings,
    n: usize,
    workers: usize,
    steps: usize,
) -> Vec<(System, Throughput)> {
    let mut out = Vec::new();
    for &system in &base.systems {
        if steps > 1 && !system.is_cc() {
            continue;
        }
        let s = Settings {
            n,
            workers,
            steps,
            system,
            ..base.clone()
        };
        eprintln!(
            "vs_apalis: drain, {} ({n} tasks of {steps} step(s), {workers} workers)…",
            system.name()
        );
        let mut db = Db::create(url).await;
        let t = if system == System::SqlFloor {
            cc_setup(&db, &s).await;
            floor_throughput(&mut db, &s).await
        } else if system.is_cc() {
            cc_setup(&db, &s).await;
            cc_throughput(&mut db, &s).await
        } else {
            apalis_setup(&db).await;
            apalis_throughput(&mut db, &s).await
        };
        db.drop().await;
        out.push((system, t));
    }
    out
}

/// A latency round of every system at `rate`, each on a fresh database, with the commits per
/// task of the whole round (submissions included).
async fn latency_round(url: &str, base: &Settings, rate: u64) -> Vec<(System, Latency, PerTask)> {
    let mut out = Vec::new();
    for &system in &base.systems {
        // The floor is a drain of SQL statements only: no submissions to time.
        if system == System::SqlFloor {
            continue;
        }
        let s = Settings {
            rate,
            system,
            ..base.clone()
        };
        eprintln!(
            "vs_apalis: latency, {} ({rate}/s for {} + {} s)…",
            system.name(),
            s.warmup_secs,
            s.secs
        );
        let mut db = Db::create(url).await;
        if system.is_cc() {
            cc_setup(&db, &s).await;
        } else {
            apalis_setup(&db).await;
        }
        let c0 = db.counters().await;
        let probe = DiskProbe::start(s.disk_probe);
        let mut l = if system.is_cc() {
            cc_latency(&mut db, &s).await
        } else {
            apalis_latency(&mut db, &s).await
        };
        l.disk = probe.map(DiskProbe::finish);
        if let Some(slow) = &l.disk
            && std::env::var_os("BENCH_SLOW_MS").is_some()
        {
            let mut by_tenth = std::collections::BTreeMap::new();
            for &SlowSync { at, took } in slow {
                // Syncs before the first submission (the system starting) count at its slot.
                let e = by_tenth
                    .entry(at.saturating_sub(l.first_submit) / 100_000_000)
                    .or_insert((0, 0));
                e.0 += 1;
                e.1 = e.1.max(took / 1_000_000);
            }
            eprintln!(
                "disk probe: syncs over 10 ms by 100 ms of the run (count, max ms): {by_tenth:?}"
            );
        }
        let c1 = db.counters().await;
        db.drop().await;
        out.push((system, l, per_task(c0, c1, s.latency_n().max(1))));
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 || !a.is_finite() || !b.is_finite() {
        "-".into()
    } else {
        format!("{:.2}", a / b)
    }
}

/// The systems of a table and the ratios it shows (cc-batched ÷ each other system present).
struct Table {
    systems: Vec<System>,
    against: Vec<System>,
}

impl Table {
    fn new(title: &str, systems: Vec<System>) -> Self {
        let against: Vec<System> = if systems.contains(&System::CcBatched) {
            [
                System::Apalis,
                System::ApalisListen,
                System::CcInline,
                System::SqlFloor,
            ]
            .into_iter()
            .filter(|x| systems.contains(x))
            .collect()
        } else {
            Vec::new()
        };
        println!();
        println!("{title}");
        let mut head = format!("  {:<40}", "");
        for x in &systems {
            head += &format!(" {:>13}", x.name());
        }
        for x in &against {
            head += &format!(" {:>13}", format!("b/{}", x.name()));
        }
        println!("{head}");
        Self { systems, against }
    }

    fn line(&self, what: &str, unit: &str, values: &[f64]) {
        let mut l = format!("  {what:<40}");
        for v in values {
            if v.is_finite() {
                l += &format!(" {v:>13.3}");
            } else {
                l += &format!(" {:>13}", "-");
            }
        }
        let of = |x: System| {
            self.systems
                .iter()
                .position(|&y| y == x)
                .map_or(f64::NAN, |i| values[i])
        };
        for &x in &self.against {
            l += &format!(" {:>13}", ratio(of(System::CcBatched), of(x)));
        }
        println!("{l}  {unit}");
    }
}

fn print_drain(title: &str, n: usize, steps: usize, round: &[(System, Throughput)]) {
    let t = Table::new(title, round.iter().map(|(x, _)| *x).collect());
    let col = |f: &dyn Fn(&Throughput) -> f64| round.iter().map(|(_, r)| f(r)).collect::<Vec<_>>();
    let per_step = steps as f64;
    t.line(
        "drain throughput",
        "tasks/s",
        &col(&|r| n as f64 / r.drain_time.as_secs_f64()),
    );
    t.line(
        "drain: all handlers returned",
        "ms",
        &col(&|r| r.handled_time.as_secs_f64() * 1e3),
    );
    t.line(
        "commits per task, enqueue",
        "xact_commit/task",
        &col(&|r| r.enqueue.commits),
    );
    t.line(
        "commits per task, drain",
        "xact_commit/task",
        &col(&|r| r.drain.commits),
    );
    if steps > 1 {
        t.line(
            "commits per step, drain",
            "xact_commit/step",
            &col(&|r| r.drain.commits / per_step),
        );
    }
    t.line(
        "WAL flushes per task, enqueue",
        "wal_sync/task",
        &col(&|r| r.enqueue.wal_syncs),
    );
    t.line(
        "WAL flushes per task, drain",
        "wal_sync/task",
        &col(&|r| r.drain.wal_syncs),
    );
    t.line(
        "CPU per 1,000 tasks, drain: this process",
        "s",
        &col(&|r| r.drain.cpu_self * 1e3),
    );
    t.line(
        "CPU per 1,000 tasks, drain: PostgreSQL",
        "s",
        &col(&|r| r.drain.cpu_pg * 1e3),
    );
    t.line(
        "CPU per 1,000 tasks, enqueue: both",
        "s",
        &col(&|r| (r.enqueue.cpu_self + r.enqueue.cpu_pg) * 1e3),
    );
    t.line(
        "steps / audit rows / events per task (cc)",
        "",
        &col(&|r| r.steps_per_task),
    );
    t.line("  audit rows per task", "", &col(&|r| r.audit_per_task));
    t.line("  events per task", "", &col(&|r| r.events_per_task));
}

fn print_latency(title: &str, warmup_secs: u64, round: &[(System, Latency, PerTask)]) {
    let t = Table::new(title, round.iter().map(|(x, _, _)| *x).collect());
    let col = |f: &dyn Fn(&Latency) -> f64| round.iter().map(|(_, l, _)| f(l)).collect::<Vec<_>>();
    t.line("submit -> acknowledged p50", "ms", &col(&|l| l.acked.p50));
    t.line("submit -> acknowledged p99", "ms", &col(&|l| l.acked.p99));
    t.line("submit -> start p50", "ms", &col(&|l| l.start.p50));
    t.line("submit -> start p99", "ms", &col(&|l| l.start.p99));
    t.line("submit -> start max", "ms", &col(&|l| l.start.max));
    t.line(
        &format!("first {} s: submit -> start p99", warmup_secs),
        "ms",
        &col(&|l| l.cold_start.p99),
    );
    t.line(
        &format!("first {} s: submit -> start max", warmup_secs),
        "ms",
        &col(&|l| l.cold_start.max),
    );
    t.line(
        "submit -> handler returned p50",
        "ms",
        &col(&|l| l.handled.p50),
    );
    t.line(
        "submit -> handler returned p99",
        "ms",
        &col(&|l| l.handled.p99),
    );
    t.line(
        "submit -> handler returned max",
        "ms",
        &col(&|l| l.handled.max),
    );
    let done = |f: fn(&Dist) -> f64| col(&|l| l.committed.as_ref().map_or(f64::NAN, f));
    t.line("submit -> completion committed p50", "ms", &done(|d| d.p50));
    t.line("submit -> completion committed p99", "ms", &done(|d| d.p99));
    t.line("submit -> completion committed max", "ms", &done(|d| d.max));
    t.line(
        "stalls (start > 1 s after submit)",
        "tasks",
        &col(&|l| l.stalls as f64),
    );
    if round.iter().any(|(_, l, _)| l.disk.is_some()) {
        let disk = |f: &dyn Fn(&[SlowSync]) -> f64| col(&|l| l.disk.as_deref().map_or(f64::NAN, f));
        t.line(
            "disk probe: fdatasync over 10 ms",
            "syncs",
            &disk(&|d| d.len() as f64),
        );
        t.line(
            "disk probe: slowest fdatasync over 10 ms",
            "ms",
            &disk(&|d| {
                d.iter()
                    .map(|d| d.took as f64 / 1e6)
                    .fold(f64::NAN, f64::max)
            }),
        );
    }
    let per = |f: fn(&PerTask) -> f64| round.iter().map(|(_, _, p)| f(p)).collect::<Vec<_>>();
    t.line(
        "commits per task (submit + run)",
        "xact_commit/task",
        &per(|p| p.commits),
    );
    t.line(
        "WAL flushes per task (submit + run)",
        "wal_sync/task",
        &per(|p| p.wal_syncs),
    );
    t.line(
        "CPU per 1,000 tasks: this process",
        "s",
        &per(|p| p.cpu_self * 1e3),
    );
    t.line(
        "CPU per 1,000 tasks: PostgreSQL",
        "s",
        &per(|p| p.cpu_pg * 1e3),
    );
}

async fn run(url: &str, s: &Settings) {
    let mut db = Db::create(url).await;
    let settings = [
        "server_version",
        "synchronous_commit",
        "fsync",
        "full_page_writes",
        "wal_sync_method",
        "commit_delay",
        "shared_buffers",
        "max_wal_size",
        "default_transaction_isolation",
    ];
    let mut shown = Vec::new();
    for name in settings {
        shown.push(format!("{name}={}", db.show(name).await));
    }
    let local = db.postmaster.is_some();
    db.drop().await;

    println!();
    println!("CapeControl (PostgresStore) vs apalis-postgres 1.0, same server, one run");
    println!(
        "  settings: N={} workers (latency, multi-step)={} apalis: {} batch={} poll={} ms \
         pool={} conns; latency rounds {} s each (open loop)",
        s.n,
        s.workers,
        if s.apalis_limit {
            "concurrency(workers)".to_string()
        } else {
            "no concurrency limit".to_string()
        },
        s.batch,
        s.poll.as_millis(),
        s.pool,
        s.secs
    );
    println!("  server: {}", shown.join(" "));
    println!(
        "  CapeControl: task + step(s) + events + audit persisted; single node (listen/notify \
         off); apalis: lock_tasks, persist_results (defaults). Ratio columns: cc-batched ÷ \
         the named system. Each table is printed when its round is over."
    );
    if !local {
        println!("  (PostgreSQL CPU not measured: the server does not run on this machine)");
    }
    for &w in &s.drain_workers {
        let round = drain_round(url, s, s.n, w, 1).await;
        print_drain(
            &format!("drain: {} one-step tasks, {w} workers", s.n),
            s.n,
            1,
            &round,
        );
    }
    if s.multi_steps > 0 {
        let round = drain_round(url, s, s.multi_n, s.workers, s.multi_steps).await;
        print_drain(
            &format!(
                "drain: {} tasks of {} steps, {} workers",
                s.multi_n, s.multi_steps, s.workers
            ),
            s.multi_n,
            s.multi_steps,
            &round,
        );
    }
    if s.secs > 0 {
        for &rate in &s.rates {
            let round = latency_round(url, s, rate).await;
            print_latency(
                &format!(
                    "latency: {rate} tasks/s offered for {} s after {} s of warm-up",
                    s.secs, s.warmup_secs
                ),
                s.warmup_secs,
                &round,
            );
        }
    }
    println!();
    println!(
        "  xact_commit counts every transaction of the database, reads included; wal_sync is \
         cluster-wide (WAL writer included); CPU from /proc (USER_HZ ticks)."
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if bench => {
            eprintln!(
                "vs_apalis: DATABASE_URL is not set. Start a cluster first: \
                 eval \"$(scripts/pg.sh start)\""
            );
            std::process::exit(2);
        }
        _ => {
            eprintln!(
                "SKIPPED: vs_apalis benchmark skipped because DATABASE_URL is not set \
                 (run it with `cargo bench -p capecontrol-store --bench vs_apalis` against a \
                 server, e.g. after eval \"$(scripts/pg.sh start)\")"
            );
            return;
        }
    };
    let settings = if bench {
        Settings::from_env()
    } else {
        Settings::smoke()
    };
    let _ = epoch();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(&url, &settings));
}
