//! Two full platforms around the same demo agent (`demo_agent.rs`), used by
//! `examples/same_agent.rs` and `tests/platform.rs`:
//!
//! - **native**: `Platform::builder().agent(DemoAgent)` registers and publishes it; the
//!   in-process executor runs it;
//! - **container**: its manifest with `runtime: {kind: container, image}` goes through the
//!   registry (create, add a version, publish) and a `ContainerExecutor` added with
//!   `PlatformBuilder::executor` runs it in the image `capecontrol/test-agent:dev`.
//!
//! Either way the user installs it through the registry, and tasks go through `submit`
//! (gateway, policy, middleware), the workers, the journal and the live events.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use capecontrol_core::events::TaskEventKind;
use capecontrol_core::manifest::Manifest;
use capecontrol_core::registry::{InstallRequest, NewAgent, NewVersion};
use capecontrol_core::runtime::{Platform, PlatformConfig, TaskRequest};
use capecontrol_core::{Principal, Result, RunStatus, TaskStatus};
use capecontrol_exec::ContainerExecutor;
use serde_json::{Value, json};
use tokio_stream::StreamExt;

use super::demo_agent::{self, DemoAgent};

/// The agent's id (the slug of its name) on both platforms.
pub const AGENT: &str = "demo";

/// The user who installs the agent and submits its tasks.
pub fn user() -> Principal {
    Principal::new("alice").with_roles(["user"])
}

/// The publisher who registers the container agent.
pub fn publisher() -> Principal {
    Principal::new("publisher").with_roles([capecontrol_core::policy::PUBLISHER])
}

/// The installation's settings: a secret the agent may read.
pub fn settings() -> Value {
    json!({"api_key": "s3cr3t"})
}

/// Runtime settings that keep examples and tests quick: frequent polls, short backoffs.
pub fn config() -> PlatformConfig {
    PlatformConfig {
        workers: 4,
        claim_batch: 4,
        poll_interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        cancel_grace: Duration::from_millis(500),
        ..PlatformConfig::default()
    }
}

/// A platform with the demo agent registered natively (in-process), installed for [`user`].
pub async fn native() -> Result<Platform> {
    let platform = Platform::builder()
        .config(config())
        .agent(DemoAgent)
        .build()
        .await?;
    install(&platform).await?;
    Ok(platform)
}

/// A platform running the demo agent in containers: `manifest` (a container manifest, such as
/// [`demo_agent::manifest`]) is registered, versioned and published through the registry, the
/// `executor` added to the platform, and the agent installed for [`user`].
pub async fn container(executor: ContainerExecutor, manifest: &Manifest) -> Result<Platform> {
    container_with(executor, manifest, config()).await
}

/// [`container`] with other runtime settings.
pub async fn container_with(
    executor: ContainerExecutor,
    manifest: &Manifest,
    config: PlatformConfig,
) -> Result<Platform> {
    let platform = Platform::builder()
        .config(config)
        .executor(Arc::new(executor))
        .build()
        .await?;
    let registry = platform.registry();
    let agent = registry
        .create_agent(
            &publisher(),
            NewAgent::named(manifest.name.clone())
                .description(manifest.description.clone())
                .category("utility"),
        )
        .await?;
    let value = serde_json::to_value(manifest).expect("a manifest serializes");
    let version = registry
        .add_version(
            &publisher(),
            &agent.id,
            NewVersion::new(value).changelog("packaged as a container image"),
        )
        .await?;
    registry
        .publish(&publisher(), &agent.id, &version.version)
        .await?;
    install(&platform).await?;
    Ok(platform)
}

/// The default container platform: [`demo_agent::manifest`] on a new `ContainerExecutor`.
pub async fn container_default(executor: ContainerExecutor) -> Result<Platform> {
    container(executor, &demo_agent::manifest()).await
}

async fn install(platform: &Platform) -> Result<()> {
    platform
        .registry()
        .install(
            &user(),
            InstallRequest::latest(AGENT)
                .grant(["demo:read"])
                .settings(settings()),
        )
        .await?;
    Ok(())
}

/// What one task did, without what legitimately differs between two runs (task ids, times,
/// worker names).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The final status.
    pub status: TaskStatus,
    /// Attempts made.
    pub attempts: u32,
    /// The output (completed tasks).
    pub output: Option<Value>,
    /// The error (failed tasks).
    pub error: Option<capecontrol_core::Error>,
    /// The journaled steps (`Store::steps`): position, name, status, output.
    pub steps: Vec<(u32, String, RunStatus, Option<Value>)>,
    /// The live events (`Platform::watch`), as JSON without their worker names.
    pub events: Vec<Value>,
    /// The task's audit rows' types, in order.
    pub audit_types: Vec<String>,
}

impl Run {
    /// The events' type names, in order.
    pub fn event_names(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("?"))
            .collect()
    }
}

/// Submits `task` with `input` as [`user`], follows its events to the end and collects
/// the outcome.
pub async fn run(platform: &Platform, task: &str, input: Value) -> Result<Run> {
    let id = platform
        .submit(TaskRequest::new(AGENT, task, input, user()))
        .await?;
    let mut stream = platform.watch(id, &user()).await?;
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        let event = event?;
        let terminal = event.kind.is_terminal();
        let mut value = serde_json::to_value(&event.kind).expect("an event serializes");
        if let (TaskEventKind::Started { .. }, Some(map)) = (&event.kind, value.as_object_mut()) {
            map.remove("worker");
        }
        events.push(value);
        if terminal {
            break;
        }
    }
    let record = platform.get(id, &user()).await?;
    let steps = platform
        .store()
        .steps(id)
        .await?
        .into_iter()
        .map(|s| (s.step, s.name, s.status, s.output))
        .collect();
    let audit_types = platform
        .audit(id, &user())
        .await?
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    Ok(Run {
        status: record.status,
        attempts: record.attempts,
        output: record.output,
        error: record.error,
        steps,
        events,
        audit_types,
    })
}
