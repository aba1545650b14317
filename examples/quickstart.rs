//! The quickstart: the whole platform embedded on its defaults (in-memory store, in-process
//! executor).
//!
//! `cargo run --example quickstart` registers an agent written with the macros (a task of three
//! durable steps and a tool, in `src/bin/capecontrol/demo.rs`), installs it for a user, submits a task, prints each live event as
//! it happens, then the result and the task's audit trail. It needs no server.

use std::time::Duration;

use capecontrol::prelude::*;
use capecontrol::registry::InstallRequest;
use serde_json::json;
use tokio_stream::StreamExt;

// The agent, `OnboardingGuide`: defined once, in this file, which `capecontrol serve --demo` and
// the `http_server` example compile in too.
#[path = "../src/bin/capecontrol/demo.rs"]
mod demo;

use demo::OnboardingGuide;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The platform on its defaults, with one native agent (registered and published).
    let platform = Platform::builder().agent(OnboardingGuide).build().await?;
    println!("registered agents:");
    for entry in platform
        .registry()
        .catalog(&Default::default())
        .await?
        .items
    {
        println!(
            "  {} {} ({})",
            entry.agent.slug, entry.version.version, entry.version.status
        );
    }

    // 2. A user installs it, granting the scopes it asks for.
    let alice = Principal::new("alice")
        .with_roles(["user"])
        .with_ip("203.0.113.7".parse()?)
        .with_user_agent("quickstart/1.0");
    platform
        .registry()
        .install(
            &alice,
            InstallRequest::latest("onboarding-guide").grant(["profile:read", "checklist:write"]),
        )
        .await?;
    println!("installed onboarding-guide for alice\n");

    // 3. Submit a task and print each event as it happens.
    let input = json!({"name": "Alice", "used": ["dashboard"]});
    let task_id = platform
        .submit(TaskRequest::new(
            "onboarding-guide",
            "onboard",
            input,
            alice.clone(),
        ))
        .await?;
    println!("submitted task {task_id}");
    let mut events = platform.watch(task_id, &alice).await?;
    while let Some(event) = events.next().await {
        let event = event?;
        println!(
            "  #{:<2} {:<15} {}",
            event.seq,
            event.kind.name(),
            describe(&event.kind)
        );
    }

    // 4. The result and the audit trail.
    let task = platform.get(task_id, &alice).await?;
    println!("\nstatus: {}, attempts: {}", task.status, task.attempts);
    println!("output: {}", serde_json::to_string_pretty(&task.output)?);
    println!("\naudit trail:");
    for a in platform.audit(task_id, &alice).await? {
        println!(
            "  {} {:<16} by {:<6} from {}",
            a.created_at.format("%H:%M:%S%.3f"),
            a.event_type,
            a.user_id.as_deref().unwrap_or("-"),
            a.ip_address
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "-".into()),
        );
    }
    platform.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

fn describe(kind: &capecontrol::events::TaskEventKind) -> String {
    use capecontrol::events::TaskEventKind as K;
    match kind {
        K::Started { attempt, worker } => format!("attempt {attempt} on {worker}"),
        K::StepStarted { step, name } | K::StepCompleted { step, name } => {
            format!("step {step} `{name}`")
        }
        K::ToolCalled { tool, allowed } => {
            format!("`{tool}` {}", if *allowed { "allowed" } else { "denied" })
        }
        K::Completed { .. } => "done".into(),
        K::Failed { error } => error.to_string(),
        _ => String::new(),
    }
}
