//! Fault matrix: the Docker attach of a running agent container is lost mid-run (every open
//! connection to the engine is cut while the agent sleeps; the engine itself stays reachable).
//! The attempt ends as a `resource` error — not the agent's — the agent's breaker stays closed,
//! and no container is left behind.

mod common;

#[path = "../examples/support/demo_agent.rs"]
mod demo_agent;
#[path = "../examples/support/platforms.rs"]
mod platforms;

use std::time::Duration;

use capecontrol_core::manifest::Config;
use capecontrol_core::runtime::{BreakerState, CircuitBreakers, TaskRequest};
use capecontrol_core::{ErrorCategory, TaskStatus};
use common::{assert_no_containers, builder, docker_ready};
use serde_json::json;
use tokio::sync::broadcast;

/// A loopback proxy to the engine's socket: `cut` closes every connection open at that moment
/// (the attach among them); connections opened afterwards go through.
struct CuttableEngine {
    port: u16,
    cut: broadcast::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttableEngine {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, _) = broadcast::channel::<()>(1);
        let cuts = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut unix) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix) => {}
                        _ = cut.recv() => {}
                    }
                });
            }
        });
        Self { port, cut, task }
    }
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_attach_mid_run_is_a_resource_error_that_leaves_the_breaker_closed_and_no_container()
{
    if !docker_ready().await {
        return;
    }
    let engine = CuttableEngine::start().await;
    let executor = builder()
        .docker_url(format!("tcp://127.0.0.1:{}", engine.port))
        .build()
        .await
        .unwrap();
    let mut manifest = demo_agent::manifest();
    // One attempt, well past the test's patience, so that only the lost attach can end it.
    manifest.config = Some(Config {
        retries: 0,
        timeout: 60,
        ..manifest.config()
    });
    let mut config = platforms::config();
    config.breaker.failure_threshold = 1;
    let platform = platforms::container_with(executor.clone(), &manifest, config)
        .await
        .unwrap();
    let id = platform
        .submit(TaskRequest::new(
            platforms::AGENT,
            "sleep",
            json!({"ms": 120_000}),
            platforms::user(),
        ))
        .await
        .unwrap();

    // Once the agent runs (its container is up and the task is started), cut the attach.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let started = platform
                .trusted()
                .get(id)
                .await
                .is_ok_and(|t| t.status == TaskStatus::Running);
            if started && !executor.containers().await.unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the agent container starts");
    // Let the agent read its start message and go to sleep.
    tokio::time::sleep(Duration::from_millis(500)).await;
    engine.cut.send(()).unwrap();

    let task = tokio::time::timeout(
        Duration::from_secs(30),
        platform.wait(id, &platforms::user()),
    )
    .await
    .expect("the attempt ends well before the agent's own timeout")
    .unwrap();
    assert_eq!(task.status, TaskStatus::Failed, "{task:?}");
    let error = task.error.expect("a failed task has an error");
    assert_eq!(error.category(), ErrorCategory::Resource, "{error}");
    assert!(error.to_string().contains("docker attach"), "{error}");
    assert_eq!(
        platform
            .breakers()
            .state(&CircuitBreakers::key(platforms::AGENT, "1.0.0")),
        BreakerState::Closed,
        "a lost attach is not the agent's failure"
    );
    platform.shutdown(Duration::from_secs(1)).await;
    // The engine is still reachable through the proxy: the container was removed.
    assert_no_containers(&executor).await;
    engine.task.abort();
}
