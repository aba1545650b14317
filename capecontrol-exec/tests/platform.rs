//! The container executor inside a full `Platform`, against the real engine: the macro-written
//! demo agent registered natively and, packaged as the image `capecontrol/test-agent:dev`,
//! published as a container agent through the registry. Same input, same output, same journal,
//! same events; and a container task's timeout and memory bomb end as retryable resource
//! errors, retried and then failed, with no container left.

mod common;

#[path = "../examples/support/demo_agent.rs"]
mod demo_agent;
#[path = "../examples/support/platforms.rs"]
mod platforms;

use std::time::{Duration, Instant};

use capecontrol_core::manifest::Config;
use capecontrol_core::runtime::{PlatformConfig, TaskRequest};
use capecontrol_core::{AgentBase, ErrorCategory, RunStatus, TaskStatus};
use common::{assert_no_containers, builder, docker_ready};
use serde_json::{Value, json};

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn the_macro_agent_runs_the_same_in_process_and_in_a_container_through_the_platform() {
    if !docker_ready().await {
        return;
    }
    let native = platforms::native().await.unwrap();
    let executor = builder().build().await.unwrap();
    let container = platforms::container_default(executor.clone())
        .await
        .unwrap();

    // The two registrations differ only in their runtime.
    let native_manifest = native.store().get_version("demo", "1.0.0").await.unwrap();
    let container_manifest = container
        .store()
        .get_version("demo", "1.0.0")
        .await
        .unwrap();
    let mut packaged = container_manifest.manifest.clone();
    assert_eq!(packaged["runtime"]["kind"], "container");
    packaged.as_object_mut().unwrap().remove("runtime");
    let mut generated = native_manifest.manifest.clone();
    generated.as_object_mut().unwrap().remove("runtime");
    assert_eq!(packaged, generated);
    assert_eq!(
        serde_json::to_value(demo_agent::DemoAgent.manifest()).unwrap()["tasks"],
        generated["tasks"]
    );

    let cases: [(&str, Value); 4] = [
        ("greet", json!({"name": "  Ada Lovelace "})),
        ("echo", json!({"a": [1, 2.5, {"b": null}], "s": "ünïcode"})),
        ("secret_check", json!({"expect": "s3cr3t"})),
        ("fail", json!(null)),
    ];
    for (task, input) in cases {
        let mut a = platforms::run(&native, task, input.clone()).await.unwrap();
        let mut b = platforms::run(&container, task, input).await.unwrap();
        // The audit trails agree but for who vouches for a tool call: the host checked the
        // in-process one (`tool.called`); the container reported its own (`tool.reported`).
        let audit_a: Vec<String> = std::mem::take(&mut a.audit_types)
            .into_iter()
            .map(|t| {
                if t == "tool.called" {
                    "tool.reported".into()
                } else {
                    t
                }
            })
            .collect();
        assert_eq!(
            audit_a,
            std::mem::take(&mut b.audit_types),
            "task {task}: audit types"
        );
        assert_eq!(a, b, "task {task}: in-process vs container");
    }

    // What the greet run looked like (the same on both sides, checked above).
    let greet = platforms::run(&container, "greet", json!({"name": " ada "}))
        .await
        .unwrap();
    assert_eq!(greet.status, TaskStatus::Completed);
    assert_eq!(
        greet.output,
        Some(json!({"greeting": "Hello, ADA!", "attempt": 1}))
    );
    assert_eq!(
        greet.steps,
        [
            (
                1,
                "normalize".into(),
                RunStatus::Completed,
                Some(json!("ada"))
            ),
            (2, "shout".into(), RunStatus::Completed, Some(json!("ADA"))),
            (
                3,
                "compose".into(),
                RunStatus::Completed,
                Some(json!("Hello, ADA!"))
            ),
        ]
    );
    assert_eq!(
        greet.event_names(),
        [
            "queued",
            "started",
            "step_started",
            "step_completed",
            "step_started",
            "tool_called",
            "step_completed",
            "step_started",
            "step_completed",
            "completed"
        ]
    );
    assert_eq!(
        greet.events[5],
        json!({"type": "tool_called", "tool": "shout", "allowed": true})
    );
    assert!(
        greet.audit_types.iter().any(|t| t == "tool.reported")
            && !greet.audit_types.iter().any(|t| t == "tool.called"),
        "a container's tool call is audited as reported, not as host-verified: {:?}",
        greet.audit_types
    );

    // The installation's secret reached the container (on stdin), and a typed error came back.
    let secret = platforms::run(&container, "secret_check", json!({"expect": "s3cr3t"}))
        .await
        .unwrap();
    assert_eq!(secret.output, Some(json!({"has_secret": true})));
    let failed = platforms::run(&container, "fail", json!(null))
        .await
        .unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(failed.attempts, 1, "a conflict is not retried");
    assert_eq!(
        failed.error.as_ref().map(|e| e.category()),
        Some(ErrorCategory::Conflict)
    );

    native.shutdown(Duration::from_secs(1)).await;
    container.shutdown(Duration::from_secs(1)).await;
    assert_no_containers(&executor).await;
}

/// Checks a run that ended in a resource error after every attempt: retried once (the demo
/// agent's `retries = 1`), then failed.
fn assert_retried_then_failed(run: &platforms::Run, what: &str) {
    assert_eq!(run.status, TaskStatus::Failed, "{what}: {run:?}");
    assert_eq!(run.attempts, 2, "{what}: {run:?}");
    let error = run.error.as_ref().expect("a failed task has an error");
    assert_eq!(error.category(), ErrorCategory::Resource, "{what}: {error}");
    assert!(error.is_retryable(), "{what}: {error}");
    assert_eq!(
        run.event_names(),
        ["queued", "started", "retrying", "started", "failed"],
        "{what}"
    );
    assert_eq!(run.events[2]["error"]["category"], "resource", "{what}");
    assert!(run.steps.is_empty(), "{what}: {:?}", run.steps);
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn a_container_task_past_its_timeout_is_retried_then_fails_without_leftovers() {
    if !docker_ready().await {
        return;
    }
    let executor = builder().build().await.unwrap();
    let mut manifest = demo_agent::manifest();
    manifest.config = Some(Config {
        timeout: 1,
        ..manifest.config()
    });
    let platform = platforms::container(executor.clone(), &manifest)
        .await
        .unwrap();
    let started = Instant::now();
    let run = platforms::run(&platform, "sleep", json!({"ms": 60_000}))
        .await
        .unwrap();
    assert_retried_then_failed(&run, "timeout");
    let error = run.error.unwrap().to_string();
    assert!(error.contains("timed out"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    platform.shutdown(Duration::from_secs(1)).await;
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn a_memory_bomb_in_a_container_is_a_resource_error_through_the_platform() {
    if !docker_ready().await {
        return;
    }
    let executor = builder().build().await.unwrap();
    // The demo agent's limit is 64 MiB (no swap); it tries to take 1 GiB.
    let platform = platforms::container_default(executor.clone())
        .await
        .unwrap();
    let run = platforms::run(&platform, "hog", json!({"mib": 1024}))
        .await
        .unwrap();
    assert_retried_then_failed(&run, "memory bomb");
    let error = run.error.unwrap().to_string();
    assert!(error.contains("out of memory"), "{error}");
    platform.shutdown(Duration::from_secs(1)).await;
    assert_no_containers(&executor).await;
}

/// A cancellation whose grace period ends while the engine is still creating or starting the
/// container drops the executor's future mid-start-up: the container must still be removed.
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn a_task_cancelled_while_its_container_starts_leaves_no_container() {
    if !docker_ready().await {
        return;
    }
    let executor = builder().build().await.unwrap();
    let config = PlatformConfig {
        cancel_grace: Duration::from_millis(1),
        ..platforms::config()
    };
    let platform = platforms::container_with(executor.clone(), &demo_agent::manifest(), config)
        .await
        .unwrap();
    for delay_ms in [0, 10, 20, 40, 80, 160, 320] {
        let id = platform
            .submit(TaskRequest::new(
                platforms::AGENT,
                "sleep",
                json!({"ms": 5000}),
                platforms::user(),
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        platform.cancel(id, &platforms::user()).await.unwrap();
        let task = platform.wait(id, &platforms::user()).await.unwrap();
        assert_eq!(task.status, TaskStatus::Cancelled, "after {delay_ms} ms");
    }
    platform.shutdown(Duration::from_secs(1)).await;
    assert_no_containers(&executor).await;
}

/// Fault matrix: the Docker engine becomes unreachable (the loopback proxy that stands for a
/// remote engine is killed, its open connections with it) after the platform started; a task
/// is run with a breaker threshold of one failure. Returns the platform, the run and the
/// executor's node id.
async fn run_with_the_engine_gone() -> (capecontrol_core::runtime::Platform, platforms::Run, String)
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let proxy = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut tcp, _)) = listener.accept().await {
            connections.spawn(async move {
                if let Ok(mut unix) = tokio::net::UnixStream::connect("/var/run/docker.sock").await
                {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    let executor = builder()
        .docker_url(format!("tcp://127.0.0.1:{port}"))
        .build()
        .await
        .unwrap();
    let node = executor.node_id().to_owned();
    let mut config = platforms::config();
    config.breaker.failure_threshold = 1;
    let platform = platforms::container_with(executor, &demo_agent::manifest(), config)
        .await
        .unwrap();
    // The engine goes away: the listener and every forwarded connection (dropping the task
    // drops its JoinSet, which aborts them).
    proxy.abort();
    let _ = proxy.await;
    let run = platforms::run(&platform, "echo", json!({"x": 1}))
        .await
        .unwrap();
    (platform, run, node)
}

/// Each attempt against an unreachable engine is a retryable resource error, and no container
/// is left (the real socket sees none of the executor's node).
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn an_unreachable_engine_is_a_resource_error_without_leftovers() {
    if !docker_ready().await {
        return;
    }
    let (platform, run, node) = run_with_the_engine_gone().await;
    assert_retried_then_failed(&run, "engine unreachable");
    platform.shutdown(Duration::from_secs(1)).await;
    let direct = builder().build().await.unwrap();
    let left = direct
        .docker()
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(std::collections::HashMap::from([(
                "label".to_owned(),
                vec![format!("{}={node}", capecontrol_exec::LABEL_NODE)],
            )])),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

/// The engine's failure is not the agent's: the breaker (threshold one) stays closed (the
/// runtime's breaker counts agent errors and attempt timeouts only).
#[tokio::test]
async fn an_unreachable_engine_never_trips_the_agents_breaker() {
    docker_ready().await;
    let (platform, _run, _) = run_with_the_engine_gone().await;
    let key = capecontrol_core::runtime::CircuitBreakers::key("demo", "1.0.0");
    assert_eq!(
        platform.breakers().state(&key),
        capecontrol_core::runtime::BreakerState::Closed,
        "the engine's failure is not the agent's"
    );
    platform.shutdown(Duration::from_secs(1)).await;
}
