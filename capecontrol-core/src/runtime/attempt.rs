//! One attempt of a claimed task: prepare it (manifest, executor, the installation's grants and
//! settings), ask the circuit breaker, run it through the middleware chain and the executor
//! under a timeout, cancellation and the lease, then hand its outcome to the attempt's host,
//! the one writer of its finish: completed, failed (retried with backoff while the category is
//! retryable and attempts remain) or cancelled; or, when the node shuts down, released.
//!
//! A panic in the execute chain (the task body, a step, a tool, a middleware) is caught and
//! ends the attempt as an `agent` error, handled like any other. The attempt is registered
//! with the heartbeat loop from before its first write until its last one has returned (a drop
//! guard unregisters it on every path, a panic included), so its lease stays renewed while a
//! final write is repeated after transient store errors.

use std::panic::AssertUnwindSafe;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::FutureExt;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::backoff::backoff;
use super::breaker::{Admission, CircuitBreakers};
use super::checks;
use super::executor::{Executor, Invocation};
use super::host::PlatformHost;
use super::middleware::{ExecuteEndpoint, ExecuteNext, Execution};
use super::node::{Node, Running};
use super::waits;
use crate::agent::TaskContext;
use crate::error::{Error, ErrorCategory, Result};
use crate::manifest::{Config, Manifest};
use crate::policy::Scope;
use crate::state::TaskStatus;
use crate::store::{Claimed, ClaimedCatalog, MAX_LIST_TASKS, Outcome, TaskFilter, TaskRecord};

/// The end of the execute chain: the executor chosen for the attempt, its output capped at
/// `max_output` bytes of JSON.
struct ExecutorEndpoint(Arc<dyn Executor>, usize);

#[async_trait]
impl ExecuteEndpoint for ExecutorEndpoint {
    async fn call(&self, exec: Execution) -> Result<Value> {
        let output = self.0.run(exec.invocation, exec.cx).await?;
        if let Err(e) = checks::check_output(&output, self.1) {
            // Refused, perhaps for its depth: dropped without recursion.
            checks::drop_flat(output);
            return Err(e);
        }
        Ok(output)
    }
}

/// How an attempt's run ended.
enum End {
    Done(Result<Value>),
    TimedOut,
    Cancelled,
    LeaseLost,
    Released,
    Killed,
    /// The task asked to wait durably (`ask_user`, `sleep`).
    Suspended,
}

/// How often an attempt's preparation (its reads) is tried on transient store errors.
const PREPARE_TRIES: u32 = 10;

/// Unregisters an attempt from the heartbeat loop when dropped, however the attempt ends.
struct Registered<'a> {
    node: &'a Node,
    task_id: uuid::Uuid,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.node.running_remove(self.task_id);
    }
}

/// The message of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// The worker slot of an attempt: held from the claim, or (a prefetched task) to wait for.
pub(crate) enum Slot {
    /// A free slot was taken for it before the claim.
    Held(OwnedSemaphorePermit),
    /// Claimed beyond the free slots: waits for one, leased and heartbeaten meanwhile.
    Wait {
        slots: Arc<Semaphore>,
        /// The dispatcher's count of prefetched attempts waiting, decremented when this one
        /// stops waiting.
        waiting: Arc<AtomicUsize>,
    },
}

/// Decrements the count of waiting prefetched attempts however the wait ends.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an attempt needs besides the claimed task.
struct Prepared {
    manifest: Arc<Manifest>,
    /// The version's circuit breaker key.
    breaker: Arc<str>,
    executor: Arc<dyn Executor>,
    granted: Vec<Scope>,
    settings: Value,
}

// The ends other than a completion (failures, cancellations, releases, suspensions, waking a
// parent) are boxed where they are awaited: their futures would otherwise be laid out inside
// every attempt's future, which the dispatcher allocates and moves whole.

/// Runs one claimed task to its outcome, inside a `tracing` span `attempt` naming the task,
/// agent, version, attempt and executor, and the trace id of the submitting request's
/// `traceparent` when it had one. Steps and tool calls open child spans of it.
pub(crate) async fn run(node: &Arc<Node>, claimed: Claimed, slot: Slot) {
    let span = tracing::info_span!(
        "attempt",
        task_id = %claimed.task.id,
        agent = %claimed.task.agent_id,
        version = %claimed.task.version,
        attempt = claimed.task.attempts,
        executor = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        traceparent = tracing::field::Empty,
    );
    // The submitting request's trace: its id on the span, so that every span of the task
    // (steps and tool calls are this span's children) is found under that trace.
    if let Some(t) = claimed.task.traceparent.as_deref()
        && let Ok(t) = crate::trace::Traceparent::parse(t)
    {
        span.record("trace_id", t.trace_id());
        span.record("traceparent", t.as_str());
        // An exporter that knows remote parents makes the attempt a child of the request's span.
        crate::trace::link_remote_parent(&span, &t);
    }
    run_attempt(node, claimed, slot).instrument(span).await;
}

async fn run_attempt(node: &Arc<Node>, claimed: Claimed, slot: Slot) {
    let Claimed {
        task,
        lease,
        steps,
        last_seq,
        mut catalog,
    } = claimed;
    // Shared by the store, the host, the execution and this function: never copied.
    let task_id = task.id;
    let cancel = CancellationToken::new();
    let lost = CancellationToken::new();
    let host = Arc::new(
        PlatformHost::new(
            Arc::clone(&node.store),
            lease.clone(),
            Arc::clone(&task),
            last_seq,
            lost.clone(),
            node.kill.clone(),
            node.config.lease * 2,
        )
        .submitting(Arc::clone(node)),
    );
    // Heart-beaten from here until the last write returned (the guard is dropped last).
    node.running_insert(
        task_id,
        Running {
            lease,
            cancel: cancel.clone(),
            lost: lost.clone(),
        },
    );
    let _registered = Registered { node, task_id };

    // A prefetched task waits for a worker slot, its lease renewed meanwhile; what would end a
    // running attempt ends the wait the same way.
    let permit = match slot {
        Slot::Held(permit) => permit,
        Slot::Wait { slots, waiting } => {
            let _waiting = Waiting(waiting);
            let since = tokio::time::Instant::now();
            let end = tokio::select! {
                p = slots.acquire_owned() => match p {
                    Ok(p) => Ok(p),
                    Err(_) => Err(End::Killed),
                },
                () = cancel.cancelled() => Err(End::Cancelled),
                () = lost.cancelled() => Err(End::LeaseLost),
                () = node.release.cancelled() => Err(End::Released),
                () = node.kill.cancelled() => Err(End::Killed),
            };
            match end {
                Ok(p) => {
                    // Read when the task was claimed: kept if that is no older than what the
                    // gateway accepts of its own cache (`policy_cache_ttl`), else read afresh.
                    if since.elapsed() >= node.config.policy_cache_ttl {
                        catalog = None;
                    }
                    p
                }
                Err(End::Cancelled) => return Box::pin(finish_cancelled(node, &host, &task)).await,
                Err(End::Released) => {
                    if let Err(e) = Box::pin(host.release()).await {
                        tracing::warn!(%task_id, error = %e, "could not release the lease");
                    }
                    return;
                }
                Err(_) => return,
            }
        }
    };

    // Reads repeated on transient store errors (a lost connection must not cost an attempt).
    let mut delay = Duration::from_millis(50);
    let mut tries = 0;
    let prepared = loop {
        // The claim's catalog serves the first try, taken (not copied); a try after a
        // transient error reads the registry afresh.
        match prepare(node, &task, catalog.take()).await {
            Err(e) if e.is_transient() && tries < PREPARE_TRIES && !node.kill.is_cancelled() => {
                tracing::warn!(%task_id, error = %e, "transient store error preparing the attempt");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
                tries += 1;
            }
            other => break other,
        }
    };
    let prepared = match prepared {
        Ok(p) => p,
        Err(error) => {
            Box::pin(finish_failed(node, &host, &task, error, false)).await;
            return;
        }
    };
    tracing::Span::current().record("executor", prepared.executor.name());
    let key = Arc::clone(&prepared.breaker);

    if let Admission::Rejected(left) = node.breakers.admit(&key) {
        let error = Error::resource(format!(
            "circuit breaker open for {key}; retry in {} ms",
            left.as_millis()
        ));
        Box::pin(finish_failed(node, &host, &task, error, false)).await;
        publish_breaker(node, &task, &key);
        return;
    }

    let cx = TaskContext::builder(task_id)
        .task(Arc::clone(&task))
        .ask_timeout(ask_timeout(&prepared.manifest))
        .granted(prepared.granted)
        .settings(prepared.settings)
        .completed_steps(steps)
        .cancellation(cancel.clone())
        .build(host.clone());
    let invocation = Invocation {
        agent_id: task.agent_id.clone(),
        version: task.version.clone(),
        task: task.task.clone(),
        input: task.input.clone(),
        manifest: Arc::clone(&prepared.manifest),
    };
    let endpoint = ExecutorEndpoint(prepared.executor, node.config.max_output_bytes);
    let exec = Execution {
        task: Arc::clone(&task),
        invocation,
        cx,
    };
    let config = prepared.manifest.config();
    let timeout = task
        .timeout
        .min(Duration::from_secs(u64::from(Config::MAX_TIMEOUT)));

    // Boxed so that it can be dropped (the attempt stopped) before the outcome is written.
    // A panic anywhere in the chain is the agent's failure, not the worker's.
    // The chain is called inside the future whose panics are caught: a layer may panic as it
    // is called, before its future exists.
    let chain = ExecuteNext::new(&node.execute_chain, &endpoint);
    let mut run = Box::pin(
        AssertUnwindSafe(async move { chain.run(exec).await })
            .catch_unwind()
            .map(|r| {
                r.unwrap_or_else(|payload| {
                    Err(Error::agent(format!(
                        "the agent panicked: {}",
                        panic_message(payload.as_ref())
                    )))
                })
            }),
    );
    let end = tokio::select! {
        r = &mut run => End::Done(r),
        () = tokio::time::sleep(timeout) => End::TimedOut,
        () = cancel.cancelled() => {
            // Give the attempt a grace period to stop by itself.
            match tokio::time::timeout(node.config.cancel_grace, &mut run).await {
                Ok(Ok(output)) => End::Done(Ok(output)),
                _ => End::Cancelled,
            }
        }
        () = lost.cancelled() => End::LeaseLost,
        () = node.release.cancelled() => End::Released,
        () = node.kill.cancelled() => End::Killed,
        () = host.wait_requested().cancelled() => End::Suspended,
    };
    cancel.cancel();
    drop(run);
    // The agent is done with its worker slot: the next claim need not wait for this outcome's
    // write. The attempt keeps its place among those in flight (the dispatcher's bound) and
    // its registration (lease, heartbeats, `shutdown`) until the write is done.
    drop(permit);

    match end {
        End::Done(Ok(output)) => {
            node.breakers.record_success(&key);
            // Published before the write (the breaker's state is settled by now), so that the
            // attempt can let go of the claimed record: with its host's (the only one left
            // once the agent's context is dropped) gone too, `MemoryStore` changes its record
            // where it is instead of copying it.
            publish_breaker(node, &task, &key);
            let parent = task.parent_id;
            drop(task);
            let completed = Outcome::Completed { output };
            let mut host = host;
            PlatformHost::let_go_of_task(&mut host);
            let written = host.finish(completed).await;
            if let Err(e) = written {
                tracing::warn!(%task_id, error = %e, "could not record the completion");
            }
            wake_parent(node, parent).await;
            return;
        }
        End::Done(Err(error)) => {
            if cancel_requested(node, task_id).await {
                Box::pin(finish_cancelled(node, &host, &task)).await;
            } else {
                // Only the agent's own failures count: a `resource` error (executor or store
                // trouble) says nothing about the agent version.
                let counts = error.category() == ErrorCategory::Agent;
                Box::pin(finish_failed(node, &host, &task, error, counts)).await;
            }
        }
        End::TimedOut => {
            let error = Error::resource(format!(
                "attempt timed out after {} s (limit {} s)",
                timeout.as_secs_f64(),
                config.timeout
            ));
            Box::pin(finish_failed(node, &host, &task, error, true)).await;
        }
        End::Cancelled => Box::pin(finish_cancelled(node, &host, &task)).await,
        End::LeaseLost => {
            tracing::warn!(%task_id, "lease lost; the attempt was abandoned");
            node.breakers.record_neutral(&key);
        }
        End::Killed => {
            tracing::warn!(%task_id, "platform dropped; the attempt was abandoned without a trace");
        }
        End::Released => {
            node.breakers.record_neutral(&key);
            if let Err(e) = Box::pin(host.release()).await {
                tracing::warn!(%task_id, error = %e, "could not release the lease");
            }
        }
        End::Suspended => {
            node.breakers.record_neutral(&key);
            // Only the status is kept across the awaits below: a record held there would be
            // laid out (twice) inside every attempt's future.
            let suspended = Box::pin(host.suspend_now()).await.map(|t| t.status);
            // After the write, whatever came of it: the sweeper's next count sees the wait.
            node.note_wait_begun();
            match suspended {
                // Its children may all have ended already: woken at once, not at the sweep.
                Ok(TaskStatus::Waiting) => {
                    Box::pin(waits::join_ready(node, Some(task_id))).await;
                }
                // A cancel was requested: the suspend cancelled the task.
                Ok(TaskStatus::Cancelled) => Box::pin(cancel_children(node, &task)).await,
                Ok(_) => {}
                Err(e) => tracing::warn!(%task_id, error = %e, "could not suspend the task"),
            }
        }
    }
    wake_parent(node, task.parent_id).await;
    publish_breaker(node, &task, &key);
}

/// A child that ended here wakes its waiting parent at once (else the sweep does).
async fn wake_parent(node: &Arc<Node>, parent: Option<uuid::Uuid>) {
    if let Some(parent) = parent
        && !node.kill.is_cancelled()
    {
        Box::pin(waits::join_ready(node, Some(parent))).await;
    }
}

/// How long `ask_user` waits by default in this agent: its manifest's `config.ask_timeout`,
/// else [`crate::agent::DEFAULT_ASK_TIMEOUT`].
fn ask_timeout(manifest: &Manifest) -> Duration {
    manifest
        .config
        .as_ref()
        .and_then(|c| c.ask_timeout)
        .map_or(crate::agent::DEFAULT_ASK_TIMEOUT, |s| {
            Duration::from_secs(u64::from(s))
        })
}

async fn cancel_requested(node: &Node, task_id: uuid::Uuid) -> bool {
    node.store
        .get_task(task_id)
        .await
        .map(|t| t.cancel_requested)
        .unwrap_or(false)
}

/// Sets the gauge of the breaker `key` (the task's agent version).
fn publish_breaker(node: &Node, task: &TaskRecord, key: &str) {
    // Only a change is published: the gauge keeps the value it was set to.
    let Some(state) = node.breakers.to_publish(key) else {
        return;
    };
    metrics::gauge!(
        "agent_circuit_breaker_state",
        "agent" => task.agent_id.clone(),
        "version" => task.version.clone()
    )
    .set(state.as_gauge());
}

/// The manifest of the task's version, the executor that runs it, and the grants and settings
/// of the user's installation, read again at every attempt and checked again as the gateway
/// did ([`checks::recheck`]): installed, version not archived, grants covering the scopes.
async fn prepare(
    node: &Node,
    task: &TaskRecord,
    catalog: Option<ClaimedCatalog>,
) -> Result<Prepared> {
    // The status only: the manifest comes from the node's cache, not copied from the store.
    let status = match &catalog {
        Some(c) => c.version_status.ok_or_else(|| {
            Error::not_found(
                "agent version",
                format!("{}@{}", task.agent_id, task.version),
            )
        })?,
        None => {
            node.store
                .version_status(&task.agent_id, &task.version)
                .await?
        }
    };
    let version = node.version(&task.agent_id, &task.version).await?;
    let manifest = version.manifest;
    let executor = node
        .executors
        .iter()
        .find(|e| e.supports(&task.agent_id, &manifest))
        .cloned()
        .ok_or_else(|| {
            Error::not_found(
                "executor",
                format!("for agent {}@{}", task.agent_id, task.version),
            )
        })?;
    let installation = match catalog {
        Some(c) => c
            .installation
            .ok_or_else(|| super::node::not_installed(&task.agent_id, &task.user_id))?,
        None => Arc::new(node.installation(&task.agent_id, &task.user_id).await?),
    };
    let granted = checks::recheck(
        &task.version,
        status,
        &manifest,
        &installation,
        node.config.finish_archived_versions,
    )?;
    Ok(Prepared {
        manifest,
        breaker: version.breaker,
        executor,
        granted,
        // The record is the store's (shared): its settings copied, nothing else.
        settings: installation.settings.clone(),
    })
}

/// Ends the attempt cancelled; then cancels the task's children that are not final yet: the
/// store's cancel cascaded to the children that existed then, and this catches one the attempt
/// spawned while the cancel was on its way to it.
async fn finish_cancelled(node: &Node, host: &PlatformHost, task: &TaskRecord) {
    match host.finish(Outcome::Cancelled).await {
        Ok(t) if t.status == TaskStatus::Cancelled => cancel_children(node, task).await,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(task_id = %host.lease().task_id, error = %e, "could not record the cancellation");
        }
    }
}

/// Cancels the children of `task` that are not final (each cascading to its own), audited as
/// by the task's principal.
async fn cancel_children(node: &Node, task: &TaskRecord) {
    let filter = TaskFilter {
        parent_id: Some(task.id),
        limit: Some(MAX_LIST_TASKS),
        ..TaskFilter::default()
    };
    let children = match node.store.list_tasks(&filter).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(task_id = %task.id, error = %e, "could not list a cancelled task's children");
            return;
        }
    };
    for child in children.iter().filter(|c| !c.status.is_final()) {
        match node.store.cancel(child.id, &task.principal).await {
            Ok(_) => node.cancel_running(child.id),
            // Ended meanwhile.
            Err(e) if e.category() == ErrorCategory::Conflict => {}
            Err(e) => {
                tracing::warn!(task_id = %child.id, error = %e, "could not cancel a child task");
            }
        }
    }
}

/// Ends an attempt in failure: requeued with backoff while retryable and attempts remain,
/// failed for good otherwise. `counts` feeds the circuit breaker.
async fn finish_failed(
    node: &Node,
    host: &PlatformHost,
    task: &TaskRecord,
    error: Error,
    counts: bool,
) {
    let key = CircuitBreakers::key(&task.agent_id, &task.version);
    if counts {
        node.breakers.record_failure(&key);
    } else {
        node.breakers.record_neutral(&key);
    }
    let retry_at = if error.is_retryable() && task.attempts < task.max_attempts {
        let delay = error.retry_after().unwrap_or_else(|| {
            backoff(
                node.config.backoff_base,
                node.config.backoff_max,
                task.attempts,
            )
        });
        Some(checks::retry_at(
            Utc::now(),
            delay,
            node.config.max_retry_delay,
        ))
    } else {
        None
    };
    if let Err(e) = host.finish(Outcome::Failed { error, retry_at }).await {
        tracing::warn!(task_id = %task.id, error = %e, "could not record the failure");
    }
}
