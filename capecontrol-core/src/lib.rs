//! CapeControl core: the domain types (manifest, errors, state machines, policy), the ports
//! (store, executor) and the orchestrator. No database or Docker crate is used here: those
//! adapters live in `capecontrol-store` and `capecontrol-exec`.

pub mod agent;
pub mod audit;
pub mod error;
pub mod events;
pub mod manifest;
pub mod plan;
pub mod policy;
pub mod protocol;
pub mod registry;
pub mod runtime;
pub mod slug;
pub mod state;
pub mod store;
pub mod trace;
pub mod validate;

#[doc(hidden)]
#[path = "macro_support.rs"]
pub mod __private;

/// The maps every submission, claim or attempt looks up (the in-memory store's indexes, the
/// gateway's policy cache, the performance monitor's totals): foldhash, seeded at random per
/// map (its `quality` variant), in place of std's SipHash, which took about 5 % of a zero-step
/// task's instructions in memory.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
/// A set hashed as [`FastMap`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::quality::RandomState>;

pub use agent::{
    AgentBase, AgentMetadata, MemoryJournal, StepRecord, TaskContext, TaskHost, ToolCall,
    ToolContext,
};
pub use error::{Error, ErrorCategory, FieldError, Result};
pub use manifest::Manifest;
pub use plan::Plan;
pub use policy::{Principal, Scope, missing_scopes};
pub use slug::slugify;
pub use state::{AgentStatus, RunStatus, TaskStatus, TransitionError, VersionStatus};
