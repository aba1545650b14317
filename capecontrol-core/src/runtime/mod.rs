//! The orchestrator runtime: [`Platform`] (a builder, the gateway, workers, middleware, live
//! events). A host application embeds it in a few calls:
//!
//! ```ignore
//! let platform = Platform::builder().agent(MyAgent::default()).build().await?;
//! let id = platform.submit(TaskRequest::new("my-agent", "run", json!({}), principal)).await?;
//! let mut events = platform.watch(id).await?;
//! while let Some(event) = events.next().await { println!("{event:?}"); }
//! ```
//!
//! The flow of one task (DESIGN.md): `submit` → gateway: resolve agent and installed version →
//! policy (roles, installation grants) → middleware chain → `Store::enqueue` (event `queued`).
//! A dispatcher claims due tasks by priority under leases, runs each through the middleware
//! chain and an [`Executor`] with heartbeats, a timeout and cancellation, and finishes it:
//! completed, failed (retried with backoff while attempts remain) or cancelled.

pub mod breaker;
pub mod executor;
mod host;
pub mod middleware;
pub mod watch;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use self::breaker::{BreakerConfig, BreakerState, CircuitBreakers};
pub use self::executor::{Executor, InProcessExecutor, Invocation};
pub use self::middleware::Middleware;
use self::middleware::audit::AuditLogging;
use self::middleware::moderation::ContentModeration;
use self::middleware::perf::PerformanceMonitor;
use self::middleware::rate_limit::{RateLimitConfig, RateLimiting};
use self::middleware::sanitize::{InputSanitization, SanitizeConfig};
use self::middleware::{Submission, SubmitEndpoint, SubmitNext};
pub use self::watch::TaskEvents;
pub use self::worker::backoff;
use crate::agent::AgentBase;
use crate::error::{Error, ErrorCategory, Result};
use crate::manifest::{Config, Manifest};
use crate::policy::{Principal, Scope, missing_scopes};
use crate::registry::{Environment, Registry};
use crate::state::{TaskStatus, VersionStatus};
use crate::store::{AuditEvent, AuditFilter, Enqueued, NewAuditEvent, NewTask, Store, TaskRecord};

/// A request to run a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRequest {
    /// The agent's id or slug.
    pub agent: String,
    /// The task's name.
    pub task: String,
    /// The JSON input.
    pub input: Value,
    /// Who submits it.
    pub principal: Principal,
    /// Higher runs first (default 0).
    pub priority: i32,
    /// Submits with the same key (per user) return the same task.
    pub idempotency_key: Option<String>,
    /// Not before this time.
    pub run_at: Option<DateTime<Utc>>,
}

impl TaskRequest {
    /// A request with priority 0, no idempotency key, due now.
    pub fn new(
        agent: impl Into<String>,
        task: impl Into<String>,
        input: Value,
        principal: Principal,
    ) -> Self {
        Self {
            agent: agent.into(),
            task: task.into(),
            input,
            principal,
            priority: 0,
            idempotency_key: None,
            run_at: None,
        }
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Delays the task until `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
}

/// Runtime settings of a [`Platform`].
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformConfig {
    /// Attempts this node runs at once.
    pub workers: usize,
    /// Tasks claimed in one round trip at most.
    pub claim_batch: usize,
    /// Lease length; heartbeats renew it every third of it.
    pub lease: Duration,
    /// How often an idle dispatcher polls besides wake-ups.
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
}

impl Default for PlatformConfig {
    fn default() -> Self {
        Self {
            workers: 16,
            claim_batch: 16,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            cancel_grace: Duration::from_secs(2),
            breaker: BreakerConfig::default(),
            only_agents: None,
            node_id: format!("node-{}", Uuid::new_v4().simple()),
            policy_cache_ttl: Duration::from_secs(1),
        }
    }
}

/// Builds a [`Platform`].
pub struct PlatformBuilder {
    store: Option<Arc<dyn Store>>,
    executors: Vec<Arc<dyn Executor>>,
    in_process: InProcessExecutor,
    agents: Vec<Arc<dyn AgentBase>>,
    custom_middleware: Vec<Arc<dyn Middleware>>,
    rate_limits: RateLimitConfig,
    sanitize: SanitizeConfig,
    moderation: ContentModeration,
    config: PlatformConfig,
    environment: Environment,
    start_workers: bool,
}

impl std::fmt::Debug for PlatformBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PlatformBuilder {
    /// Uses `store` (default: a new [`MemoryStore`]).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Adds an executor, tried before the in-process one.
    pub fn executor(mut self, executor: Arc<dyn Executor>) -> Self {
        self.executors.push(executor);
        self
    }

    /// Registers a native agent: it runs in-process and is registered as a published version.
    pub fn agent(mut self, agent: impl AgentBase) -> Self {
        self.agents.push(Arc::new(agent));
        self
    }

    /// Registers a native agent given as a trait object.
    pub fn agent_arc(mut self, agent: Arc<dyn AgentBase>) -> Self {
        self.agents.push(agent);
        self
    }

    /// Adds a middleware after the five built-in ones.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.custom_middleware.push(Arc::new(middleware));
        self
    }

    /// Sets the rate limits.
    pub fn rate_limits(mut self, limits: RateLimitConfig) -> Self {
        self.rate_limits = limits;
        self
    }

    /// Sets the input sanitization limits.
    pub fn sanitize(mut self, config: SanitizeConfig) -> Self {
        self.sanitize = config;
        self
    }

    /// Sets the content-moderation rules.
    pub fn moderation(mut self, moderation: ContentModeration) -> Self {
        self.moderation = moderation;
        self
    }

    /// Declares what the host provides (services, package versions), against which published
    /// agents' dependencies are checked.
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = environment;
        self
    }

    /// Sets the runtime settings.
    pub fn config(mut self, config: PlatformConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the number of attempts this node runs at once.
    pub fn workers(mut self, workers: usize) -> Self {
        self.config.workers = workers.max(1);
        self.config.claim_batch = self.config.claim_batch.min(self.config.workers).max(1);
        self
    }

    /// Builds a platform that only submits and watches, running no workers on this node.
    pub fn without_workers(mut self) -> Self {
        self.start_workers = false;
        self
    }

    /// Registers the native agents and starts the workers.
    pub async fn build(self) -> Result<Platform> {
        let store: Arc<dyn Store> = match self.store {
            Some(s) => s,
            None => default_store(),
        };
        let registry = Registry::new(Arc::clone(&store)).with_environment(self.environment);
        for agent in &self.agents {
            let version = registry.register_native(&agent.manifest()).await?;
            self.in_process
                .register(version.agent_id, Arc::clone(agent));
        }
        let mut executors = self.executors;
        executors.push(Arc::new(self.in_process));
        let mut middleware: Vec<Arc<dyn Middleware>> = vec![
            Arc::new(AuditLogging::new(Arc::clone(&store))),
            Arc::new(PerformanceMonitor::new()),
            Arc::new(RateLimiting::new(self.rate_limits)),
            Arc::new(InputSanitization::new(self.sanitize)),
            Arc::new(self.moderation),
        ];
        middleware.extend(self.custom_middleware);
        let inner = Arc::new(Inner {
            node_id: self.config.node_id.clone(),
            breakers: CircuitBreakers::new(self.config.breaker),
            config: self.config,
            store,
            executors,
            middleware,
            running: Mutex::new(HashMap::new()),
            policy_cache: Mutex::new(HashMap::new()),
            agent_ids: Mutex::new(HashMap::new()),
            manifests: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
            release: CancellationToken::new(),
            kill: CancellationToken::new(),
        });
        let mut tasks = Vec::new();
        if self.start_workers {
            tasks.push(tokio::spawn(worker::dispatch(Arc::clone(&inner))));
            tasks.push(tokio::spawn(worker::maintain(Arc::clone(&inner))));
            tasks.push(tokio::spawn(worker::heartbeats(Arc::clone(&inner))));
        }
        Ok(Platform {
            inner,
            registry,
            tasks: Mutex::new(tasks),
        })
    }
}

/// The default store: a new in-memory store.
fn default_store() -> Arc<dyn Store> {
    Arc::new(crate::store::memory::MemoryStore::new())
}

/// An attempt running on this node.
#[derive(Clone)]
pub(crate) struct Running {
    pub(crate) lease: crate::store::Lease,
    /// Fires when the task is cancelled.
    pub(crate) cancel: CancellationToken,
    /// Fires when the lease is lost.
    pub(crate) lost: CancellationToken,
}

/// What the gateway resolved for (agent, user): the installed version and its grants.
#[derive(Clone)]
struct Resolved {
    version: String,
    status: VersionStatus,
    manifest: Arc<Manifest>,
    granted: Vec<Scope>,
}

pub(crate) struct Inner {
    pub(crate) node_id: String,
    pub(crate) config: PlatformConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) executors: Vec<Arc<dyn Executor>>,
    pub(crate) middleware: Vec<Arc<dyn Middleware>>,
    pub(crate) breakers: CircuitBreakers,
    running: Mutex<HashMap<Uuid, Running>>,
    /// Resolved submissions (installation, version, manifest) by (agent, user), for
    /// `policy_cache_ttl`.
    policy_cache: Mutex<HashMap<(String, String), (tokio::time::Instant, Resolved)>>,
    /// Agent ids by the id or slug they were asked for.
    agent_ids: Mutex<HashMap<String, String>>,
    manifests: Mutex<HashMap<(String, String), Arc<Manifest>>>,
    /// Stops claiming.
    pub(crate) stop: CancellationToken,
    /// Ends running attempts and releases their leases.
    pub(crate) release: CancellationToken,
    /// Ends running attempts without writing anything (the platform was dropped).
    pub(crate) kill: CancellationToken,
}

impl Inner {
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

    fn running_count(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// The manifest of an agent version (cached: a version's manifest never changes).
    pub(crate) async fn manifest(&self, agent_id: &str, version: &str) -> Result<Arc<Manifest>> {
        let key = (agent_id.to_owned(), version.to_owned());
        if let Some(m) = self
            .manifests
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(m);
        }
        let record = self.store.get_version(agent_id, version).await?;
        let manifest: Manifest = serde_json::from_value(record.manifest).map_err(|e| {
            Error::agent(format!(
                "stored manifest of {agent_id}@{version} does not decode: {e}"
            ))
        })?;
        let manifest = Arc::new(manifest);
        if let Ok(mut m) = self.manifests.lock() {
            m.insert(key, Arc::clone(&manifest));
        }
        Ok(manifest)
    }
}

struct Enqueue(Arc<dyn Store>);

#[async_trait]
impl SubmitEndpoint for Enqueue {
    async fn call(&self, sub: Submission) -> Result<Enqueued> {
        let config = sub.manifest.config();
        let timeout = sub
            .task
            .as_ref()
            .and_then(|t| t.timeout)
            .unwrap_or(config.timeout)
            .clamp(1, Config::MAX_TIMEOUT);
        self.0
            .enqueue(NewTask {
                id: sub.task_id,
                agent_id: sub.agent_id,
                version: sub.version,
                task: sub.request.task,
                input: sub.request.input,
                principal: sub.request.principal,
                priority: sub.request.priority,
                run_at: sub.request.run_at,
                idempotency_key: sub.request.idempotency_key,
                max_attempts: config.retries.min(Config::MAX_RETRIES) + 1,
                concurrency_limit: config.concurrent_tasks.max(1),
                timeout: Duration::from_secs(u64::from(timeout)),
                audit: sub.audit,
            })
            .await
    }
}

/// The embedded platform: gateway, workers and live events over a store.
pub struct Platform {
    inner: Arc<Inner>,
    registry: Registry,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Platform {
    /// Dropping a platform stops its workers at once, like a crash: leases are not released
    /// (they expire and another node reclaims the tasks). Call [`Platform::shutdown`] to stop
    /// gracefully.
    fn drop(&mut self) {
        self.inner.stop.cancel();
        self.inner.kill.cancel();
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

impl Platform {
    /// Starts building a platform.
    pub fn builder() -> PlatformBuilder {
        PlatformBuilder {
            store: None,
            executors: Vec::new(),
            in_process: InProcessExecutor::new(),
            agents: Vec::new(),
            custom_middleware: Vec::new(),
            rate_limits: RateLimitConfig::default(),
            sanitize: SanitizeConfig::default(),
            moderation: ContentModeration::new(),
            config: PlatformConfig::default(),
            environment: Environment::default(),
            start_workers: true,
        }
    }

    /// The registry (agents, versions, marketplace, installs) over the platform's store.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The circuit breakers.
    pub fn breakers(&self) -> &CircuitBreakers {
        &self.inner.breakers
    }

    /// Submits a task through the gateway: policy, middleware, enqueue. Returns the task's id
    /// (an existing task's id when the idempotency key was seen before).
    pub async fn submit(&self, request: TaskRequest) -> Result<Uuid> {
        let inner = &self.inner;
        let store = &inner.store;
        let principal = request.principal.clone();
        let agent_id = self.agent_id(&request.agent).await?;
        let deny = |error: Error, what: &str| {
            let event = NewAuditEvent::by(
                &principal,
                "policy.denied",
                json!({"task": request.task, "reason": what, "error": error.to_string(),
                       "missing_scopes": error.missing_scopes()}),
            )
            .agent(agent_id.clone());
            (error, event)
        };
        let policy = self.policy(&agent_id, &request).await;
        let (version, manifest, task) = match policy {
            Ok(ok) => ok,
            Err((error, what)) => {
                let (error, event) = deny(error, &what);
                store.append_audit(event).await?;
                return Err(error);
            }
        };
        let key = CircuitBreakers::key(&agent_id, &version);
        if let Some(left) = inner.breakers.is_open(&key) {
            return Err(Error::resource(format!(
                "circuit breaker open for {key}; retry in {} ms",
                left.as_millis()
            )));
        }
        let task_id = Uuid::now_v7();
        let allowed = NewAuditEvent::by(
            &principal,
            "policy.allowed",
            json!({"task": request.task, "version": version}),
        )
        .agent(agent_id.clone())
        .task(task_id);
        let sub = Submission {
            task_id,
            agent_id,
            version,
            manifest,
            task,
            audit: vec![allowed],
            request,
        };
        let endpoint = Enqueue(Arc::clone(store));
        let enqueued = SubmitNext::new(&inner.middleware, &endpoint)
            .run(sub)
            .await?;
        Ok(enqueued.task.id)
    }

    /// Resolves the installed version and checks roles and grants.
    async fn policy(
        &self,
        agent_id: &str,
        request: &TaskRequest,
    ) -> std::result::Result<
        (String, Arc<Manifest>, Option<crate::manifest::TaskDecl>),
        (Error, String),
    > {
        let resolved = self.resolve(agent_id, &request.principal.user_id).await?;
        if resolved.status != VersionStatus::Published {
            return Err((
                Error::conflict(format!(
                    "installed version {} of `{agent_id}` is {}; upgrade the installation",
                    resolved.version, resolved.status
                )),
                "version not published".into(),
            ));
        }
        let manifest = resolved.manifest.clone();
        let permissions = manifest.permissions();
        if !request.principal.has_any_role(&permissions.required_roles) {
            return Err((
                Error::forbidden(format!(
                    "user `{}` holds none of the roles {:?}",
                    request.principal.user_id, permissions.required_roles
                )),
                "role".into(),
            ));
        }
        let granted = resolved.granted;
        let required: Vec<Scope> = permissions
            .scopes
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let missing = missing_scopes(&granted, &required);
        if !missing.is_empty() {
            return Err((
                Error::permission(missing.iter().map(ToString::to_string)),
                "scopes".into(),
            ));
        }
        let task = manifest.task(&request.task).cloned();
        if task.is_none() && !manifest.tasks.is_empty() {
            return Err((
                Error::not_found("task", request.task.clone()),
                "task".into(),
            ));
        }
        Ok((resolved.version, manifest, task))
    }

    /// The id of the agent named by `id_or_slug` (an agent's id and slug never change, so this
    /// is cached for good once found).
    async fn agent_id(&self, id_or_slug: &str) -> Result<String> {
        if let Some(id) = self
            .inner
            .agent_ids
            .lock()
            .ok()
            .and_then(|m| m.get(id_or_slug).cloned())
        {
            return Ok(id);
        }
        let agent = self.inner.store.get_agent(id_or_slug).await?;
        if let Ok(mut m) = self.inner.agent_ids.lock() {
            if m.len() > 100_000 {
                m.clear();
            }
            m.insert(id_or_slug.to_owned(), agent.id.clone());
        }
        Ok(agent.id)
    }

    /// The installed version of `agent_id` for `user_id`, its status, manifest and grants
    /// (cached for `policy_cache_ttl`).
    async fn resolve(
        &self,
        agent_id: &str,
        user_id: &str,
    ) -> std::result::Result<Resolved, (Error, String)> {
        let inner = &self.inner;
        let ttl = inner.config.policy_cache_ttl;
        let key = (agent_id.to_owned(), user_id.to_owned());
        if !ttl.is_zero()
            && let Some((at, hit)) = inner
                .policy_cache
                .lock()
                .ok()
                .and_then(|c| c.get(&key).cloned())
            && at.elapsed() < ttl
        {
            return Ok(hit);
        }
        let installation = match inner.store.get_installation(agent_id, user_id).await {
            Ok(i) => i,
            Err(e) if e.category() == ErrorCategory::NotFound => {
                return Err((
                    Error::forbidden(format!(
                        "agent `{agent_id}` is not installed for user `{user_id}`"
                    )),
                    "not installed".into(),
                ));
            }
            Err(e) => return Err((e, "store".into())),
        };
        let record = inner
            .store
            .get_version(agent_id, &installation.version)
            .await
            .map_err(|e| (e, "version".into()))?;
        let manifest = inner
            .manifest(agent_id, &installation.version)
            .await
            .map_err(|e| (e, "manifest".into()))?;
        let resolved = Resolved {
            version: installation.version,
            status: record.status,
            manifest,
            granted: installation
                .granted_scopes
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
        };
        if !ttl.is_zero()
            && let Ok(mut cache) = inner.policy_cache.lock()
        {
            if cache.len() > 10_000 {
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            cache.insert(key, (tokio::time::Instant::now(), resolved.clone()));
        }
        Ok(resolved)
    }

    /// The task's current record.
    pub async fn get(&self, task_id: Uuid) -> Result<TaskRecord> {
        self.inner.store.get_task(task_id).await
    }

    /// Cancels a task: a queued one at once, a running one by signalling its attempt (on this
    /// node directly, on another through its next heartbeat).
    pub async fn cancel(&self, task_id: Uuid, by: &Principal) -> Result<TaskRecord> {
        let record = self.inner.store.cancel(task_id, by).await?;
        if let Some(token) = self
            .inner
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(&task_id).map(|r| r.cancel.clone()))
        {
            token.cancel();
        }
        Ok(record)
    }

    /// Waits until the task is completed, cancelled or failed for good, and returns it.
    pub async fn wait(&self, task_id: Uuid) -> Result<TaskRecord> {
        use tokio_stream::StreamExt;
        let mut events = self.watch(task_id).await?;
        while let Some(event) = events.next().await {
            if event?.kind.is_terminal() {
                break;
            }
        }
        self.get(task_id).await
    }

    /// The task's events from the first: replayed from the store, then live, each once.
    pub async fn watch(&self, task_id: Uuid) -> Result<TaskEvents> {
        self.watch_from(task_id, 0).await
    }

    /// The task's events after `after` (for a watcher that reconnects).
    pub async fn watch_from(&self, task_id: Uuid, after: u64) -> Result<TaskEvents> {
        self.inner.store.get_task(task_id).await?;
        Ok(watch::watch(Arc::clone(&self.inner.store), task_id, after))
    }

    /// The audit trail of a task.
    pub async fn audit(&self, task_id: Uuid) -> Result<Vec<AuditEvent>> {
        self.inner
            .store
            .list_audit(&AuditFilter {
                task_id: Some(task_id),
                ..AuditFilter::default()
            })
            .await
    }

    /// Stops gracefully: claims nothing more, lets running attempts finish for up to `grace`,
    /// then stops the rest and releases their leases so another node takes them at once
    /// (their completed steps stay journaled).
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stop.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        while self.inner.running_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.release.cancel();
        while self.inner.running_count() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }

    /// Whether the task's status is final.
    pub fn is_final(status: TaskStatus) -> bool {
        status.is_final()
    }
}
