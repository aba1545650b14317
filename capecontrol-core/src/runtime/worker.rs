//! Workers: claim tasks by priority, run them through the middleware chain and an executor
//! under a lease with heartbeats, a timeout and cancellation; retry with exponential backoff
//! and jitter; feed the circuit breakers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rand::Rng;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::breaker::{Admission, CircuitBreakers};
use super::executor::{Executor, Invocation};
use super::host::PlatformHost;
use super::middleware::{ExecuteEndpoint, ExecuteNext, Execution};
use crate::agent::TaskContext;
use crate::error::{Error, ErrorCategory, Result};
use crate::manifest::Config;
use crate::policy::Scope;
use crate::store::{ClaimRequest, Claimed, Finish, Outcome};

/// The exponential backoff before attempt `attempt + 1`: `base * 2^(attempt-1)`, capped at
/// `max`, with "equal jitter" (uniform in the upper half), so retries of many tasks spread out.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let full = base.saturating_mul(1u32 << exp).min(max);
    let half = full / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(if jitter_ms == 0 {
        0
    } else {
        rand::rng().random_range(0..=jitter_ms)
    })
}

/// The dispatcher: claims as many tasks as there are free worker slots and spawns them.
pub(crate) async fn dispatch(inner: Arc<Inner>) {
    let slots = Arc::new(Semaphore::new(inner.config.workers));
    let mut wakeups = inner.store.wakeups();
    loop {
        if inner.stop.is_cancelled() {
            return;
        }
        // Wait for one free slot, then take every other free one.
        let first = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            () = inner.stop.cancelled() => return,
        };
        let mut permits: Vec<OwnedSemaphorePermit> = vec![first];
        while permits.len() < inner.config.claim_batch {
            match Arc::clone(&slots).try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let request = ClaimRequest {
            worker: inner.node_id.clone(),
            limit: permits.len(),
            lease: inner.config.lease,
            agents: inner.config.only_agents.clone(),
        };
        match inner.store.claim(&request).await {
            Ok(claimed) if !claimed.is_empty() => {
                for c in claimed {
                    let Some(permit) = permits.pop() else { break };
                    let inner = Arc::clone(&inner);
                    tokio::spawn(async move {
                        run_attempt(&inner, c).await;
                        drop(permit);
                    });
                }
                drop(permits);
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "claim failed"),
        }
        drop(permits);
        tokio::select! {
            _ = wakeups.recv() => {}
            () = tokio::time::sleep(inner.config.poll_interval) => {}
            () = inner.stop.cancelled() => return,
        }
    }
}

/// The maintenance loop: reclaims expired leases and updates the queue-depth gauge.
pub(crate) async fn maintain(inner: Arc<Inner>) {
    let every = (inner.config.lease / 2).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = inner.stop.cancelled() => return,
        }
        match inner.store.reclaim_expired().await {
            Ok(ids) if !ids.is_empty() => {
                tracing::info!(count = ids.len(), "reclaimed tasks with expired leases")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reclaim failed"),
        }
        if let Ok(depth) = inner.store.queue_depth().await {
            metrics::gauge!("task_queue_depth").set(depth as f64);
        }
    }
}

/// The heartbeat loop: renews the lease of every attempt running on this node every third of
/// a lease; a heartbeat that reports a cancellation cancels the attempt, one that finds the
/// lease lost abandons it.
pub(crate) async fn heartbeats(inner: Arc<Inner>) {
    let every = (inner.config.lease / 3).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = inner.kill.cancelled() => return,
        }
        for running in inner.running_leases() {
            match inner
                .store
                .heartbeat(&running.lease, inner.config.lease)
                .await
            {
                Ok(hb) if hb.cancel_requested => running.cancel.cancel(),
                Ok(_) => {}
                Err(e) if e.category() == ErrorCategory::Conflict => running.lost.cancel(),
                Err(e) => {
                    tracing::warn!(task_id = %running.lease.task_id, error = %e, "heartbeat failed")
                }
            }
        }
    }
}

struct ExecutorEndpoint(Arc<dyn Executor>);

#[async_trait]
impl ExecuteEndpoint for ExecutorEndpoint {
    async fn call(&self, exec: Execution) -> Result<Value> {
        self.0.run(exec.invocation, exec.cx).await
    }
}

enum End {
    Done(Result<Value>),
    TimedOut,
    Cancelled,
    LeaseLost,
    Released,
    Killed,
}

async fn run_attempt(inner: &Arc<Inner>, claimed: Claimed) {
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
        Arc::clone(&inner.store),
        lease.clone(),
        Arc::clone(&task),
        last_seq,
    ));

    let prepared = prepare(inner, &task).await;
    let (manifest, executor, granted, settings) = match prepared {
        Ok(p) => p,
        Err(error) => {
            finish_failed(inner, &host, &task, error, false).await;
            return;
        }
    };

    let admission = inner.breakers.admit(&key);
    if let Admission::Rejected(left) = admission {
        let error = Error::resource(format!(
            "circuit breaker open for {key}; retry in {} ms",
            left.as_millis()
        ));
        finish_failed(inner, &host, &task, error, false).await;
        publish_breaker(inner, &key);
        return;
    }

    let cancel = CancellationToken::new();
    let lost = CancellationToken::new();
    inner.running_insert(
        task_id,
        super::Running {
            lease: lease.clone(),
            cancel: cancel.clone(),
            lost: lost.clone(),
        },
    );
    let cx = TaskContext::builder(task_id)
        .attempt(task.attempts)
        .principal(task.principal.clone())
        .agent_id(task.agent_id.clone())
        .granted(granted)
        .settings(settings)
        .completed_steps(steps)
        .cancellation(cancel.clone())
        .build(host.clone());
    let invocation = Invocation {
        agent_id: task.agent_id.clone(),
        version: task.version.clone(),
        task: task.task.clone(),
        input: task.input.clone(),
        manifest: Arc::clone(&manifest),
    };
    let endpoint = ExecutorEndpoint(executor);
    let exec = Execution {
        task: Arc::clone(&task),
        invocation,
        cx,
    };
    let config = manifest.config();
    let timeout = task
        .timeout
        .min(Duration::from_secs(u64::from(Config::MAX_TIMEOUT)));

    // Boxed so that it can be dropped (the attempt stopped) before the outcome is written.
    let mut run = Box::pin(ExecuteNext::new(&inner.middleware, &endpoint).run(exec));
    let end = tokio::select! {
        r = &mut run => End::Done(r),
        () = tokio::time::sleep(timeout) => End::TimedOut,
        () = cancel.cancelled() => {
            // Give the attempt a grace period to stop by itself.
            match tokio::time::timeout(inner.config.cancel_grace, &mut run).await {
                Ok(Ok(output)) => End::Done(Ok(output)),
                _ => End::Cancelled,
            }
        }
        () = lost.cancelled() => End::LeaseLost,
        () = inner.release.cancelled() => End::Released,
        () = inner.kill.cancelled() => End::Killed,
    };
    cancel.cancel();
    inner.running_remove(task_id);
    drop(run);

    match end {
        End::Done(Ok(output)) => {
            inner.breakers.record_success(&key);
            let mut pending = host.take_pending();
            let finish = Finish {
                outcome: Outcome::Completed { output },
                steps: pending.steps(),
                events: pending.events,
                audit: Vec::new(),
            };
            if let Err(e) = inner.store.finish(&lease, finish).await {
                tracing::warn!(%task_id, error = %e, "could not record the completion");
            }
        }
        End::Done(Err(error)) => {
            if cancel_requested(inner, task_id).await {
                finish_cancelled(inner, &host, &lease).await;
            } else {
                let counts = matches!(
                    error.category(),
                    ErrorCategory::Agent | ErrorCategory::Resource
                );
                finish_failed(inner, &host, &task, error, counts).await;
            }
        }
        End::TimedOut => {
            let error = Error::resource(format!(
                "attempt timed out after {} s (limit {} s)",
                timeout.as_secs_f64(),
                config.timeout
            ));
            finish_failed(inner, &host, &task, error, true).await;
        }
        End::Cancelled => finish_cancelled(inner, &host, &lease).await,
        End::LeaseLost => {
            tracing::warn!(%task_id, "lease lost; the attempt was abandoned");
            inner.breakers.record_neutral(&key);
        }
        End::Killed => {
            tracing::warn!(%task_id, "platform dropped; the attempt was abandoned without a trace");
        }
        End::Released => {
            inner.breakers.record_neutral(&key);
            let mut pending = host.take_pending();
            let steps = pending.steps();
            if let Err(e) = inner.store.release(&lease, pending.events, steps).await {
                tracing::warn!(%task_id, error = %e, "could not release the lease");
            }
        }
    }
    publish_breaker(inner, &key);
}

async fn cancel_requested(inner: &Inner, task_id: uuid::Uuid) -> bool {
    inner
        .store
        .get_task(task_id)
        .await
        .map(|t| t.cancel_requested)
        .unwrap_or(false)
}

fn publish_breaker(inner: &Inner, key: &str) {
    metrics::gauge!("agent_circuit_breaker_state", "agent_version" => key.to_owned())
        .set(inner.breakers.state(key).as_gauge());
}

type Prepared = (
    Arc<crate::manifest::Manifest>,
    Arc<dyn Executor>,
    Vec<Scope>,
    Value,
);

async fn prepare(inner: &Inner, task: &crate::store::TaskRecord) -> Result<Prepared> {
    let manifest = inner.manifest(&task.agent_id, &task.version).await?;
    let executor = inner
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
    let installation = inner
        .store
        .get_installation(&task.agent_id, &task.user_id)
        .await
        .map_err(|e| match e.category() {
            ErrorCategory::NotFound => Error::forbidden(format!(
                "agent `{}` is no longer installed for user `{}`",
                task.agent_id, task.user_id
            )),
            _ => e,
        })?;
    let granted = installation
        .granted_scopes
        .iter()
        .filter_map(|s| s.parse::<Scope>().ok())
        .collect();
    Ok((manifest, executor, granted, installation.settings))
}

async fn finish_cancelled(inner: &Inner, host: &PlatformHost, lease: &crate::store::Lease) {
    let mut pending = host.take_pending();
    let finish = Finish {
        outcome: Outcome::Cancelled,
        steps: pending.steps(),
        events: pending.events,
        audit: Vec::new(),
    };
    if let Err(e) = inner.store.finish(lease, finish).await {
        tracing::warn!(task_id = %lease.task_id, error = %e, "could not record the cancellation");
    }
}

/// Ends an attempt in failure: requeued with backoff while retryable and attempts remain,
/// failed for good otherwise. `counts` feeds the circuit breaker.
async fn finish_failed(
    inner: &Inner,
    host: &PlatformHost,
    task: &crate::store::TaskRecord,
    error: Error,
    counts: bool,
) {
    let key = CircuitBreakers::key(&task.agent_id, &task.version);
    if counts {
        inner.breakers.record_failure(&key);
    } else {
        inner.breakers.record_neutral(&key);
    }
    let retry_at = if error.is_retryable() && task.attempts < task.max_attempts {
        let delay = error.retry_after().unwrap_or_else(|| {
            backoff(
                inner.config.backoff_base,
                inner.config.backoff_max,
                task.attempts,
            )
        });
        Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX))
    } else {
        None
    };
    let lease = host_lease(host);
    let mut pending = host.take_pending();
    let finish = Finish {
        outcome: Outcome::Failed { error, retry_at },
        steps: pending.steps(),
        events: pending.events,
        audit: Vec::new(),
    };
    if let Err(e) = inner.store.finish(&lease, finish).await {
        tracing::warn!(task_id = %task.id, error = %e, "could not record the failure");
    }
}

fn host_lease(host: &PlatformHost) -> crate::store::Lease {
    host.lease().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for _ in 0..100 {
            let b1 = backoff(base, max, 1);
            assert!(
                b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100),
                "{b1:?}"
            );
            let b3 = backoff(base, max, 3);
            assert!(
                b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400),
                "{b3:?}"
            );
            let b10 = backoff(base, max, 10);
            assert!(b10 >= Duration::from_secs(1) && b10 <= max, "{b10:?}");
        }
    }
}
