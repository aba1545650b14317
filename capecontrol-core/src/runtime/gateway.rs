//! The gateway: the way in for every submission. In order: resolve the agent and the version
//! installed for the submitting user (not installed → 403; an archived installed version →
//! 409), policy (roles, the installation's grants against the manifest's scopes → 403 with the
//! missing scopes; unknown task → 404), the circuit breaker (open → 503), then the middleware
//! chain and the enqueue. Policy decisions are audited: `policy.allowed` in the enqueue's
//! transaction, `policy.denied` in its own write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use serde_json::json;
use uuid::Uuid;

use super::attempt::{Slot, panic_message};
use super::dispatch;
use super::middleware::{Rejection, Submission, SubmitEndpoint, SubmitNext, Submitted};
use super::node::Node;
use super::request::TaskRequest;
use crate::error::{Error, ErrorCategory, Result};
use crate::manifest::{Config, Manifest, TaskDecl};
use crate::policy::{Scope, missing_scopes};
use crate::state::VersionStatus;
use crate::store::{Enqueued, NewAuditEvent, NewTask};
use crate::trace::Traceparent;

/// What the gateway resolved for (agent, user): the installed version, its grants and the
/// scopes its manifest requires (parsed once, shared by every submission the cache serves).
struct Resolved {
    version: String,
    status: VersionStatus,
    manifest: Arc<Manifest>,
    granted: Vec<Scope>,
    required: Vec<Scope>,
    /// The manifest's task declarations, shared (not cloned) by the submissions.
    tasks: Vec<Arc<TaskDecl>>,
    /// The version's circuit breaker key ([`super::breaker::CircuitBreakers::key`]), the one
    /// the node's version cache holds for its attempts.
    breaker: Arc<str>,
}

/// A cached resolution and when it was made.
type Cached = (tokio::time::Instant, Arc<Resolved>);

/// One agent's cached resolutions, by user.
type UserCache = crate::FastMap<String, Cached>;

/// A denial: the error returned to the caller and the reason written to the audit row.
type Denied = (Error, String);

/// The gateway's caches: resolved installations for `policy_cache_ttl`, agent ids for good.
#[derive(Default)]
pub(crate) struct Gateway {
    /// Resolved submissions (installation, version, manifest) by agent, then user (looked up
    /// by reference: no key is built per submission).
    /// Both levels are [`crate::FastMap`]s: every submission looks them up.
    policy_cache: Mutex<crate::FastMap<String, UserCache>>,
    /// Agent ids by the id or slug they were asked for.
    agent_ids: Mutex<crate::FastMap<String, String>>,
}

impl Gateway {
    /// Submits a task: policy, breaker, middleware, enqueue. Returns the task's id (an existing
    /// task's id when the idempotency key was seen before).
    ///
    /// This and [`Gateway::submit_with`] return [`Gateway::submit_linked`]'s future itself: an
    /// `async` wrapper would be a future of its own, holding the request (360 bytes) beside
    /// the one it awaits, and moved whole into its caller's.
    pub(crate) fn submit(
        &self,
        node: &Node,
        request: TaskRequest,
    ) -> impl Future<Output = Result<Uuid>> + Send {
        self.submit_linked(node, request, None, Vec::new())
    }

    /// [`Gateway::submit`] with extra audit events (a trigger's `task.triggered`), written in
    /// the enqueue's transaction after `policy.allowed`, about the new task.
    pub(crate) fn submit_with(
        &self,
        node: &Node,
        request: TaskRequest,
        extra_audit: Vec<NewAuditEvent>,
    ) -> impl Future<Output = Result<Uuid>> + Send {
        self.submit_linked(node, request, None, extra_audit)
    }

    /// [`Gateway::submit_with`] of a child task of `parent_id` (when given).
    pub(crate) async fn submit_linked(
        &self,
        node: &Node,
        request: TaskRequest,
        parent_id: Option<Uuid>,
        extra_audit: Vec<NewAuditEvent>,
    ) -> Result<Uuid> {
        let store = &node.store;
        let request = Box::new(request);
        if let Some(t) = &request.traceparent {
            Traceparent::parse(t)?;
        }
        let agent_id = self.agent_id(node, &request.agent).await?;
        let (version, manifest, task, breaker) = match self.policy(node, &agent_id, &request).await
        {
            Ok(ok) => ok,
            Err((error, what)) => {
                let event = NewAuditEvent::by(
                    &request.principal,
                    "policy.denied",
                    json!({"task": request.task, "reason": what, "error": error.to_string(),
                           "missing_scopes": error.missing_scopes()}),
                )
                .agent(agent_id);
                store.append_audit(event).await?;
                return Err(error);
            }
        };
        if let Some(left) = node.breakers.is_open(&breaker) {
            return Err(Error::resource(format!(
                "circuit breaker open for {breaker}; retry in {} ms",
                left.as_millis()
            )));
        }
        let task_id = Uuid::now_v7();
        // `policy.allowed` is written by the store (`NewTask::policy_allowed`).
        let sub = Submission {
            task_id,
            agent_id,
            version,
            manifest,
            task,
            audit: extra_audit.into_iter().map(|e| e.task(task_id)).collect(),
            request,
            parent_id,
        };
        let endpoint = Enqueue(node);
        // What a rejection's audit names (the audit layer's and a panic's here), copied once.
        let rejection = Rejection::of(Submitted {
            task_id,
            principal: sub.request.principal.clone(),
            agent_id: sub.agent_id.clone(),
            task: sub.request.task.clone(),
        });
        // A panicking middleware is a failed submission (an agent-category error, 500), never
        // an unwinding caller.
        let chain = SubmitNext::recording(&node.submit_chain, &endpoint, &rejection);
        // Called inside the future whose panics are caught: a layer may panic as it is called,
        // before its future exists.
        let chain = async move { chain.run(sub).await };
        match std::panic::AssertUnwindSafe(chain).catch_unwind().await {
            Ok(enqueued) => Ok(enqueued?.task.id),
            Err(payload) => {
                let error = Error::agent(format!(
                    "a middleware panicked while submitting: {}",
                    panic_message(payload.as_ref())
                ));
                // The panic unwound past the audit layer: the rejection is audited here (the
                // record is always of the submission, made above).
                let event = rejection.submitted().map(|submitted| {
                    NewAuditEvent::by(
                        &submitted.principal,
                        "task.rejected",
                        json!({"task_id": task_id, "task": submitted.task,
                               "category": error.category(), "status": error.http_status(),
                               "rejected_by": "panic"}),
                    )
                    .agent(submitted.agent_id.clone())
                });
                if let Some(event) = event
                    && let Err(e) = store.append_audit(event).await
                {
                    tracing::warn!(error = %e, "could not audit a panicked submission");
                }
                Err(error)
            }
        }
    }

    /// Resolves the installed version and checks roles and grants.
    async fn policy(
        &self,
        node: &Node,
        agent_id: &str,
        request: &TaskRequest,
    ) -> std::result::Result<(String, Arc<Manifest>, Option<Arc<TaskDecl>>, Arc<str>), Denied> {
        let resolved = self
            .resolve(node, agent_id, &request.principal.user_id)
            .await?;
        if resolved.status != VersionStatus::Published {
            return Err((
                Error::conflict(format!(
                    "installed version {} of `{agent_id}` is {}; upgrade the installation",
                    resolved.version, resolved.status
                )),
                "version not published".into(),
            ));
        }
        let manifest = &resolved.manifest;
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
        let missing = missing_scopes(&resolved.granted, &resolved.required);
        if !missing.is_empty() {
            return Err((
                Error::permission(missing.iter().map(ToString::to_string)),
                "scopes".into(),
            ));
        }
        let task = resolved
            .tasks
            .iter()
            .find(|t| t.name == request.task)
            .cloned();
        if task.is_none() && !manifest.tasks.is_empty() {
            return Err((
                Error::not_found("task", request.task.clone()),
                "task".into(),
            ));
        }
        Ok((
            resolved.version.clone(),
            Arc::clone(manifest),
            task,
            Arc::clone(&resolved.breaker),
        ))
    }

    /// The id of the agent named by `id_or_slug` (an agent's id and slug never change, so this
    /// is cached for good once found).
    async fn agent_id(&self, node: &Node, id_or_slug: &str) -> Result<String> {
        if let Some(id) = self
            .agent_ids
            .lock()
            .ok()
            .and_then(|m| m.get(id_or_slug).cloned())
        {
            return Ok(id);
        }
        let agent = node.store.get_agent(id_or_slug).await?;
        if let Ok(mut m) = self.agent_ids.lock() {
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
        node: &Node,
        agent_id: &str,
        user_id: &str,
    ) -> std::result::Result<Arc<Resolved>, Denied> {
        let ttl = node.config.policy_cache_ttl;
        if !ttl.is_zero()
            && let Some((at, hit)) = self.policy_cache.lock().ok().and_then(|c| {
                c.get(agent_id)
                    .and_then(|users| users.get(user_id))
                    .cloned()
            })
            && at.elapsed() < ttl
        {
            return Ok(hit);
        }
        let installation = match node.installation(agent_id, user_id).await {
            Ok(i) => i,
            Err(e) if e.category() == ErrorCategory::Permission => {
                return Err((e, "not installed".into()));
            }
            Err(e) => return Err((e, "store".into())),
        };
        let record = node
            .store
            .get_version(agent_id, &installation.version)
            .await
            .map_err(|e| (e, "version".into()))?;
        // The manifest and breaker key the node caches for the version (its attempts share them).
        let cached = node
            .version(agent_id, &installation.version)
            .await
            .map_err(|e| (e, "manifest".into()))?;
        let manifest = cached.manifest;
        let required = manifest
            .permissions()
            .scopes
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let resolved = Arc::new(Resolved {
            breaker: cached.breaker,
            version: installation.version,
            status: record.status,
            granted: installation
                .granted_scopes
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            required,
            tasks: manifest.tasks.iter().cloned().map(Arc::new).collect(),
            manifest,
        });
        if !ttl.is_zero()
            && let Ok(mut cache) = self.policy_cache.lock()
        {
            if cache.values().map(HashMap::len).sum::<usize>() > 10_000 {
                for users in cache.values_mut() {
                    users.retain(|_, (at, _)| at.elapsed() < ttl);
                }
                cache.retain(|_, users| !users.is_empty());
            }
            cache.entry(agent_id.to_owned()).or_default().insert(
                user_id.to_owned(),
                (tokio::time::Instant::now(), Arc::clone(&resolved)),
            );
        }
        Ok(resolved)
    }
}

/// The end of the submit chain: the enqueue, with the manifest's limits. A task that may start
/// on this node at once (a free worker slot, the dispatcher waiting for work) is claimed by its
/// enqueue and its attempt starts here, without waiting for the dispatcher's claim.
struct Enqueue<'a>(&'a Node);

#[async_trait]
impl SubmitEndpoint for Enqueue<'_> {
    async fn call(&self, sub: Submission) -> Result<Enqueued> {
        let config = sub.manifest.config();
        let timeout = sub
            .task
            .as_ref()
            .and_then(|t| t.timeout)
            .unwrap_or(config.timeout)
            .clamp(1, Config::MAX_TIMEOUT);
        let trigger = sub.request.trigger().cloned();
        let task = NewTask {
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
            traceparent: sub.request.traceparent,
            trigger,
            policy_allowed: true,
            audit: sub.audit,
            parent_id: sub.parent_id,
        };
        let Some(start) = self.0.start_here(&task) else {
            return self.0.store.enqueue(task).await;
        };
        let claim = self.0.store.enqueue_claimed(task, &start.request).await;
        let node = Arc::clone(&start.turn.0);
        drop(start.turn);
        let (enqueued, claimed) = claim?;
        if let Some(claimed) = claimed {
            dispatch::spawn_attempt(node, claimed, Slot::Held(start.slot), Some(start.flight));
        }
        Ok(enqueued)
    }
}
