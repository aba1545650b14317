//! End-to-end overhead of the embedded platform (gateway, the five middleware, the in-memory
//! store, a worker) against a bare `tokio::spawn` + join of the same work, in the same run.
//!
//! `cargo bench --bench throughput` prints, besides criterion's report, one summary line:
//! the ratio, the per-task overhead and the per-step overhead in microseconds.
//!
//! `BENCH_PROFILE_SECS=10 cargo bench --no-default-features --bench throughput` runs only the
//! submit-and-drain loop of zero-step tasks for that long and prints its wall and CPU time per
//! task: a target for a profiler (`perf record --call-graph dwarf`) without the other rounds.
//! `BENCH_PROFILE_ROUNDS=5` runs that many rounds instead, for an instruction count
//! (`valgrind --tool=callgrind`) that repeats exactly. Both exit as soon as the line is
//! printed, without freeing the store's tasks, so a profile holds the rounds and not the
//! teardown.
//!
//! `BENCH_SUBMIT_ONLY=20000` times the submissions alone: that many zero-step tasks submitted
//! one after another to a platform built `without_workers` (nothing claims or runs them), in
//! three rounds, each printing wall and CPU time per submission, then exits. The submission is
//! the sequential part of the submit-and-drain loop: the loop cannot run faster than it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use capecontrol::agent::{AgentBase, TaskContext, ToolContext};
use capecontrol::error::{Error, Result};
use capecontrol::events::TaskEventKind;
use capecontrol::manifest::Manifest;
use capecontrol::policy::Principal;
use capecontrol::runtime::{Platform, PlatformConfig, TaskRequest};
use capecontrol::state::TaskStatus;
use capecontrol::store::Store;
use capecontrol::store::memory::MemoryStore;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

use capecontrol_testkit::runtime::{install_in, unlimited_rates};

/// The trivial work: add two numbers from the input, in `steps` durable steps.
struct Adder;

#[async_trait]
impl AgentBase for Adder {
    fn manifest(&self) -> Manifest {
        serde_json::from_value(json!({
            "name": "Adder", "version": "1.0.0", "description": "adds",
            "config": {"concurrent_tasks": 1000}
        }))
        .expect("manifest")
    }
    async fn run_task(&self, _name: &str, input: Value, cx: &TaskContext) -> Result<Value> {
        let steps = input["steps"].as_u64().unwrap_or(0);
        let mut acc = input["a"].as_i64().unwrap_or(0);
        for i in 0..steps {
            acc = cx
                .step(&format!("s{i}"), async move { Ok::<_, Error>(acc + 1) })
                .await?;
        }
        Ok(json!(acc + input["b"].as_i64().unwrap_or(0)))
    }
    async fn call_tool(&self, name: &str, _input: Value, _cx: &ToolContext) -> Result<Value> {
        Err(Error::not_found("tool", name))
    }
}

fn work(input: &Value) -> Value {
    json!(input["a"].as_i64().unwrap_or(0) + input["b"].as_i64().unwrap_or(0))
}

async fn setup() -> (Arc<Platform>, Arc<dyn Store>) {
    setup_with(true).await
}

/// The platform of [`setup`], with or without its workers.
async fn setup_with(workers: bool) -> (Arc<Platform>, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let builder = Platform::builder()
        .store(store.clone())
        .rate_limits(unlimited_rates())
        .config(PlatformConfig {
            workers: 64,
            claim_batch: 64,
            poll_interval: Duration::from_millis(5),
            ..PlatformConfig::default()
        })
        .agent(Adder);
    let builder = if workers {
        builder
    } else {
        builder.without_workers()
    };
    let platform = builder.build().await.map(Arc::new).expect("platform");
    install_in(store.as_ref(), "adder", "bench", &[]).await;
    (platform, store)
}

/// The request of task `i`: add 1 to `i` in `steps` durable steps, submitted by `principal`.
fn add(i: usize, steps: u64, principal: &Principal) -> TaskRequest {
    TaskRequest::new(
        "adder",
        "add",
        json!({"a": i, "b": 1, "steps": steps}),
        principal.clone(),
    )
}

/// Submits `n` zero-step tasks one after another; returns the elapsed time.
async fn run_submit_only(platform: &Platform, n: usize) -> Duration {
    let principal = Principal::new("bench");
    let start = Instant::now();
    for i in 0..n {
        platform
            .submit(add(i, 0, &principal))
            .await
            .expect("submit");
    }
    start.elapsed()
}

/// Submits `n` tasks and waits until all completed; returns the elapsed time.
async fn run_platform(
    platform: &Platform,
    store: &Arc<dyn Store>,
    n: usize,
    steps: u64,
) -> Duration {
    let mut events = store.subscribe();
    let principal = Principal::new("bench");
    let start = Instant::now();
    let mut pending = std::collections::HashSet::with_capacity(n);
    // Completions seen before their submission returned (the id not in `pending` yet).
    let mut early = std::collections::HashSet::new();
    let mut lagged = false;
    for i in 0..n {
        let id = platform
            .submit(add(i, steps, &principal))
            .await
            .expect("submit");
        if !early.remove(&id) {
            pending.insert(id);
        }
        // Read what has arrived meanwhile, so that the receiver does not fall behind the
        // channel's capacity while the submissions go on (a lagging receiver makes this loop
        // ask the store for every task, which is the harness's cost, not the platform's).
        loop {
            match events.try_recv() {
                Ok(e) if matches!(e.kind, TaskEventKind::Completed { .. }) => {
                    if !pending.remove(&e.task_id) {
                        early.insert(e.task_id);
                    }
                }
                Ok(e) if e.kind.is_terminal() => panic!("task failed: {e:?}"),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                Err(_) => break,
            }
        }
    }
    if lagged {
        pending = still_open(platform, pending).await;
    }
    while !pending.is_empty() {
        match events.recv().await {
            Ok(e) if matches!(e.kind, TaskEventKind::Completed { .. }) => {
                pending.remove(&e.task_id);
            }
            Ok(e) if e.kind.is_terminal() => panic!("task failed: {e:?}"),
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                // Missed some events: ask the store which tasks are still open.
                pending = still_open(platform, pending).await;
            }
            Err(e) => panic!("event stream: {e}"),
        }
    }
    start.elapsed()
}

/// The tasks of `ids` that have not completed yet, asked of the store.
async fn still_open(
    platform: &Platform,
    ids: std::collections::HashSet<uuid::Uuid>,
) -> std::collections::HashSet<uuid::Uuid> {
    let mut open = std::collections::HashSet::new();
    for id in ids {
        if platform.trusted().get(id).await.expect("get").status != TaskStatus::Completed {
            open.insert(id);
        }
    }
    open
}

/// Submits `n` tasks, each awaited by its own `Platform::wait` (all pending at once); returns
/// the elapsed time until the last wait returned.
async fn run_platform_wait(platform: &Arc<Platform>, n: usize) -> Duration {
    let start = Instant::now();
    let one = |i: usize| {
        let principal = Principal::new("bench");
        let platform = Arc::clone(platform);
        tokio::spawn(async move {
            let id = platform
                .submit(add(i, 0, &principal))
                .await
                .expect("submit");
            let t = platform.wait(id, &principal).await.expect("wait");
            assert_eq!(t.status, TaskStatus::Completed, "{t:?}");
        })
    };
    let handles: Vec<_> = (0..n).map(one).collect();
    for h in handles {
        h.await.expect("join");
    }
    start.elapsed()
}

/// As [`run_platform_wait`], but each task awaited the way `Platform::wait` did before the
/// completion map: its event stream (`watch`, replayed then live) read up to the terminal
/// event, then the row.
async fn run_platform_watch_wait(platform: &Arc<Platform>, n: usize) -> Duration {
    use tokio_stream::StreamExt;
    let start = Instant::now();
    let one = |i: usize| {
        let principal = Principal::new("bench");
        let platform = Arc::clone(platform);
        tokio::spawn(async move {
            let id = platform
                .submit(add(i, 0, &principal))
                .await
                .expect("submit");
            let mut events = platform.watch(id, &principal).await.expect("watch");
            while let Some(event) = events.next().await {
                if event.expect("event").kind.is_terminal() {
                    break;
                }
            }
            let t = platform.get(id, &principal).await.expect("get");
            assert_eq!(t.status, TaskStatus::Completed, "{t:?}");
        })
    };
    let handles: Vec<_> = (0..n).map(one).collect();
    for h in handles {
        h.await.expect("join");
    }
    start.elapsed()
}

async fn run_baseline(n: usize) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let input = json!({"a": i, "b": 1});
            tokio::spawn(async move { work(&input) })
        })
        .collect();
    for h in handles {
        std::hint::black_box(h.await.expect("join"));
    }
    start.elapsed()
}

const N: usize = 2_000;

/// CPU time used so far by every thread of this process (Linux: the sum of the threads'
/// `schedstat` run times; `None` elsewhere). Unlike wall-clock time it does not grow when
/// other processes share the cores, so the CPU ratio below holds on a busy machine.
fn cpu_time() -> Option<Duration> {
    let mut ns = 0u64;
    for thread in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(thread.ok()?.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

/// Runs `f` and returns its result and the CPU time the process used meanwhile.
fn with_cpu<T>(f: impl FnOnce() -> T) -> (T, Option<Duration>) {
    let before = cpu_time();
    let out = f();
    let used = cpu_time()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before));
    (out, used)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // `BENCH_SUBMIT_ONLY=N`: the submissions alone, on a platform without workers.
    if let Some(n) = std::env::var("BENCH_SUBMIT_ONLY")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        let (platform, _store) = rt.block_on(setup_with(false));
        for _ in 0..3 {
            let (wall, cpu) = with_cpu(|| rt.block_on(run_submit_only(&platform, n)));
            println!(
                "submit only, {n} zero-step tasks: {:.2} us/submission wall, {} us cpu",
                wall.as_secs_f64() * 1e6 / n as f64,
                cpu.map_or("?".into(), |c| format!(
                    "{:.2}",
                    c.as_secs_f64() * 1e6 / n as f64
                )),
            );
        }
        std::process::exit(0);
    }
    let (platform, store) = rt.block_on(setup());
    // `BENCH_PROFILE_SECS=10`: only submit-and-drain zero-step tasks for that long and stop, for
    // a profiler to see the platform's path and nothing else.
    // `BENCH_PROFILE_ROUNDS=N` instead: exactly N rounds (for an instruction count, which
    // `valgrind --tool=callgrind` repeats exactly whatever else the machine does).
    let profile_secs = std::env::var("BENCH_PROFILE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok());
    let profile_rounds = std::env::var("BENCH_PROFILE_ROUNDS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok());
    if profile_secs.is_some() || profile_rounds.is_some() {
        let until = Instant::now() + Duration::from_secs_f64(profile_secs.unwrap_or(0.0));
        let mut rounds = 0;
        let (wall, cpu) = with_cpu(|| {
            let mut wall = Duration::ZERO;
            while profile_rounds.map_or(Instant::now() < until, |n| rounds < n) {
                wall += rt.block_on(run_platform(&platform, &store, N, 0));
                rounds += 1;
            }
            wall
        });
        let n = (rounds * N) as f64;
        println!(
            "profiled {rounds} rounds of {N} zero-step tasks: {:.2} us/task wall, {} us/task cpu",
            wall.as_secs_f64() * 1e6 / n,
            cpu.map_or("?".into(), |c| format!("{:.2}", c.as_secs_f64() * 1e6 / n)),
        );
        // Exit without dropping the platform: its store keeps every task of the rounds, and
        // freeing them all at the end took about a fifth of a profile's samples (`perf`), a cost
        // that no task pays while the platform runs.
        std::process::exit(0);
    }

    let mut group = c.benchmark_group("end_to_end");
    group.throughput(criterion::Throughput::Elements(N as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("tokio_spawn_join", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += run_baseline(N).await;
            }
            total
        })
    });
    group.bench_function("platform_0_steps", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (platform, store) = (&platform, &store);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_platform(platform, store, N, 0).await;
                }
                total
            }
        })
    });
    group.bench_function("platform_0_steps_wait", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let platform = &platform;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_platform_wait(platform, N).await;
                }
                total
            }
        })
    });
    group.finish();
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches` runs each benchmark once; the summary is for `cargo bench`.
    }

    // The summary: medians of a few rounds, measured here in one run.
    let rounds = 5;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (base, base_cpu) =
        with_cpu(|| median((0..rounds).map(|_| rt.block_on(run_baseline(N))).collect()));
    let (zero, zero_cpu) = with_cpu(|| {
        median(
            (0..rounds)
                .map(|_| rt.block_on(run_platform(&platform, &store, N, 0)))
                .collect(),
        )
    });
    let waited = median(
        (0..rounds)
            .map(|_| rt.block_on(run_platform_wait(&platform, N)))
            .collect(),
    );
    let watched = median(
        (0..rounds)
            .map(|_| rt.block_on(run_platform_watch_wait(&platform, N)))
            .collect(),
    );
    let ten = median(
        (0..rounds)
            .map(|_| rt.block_on(run_platform(&platform, &store, N / 4, 10)))
            .collect(),
    );
    let per_task = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n as f64;
    let base_us = per_task(base, N);
    let zero_us = per_task(zero, N);
    let ten_us = per_task(ten, N / 4);
    let wait_us = per_task(waited, N);
    let watch_us = per_task(watched, N);
    println!(
        "summary: baseline {base_us:.2} us/task, platform {zero_us:.2} us/task (ratio {:.1}x, overhead {:.2} us/task), \
         {:.0} tasks/s; 10-step task {ten_us:.2} us → {:.2} us per step; \
         submit + Platform::wait {wait_us:.2} us/task (ratio {:.1}x); \
         submit + watch-until-terminal + get (the former wait) {watch_us:.2} us/task (ratio {:.1}x)",
        zero_us / base_us,
        zero_us - base_us,
        1e6 / zero_us,
        (ten_us - zero_us) / 10.0,
        wait_us / base_us,
        watch_us / base_us,
    );
    // CPU time per task (all rounds), which other load on the machine does not inflate.
    if let (Some(base_cpu), Some(zero_cpu)) = (base_cpu, zero_cpu) {
        let rounds_n = rounds * N;
        let base_cpu_us = per_task(base_cpu, rounds_n);
        let zero_cpu_us = per_task(zero_cpu, rounds_n);
        println!(
            "summary (cpu): baseline {base_cpu_us:.2} us/task, platform {zero_cpu_us:.2} us/task \
             (ratio {:.1}x)",
            zero_cpu_us / base_cpu_us
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
