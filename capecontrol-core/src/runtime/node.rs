//! [`Node`]: what one platform node shares between its gateway, its loops and its attempts —
//! the store, the executors, the middleware chain, the circuit breakers, the attempts running
//! here, the manifest cache and the stop signals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
use crate::store::{InstallationRecord, Lease, Store};

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
    pub(crate) middleware: Vec<Arc<dyn Middleware>>,
    pub(crate) breakers: CircuitBreakers,
    running: Mutex<HashMap<Uuid, Running>>,
    /// Manifests by (agent id, version): a version's manifest never changes.
    manifests: Mutex<HashMap<(String, String), Arc<Manifest>>>,
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
}

impl Node {
    pub(crate) fn new(
        config: PlatformConfig,
        store: Arc<dyn Store>,
        executors: Vec<Arc<dyn Executor>>,
        middleware: Vec<Arc<dyn Middleware>>,
    ) -> Self {
        Self {
            node_id: config.node_id.clone(),
            breakers: CircuitBreakers::new(config.breaker),
            config,
            store,
            executors,
            middleware,
            running: Mutex::new(HashMap::new()),
            manifests: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
            release: CancellationToken::new(),
            kill: CancellationToken::new(),
            completions: Arc::default(),
            gateway: Gateway::default(),
        }
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
