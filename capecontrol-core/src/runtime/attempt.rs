//! One attempt of a claimed task: prepare it (manifest, executor, the installation's grants and
//! settings), ask the circuit breaker, run it through the middleware chain and the executor
//! under a timeout, cancellation and the lease, then hand its outcome to the attempt's host,
//! the one writer of its finish: completed, failed (retried with backoff while the category is
//! retryable and attempts remain) or cancelled; or, when the node shuts down, released.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::backoff::backoff;
use super::breaker::{Admission, CircuitBreakers};
use super::executor::{Executor, Invocation};
use super::host::PlatformHost;
use super::middleware::{ExecuteEndpoint, ExecuteNext, Execution};
use super::node::{Node, Running};
use crate::agent::TaskContext;
use crate::error::{Error, ErrorCategory, Result};
use crate::manifest::{Config, Manifest};
use crate::policy::Scope;
use crate::store::{Claimed, Outcome, TaskRecord};

/// The end of the execute chain: the executor chosen for the attempt.
struct ExecutorEndpoint(Arc<dyn Executor>);

#[async_trait]
impl ExecuteEndpoint for ExecutorEndpoint {
    async fn call(&self, exec: Execution) -> Result<Value> {
        self.0.run(exec.invocation, exec.cx).await
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
}

/// What an attempt needs besides the claimed task.
struct Prepared {
    manifest: Arc<Manifest>,
    executor: Arc<dyn Executor>,
    granted: Vec<Scope>,
    settings: Value,
}

/// Runs one claimed task to its outcome, inside a `tracing` span `attempt` naming the task,
/// agent, version, attempt and executor, and the trace id of the submitting request's
/// `traceparent` when it had one. Steps and tool calls open child spans of it.
pub(crate) async fn run(node: &Arc<Node>, claimed: Claimed) {
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
    if let Some(t) = claimed.task.traceparent.as_deref() {
        if let Ok(t) = crate::trace::Traceparent::parse(t) {
            span.record("trace_id", t.trace_id());
            span.record("traceparent", t.as_str());
        }
    }
    run_attempt(node, claimed).instrument(span).await;
}

async fn run_attempt(node: &Arc<Node>, claimed: Claimed) {
    let Claimed {
        task,
        lease,
        steps,
        last_seq,
    } = claimed;
    // Shared by the host, the execution and this function: cloned once, not per use.
    let task = Arc::new(task);
    let task_id = task.id;
    let key = CircuitBreakers::key(&task.agent_id, &task.version);
    let host = Arc::new(PlatformHost::new(
        Arc::clone(&node.store),
        lease.clone(),
        Arc::clone(&task),
        last_seq,
    ));

    let prepared = match prepare(node, &task).await {
        Ok(p) => p,
        Err(error) => {
            finish_failed(node, &host, &task, error, false).await;
            return;
        }
    };
    tracing::Span::current().record("executor", prepared.executor.name());

    if let Admission::Rejected(left) = node.breakers.admit(&key) {
        let error = Error::resource(format!(
            "circuit breaker open for {key}; retry in {} ms",
            left.as_millis()
        ));
        finish_failed(node, &host, &task, error, false).await;
        publish_breaker(node, &task);
        return;
    }

    let cancel = CancellationToken::new();
    let lost = CancellationToken::new();
    node.running_insert(
        task_id,
        Running {
            lease,
            cancel: cancel.clone(),
            lost: lost.clone(),
        },
    );
    let cx = TaskContext::builder(task_id)
        .attempt(task.attempts)
        .principal(task.principal.clone())
        .agent_id(task.agent_id.clone())
        .version(task.version.clone())
        .traceparent(task.traceparent.clone())
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
    let endpoint = ExecutorEndpoint(prepared.executor);
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
    let mut run = Box::pin(ExecuteNext::new(&node.middleware, &endpoint).run(exec));
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
    };
    cancel.cancel();
    node.running_remove(task_id);
    drop(run);

    match end {
        End::Done(Ok(output)) => {
            node.breakers.record_success(&key);
            if let Err(e) = host.finish(Outcome::Completed { output }).await {
                tracing::warn!(%task_id, error = %e, "could not record the completion");
            }
        }
        End::Done(Err(error)) => {
            if cancel_requested(node, task_id).await {
                finish_cancelled(&host).await;
            } else {
                let counts = matches!(
                    error.category(),
                    ErrorCategory::Agent | ErrorCategory::Resource
                );
                finish_failed(node, &host, &task, error, counts).await;
            }
        }
        End::TimedOut => {
            let error = Error::resource(format!(
                "attempt timed out after {} s (limit {} s)",
                timeout.as_secs_f64(),
                config.timeout
            ));
            finish_failed(node, &host, &task, error, true).await;
        }
        End::Cancelled => finish_cancelled(&host).await,
        End::LeaseLost => {
            tracing::warn!(%task_id, "lease lost; the attempt was abandoned");
            node.breakers.record_neutral(&key);
        }
        End::Killed => {
            tracing::warn!(%task_id, "platform dropped; the attempt was abandoned without a trace");
        }
        End::Released => {
            node.breakers.record_neutral(&key);
            if let Err(e) = host.release().await {
                tracing::warn!(%task_id, error = %e, "could not release the lease");
            }
        }
    }
    publish_breaker(node, &task);
}

async fn cancel_requested(node: &Node, task_id: uuid::Uuid) -> bool {
    node.store
        .get_task(task_id)
        .await
        .map(|t| t.cancel_requested)
        .unwrap_or(false)
}

fn publish_breaker(node: &Node, task: &TaskRecord) {
    let key = CircuitBreakers::key(&task.agent_id, &task.version);
    metrics::gauge!(
        "agent_circuit_breaker_state",
        "agent" => task.agent_id.clone(),
        "version" => task.version.clone()
    )
    .set(node.breakers.state(&key).as_gauge());
}

/// The manifest of the task's version, the executor that runs it, and the grants and settings
/// of the user's installation (read again at every attempt).
async fn prepare(node: &Node, task: &TaskRecord) -> Result<Prepared> {
    let manifest = node.manifest(&task.agent_id, &task.version).await?;
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
    let installation = node.installation(&task.agent_id, &task.user_id).await?;
    let granted = installation
        .granted_scopes
        .iter()
        .filter_map(|s| s.parse::<Scope>().ok())
        .collect();
    Ok(Prepared {
        manifest,
        executor,
        granted,
        settings: installation.settings,
    })
}

async fn finish_cancelled(host: &PlatformHost) {
    if let Err(e) = host.finish(Outcome::Cancelled).await {
        tracing::warn!(task_id = %host.lease().task_id, error = %e, "could not record the cancellation");
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
        Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX))
    } else {
        None
    };
    if let Err(e) = host.finish(Outcome::Failed { error, retry_at }).await {
        tracing::warn!(task_id = %task.id, error = %e, "could not record the failure");
    }
}
