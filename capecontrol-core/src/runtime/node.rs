//! [`Node`]: what one platform node shares between its gateway, its loops and its attempts —
//! the store, the executors, the middleware chain, the circuit breakers, the attempts running
//! here, the manifest cache and the stop signals.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::breaker::CircuitBreakers;
use super::completions::Completions;
use super::config::PlatformConfig;
use super::executor::Executor;
use super::gateway::Gateway;
use super::middleware::Middleware;
use crate::error::{Error, ErrorCategory, Result};
use crate::manifest::Manifest;
use crate::store::{ClaimRequest, InstallationRecord, Lease, NewTask, Store};

/// A node's worker slots, shared by its dispatcher and its gateway (which starts a task
/// submitted here at once when a slot is free and the dispatcher waits for work).
pub(crate) struct Slots {
    /// One per worker: taken at the claim, freed when the agent returns.
    pub(crate) workers: Arc<Semaphore>,
    /// Attempts running or writing their outcome (plus prefetched ones waiting for a slot):
    /// [`IN_FLIGHT_PER_WORKER`] × `workers` plus `claim_prefetch`, so that slow writes hold
    /// back claims.
    pub(crate) flight: Arc<Semaphore>,
    /// Prefetched attempts waiting for a slot now (they queue for it before the dispatcher
    /// does: tokio's semaphore is fair, so they start first, and a submission's `try_acquire`
    /// does not pass them).
    pub(crate) waiting: Arc<AtomicUsize>,
    /// Whether the dispatcher runs (a node built `without_workers` starts nothing).
    pub(crate) active: AtomicBool,
    /// Whether the dispatcher waits for a wake-up, its last claim having found nothing (its
    /// polls' claims of one task included): a task submitted here may then start at once
    /// without passing a task a claim would take first, and without its enqueue contending
    /// with a claim that a wake-up started.
    pub(crate) parked: AtomicBool,
    /// Whether a submission's enqueue is claiming its task now: one at a time per node, so
    /// that a burst of submissions to an idle node goes to the queue and its claims in
    /// batches rather than each enqueue contending for the agent's lock.
    pub(crate) starting: AtomicBool,
}

/// Attempts a node keeps in flight per worker (running, or done and waiting for their outcome's
/// write to commit). A claim asks for no more tasks than the places in flight left free, and
/// an attempt holds its place from before its claim until its write commits: a claim's round
/// trip and two batches of the completer. At twice `workers`, draining one-step tasks on
/// PostgreSQL at 16 workers, claims asked for 3 tasks (median, 6.8 on average), each paying
/// the claim's fixed cost for few tasks; at four times they asked for 7 (8.0 on average) and
/// the drain ran 1.1–1.5× as fast (`capecontrol-store/README.md`). Past the bound the node
/// claims nothing until writes are done, so a slow database still holds back claims.
pub(crate) const IN_FLIGHT_PER_WORKER: usize = 4;

impl Slots {
    fn new(config: &PlatformConfig) -> Self {
        let prefetch = config.claim_prefetch.min(config.workers);
        Self {
            workers: Arc::new(Semaphore::new(config.workers)),
            flight: Arc::new(Semaphore::new(
                config
                    .workers
                    .saturating_mul(IN_FLIGHT_PER_WORKER)
                    .saturating_add(prefetch)
                    .max(1),
            )),
            waiting: Arc::new(AtomicUsize::new(0)),
            active: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            starting: AtomicBool::new(false),
        }
    }
}

/// A free worker slot and place in flight, taken for a task submitted here, with the claim
/// that the task's enqueue makes for it.
pub(crate) struct StartHere {
    /// The node's one turn to claim in an enqueue, given back when dropped.
    pub(crate) turn: StartTurn,
    pub(crate) slot: OwnedSemaphorePermit,
    pub(crate) flight: OwnedSemaphorePermit,
    pub(crate) request: ClaimRequest,
}

/// The node's turn to claim a task in its enqueue ([`Slots::starting`]), given back on drop.
pub(crate) struct StartTurn(pub(crate) Arc<Node>);

impl Drop for StartTurn {
    fn drop(&mut self) {
        self.0.slots.starting.store(false, Ordering::Release);
    }
}

/// An agent version as the node caches it.
#[derive(Clone)]
pub(crate) struct CachedVersion {
    pub(crate) manifest: Arc<Manifest>,
    /// Its circuit breaker's key ([`CircuitBreakers::key`]).
    pub(crate) breaker: Arc<str>,
}

/// An attempt running on this node.
#[derive(Clone)]
pub(crate) struct Running {
    pub(crate) lease: Lease,
    /// Fires when the task is cancelled.
    pub(crate) cancel: CancellationToken,
    /// Fires when the lease is lost.
    pub(crate) lost: CancellationToken,
}

/// The state of one node, shared (behind an `Arc`) by the platform, its loops and attempts.
pub(crate) struct Node {
    pub(crate) node_id: String,
    pub(crate) config: PlatformConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) executors: Vec<Arc<dyn Executor>>,
    /// The layers a submission passes, in order ([`Middleware::chains`]).
    pub(crate) submit_chain: Vec<Arc<dyn Middleware>>,
    /// The layers an attempt passes, in order.
    pub(crate) execute_chain: Vec<Arc<dyn Middleware>>,
    pub(crate) breakers: CircuitBreakers,
    /// The attempts running here, by task ([`crate::FastMap`]: each attempt inserts and
    /// removes itself).
    running: Mutex<crate::FastMap<Uuid, Running>>,
    /// Manifests by agent id, then version: a version's manifest never changes. Looked up by
    /// reference at every attempt (a map keyed by the pair needed both strings copied).
    manifests: Mutex<crate::FastMap<String, crate::FastMap<String, CachedVersion>>>,
    /// Stops claiming.
    pub(crate) stop: CancellationToken,
    /// Ends running attempts and releases their leases.
    pub(crate) release: CancellationToken,
    /// Ends running attempts without writing anything (the platform was dropped).
    pub(crate) kill: CancellationToken,
    /// The tasks waited for here (see [`Completions`]).
    pub(crate) completions: Arc<Completions>,
    /// The way in of every submission made here (the platform's and its tasks' children).
    pub(crate) gateway: Gateway,
    /// The worker slots.
    pub(crate) slots: Slots,
    /// Set when an attempt here suspended its task (a wait may have begun) since the sweeper
    /// last counted the waiting tasks; set at start (waits may survive from before).
    waits_touched: AtomicBool,
    /// This node (to start an attempt from a submission).
    me: Weak<Node>,
}

impl Node {
    pub(crate) fn new(
        config: PlatformConfig,
        store: Arc<dyn Store>,
        executors: Vec<Arc<dyn Executor>>,
        middleware: Vec<Arc<dyn Middleware>>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            node_id: config.node_id.clone(),
            slots: Slots::new(&config),
            me: me.clone(),
            breakers: CircuitBreakers::new(config.breaker),
            config,
            store,
            executors,
            submit_chain: middleware
                .iter()
                .filter(|m| m.chains().submit())
                .cloned()
                .collect(),
            execute_chain: middleware
                .into_iter()
                .filter(|m| m.chains().execute())
                .collect(),
            running: Mutex::default(),
            manifests: Mutex::default(),
            stop: CancellationToken::new(),
            release: CancellationToken::new(),
            kill: CancellationToken::new(),
            completions: Arc::default(),
            gateway: Gateway::default(),
            waits_touched: AtomicBool::new(true),
        })
    }

    /// Tells the sweeper that a task of this node may have begun to wait (called after the
    /// suspend's write, so that a count that missed the wait is followed by another).
    pub(crate) fn note_wait_begun(&self) {
        self.waits_touched.store(true, Ordering::Release);
    }

    /// Whether a task of this node may have begun to wait since the last call (which clears
    /// it).
    pub(crate) fn take_waits_touched(&self) -> bool {
        self.waits_touched.swap(false, Ordering::AcqRel)
    }

    /// A worker slot for `task`, submitted here, when it may start at once: this node runs
    /// workers and is not stopping, its dispatcher waits for work (its last claim found none),
    /// the task is due and of an agent this node runs, a slot and a place in flight are free
    /// now (never waited for), and no other submission's enqueue is claiming its task here at
    /// this moment. The store decides the rest in the enqueue
    /// ([`QueueStore::enqueue_claimed`](crate::store::QueueStore::enqueue_claimed)).
    pub(crate) fn start_here(&self, task: &NewTask) -> Option<StartHere> {
        let slots = &self.slots;
        if !slots.active.load(Ordering::Acquire)
            || !slots.parked.load(Ordering::Acquire)
            || self.stop.is_cancelled()
            || task.run_at.is_some_and(|at| at > chrono::Utc::now())
            || self
                .config
                .only_agents
                .as_ref()
                .is_some_and(|only| !only.contains(&task.agent_id))
        {
            return None;
        }
        let node = self.me.upgrade()?;
        if slots.starting.swap(true, Ordering::AcqRel) {
            return None;
        }
        let turn = StartTurn(node);
        let slot = Arc::clone(&slots.workers).try_acquire_owned().ok()?;
        let flight = Arc::clone(&slots.flight).try_acquire_owned().ok()?;
        Some(StartHere {
            turn,
            slot,
            flight,
            request: ClaimRequest {
                worker: self.node_id.clone(),
                limit: 1,
                lease: self.config.lease,
                agents: self.config.only_agents.clone(),
            },
        })
    }

    pub(crate) fn running_insert(&self, id: Uuid, running: Running) {
        if let Ok(mut r) = self.running.lock() {
            r.insert(id, running);
        }
    }

    /// The leases of the attempts running on this node (for the heartbeat loop).
    pub(crate) fn running_leases(&self) -> Vec<Running> {
        self.running
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn running_remove(&self, id: Uuid) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(&id);
        }
    }

    pub(crate) fn running_count(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Signals the attempt of `task_id` if it runs on this node.
    pub(crate) fn cancel_running(&self, task_id: Uuid) {
        if let Some(token) = self
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(&task_id).map(|r| r.cancel.clone()))
        {
            token.cancel();
        }
    }

    /// The manifest of an agent version (cached: a version's manifest never changes).
    pub(crate) async fn manifest(&self, agent_id: &str, version: &str) -> Result<Arc<Manifest>> {
        Ok(self.version(agent_id, version).await?.manifest)
    }

    /// The manifest of an agent version and its circuit breaker's key, cached (each attempt
    /// asks for both: neither is built again).
    pub(crate) async fn version(&self, agent_id: &str, version: &str) -> Result<CachedVersion> {
        if let Some(v) = self
            .manifests
            .lock()
            .ok()
            .and_then(|m| m.get(agent_id)?.get(version).cloned())
        {
            return Ok(v);
        }
        let record = self.store.get_version(agent_id, version).await?;
        let manifest: Manifest = serde_json::from_value(record.manifest).map_err(|e| {
            Error::agent(format!(
                "stored manifest of {agent_id}@{version} does not decode: {e}"
            ))
        })?;
        let cached = CachedVersion {
            manifest: Arc::new(manifest),
            breaker: CircuitBreakers::key(agent_id, version).into(),
        };
        if let Ok(mut m) = self.manifests.lock() {
            m.entry(agent_id.to_owned())
                .or_default()
                .insert(version.to_owned(), cached.clone());
        }
        Ok(cached)
    }

    /// The installation of `agent_id` for `user_id`: the one lookup the gateway (at submit) and
    /// the worker (at each attempt) share. Not installed is a permission error (403).
    pub(crate) async fn installation(
        &self,
        agent_id: &str,
        user_id: &str,
    ) -> Result<InstallationRecord> {
        self.store
            .get_installation(agent_id, user_id)
            .await
            .map_err(|e| match e.category() {
                ErrorCategory::NotFound => not_installed(agent_id, user_id),
                _ => e,
            })
    }
}

/// Not installed: a permission error (403).
pub(crate) fn not_installed(agent_id: &str, user_id: &str) -> Error {
    Error::forbidden(format!(
        "agent `{agent_id}` is not installed for user `{user_id}`"
    ))
}
