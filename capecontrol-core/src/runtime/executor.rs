//! The `Executor` port: runs one attempt of a task. The in-process executor runs native
//! [`AgentBase`] agents; `capecontrol-exec` adds a container executor.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde_json::Value;

use crate::agent::{AgentBase, TaskContext};
use crate::error::{Error, Result};
use crate::manifest::{Manifest, Runtime};

/// One attempt to run: which agent, version and task, on which input.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The agent's id.
    pub agent_id: String,
    /// The agent version.
    pub version: String,
    /// The task's name.
    pub task: String,
    /// The JSON input.
    pub input: Value,
    /// The version's manifest (limits, runtime).
    pub manifest: Arc<Manifest>,
}

/// Runs task attempts. Object-safe; a platform holds several and picks the first that
/// [`supports`](Executor::supports) a manifest.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// A short name for logs and metrics (`in-process`, `container`).
    fn name(&self) -> &str;
    /// Whether this executor can run agents with this manifest.
    fn supports(&self, agent_id: &str, manifest: &Manifest) -> bool;
    /// Runs one attempt. Steps, tool calls and logs go through `cx`; the result is the task's
    /// output. The attempt must stop promptly once `cx.cancellation()` fires.
    async fn run(&self, invocation: Invocation, cx: TaskContext) -> Result<Value>;
}

/// Runs native agents in-process (the embedded default).
#[derive(Default, Clone)]
pub struct InProcessExecutor {
    /// Looked up twice per attempt (`supports`, `run`): hashed as a [`crate::FastMap`].
    agents: Arc<RwLock<crate::FastMap<String, Arc<dyn AgentBase>>>>,
}

impl std::fmt::Debug for InProcessExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .agents
            .read()
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("InProcessExecutor")
            .field("agents", &names)
            .finish()
    }
}

impl InProcessExecutor {
    /// An executor with no agents.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `agent` under `agent_id`.
    pub fn register(&self, agent_id: impl Into<String>, agent: Arc<dyn AgentBase>) {
        if let Ok(mut agents) = self.agents.write() {
            agents.insert(agent_id.into(), agent);
        }
    }

    /// The agent registered under `agent_id`.
    pub fn agent(&self, agent_id: &str) -> Option<Arc<dyn AgentBase>> {
        self.agents.read().ok()?.get(agent_id).cloned()
    }
}

#[async_trait]
impl Executor for InProcessExecutor {
    fn name(&self) -> &str {
        "in-process"
    }

    fn supports(&self, agent_id: &str, manifest: &Manifest) -> bool {
        matches!(manifest.runtime(), Runtime::Native)
            && self
                .agents
                .read()
                .is_ok_and(|agents| agents.contains_key(agent_id))
    }

    async fn run(&self, invocation: Invocation, cx: TaskContext) -> Result<Value> {
        let agent = self
            .agent(&invocation.agent_id)
            .ok_or_else(|| Error::not_found("agent executor", invocation.agent_id.clone()))?;
        agent
            .run_task(&invocation.task, invocation.input, &cx)
            .await
    }
}
