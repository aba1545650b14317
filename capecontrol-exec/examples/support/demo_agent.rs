//! The demo agent of the container examples, tests and benchmark, written with the macros
//! (`#[derive(Agent)]` + `#[agent_impl]`). The same code runs in-process (registered with the
//! platform as a native agent) and, served by one `capecontrol_core::protocol::serve_stdio`
//! call (`examples/container_agent.rs`), in a container.
//!
//! This crate depends on `capecontrol-core` and `capecontrol-macros`, not on the facade: the
//! macros find `capecontrol_core` through `Cargo.toml`, and the static agent binary stays free
//! of the facade's CLI dependencies.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use capecontrol_core::manifest::{Manifest, Runtime};
use capecontrol_core::{AgentBase, Error, TaskContext, ToolContext};
use capecontrol_macros::{Agent, agent_impl};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The image `scripts/build-test-images.sh` makes from `examples/container_agent.rs`.
pub const IMAGE: &str = "capecontrol/test-agent:dev";

/// A demo agent: greetings, echoes and misbehaviour on demand.
#[derive(Agent, Debug, Clone, Copy, Default)]
#[agent(
    name = "demo",
    version = "1.0.0",
    category = "utility",
    scopes("demo:read"),
    timeout = 10,
    retries = 1,
    memory_limit = "64MiB",
    cpu_limit = "0.5",
    ui(settings = DemoSettings)
)]
pub struct DemoAgent;

/// The demo agent's manifest as a container agent: the manifest the macros generate (tasks,
/// tools and their schemas) with `runtime: {kind: container, image: IMAGE}`, which is what a
/// publisher registers for the packaged agent.
pub fn manifest() -> Manifest {
    let mut manifest = DemoAgent.manifest();
    manifest.runtime = Some(Runtime::Container {
        image: IMAGE.to_owned(),
        command: Vec::new(),
        env: Default::default(),
    });
    manifest
}

/// The installation's settings.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct DemoSettings {
    /// An API key: a secret, so never shown or logged, and passed to a container on stdin only.
    #[schemars(extend("secret" = true))]
    pub api_key: Option<String>,
}

/// Whom to greet.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct GreetRequest {
    /// The name, trimmed before use.
    pub name: String,
}

/// A greeting.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Greeting {
    /// The greeting text.
    pub greeting: String,
    /// The attempt that produced it.
    pub attempt: u32,
}

/// What `secret_check` compares `settings.api_key` with.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SecretCheck {
    /// The expected value.
    #[serde(default)]
    pub expect: Value,
}

/// The result of `secret_check`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SecretCheckResult {
    /// Whether `settings.api_key` equals `expect`.
    pub has_secret: bool,
}

/// How long `sleep` sleeps.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SleepRequest {
    /// Milliseconds (default 1000).
    #[serde(default = "default_sleep_ms")]
    pub ms: u64,
}

fn default_sleep_ms() -> u64 {
    1000
}

/// How much memory `hog` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct HogRequest {
    /// Mebibytes to allocate and touch.
    pub mib: u64,
}

#[agent_impl]
impl DemoAgent {
    /// Greets someone in three durable steps, the second calling the scoped `shout` tool.
    #[task]
    async fn greet(&self, cx: &TaskContext, req: GreetRequest) -> Result<Greeting, Error> {
        let name: String = cx
            .step("normalize", async {
                Ok::<_, Error>(req.name.trim().to_owned())
            })
            .await?;
        cx.log(&format!("greeting {name}"));
        let loud: String = cx
            .step("shout", async {
                self.shout(&cx.tool(), name.clone()).await
            })
            .await?;
        let greeting: String = cx
            .step("compose", async {
                Ok::<_, Error>(format!("Hello, {loud}!"))
            })
            .await?;
        Ok(Greeting {
            greeting,
            attempt: cx.attempt(),
        })
    }

    /// Returns its input.
    #[task]
    async fn echo(&self, _cx: &TaskContext, input: Value) -> Result<Value, Error> {
        Ok(input)
    }

    /// Whether `settings.api_key` equals `input.expect`.
    #[task]
    async fn secret_check(
        &self,
        cx: &TaskContext,
        check: SecretCheck,
    ) -> Result<SecretCheckResult, Error> {
        Ok(SecretCheckResult {
            has_secret: cx.settings().get("api_key") == Some(&check.expect),
        })
    }

    /// The W3C trace context and version the agent received (the platform sends both in the
    /// protocol's `start` message).
    #[task]
    async fn trace_context(&self, cx: &TaskContext, _input: ()) -> Result<Value, Error> {
        Ok(serde_json::json!({"traceparent": cx.traceparent(), "version": cx.version()}))
    }

    /// Fails with a conflict.
    #[task]
    async fn fail(&self, _cx: &TaskContext, _input: ()) -> Result<(), Error> {
        Err(Error::conflict("the demo agent refuses"))
    }

    /// Exits with code 3 without output.
    #[task]
    async fn crash(&self, _cx: &TaskContext, _input: ()) -> Result<(), Error> {
        std::process::exit(3)
    }

    /// Sleeps `input.ms` milliseconds, or until cancelled.
    #[task]
    async fn sleep(&self, cx: &TaskContext, req: SleepRequest) -> Result<String, Error> {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(req.ms)) => Ok("slept".to_owned()),
            () = cx.cancellation().cancelled() => Err(Error::conflict("cancelled")),
        }
    }

    /// The host (container) name it runs on.
    #[task]
    async fn hostname(&self, _cx: &TaskContext, _input: ()) -> Result<String, Error> {
        Ok(std::fs::read_to_string("/etc/hostname")
            .unwrap_or_default()
            .trim()
            .to_owned())
    }

    /// A memory bomb: allocates and touches `input.mib` MiB, one MiB at a time. Meant for a
    /// container with a memory limit, where the kernel kills it.
    #[task]
    async fn hog(&self, _cx: &TaskContext, req: HogRequest) -> Result<u64, Error> {
        let mut held: Vec<Vec<u8>> = Vec::new();
        for _ in 0..req.mib {
            held.push(vec![1u8; 1 << 20]);
        }
        Ok(held.iter().map(|chunk| chunk.len() as u64).sum::<u64>() >> 20)
    }

    /// Upper-cases a name.
    #[tool(scope = "demo:read")]
    async fn shout(&self, _cx: &ToolContext, text: String) -> Result<String, Error> {
        Ok(text.to_uppercase())
    }
}
