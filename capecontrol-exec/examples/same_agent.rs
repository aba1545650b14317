//! The same agent, run in-process and in a container, with the same input and the same output.
//!
//! ```sh
//! bash scripts/build-test-images.sh     # packs examples/container_agent.rs into an image
//! cargo run -p capecontrol-exec --example same_agent
//! ```
//!
//! The agent (`support/demo_agent.rs`) is ordinary `AgentBase` code. In-process, the
//! `InProcessExecutor` calls it directly; isolated, `examples/container_agent.rs` serves it with
//! `capecontrol_core::protocol::serve_stdio`, and the `ContainerExecutor` runs that image. Its
//! durable steps journal through the same `TaskHost` either way.

#[path = "support/demo_agent.rs"]
mod demo_agent;

use std::sync::Arc;

use capecontrol_core::agent::MemoryJournal;
use capecontrol_core::runtime::{Executor, InProcessExecutor, Invocation};
use capecontrol_core::{Result, TaskContext};
use capecontrol_exec::ContainerExecutor;
use serde_json::json;

fn context(journal: Arc<MemoryJournal>) -> TaskContext {
    TaskContext::builder(uuid::Uuid::new_v4())
        .agent_id("demo")
        .granted(vec!["demo:read".parse().expect("a scope")])
        .build(journal)
}

#[tokio::main]
async fn main() -> Result<()> {
    let input = json!({"name": "  Ada Lovelace "});

    // In-process: the native runtime.
    let native = InProcessExecutor::new();
    native.register("demo", Arc::new(demo_agent::DemoAgent));
    let mut manifest = demo_agent::manifest();
    manifest.runtime = None;
    let journal = Arc::new(MemoryJournal::default());
    let in_process = native
        .run(
            Invocation {
                agent_id: "demo".into(),
                version: "1.0.0".into(),
                task: "greet".into(),
                input: input.clone(),
                manifest: Arc::new(manifest),
            },
            context(journal.clone()),
        )
        .await?;
    println!(
        "in-process : {in_process}  ({} steps journaled)",
        journal.steps().len()
    );

    // In a container: the same code, served over the container protocol.
    let executor = ContainerExecutor::builder()
        .node_id("example")
        .build()
        .await?;
    let journal = Arc::new(MemoryJournal::default());
    let contained = executor
        .run(
            Invocation {
                agent_id: "demo".into(),
                version: "1.0.0".into(),
                task: "greet".into(),
                input,
                manifest: Arc::new(demo_agent::manifest()),
            },
            context(journal.clone()),
        )
        .await?;
    println!(
        "container  : {contained}  ({} steps journaled)",
        journal.steps().len()
    );
    executor.shutdown().await;

    assert_eq!(in_process, contained, "the same output from both runtimes");
    println!("same output from both runtimes");
    Ok(())
}
