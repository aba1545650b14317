//! CapeControl: an embeddable platform on which host applications register, version, publish,
//! install and run agents, with policy scopes, middleware, isolation and an audit trail.
//!
//! This facade re-exports the workspace's crates; `use capecontrol::prelude::*` brings what an
//! application or an agent author needs, and every item has one module path
//! (`capecontrol::runtime::Platform`, `capecontrol::registry::InstallRequest`,
//! `capecontrol::store::memory::MemoryStore`); the agent macros are at the root.
//!
//! Features (all on by default through `cli`; `default-features = false` compiles none of their
//! dependencies):
//!
//! | feature | adds |
//! | --- | --- |
//! | `postgres` | [`postgres`]: the PostgreSQL store (`PostgresStore`) |
//! | `docker` | [`docker`]: the container executor (`ContainerExecutor`) |
//! | `http` | [`http`]: the HTTP API router (`http::router`) |
//! | `cli` | the `capecontrol` binary (all of the above) |

// Lets the macros' generated code name this crate `::capecontrol` inside it too.
extern crate self as capecontrol;

// The core crate whole, for code written before the facade had every module; use the module
// paths below (`capecontrol::runtime::Platform`) or the prelude instead.
#[doc(hidden)]
pub use capecontrol_core as core;
/// The agent SDK's macros: `#[derive(Agent)]`, `#[agent_impl]` with `#[task]` and `#[tool]`.
pub use capecontrol_macros::{Agent, agent_impl, task, tool};

#[doc(hidden)]
pub use capecontrol_core::__private;
pub use capecontrol_core::{
    agent, audit, error, events, manifest, plan, policy, protocol, registry, runtime, slug, state,
    store, trace, validate,
};
// The same items at the root, for code written before the prelude; hidden so that the
// documentation shows each item once, at its module path (and in the prelude).
#[doc(hidden)]
pub use capecontrol_core::runtime::{Platform, PlatformConfig, TaskRequest};
#[doc(hidden)]
pub use capecontrol_core::{
    AgentBase, AgentMetadata, Error, ErrorCategory, FieldError, Manifest, MemoryJournal, Plan,
    Principal, Result, Scope, TaskContext, TaskStatus, ToolContext,
};

/// The PostgreSQL store (feature `postgres`): `capecontrol::postgres::PostgresStore`.
#[cfg(feature = "postgres")]
pub mod postgres {
    pub use capecontrol_store::*;
}

/// The container executor (feature `docker`): `capecontrol::docker::ContainerExecutor`.
#[cfg(feature = "docker")]
pub mod docker {
    pub use capecontrol_exec::*;
}

#[cfg(feature = "http")]
pub mod http;

#[cfg(feature = "console")]
pub mod console;

#[cfg(feature = "prometheus")]
pub mod observability;

#[cfg(feature = "otel")]
pub mod otel;

/// What most users need, in one import.
pub mod prelude {
    pub use capecontrol_macros::{Agent, agent_impl, task, tool};

    pub use capecontrol_core::registry::Registry;
    pub use capecontrol_core::runtime::{Platform, TaskRequest};
    pub use capecontrol_core::store::memory::MemoryStore;
    pub use capecontrol_core::{
        AgentBase, AgentMetadata, AgentStatus, Error, ErrorCategory, FieldError, Manifest,
        MemoryJournal, Plan, Principal, Result, RunStatus, Scope, TaskContext, TaskStatus,
        ToolContext, VersionStatus,
    };
}

/// `docs/writing-agents.md`, whose code blocks are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/writing-agents.md")]
pub struct WritingAgentsGuide;
