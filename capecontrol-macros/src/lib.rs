//! Procedural macros of CapeControl. Use them through the facade crate: `capecontrol::Agent`,
//! `capecontrol::agent_impl` (both in `capecontrol::prelude`).
//!
//! - `#[derive(Agent)]` with `#[agent(...)]` on the agent type implements `AgentMetadata`: the
//!   manifest's metadata, checked at compile time.
//! - `#[agent_impl]` on the type's impl block implements `AgentBase`: it collects the
//!   `#[task]` and `#[tool]` methods, their descriptions (doc comments) and JSON schemas, and
//!   dispatches `run_task` / `call_tool` by name on JSON input.
//!
//! The stages follow thiserror's layout, one module each: `attr` reads the attributes into
//! literals, `ast` builds the tree and checks the code's shapes, `check` validates every value
//! of the whole tree in a separate pass (with `valid`'s rules, which are `capecontrol-rules`'),
//! `expand` generates code from a valid tree, and `fallback` is what is emitted after an error:
//! the item and placeholder impls, so that the one spanned error per mistake is not followed by
//! a cascade of others.

use proc_macro::TokenStream;

mod ast;
mod attr;
mod check;
mod expand;
mod fallback;
mod valid;

/// Implements `AgentMetadata` (the manifest without tasks and tools) from `#[agent(...)]`.
///
/// ```ignore
/// /// Budget tracking and payment processing.
/// #[derive(Agent)]
/// #[agent(name = "FinanceAgent", version = "1.2.0", category = "domain-specific",
///         scopes("finance:read", "finance:write", "payments:manage"), timeout = 60)]
/// struct FinanceAgent;
/// ```
///
/// Keys (each at most once): `name`, `version` (SemVer), `description` (default: the type's
/// doc comment), `category`, `placement`, `scopes(..)`, `roles(..)`, `data_access(..)`,
/// `timeout`, `retries`, `memory_limit`, `cpu_limit`, `concurrent_tasks`, `ask_timeout`,
/// `triggers(events(..), schedules(..), webhooks(..))`,
/// `ui(icon = .., color = .., description_short = .., settings = Type)`,
/// `container(image = .., command(..))`, `crate = path`.
#[proc_macro_derive(Agent, attributes(agent))]
pub fn derive_agent(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}

/// Implements `AgentBase` for the type of an impl block from its `#[task]` and `#[tool]`
/// methods (the type must also `#[derive(Agent)]`).
///
/// A task is `async fn name(&self, cx: &TaskContext, input: T) -> Result<O, E>` and a tool
/// `async fn name(&self, cx: &ToolContext, input: T) -> Result<O, E>`, with
/// `T: Deserialize + JsonSchema`, `O: Serialize + JsonSchema`, `E: Into<capecontrol::Error>`.
/// `#[task(timeout = 60, name = "..", description = "..")]`,
/// `#[tool(scope = "finance:read", name = "..", description = "..")]`; doc comments are the
/// default descriptions. A tool method checks its scope before its body runs and so returns
/// `capecontrol::Result<O>`. `#[agent_impl(crate = path)]` names the facade crate when it
/// cannot be found in `Cargo.toml`.
#[proc_macro_attribute]
pub fn agent_impl(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::agent_impl(args.into(), &input.into()).into()
}

/// Marks a task method inside an `#[agent_impl]` block (see [`macro@agent_impl`]).
#[proc_macro_attribute]
pub fn task(_args: TokenStream, item: TokenStream) -> TokenStream {
    fallback::misplaced("task", &item.into()).into()
}

/// Marks a tool method inside an `#[agent_impl]` block (see [`macro@agent_impl`]).
#[proc_macro_attribute]
pub fn tool(_args: TokenStream, item: TokenStream) -> TokenStream {
    fallback::misplaced("tool", &item.into()).into()
}
