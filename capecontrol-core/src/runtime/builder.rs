//! [`PlatformBuilder`]: a store, executors, agents, middleware and settings, then
//! [`build`](PlatformBuilder::build) registers the native agents and starts the node.

use std::sync::Arc;

use super::access::{OwnerOrAdmin, TaskAccessPolicy};
use super::config::PlatformConfig;
use super::executor::{Executor, InProcessExecutor};
use super::middleware::Middleware;
use super::middleware::audit::AuditLogging;
use super::middleware::moderation::ContentModeration;
use super::middleware::perf::PerformanceMonitor;
use super::middleware::rate_limit::{RateLimitConfig, RateLimiting};
use super::middleware::sanitize::{InputSanitization, SanitizeConfig};
use super::node::Node;
use super::platform::Platform;
use crate::agent::AgentBase;
use crate::error::Result;
use crate::registry::{Environment, Registry};
use crate::store::Store;
use crate::store::memory::MemoryStore;

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
    access: Arc<dyn TaskAccessPolicy>,
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
    pub fn agent(self, agent: impl AgentBase) -> Self {
        self.agent_arc(Arc::new(agent))
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
        self.config.claim_prefetch = self.config.claim_prefetch.min(self.config.workers);
        self
    }

    /// Lets a host rule decide who, besides a task's submitter and admins, may read or act on
    /// a task (default: nobody, [`OwnerOrAdmin`]).
    pub fn task_access(mut self, policy: impl TaskAccessPolicy) -> Self {
        self.access = Arc::new(policy);
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
            None => Arc::new(MemoryStore::new()),
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
        let node = Node::new(self.config, store, executors, middleware);
        Ok(Platform::start(
            node,
            registry,
            self.access,
            self.start_workers,
        ))
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
            access: Arc::new(OwnerOrAdmin),
        }
    }
}
