//! Shared set-up of the Docker tests: an executor per test (its own node id, so parallel tests
//! never clean up each other's containers), contexts over a `MemoryJournal`, manifests.
//!
//! The tests need a reachable engine and the images of `scripts/build-test-images.sh`. When
//! they are missing, a test FAILS with a message that says how to run it; to leave the Docker
//! tests out, build them with `CAPECONTROL_SKIP_SERVICES=1`, which marks them `#[ignore]`d (see
//! `build.rs`): a test that did not run never reports as passed.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use capecontrol_core::agent::MemoryJournal;
use capecontrol_core::manifest::Manifest;
use capecontrol_core::runtime::Invocation;
use capecontrol_core::{Scope, TaskContext};
use capecontrol_exec::ContainerExecutor;
use capecontrol_exec::bollard::Docker;
use serde_json::{Value, json};

pub const BUSYBOX: &str = "capecontrol/busybox:dev";
pub const AGENT: &str = "capecontrol/test-agent:dev";

/// Checks that the engine and images are there (returns `true`); panics, saying how to run the
/// test, when they are not.
pub async fn docker_ready() -> bool {
    let problem = match Docker::connect_with_defaults() {
        Err(e) => Some(format!("cannot connect to Docker: {e}")),
        Ok(docker) => match docker.ping().await {
            Err(e) => Some(format!("Docker is unreachable: {e}")),
            Ok(_) => {
                let mut missing = Vec::new();
                for image in [AGENT, BUSYBOX] {
                    if docker.inspect_image(image).await.is_err() {
                        missing.push(image);
                    }
                }
                (!missing.is_empty()).then(|| {
                    format!(
                        "images {} are missing: run `bash scripts/build-test-images.sh`",
                        missing.join(", ")
                    )
                })
            }
        },
    };
    match problem {
        None => true,
        Some(p) => panic!(
            "this test needs Docker: {p}. Run `bash scripts/test.sh` (it builds the test images) \
             on a machine with a Docker engine; to leave the PostgreSQL and Docker tests out \
             (reported as ignored), set CAPECONTROL_SKIP_SERVICES=1"
        ),
    }
}

/// A fresh executor with a node id of its own.
pub async fn executor() -> ContainerExecutor {
    builder().build().await.expect("the executor connects")
}

pub fn builder() -> capecontrol_exec::ContainerExecutorBuilder {
    ContainerExecutor::builder().node_id(format!("test-{}", uuid::Uuid::new_v4()))
}

/// Waits for background removals and checks that none of the executor's containers is left.
pub async fn assert_no_containers(executor: &ContainerExecutor) {
    executor.settle().await;
    let left = executor.containers().await.expect("list containers");
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

pub fn context(settings: Value, granted: &[&str]) -> (TaskContext, Arc<MemoryJournal>) {
    let journal = Arc::new(MemoryJournal::default());
    let granted: Vec<Scope> = granted.iter().map(|s| s.parse().unwrap()).collect();
    let cx = TaskContext::builder(uuid::Uuid::new_v4())
        .agent_id("demo")
        .granted(granted)
        .settings(settings)
        .build(journal.clone());
    (cx, journal)
}

pub fn invocation(manifest: Manifest, task: &str, input: Value) -> Invocation {
    Invocation {
        agent_id: manifest.name.clone(),
        version: manifest.version.clone(),
        task: task.to_owned(),
        input,
        manifest: Arc::new(manifest),
    }
}

/// A manifest running `script` under busybox `sh -c`, with `config` as its limits.
pub fn busybox(script: &str, config: &Value) -> Manifest {
    busybox_with(script, config, &json!({}))
}

pub fn busybox_with(script: &str, config: &Value, permissions: &Value) -> Manifest {
    serde_json::from_value(json!({
        "name": "hostile",
        "version": "1.0.0",
        "description": "a hostile workload",
        "config": config,
        "permissions": permissions,
        "runtime": {"kind": "container", "image": BUSYBOX, "command": ["sh", "-c", script]},
    }))
    .unwrap()
}

/// The shell function `out VALUE` prints the protocol's output line with a JSON string value.
pub const OUT: &str = r#"out() { printf '{"type":"output","value":"%s"}\n' "$1"; }; "#;
