//! Procedural macros of CapeControl. Use them through the facade crate: `capecontrol::Agent`,
//! `capecontrol::agent_impl` (both in `capecontrol::prelude`).
//!
//! - `#[derive(Agent)]` with `#[agent(...)]` on the agent type implements `AgentMetadata`: the
//!   manifest's metadata, checked at compile time.
//! - `#[agent_impl]` on the type's impl block implements `AgentBase`: it collects the
//!   `#[task]` and `#[tool]` methods, their descriptions (doc comments) and JSON schemas, and
//!   dispatches `run_task` / `call_tool` by name on JSON input.
//!
//! The stages follow thiserror's layout: `attr` parses attributes, `ast` checks shapes,
//! `valid` checks values, `expand` generates code. Every mistake is one spanned error, and
//! after an error the item is still emitted (with placeholder impls) so that the error is not
//! followed by a cascade of others.

use proc_macro::TokenStream;

mod ast;
mod attr;
mod expand;
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
/// `timeout`, `retries`, `memory_limit`, `cpu_limit`, `concurrent_tasks`,
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
    expand::agent_impl(args.into(), input.into()).into()
}

fn misplaced(what: &str, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let e = syn::Error::new(
        proc_macro2::Span::call_site(),
        format!("`#[{what}]` marks a method of an impl block that has `#[agent_impl]` on it"),
    )
    .to_compile_error();
    quote::quote!(#e #item).into()
}

/// Marks a task method inside an `#[agent_impl]` block (see [`macro@agent_impl`]).
#[proc_macro_attribute]
pub fn task(_args: TokenStream, item: TokenStream) -> TokenStream {
    misplaced("task", item)
}

/// Marks a tool method inside an `#[agent_impl]` block (see [`macro@agent_impl`]).
#[proc_macro_attribute]
pub fn tool(_args: TokenStream, item: TokenStream) -> TokenStream {
    misplaced("tool", item)
}
