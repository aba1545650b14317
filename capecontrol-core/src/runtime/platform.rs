//! [`Platform`]: the embedded platform's public face — submit through the gateway, read and
//! cancel tasks, follow their events, read their audit trail, shut down.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use uuid::Uuid;

use super::breaker::CircuitBreakers;
use super::gateway::Gateway;
use super::node::Node;
use super::request::TaskRequest;
use super::watch::{self, TaskEvents};
use super::{dispatch, upkeep};
use serde_json::json;

use crate::error::{ErrorCategory, Result};
use crate::policy::Principal;
use crate::registry::Registry;
use crate::store::{AuditEvent, AuditFilter, NewAuditEvent, RatingSummary, Store, TaskRecord};

/// The embedded platform: gateway, workers and live events over a store. Built with
/// [`Platform::builder`](super::builder::PlatformBuilder).
pub struct Platform {
    node: Arc<Node>,
    gateway: Gateway,
    registry: Registry,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("node_id", &self.node.node_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Platform {
    /// Dropping a platform stops its workers at once, like a crash: leases are not released
    /// (they expire and another node reclaims the tasks). Call [`Platform::shutdown`] to stop
    /// gracefully.
    fn drop(&mut self) {
        self.node.stop.cancel();
        self.node.kill.cancel();
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

impl Platform {
    /// A platform over `node`; with `workers`, its dispatcher, maintenance and heartbeat loops
    /// start now.
    pub(crate) fn start(node: Arc<Node>, registry: Registry, workers: bool) -> Self {
        let mut tasks = Vec::new();
        if workers {
            tasks.push(tokio::spawn(dispatch::dispatch(Arc::clone(&node))));
            tasks.push(tokio::spawn(upkeep::maintain(Arc::clone(&node))));
            tasks.push(tokio::spawn(upkeep::heartbeats(Arc::clone(&node))));
        }
        Self {
            node,
            gateway: Gateway::default(),
            registry,
            tasks: Mutex::new(tasks),
        }
    }

    /// The registry (agents, versions, marketplace, installs) over the platform's store.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.node.store
    }

    /// The circuit breakers.
    pub fn breakers(&self) -> &CircuitBreakers {
        &self.node.breakers
    }

    /// Submits a task through the gateway: policy, middleware, enqueue. Returns the task's id
    /// (an existing task's id when the idempotency key was seen before).
    pub async fn submit(&self, request: TaskRequest) -> Result<Uuid> {
        self.gateway.submit(&self.node, request).await
    }

    /// The task's current record.
    pub async fn get(&self, task_id: Uuid) -> Result<TaskRecord> {
        self.node.store.get_task(task_id).await
    }

    /// Cancels a task: a queued one at once, a running one by signalling its attempt (on this
    /// node directly, on another through its next heartbeat).
    pub async fn cancel(&self, task_id: Uuid, by: &Principal) -> Result<TaskRecord> {
        let record = self.node.store.cancel(task_id, by).await?;
        self.node.cancel_running(task_id);
        Ok(record)
    }

    /// Records `by`'s rating (1..=5) of a completed task of theirs — see
    /// [`RatingStore`](crate::store::RatingStore) — and sets the gauge
    /// `user_satisfaction_score{agent,version}` to the mean of that version's ratings. A
    /// refusal for want of permission is audited as `policy.denied`.
    pub async fn rate(&self, task_id: Uuid, by: &Principal, score: u8) -> Result<RatingSummary> {
        let store = &self.node.store;
        match store.rate(task_id, by, score).await {
            Ok(summary) => {
                let labels = [
                    ("agent", summary.agent_id.clone()),
                    ("version", summary.version.clone()),
                ];
                metrics::gauge!("user_satisfaction_score", &labels).set(summary.mean);
                metrics::counter!("user_ratings_total", &labels).increment(1);
                Ok(summary)
            }
            Err(error) => {
                if error.category() == ErrorCategory::Permission {
                    let event = NewAuditEvent::by(
                        by,
                        "policy.denied",
                        json!({"action": "task.rate", "task_id": task_id,
                               "error": error.to_string()}),
                    )
                    .task(task_id);
                    store.append_audit(event).await?;
                }
                Err(error)
            }
        }
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
        self.node.store.get_task(task_id).await?;
        Ok(watch::watch(Arc::clone(&self.node.store), task_id, after))
    }

    /// The audit trail of a task.
    pub async fn audit(&self, task_id: Uuid) -> Result<Vec<AuditEvent>> {
        self.node
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
        let node = &self.node;
        node.stop.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        while node.running_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        node.release.cancel();
        while node.running_count() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}
