//! CapeControl: an embeddable platform on which host applications register, version, publish,
//! install and run agents, with policy scopes, middleware, isolation and an audit trail.
//!
//! This facade re-exports the workspace's crates; `use capecontrol::prelude::*` brings what an
//! application or an agent author needs.

pub use capecontrol_core as core;
pub use capecontrol_core::{
    AgentBase, Error, ErrorCategory, FieldError, Manifest, Principal, Result, Scope, TaskContext,
    ToolContext, agent, error, manifest, policy, registry, slug, state, store, validate,
};

/// What most users need, in one import.
pub mod prelude {
    pub use capecontrol_core::registry::Registry;
    pub use capecontrol_core::{
        AgentBase, AgentStatus, Error, ErrorCategory, FieldError, Manifest, Principal, Result,
        RunStatus, Scope, TaskContext, TaskStatus, ToolContext, VersionStatus,
    };
}
