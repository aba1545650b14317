//! The orchestrator runtime: [`Platform`] (a builder, the gateway, workers, middleware, live
//! events). A host application embeds it in a few calls:
//!
//! ```ignore
//! let platform = Platform::builder().agent(MyAgent::default()).build().await?;
//! let id = platform.submit(TaskRequest::new("my-agent", "run", json!({}), principal.clone())).await?;
//! let mut events = platform.watch(id, &principal).await?;
//! while let Some(event) = events.next().await { println!("{event:?}"); }
//! ```
//!
//! One module per role, each importing only its siblings below it (none from this file):
//!
//! | module | role |
//! | --- | --- |
//! | [`request`] | [`TaskRequest`], what a caller submits |
//! | [`config`] | [`PlatformConfig`], a node's settings |
//! | [`builder`] | [`PlatformBuilder`]: store, executors, agents, middleware → a started node |
//! | [`platform`] | [`Platform`]: submit, get, cancel, wait, watch, audit, tasks (principal-checked), `trusted()`, shutdown |
//! | [`access`] | task authorization: submitter, `admin`, or the host's [`TaskAccessPolicy`] |
//! | `gateway` | resolve the installation → policy → breaker → middleware → enqueue |
//! | `node` | what a node shares: store, executors, chain, breakers, running attempts, caches |
//! | `dispatch` | claims due tasks into free worker slots |
//! | `checks` | the worker's re-checks (installation, archived version, grants), retry-delay clamp, output cap |
//! | `attempt` | one claimed task: prepare, run under timeout/cancel/lease, hand over the outcome |
//! | `host` | the attempt's `TaskHost` and single writer: steps, tool calls, events, finish |
//! | `completions` | cheap waiting: the tasks waited for on this node, woken by one shared subscription |
//! | [`triggers`] | events (`emit`) and schedules (`run_schedules`, the scheduler loop) start tasks |
//! | [`webhooks`] | signed webhook deliveries start tasks |
//! | `upkeep` | the heartbeat loop and the maintenance loop (reclaim, queue depth) |
//! | [`backoff`](mod@backoff) | retry delays |
//! | [`breaker`], [`executor`], [`middleware`], [`watch`] | circuit breakers, the `Executor` port, the chain, event streams |
//!
//! The flow of one task: `submit` → gateway: resolve agent and installed version → policy
//! (roles, installation grants) → middleware chain → `Store::enqueue` (event `queued`). The
//! dispatcher claims due tasks by priority under leases; each attempt runs through the
//! middleware chain and an [`Executor`] with heartbeats, a timeout and cancellation, and its
//! host writes the outcome: completed, failed (retried with backoff while attempts remain) or
//! cancelled.

pub mod access;
mod attempt;
pub mod backoff;
pub mod breaker;
pub mod builder;
mod checks;
mod completions;
pub mod config;
mod dispatch;
pub mod executor;
mod gateway;
mod host;
pub mod middleware;
mod node;
pub mod platform;
pub mod request;
pub mod triggers;
mod upkeep;
pub mod waits;
pub mod watch;
pub mod webhooks;

pub use self::access::{OwnerOrAdmin, TaskAccessPolicy, TaskAction};
pub use self::backoff::backoff;
pub use self::breaker::{BreakerConfig, BreakerState, CircuitBreakers};
pub use self::builder::PlatformBuilder;
pub use self::config::PlatformConfig;
pub use self::executor::{Executor, InProcessExecutor, Invocation};
pub use self::middleware::Middleware;
pub use self::platform::{Platform, TrustedAccess};
pub use self::request::TaskRequest;
pub use self::triggers::{
    Event, Fired, MisfirePolicy, ScheduleEntry, TriggerConfig, TriggerSource,
};
pub use self::watch::TaskEvents;
