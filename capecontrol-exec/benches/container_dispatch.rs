//! Dispatch latency of the container executor, measured in one run against the real engine:
//!
//! - `docker run --rm -i` of the demo agent image (the CLI, with the same hardening flags);
//! - cold dispatch: create, attach, start, run, remove (`run` then waiting for the removal);
//! - cold dispatch to the result (`run` alone: the removal happens in the background);
//! - warm-pool dispatch (a started container waits for its start message), with the container
//!   idle for 250 ms first (steady state) and the moment it has started (a pool under pressure).
//!
//! Run with `bash scripts/build-test-images.sh && cargo bench -p capecontrol-exec --bench
//! container_dispatch` (`CAPECONTROL_BENCH_N` sets the iterations, default 40).

#[path = "../examples/support/demo_agent.rs"]
mod demo_agent;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capecontrol_core::TaskContext;
use capecontrol_core::agent::MemoryJournal;
use capecontrol_core::runtime::{Executor, Invocation};
use capecontrol_exec::ContainerExecutor;
use serde_json::json;

fn invocation() -> Invocation {
    Invocation {
        agent_id: "demo".into(),
        version: "1.0.0".into(),
        task: "echo".into(),
        input: json!({"n": 1}),
        manifest: Arc::new(demo_agent::manifest()),
    }
}

fn context() -> TaskContext {
    TaskContext::builder(uuid::Uuid::new_v4()).build(Arc::new(MemoryJournal::default()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "{name:<34} n={:<4} p50 {:>9.3} ms   p99 {:>9.3} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    (p50, p99)
}

fn docker_run_once(start_line: &str) -> Duration {
    let started = Instant::now();
    let mut child = Command::new("docker")
        .args([
            "run",
            "--rm",
            "-i",
            "--network",
            "none",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,noexec,nosuid,nodev,size=16m",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--user",
            "65534:65534",
            "--pids-limit",
            "64",
            "--memory",
            "64m",
            "--memory-swap",
            "64m",
            "--cpus",
            "0.5",
            "--log-driver",
            "none",
            demo_agent::IMAGE,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("docker runs");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(start_line.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("docker exits");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"type\":\"output\""),
        "docker run gave no output"
    );
    started.elapsed()
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("container_dispatch: run it with `cargo bench` (skipped under `cargo test`)");
        return;
    }
    let n: usize = std::env::var("CAPECONTROL_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let executor = ContainerExecutor::builder()
        .node_id("bench")
        .warm_pool("demo@1.0.0", 2)
        .build()
        .await
        .expect("docker is reachable (and `bash scripts/build-test-images.sh` ran)");
    let start_line = {
        let msg = capecontrol_core::protocol::Inbound::Start(Box::new(
            capecontrol_core::protocol::StartMessage {
                protocol: capecontrol_core::protocol::PROTOCOL_VERSION,
                task_id: uuid::Uuid::new_v4(),
                attempt: 1,
                agent_id: "demo".into(),
                task: "echo".into(),
                input: json!({"n": 1}),
                settings: json!({}),
                granted_scopes: vec![],
                user_id: String::new(),
                roles: vec![],
                completed_steps: vec![],
                version: "1.0.0".into(),
                traceparent: None,
            },
        ));
        format!("{}\n", serde_json::to_string(&msg).expect("encodes"))
    };

    // Warm-up: one of each, not counted.
    docker_run_once(&start_line);
    executor
        .run(invocation(), context())
        .await
        .expect("cold run");
    executor.settle().await;

    let mut docker_run = Vec::new();
    let mut cold_full = Vec::new();
    let mut cold_result = Vec::new();
    let mut warm = Vec::new();
    let mut warm_fresh = Vec::new();
    let inv = invocation();
    for _ in 0..n {
        // Interleaved, so drift in the machine's load hits every series alike.
        docker_run.push(tokio::task::block_in_place(|| docker_run_once(&start_line)));

        // Cold: a version without a pool.
        let started = Instant::now();
        let out = executor.run(inv_no_pool(), context()).await;
        cold_result.push(started.elapsed());
        assert_eq!(out.expect("cold run"), json!({"n": 1}));
        executor.settle().await;
        cold_full.push(started.elapsed());

        // Warm: wait (untimed) until the pool is full and its containers are idle, as they
        // are in steady state, where a replacement starts long before the next dispatch.
        executor
            .prewarm("demo", "1.0.0", &inv.manifest)
            .await
            .expect("prewarm");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let started = Instant::now();
        let out = executor.run(inv.clone(), context()).await;
        warm.push(started.elapsed());
        assert_eq!(out.expect("warm run"), json!({"n": 1}));
        executor.settle().await;

        // Warm, dispatched the moment the container has started (a pool under pressure).
        executor
            .prewarm("demo", "1.0.0", &inv.manifest)
            .await
            .expect("prewarm");
        let started = Instant::now();
        let out = executor.run(inv.clone(), context()).await;
        warm_fresh.push(started.elapsed());
        assert_eq!(out.expect("warm run"), json!({"n": 1}));
        executor.settle().await;
    }
    executor.shutdown().await;

    println!("\ncontainer dispatch, {n} iterations each (echo task of the demo agent):");
    let (d50, d99) = summary("docker run --rm -i (CLI)", docker_run);
    let (c50, c99) = summary("cold: create+start+run+remove", cold_full);
    let (r50, r99) = summary("cold: to the result", cold_result);
    let (w50, w99) = summary("warm pool (idle container)", warm);
    let (f50, f99) = summary("warm pool (just started)", warm_fresh);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "\ncold (with removal) vs docker run --rm: p50 {:.2}x faster, p99 {:.2}x faster",
        ratio(d50, c50),
        ratio(d99, c99)
    );
    println!(
        "cold (to the result) vs docker run --rm: p50 {:.2}x faster, p99 {:.2}x faster",
        ratio(d50, r50),
        ratio(d99, r99)
    );
    println!(
        "warm (idle) vs cold (to the result): p50 {:.1}x faster, p99 {:.1}x faster",
        ratio(r50, w50),
        ratio(r99, w99)
    );
    println!(
        "warm (just started) vs cold (to the result): p50 {:.1}x faster, p99 {:.1}x faster",
        ratio(r50, f50),
        ratio(r99, f99)
    );
}

/// The same agent under a version without a pool: always a cold dispatch.
fn inv_no_pool() -> Invocation {
    let mut inv = invocation();
    inv.version = "1.0.0-cold".into();
    inv
}
