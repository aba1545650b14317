//! The same agent, written with the macros, run through a full platform in-process and in a
//! container, with the same input: the same output, journaled steps and live events.
//!
//! ```sh
//! bash scripts/build-test-images.sh     # packs examples/container_agent.rs into an image
//! cargo run -p capecontrol-exec --example same_agent
//! ```
//!
//! The agent (`support/demo_agent.rs`) is `#[derive(Agent)]` + `#[agent_impl]` code. On the
//! first platform it is registered natively and runs in-process; on the second, its manifest
//! with `runtime: {kind: container, image: capecontrol/test-agent:dev}` is published through
//! the registry, and a `ContainerExecutor` runs the image, in which
//! `examples/container_agent.rs` serves the same agent with one `serve_stdio` call. Both go
//! through `Platform::submit` (gateway, policy, middleware), the workers, the journal and
//! `Platform::watch` (`support/platforms.rs`).

#[path = "support/demo_agent.rs"]
mod demo_agent;
#[path = "support/platforms.rs"]
mod platforms;

use std::time::{Duration, Instant};

use capecontrol_core::Result;
use capecontrol_exec::ContainerExecutor;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<()> {
    let native = platforms::native().await?;
    let executor = ContainerExecutor::builder()
        .node_id("same-agent-example")
        .build()
        .await?;
    let container = platforms::container_default(executor.clone()).await?;

    let input = json!({"name": "  Ada Lovelace "});
    println!("task greet, input {input}\n");
    let mut runs = Vec::new();
    for (label, platform) in [("in-process", &native), ("container", &container)] {
        let started = Instant::now();
        let run = platforms::run(platform, "greet", input.clone()).await?;
        println!("{label} ({} ms)", started.elapsed().as_millis());
        println!(
            "  status : {} after {} attempt(s)",
            run.status, run.attempts
        );
        println!("  output : {}", run.output.clone().unwrap_or_default());
        for (step, name, status, output) in &run.steps {
            println!(
                "  step {step} {name:<9} {status}: {}",
                output.clone().unwrap_or_default()
            );
        }
        println!("  events : {}\n", run.event_names().join(" → "));
        runs.push(run);
    }
    assert_eq!(runs[0], runs[1], "the same run in both runtimes");
    println!("same output, steps and events in both runtimes");

    native.shutdown(Duration::from_secs(1)).await;
    container.shutdown(Duration::from_secs(1)).await;
    executor.shutdown().await;
    Ok(())
}
