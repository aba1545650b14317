//! [`Platform`]: the embedded platform's public face — submit through the gateway, read and
//! cancel tasks, follow their events, read their audit trail (each checked against the acting
//! principal, see [`access`](super::access); [`TrustedAccess`] for host code), shut down.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::access::{TaskAccessPolicy, TaskAction, owns_or_admin};
use super::breaker::CircuitBreakers;
use super::gateway::Gateway;
use super::node::Node;
use super::request::TaskRequest;
use super::watch::{self, TaskEvents};
use super::{dispatch, triggers, upkeep};

use crate::error::{Error, ErrorCategory, Result};
use crate::policy::Principal;
use crate::registry::Registry;
use crate::store::{
    AuditEvent, AuditFilter, NewAuditEvent, RatingSummary, Store, TaskFilter, TaskRecord,
};

/// The embedded platform: gateway, workers and live events over a store. Built with
/// [`Platform::builder`](super::builder::PlatformBuilder).
pub struct Platform {
    node: Arc<Node>,
    registry: Registry,
    access: Arc<dyn TaskAccessPolicy>,
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
    pub(crate) fn start(
        node: Arc<Node>,
        registry: Registry,
        access: Arc<dyn TaskAccessPolicy>,
        workers: bool,
    ) -> Self {
        let mut tasks = Vec::new();
        if workers {
            tasks.push(tokio::spawn(dispatch::dispatch(Arc::clone(&node))));
            tasks.push(tokio::spawn(upkeep::maintain(Arc::clone(&node))));
            tasks.push(tokio::spawn(upkeep::heartbeats(Arc::clone(&node))));
            tasks.push(tokio::spawn(super::waits::sweeper(Arc::clone(&node))));
            if let Some(tick) = node.config.triggers.schedule_tick {
                tasks.push(tokio::spawn(triggers::schedule_loop(
                    Arc::clone(&node),
                    tick,
                )));
            }
        }
        Self {
            node,
            registry,
            access,
            tasks: Mutex::new(tasks),
        }
    }

    /// The node and the gateway (for the triggers' module).
    pub(crate) fn parts(&self) -> (&Node, &Gateway) {
        (&self.node, &self.node.gateway)
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
    ///
    /// The gateway's future itself, not one wrapping it (which would hold the request a second
    /// time and be moved whole into the caller's): `platform.submit(request).await` as with an
    /// `async fn`.
    pub fn submit(&self, request: TaskRequest) -> impl Future<Output = Result<Uuid>> + Send {
        self.node.gateway.submit(&self.node, request)
    }

    /// The task's current record, if `by` may read it (see [`access`](super::access)).
    pub async fn get(&self, task_id: Uuid, by: &Principal) -> Result<TaskRecord> {
        self.authorize(task_id, by, TaskAction::Get).await
    }

    /// Cancels a task, if `by` may: a queued or waiting one at once, a running one by
    /// signalling its attempt (on this node directly, on another through its next heartbeat).
    /// Its child tasks that are not final (and theirs, recursively) are cancelled with it, in
    /// the same store write, each audited (`cascade_from` naming this task).
    pub async fn cancel(&self, task_id: Uuid, by: &Principal) -> Result<TaskRecord> {
        self.authorize(task_id, by, TaskAction::Cancel).await?;
        self.trusted().cancel_as(task_id, by).await
    }

    /// Records `by`'s rating (1..=5) of a completed task of theirs — see
    /// [`RatingStore`](crate::store::RatingStore) — and sets the gauge
    /// `user_satisfaction_score{agent,version}` to the mean of that version's ratings. A
    /// refusal for want of permission is audited as `policy.denied`; a task `by` may not read
    /// is not found (audited as for [`Platform::get`]).
    pub async fn rate(&self, task_id: Uuid, by: &Principal, score: u8) -> Result<RatingSummary> {
        self.authorize(task_id, by, TaskAction::Rate).await?;
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

    /// Waits until the task is completed, cancelled or failed for good, and returns it, if `by`
    /// may read it.
    ///
    /// Cheap: it registers with the node's completion map (one shared subscription to the
    /// store's events wakes it on the task's terminal event) and reads the row twice, before
    /// and after; no event stream is replayed.
    pub async fn wait(&self, task_id: Uuid, by: &Principal) -> Result<TaskRecord> {
        let node = &self.node;
        let waiter = node.completions.register(&node.store, task_id);
        waiter
            .until_final(
                node.store.as_ref(),
                self.authorize(task_id, by, TaskAction::Get),
            )
            .await
    }

    /// The task's events from the first, if `by` may follow them: replayed from the store, then
    /// live, each once. The stream ends after the terminal event, or when it is dropped.
    pub async fn watch(&self, task_id: Uuid, by: &Principal) -> Result<TaskEvents> {
        self.watch_from(task_id, 0, by).await
    }

    /// The task's events after `after` (for a watcher that reconnects), if `by` may follow
    /// them.
    pub async fn watch_from(
        &self,
        task_id: Uuid,
        after: u64,
        by: &Principal,
    ) -> Result<TaskEvents> {
        self.authorize(task_id, by, TaskAction::Watch).await?;
        Ok(watch::watch(Arc::clone(&self.node.store), task_id, after))
    }

    /// The whole audit trail of a task, if `by` may read it: every row, read page by page
    /// ([`MAX_AUDIT_PAGE`](crate::store::MAX_AUDIT_PAGE) rows a read). See
    /// [`Platform::audit_page`] to read a long trail a page at a time.
    pub async fn audit(&self, task_id: Uuid, by: &Principal) -> Result<Vec<AuditEvent>> {
        self.authorize(task_id, by, TaskAction::Audit).await?;
        self.trusted().audit(task_id).await
    }

    /// One page of a task's audit trail, if `by` may read it: the rows after chain position
    /// `after` (`None`: from the first), at most `limit` (`None` or larger:
    /// [`MAX_AUDIT_PAGE`](crate::store::MAX_AUDIT_PAGE)), in chain order. The next page's
    /// cursor is the last row's `seq`; a page shorter than the limit is the last.
    pub async fn audit_page(
        &self,
        task_id: Uuid,
        after: Option<u64>,
        limit: Option<usize>,
        by: &Principal,
    ) -> Result<Vec<AuditEvent>> {
        self.authorize(task_id, by, TaskAction::Audit).await?;
        self.trusted().audit_page(task_id, after, limit).await
    }

    /// Tasks matching `filter` that `by` may see, newest first: an admin sees every task; a
    /// principal its own (a filter without a user, or with its own); a filter naming another
    /// user keeps only the tasks the host's [`TaskAccessPolicy`] lets `by` list, and a listing
    /// that hid some is audited as `task.access_denied` (action `list`).
    pub async fn tasks(&self, by: &Principal, filter: TaskFilter) -> Result<Vec<TaskRecord>> {
        if by.is_admin() {
            return self.trusted().tasks(filter).await;
        }
        let mut filter = filter;
        match &filter.user_id {
            Some(user) if *user != by.user_id => {}
            _ => {
                filter.user_id = Some(by.user_id.clone());
                return self.trusted().tasks(filter).await;
            }
        }
        let all = self.trusted().tasks(filter.clone()).await?;
        let mut shown = Vec::with_capacity(all.len());
        let mut hidden = 0usize;
        for task in all {
            if owns_or_admin(by, &task) || self.access.allows(by, &task, TaskAction::List).await? {
                shown.push(task);
            } else {
                hidden += 1;
            }
        }
        if hidden > 0 {
            let event = NewAuditEvent::by(
                by,
                ACCESS_DENIED,
                json!({ "action": TaskAction::List.as_str(), "user_id": filter.user_id, "hidden": hidden }),
            );
            if let Err(e) = self.node.store.append_audit(event).await {
                tracing::warn!(error = %e, "could not audit a denied task listing");
            }
        }
        Ok(shown)
    }

    /// Unchecked task access for trusted host code (background jobs, operators' tools): every
    /// task, whoever submitted it. Never hand it a principal's request unchecked.
    pub fn trusted(&self) -> TrustedAccess<'_> {
        TrustedAccess { platform: self }
    }

    /// The task if `by` may perform `action` on it; otherwise the same not-found error as for a
    /// task that does not exist, after a `task.access_denied` audit row.
    async fn authorize(
        &self,
        task_id: Uuid,
        by: &Principal,
        action: TaskAction,
    ) -> Result<TaskRecord> {
        let task = self.node.store.get_task(task_id).await?;
        if owns_or_admin(by, &task) || self.access.allows(by, &task, action).await? {
            return Ok(task);
        }
        let event = NewAuditEvent::by(by, ACCESS_DENIED, json!({ "action": action.as_str() }))
            .task(task_id)
            .agent(task.agent_id.clone());
        // A denial is answered only once it is on record.
        self.node.store.append_audit(event).await?;
        metrics::counter!("task_access_denied_total", "action" => action.as_str()).increment(1);
        Err(Error::not_found("task", task_id.to_string()))
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

mod answer;

/// The audit event type of a refused task access.
pub const ACCESS_DENIED: &str = "task.access_denied";

/// Unchecked task access for trusted host code, from [`Platform::trusted`]: the same calls as
/// the platform's task API without a principal check.
#[derive(Clone, Copy)]
pub struct TrustedAccess<'a> {
    platform: &'a Platform,
}

impl std::fmt::Debug for TrustedAccess<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedAccess").finish_non_exhaustive()
    }
}

impl TrustedAccess<'_> {
    fn node(&self) -> &Node {
        &self.platform.node
    }

    /// The task's current record.
    pub async fn get(&self, task_id: Uuid) -> Result<TaskRecord> {
        self.node().store.get_task(task_id).await
    }

    /// Cancels a task on behalf of the host (audited as by the principal `host`).
    pub async fn cancel(&self, task_id: Uuid) -> Result<TaskRecord> {
        self.cancel_as(task_id, &Principal::new("host")).await
    }

    /// Cancels a task, audited as by `by`, without checking that `by` may.
    pub async fn cancel_as(&self, task_id: Uuid, by: &Principal) -> Result<TaskRecord> {
        let record = self.node().store.cancel(task_id, by).await?;
        self.node().cancel_running(task_id);
        Ok(record)
    }

    /// Waits until the task is completed, cancelled or failed for good, and returns it.
    pub async fn wait(&self, task_id: Uuid) -> Result<TaskRecord> {
        let node = self.node();
        let waiter = node.completions.register(&node.store, task_id);
        waiter
            .until_final(node.store.as_ref(), node.store.get_task(task_id))
            .await
    }

    /// The task's events from the first.
    pub async fn watch(&self, task_id: Uuid) -> Result<TaskEvents> {
        self.watch_from(task_id, 0).await
    }

    /// The task's events after `after`.
    pub async fn watch_from(&self, task_id: Uuid, after: u64) -> Result<TaskEvents> {
        self.node().store.get_task(task_id).await?;
        Ok(watch::watch(Arc::clone(&self.node().store), task_id, after))
    }

    /// The whole audit trail of a task, read page by page
    /// ([`MAX_AUDIT_PAGE`](crate::store::MAX_AUDIT_PAGE) rows a read), in chain order.
    pub async fn audit(&self, task_id: Uuid) -> Result<Vec<AuditEvent>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.audit_page(task_id, after, None).await?;
            // A full page continues after its last row (a cursor that does not advance — rows
            // outside the chain have no `seq` — ends the walk rather than loop).
            let last = match page.last() {
                Some(row)
                    if page.len() >= crate::store::MAX_AUDIT_PAGE
                        && row.seq > after.unwrap_or(0) =>
                {
                    row.seq
                }
                _ => {
                    all.extend(page);
                    return Ok(all);
                }
            };
            all.extend(page);
            after = Some(last);
        }
    }

    /// One page of a task's audit trail: the rows after chain position `after` (`None`: from
    /// the first), at most `limit` (`None` or larger:
    /// [`MAX_AUDIT_PAGE`](crate::store::MAX_AUDIT_PAGE)), in chain order. The next page's
    /// cursor is the last row's `seq`.
    pub async fn audit_page(
        &self,
        task_id: Uuid,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<AuditEvent>> {
        self.node()
            .store
            .list_audit(&AuditFilter {
                task_id: Some(task_id),
                after,
                limit,
                ..AuditFilter::default()
            })
            .await
    }

    /// Tasks matching `filter`, whoever submitted them.
    pub async fn tasks(&self, filter: TaskFilter) -> Result<Vec<TaskRecord>> {
        self.node().store.list_tasks(&filter).await
    }
}
