//! The container executor of CapeControl: runs agents whose manifest has
//! `runtime.kind = "container"` in isolated, limited Docker containers (through bollard), over
//! the JSON-lines container protocol of [`capecontrol_core::protocol`]
//! (`docs/container-protocol.md`).
//!
//! - **Limits** from the manifest: `memory_limit` (swap disabled), `cpu_limit`, a process limit,
//!   `timeout` (wall clock: the container is killed and removed), an output cap.
//! - **Hardening** by default: network mode `none` unless the manifest asks for and the
//!   installation grants [`NETWORK_SCOPE`], a read-only root filesystem with a small
//!   `noexec` tmpfs at `/tmp`, all capabilities dropped, `no-new-privileges`, user
//!   `65534:65534`, the engine's default seccomp profile, never privileged.
//! - **Secrets** (installation settings) reach the agent only in the start message on stdin:
//!   never in the environment, never logged.
//! - **Failures** map to the taxonomy: OOM and timeout → resource (503, retryable); a crash or
//!   bad protocol output → agent (500); a missing image → not found (404, not retried).
//! - **Warm pools** per agent version, **metrics** `agent_memory_usage_bytes` and
//!   `agent_cpu_usage_percent`, **labels** and orphan clean-up.
//!
//! ```no_run
//! # async fn demo() -> capecontrol_core::Result<()> {
//! use std::sync::Arc;
//! use capecontrol_exec::ContainerExecutor;
//! let executor = ContainerExecutor::builder()
//!     .node_id("node-1")
//!     .warm_pool("summarizer@1.0.0", 2)
//!     .build()
//!     .await?;
//! // PlatformBuilder::executor(Arc::new(executor)) hands it to the platform.
//! # let _ = Arc::new(executor);
//! # Ok(()) }
//! ```

mod container;
mod executor;
mod limits;
mod pool;
mod stats;

pub use container::{LABEL_AGENT, LABEL_ATTEMPT, LABEL_MANAGED, LABEL_NODE, LABEL_TASK};
pub use executor::{
    ContainerExecutor, ContainerExecutorBuilder, MAX_TOOL_CALLS_PER_ATTEMPT, SCRUBBED, Secrets,
};
pub use limits::NETWORK_SCOPE;

/// The bollard crate, re-exported for callers that need the engine connection.
pub use bollard;
