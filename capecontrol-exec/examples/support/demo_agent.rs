//! A hand-written agent (no macros) used by the container examples, tests and benchmark: the
//! same code runs in-process and, served by `capecontrol_core::protocol::serve_stdio`, in a
//! container.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use async_trait::async_trait;
use capecontrol_core::manifest::Manifest;
use capecontrol_core::{AgentBase, Error, Result, TaskContext, ToolContext};
use serde_json::{Value, json};

/// The image the build script makes from `examples/container_agent.rs`.
pub const IMAGE: &str = "capecontrol/test-agent:dev";

/// The demo agent.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoAgent;

/// The demo agent's manifest, run as a container with `IMAGE`.
pub fn manifest() -> Manifest {
    serde_json::from_value(json!({
        "name": "demo",
        "version": "1.0.0",
        "description": "A demo agent: greetings, echoes and misbehaviour on demand.",
        "tools": ["shout"],
        "config": {"timeout": 10, "memory_limit": "64MiB", "cpu_limit": "0.5"},
        "permissions": {"scopes": ["demo:read"]},
        "runtime": {"kind": "container", "image": IMAGE},
        "tasks": [
            {"name": "greet", "description": "Greets someone in two durable steps."},
            {"name": "echo", "description": "Returns its input."},
            {"name": "secret_check", "description": "Whether settings.api_key equals input.expect."},
            {"name": "fail", "description": "Fails with a conflict."},
            {"name": "crash", "description": "Exits with code 3 without output."},
            {"name": "sleep", "description": "Sleeps input.ms milliseconds."},
            {"name": "hostname", "description": "The host (container) name it runs on."}
        ],
        "tool_specs": [{"name": "shout", "scope": "demo:read"}]
    }))
    .expect("the demo manifest parses")
}

#[async_trait]
impl AgentBase for DemoAgent {
    fn manifest(&self) -> Manifest {
        manifest()
    }

    async fn run_task(&self, name: &str, input: Value, cx: &TaskContext) -> Result<Value> {
        match name {
            "greet" => {
                let raw = input
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::invalid_field("/name", "a string is required"))?
                    .to_owned();
                let name: String = cx
                    .step(
                        "normalize",
                        async move { Ok::<_, Error>(raw.trim().to_owned()) },
                    )
                    .await?;
                cx.log(&format!("greeting {name}"));
                let loud = self
                    .call_tool("shout", json!(name.clone()), &cx.tool())
                    .await?;
                let greeting: String = cx
                    .step("compose", async move {
                        Ok::<_, Error>(format!("Hello, {}!", loud.as_str().unwrap_or_default()))
                    })
                    .await?;
                Ok(json!({"greeting": greeting, "attempt": cx.attempt()}))
            }
            "echo" => Ok(input),
            "secret_check" => {
                let expected = input.get("expect").cloned().unwrap_or(Value::Null);
                let present = cx.settings().get("api_key") == Some(&expected);
                Ok(json!({"has_secret": present}))
            }
            "fail" => Err(Error::conflict("the demo agent refuses")),
            "crash" => std::process::exit(3),
            "sleep" => {
                let ms = input.get("ms").and_then(Value::as_u64).unwrap_or(1000);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!("slept")),
                    () = cx.cancellation().cancelled() => Err(Error::conflict("cancelled")),
                }
            }
            "hostname" => Ok(json!(
                std::fs::read_to_string("/etc/hostname")
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            )),
            other => Err(Error::not_found("task", other)),
        }
    }

    async fn call_tool(&self, name: &str, input: Value, cx: &ToolContext) -> Result<Value> {
        match name {
            "shout" => {
                cx.authorize("shout", Some("demo:read")).await?;
                Ok(json!(input.as_str().unwrap_or_default().to_uppercase()))
            }
            other => Err(Error::not_found("tool", other)),
        }
    }
}
