//! [`PlatformConfig`]: the runtime settings of a node.

use std::time::Duration;

use uuid::Uuid;

use super::breaker::BreakerConfig;
use super::triggers::TriggerConfig;

/// Runtime settings of a [`Platform`](super::platform::Platform).
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformConfig {
    /// Agents this node runs at once: a worker slot is taken at the claim and freed when the
    /// agent returns. The attempt's outcome is written after (it stays leased and `running`
    /// until then), so a node may have more attempts in flight than `workers` while their
    /// writes commit: at most four times `workers`, plus the prefetched ones waiting for a
    /// slot; past that, the node claims nothing until writes are done. A task submitted to this
    /// node while a slot is free and its dispatcher waits for work (its last claim found none)
    /// may be claimed by its own enqueue and start at once (see
    /// [`QueueStore::enqueue_claimed`](crate::store::QueueStore::enqueue_claimed)).
    pub workers: usize,
    /// Tasks claimed in one round trip at most.
    pub claim_batch: usize,
    /// Tasks claimed beyond the free worker slots, at most (default 0, at most `workers`). A
    /// prefetched task is leased, heartbeaten and counted against its agent's concurrency
    /// limit while it waits for a slot; it starts as soon as one frees, without waiting for
    /// the next claim's round trip, and claims grow by as many tasks (fewer claims per task on
    /// a busy queue). The price: a task submitted later with a higher priority runs after the
    /// tasks already prefetched, and another node cannot take a prefetched task. A prefetched
    /// attempt that waited for its slot `policy_cache_ttl` or longer reads its version's status
    /// and installation again when it gets the slot (they may have changed meanwhile); one
    /// that waited less uses what its claim read, as the gateway uses its cache that long.
    pub claim_prefetch: usize,
    /// Lease length; heartbeats renew it every third of it.
    pub lease: Duration,
    /// How often an idle dispatcher polls besides wake-ups, and how often the wait sweeper
    /// runs (at least every 10 ms; while no task waits and none of this node's attempts
    /// suspended one since, it counts the waiting tasks only once a second).
    pub poll_interval: Duration,
    /// First retry delay (doubles per attempt, with jitter).
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How long a cancelled attempt may take to stop by itself before it is dropped.
    pub cancel_grace: Duration,
    /// Circuit-breaker settings.
    pub breaker: BreakerConfig,
    /// Only claim tasks of these agents (`None`: any).
    pub only_agents: Option<Vec<String>>,
    /// This node's name (in leases).
    pub node_id: String,
    /// How long the gateway reuses a resolved installation (installed version, grants) for the
    /// same agent and user. Installation changes reach new submissions within this time; the
    /// worker checks the installation again when the attempt starts. Zero disables the cache.
    pub policy_cache_ttl: Duration,
    /// The longest delay a failed attempt waits before it runs again: a `retry_after` asked by
    /// an agent or a container beyond it is clamped to it (default 1 hour).
    pub max_retry_delay: Duration,
    /// The largest task output, in bytes of JSON, an attempt may return (default 1 MiB, as a
    /// container's output); a larger one fails the task with a validation error naming it.
    pub max_output_bytes: usize,
    /// Whether tasks queued for a version that is archived before they run still run on it
    /// (`true`) or fail without running with a `conflict` error (`false`, the default).
    pub finish_archived_versions: bool,
    /// The triggers' settings: the scheduler's tick, the misfire policy, the webhook window.
    pub triggers: TriggerConfig,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        Self {
            workers: 16,
            claim_batch: 16,
            claim_prefetch: 0,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            cancel_grace: Duration::from_secs(2),
            breaker: BreakerConfig::default(),
            only_agents: None,
            node_id: format!("node-{}", Uuid::new_v4().simple()),
            policy_cache_ttl: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(3600),
            max_output_bytes: 1024 * 1024,
            finish_archived_versions: false,
            triggers: TriggerConfig::default(),
        }
    }
}
