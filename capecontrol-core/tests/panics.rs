//! Issue 11, item 1: a panic in an in-process agent — its task body, a step, a middleware — is
//! a failure, not a hang. The attempt ends as an `agent` error, retried by the normal policy and
//! counted by the circuit breaker; the worker slot, the lease and the agent's concurrency slot
//! are released, and `wait` and `shutdown` return.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use capecontrol_core::agent::{AgentBase, TaskContext, ToolContext};
use capecontrol_core::manifest::{Config, Manifest};
use capecontrol_core::runtime::middleware::{ExecuteNext, Execution};
use capecontrol_core::runtime::{
    BreakerConfig, BreakerState, CircuitBreakers, Middleware, Platform, PlatformConfig, TaskRequest,
};
use capecontrol_core::store::Store;
use capecontrol_core::store::TaskRecord;
use capecontrol_core::store::memory::MemoryStore;
use capecontrol_core::{Error, ErrorCategory, Principal, Result, TaskStatus};
use serde_json::{Value, json};

use capecontrol_testkit::runtime::manifest;

/// How the agent behaves on a call.
#[derive(Clone, Copy)]
enum Mode {
    /// Panics in the task body on every call.
    PanicBody,
    /// Panics inside its second step on the first call, then completes.
    PanicStepOnce,
    /// Completes at once.
    Ok,
}

struct Panicky {
    name: &'static str,
    retries: u32,
    concurrency: u32,
    mode: Mode,
    calls: Arc<AtomicU32>,
}

#[async_trait]
impl AgentBase for Panicky {
    fn manifest(&self) -> Manifest {
        manifest(
            self.name,
            Config {
                retries: self.retries,
                concurrent_tasks: self.concurrency,
                ..Config::default()
            },
            &[],
        )
    }

    async fn run_task(&self, _name: &str, _input: Value, cx: &TaskContext) -> Result<Value> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        match self.mode {
            Mode::PanicBody => panic!("body exploded on call {call}"),
            Mode::PanicStepOnce => {
                let a: u32 = cx.step("one", async { Ok::<_, Error>(1) }).await?;
                let b: u32 = cx
                    .step("two", async move {
                        if call == 1 {
                            panic!("step two exploded");
                        }
                        Ok::<_, Error>(2)
                    })
                    .await?;
                Ok(json!(a + b))
            }
            Mode::Ok => Ok(json!("ok")),
        }
    }

    async fn call_tool(&self, name: &str, _input: Value, _cx: &ToolContext) -> Result<Value> {
        Err(Error::not_found("tool", name))
    }
}

fn agent(
    name: &'static str,
    retries: u32,
    concurrency: u32,
    mode: Mode,
) -> (Panicky, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    (
        Panicky {
            name,
            retries,
            concurrency,
            mode,
            calls: calls.clone(),
        },
        calls,
    )
}

/// Panics in `execute` for tasks of agent `victim`.
struct PanickingMiddleware;

#[async_trait]
impl Middleware for PanickingMiddleware {
    fn name(&self) -> &str {
        "panicking"
    }
    async fn execute(&self, exec: Execution, next: ExecuteNext<'_>) -> Result<Value> {
        if exec.task.agent_id == "victim" {
            panic!("middleware exploded");
        }
        next.run(exec).await
    }
}

fn config() -> PlatformConfig {
    PlatformConfig {
        workers: 4,
        claim_batch: 4,
        lease: Duration::from_millis(600),
        poll_interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        cancel_grace: Duration::from_millis(100),
        breaker: BreakerConfig {
            failure_threshold: 3,
            cool_down: Duration::from_secs(60),
        },
        ..PlatformConfig::default()
    }
}

fn user() -> Principal {
    Principal::new("alice").with_roles(["user"])
}

async fn install(store: &Arc<dyn Store>, agent_id: &str) {
    capecontrol_testkit::runtime::install(store, agent_id, "alice", &[]).await;
}

async fn wait(p: &Platform, id: uuid::Uuid) -> TaskRecord {
    tokio::time::timeout(Duration::from_secs(10), p.trusted().wait(id))
        .await
        .expect("a panicking agent must not wedge its task")
        .unwrap()
}

#[tokio::test]
async fn a_panicking_task_body_fails_as_an_agent_error_after_its_retries_and_frees_its_slot() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // One concurrent task at most: a leaked concurrency slot would stall the second task.
    let (bomb, calls) = agent("Bomb", 1, 1, Mode::PanicBody);
    let p = Platform::builder()
        .store(store.clone())
        .config(config())
        .agent(bomb)
        .build()
        .await
        .unwrap();
    install(&store, "bomb").await;

    let id = p
        .submit(TaskRequest::new("bomb", "run", json!({}), user()))
        .await
        .unwrap();
    let done = wait(&p, id).await;
    assert_eq!(done.status, TaskStatus::Failed);
    assert_eq!(done.attempts, 2, "retried by the normal policy");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let error = done.error.expect("the failure is recorded");
    assert_eq!(error.category(), ErrorCategory::Agent);
    assert!(
        error.to_string().contains("panicked") && error.to_string().contains("body exploded"),
        "{error}"
    );

    // The worker slot, lease and concurrency slot came back: the next task runs (and panics).
    let second = p
        .submit(TaskRequest::new("bomb", "run", json!({}), user()))
        .await
        .unwrap();
    assert_eq!(wait(&p, second).await.status, TaskStatus::Failed);
    // Counted by the breaker: four agent failures open it (threshold 3).
    let key = CircuitBreakers::key("bomb", "1.0.0");
    assert_eq!(p.breakers().state(&key), BreakerState::Open);
    tokio::time::timeout(Duration::from_secs(5), p.shutdown(Duration::from_secs(1)))
        .await
        .expect("shutdown returns");
}

#[tokio::test]
async fn a_panic_inside_a_step_is_retried_and_the_retry_completes() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (flaky, calls) = agent("Flaky", 2, 4, Mode::PanicStepOnce);
    let p = Platform::builder()
        .store(store.clone())
        .config(config())
        .agent(flaky)
        .build()
        .await
        .unwrap();
    install(&store, "flaky").await;
    let id = p
        .submit(TaskRequest::new("flaky", "run", json!({}), user()))
        .await
        .unwrap();
    let done = wait(&p, id).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.output, Some(json!(3)));
    assert_eq!(done.attempts, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let steps = store.steps(id).await.unwrap();
    assert_eq!(steps.len(), 2, "step one journaled once, step two once");
}

#[tokio::test]
async fn a_panicking_middleware_fails_the_attempt_not_the_node() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (victim, victim_calls) = agent("Victim", 0, 4, Mode::Ok);
    let (other, _) = agent("Other", 0, 4, Mode::Ok);
    let p = Platform::builder()
        .store(store.clone())
        .config(config())
        .middleware(PanickingMiddleware)
        .agent(victim)
        .agent(other)
        .build()
        .await
        .unwrap();
    install(&store, "victim").await;
    install(&store, "other").await;
    let id = p
        .submit(TaskRequest::new("victim", "run", json!({}), user()))
        .await
        .unwrap();
    let done = wait(&p, id).await;
    assert_eq!(done.status, TaskStatus::Failed);
    assert_eq!(
        done.error.as_ref().map(Error::category),
        Some(ErrorCategory::Agent)
    );
    assert!(
        done.error_message
            .as_deref()
            .unwrap_or("")
            .contains("middleware exploded")
    );
    assert_eq!(victim_calls.load(Ordering::SeqCst), 0);
    // The node still works.
    let id = p
        .submit(TaskRequest::new("other", "run", json!({}), user()))
        .await
        .unwrap();
    assert_eq!(wait(&p, id).await.status, TaskStatus::Completed);
}

/// Panics in `submit` for tasks of agent `victim`.
struct PanickingSubmit;

#[async_trait]
impl Middleware for PanickingSubmit {
    fn name(&self) -> &str {
        "panicking_submit"
    }
    async fn submit(
        &self,
        sub: capecontrol_core::runtime::middleware::Submission,
        next: capecontrol_core::runtime::middleware::SubmitNext<'_>,
    ) -> Result<capecontrol_core::store::Enqueued> {
        if sub.agent_id == "victim" {
            panic!("submit exploded");
        }
        next.run(sub).await
    }
}

#[tokio::test]
async fn a_panicking_submit_middleware_is_an_agent_error_for_the_caller() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (victim, victim_calls) = agent("Victim", 0, 4, Mode::Ok);
    let (other, _) = agent("Other", 0, 4, Mode::Ok);
    let p = Platform::builder()
        .store(store.clone())
        .config(config())
        .middleware(PanickingSubmit)
        .agent(victim)
        .agent(other)
        .build()
        .await
        .unwrap();
    install(&store, "victim").await;
    install(&store, "other").await;
    let err = p
        .submit(TaskRequest::new("victim", "run", json!({}), user()))
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Agent);
    assert!(err.to_string().contains("submit exploded"), "{err}");
    assert_eq!(victim_calls.load(Ordering::SeqCst), 0);
    let rejected = store
        .list_audit(&capecontrol_core::store::AuditFilter {
            event_type: Some("task.rejected".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        rejected.len(),
        1,
        "the panicked submission is audited: {rejected:?}"
    );
    assert_eq!(rejected[0].payload["rejected_by"], "panic");
    assert_eq!(rejected[0].payload["category"], "agent");
    // The gateway still works.
    let id = p
        .submit(TaskRequest::new("other", "run", json!({}), user()))
        .await
        .unwrap();
    assert_eq!(wait(&p, id).await.status, TaskStatus::Completed);
}

/// A hand-written layer (not `#[async_trait]`'s, whose bodies run inside their futures) that
/// panics as it is called, before it returns a future: for submissions of agent `victim` and
/// attempts of agent `other`. The chain calls the next layer as it is itself called, not when
/// its future first runs, so these panics happen inside the calling layer's poll.
struct PanicsWhenCalled;

type Boxed<'f, T> = std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send + 'f>>;

impl Middleware for PanicsWhenCalled {
    fn name(&self) -> &str {
        "panics_when_called"
    }
    fn submit<'s, 'n, 'f>(
        &'s self,
        sub: capecontrol_core::runtime::middleware::Submission,
        next: capecontrol_core::runtime::middleware::SubmitNext<'n>,
    ) -> Boxed<'f, capecontrol_core::store::Enqueued>
    where
        's: 'f,
        'n: 'f,
        Self: 'f,
    {
        assert_ne!(sub.agent_id, "victim", "submit exploded when called");
        Box::pin(next.run(sub))
    }
    fn execute<'s, 'n, 'f>(&'s self, exec: Execution, next: ExecuteNext<'n>) -> Boxed<'f, Value>
    where
        's: 'f,
        'n: 'f,
        Self: 'f,
    {
        assert_ne!(exec.task.agent_id, "other", "execute exploded when called");
        Box::pin(next.run(exec))
    }
}

#[tokio::test]
async fn a_middleware_panicking_as_it_is_called_fails_the_submission_or_the_attempt() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (victim, victim_calls) = agent("Victim", 0, 4, Mode::Ok);
    let (other, other_calls) = agent("Other", 0, 4, Mode::Ok);
    let (bystander, _) = agent("Bystander", 0, 4, Mode::Ok);
    let p = Platform::builder()
        .store(store.clone())
        .config(config())
        .middleware(PanicsWhenCalled)
        .agent(victim)
        .agent(other)
        .agent(bystander)
        .build()
        .await
        .unwrap();
    for agent in ["victim", "other", "bystander"] {
        install(&store, agent).await;
    }
    // The submission: an agent error for the caller, audited as rejected by the panic.
    let err = p
        .submit(TaskRequest::new("victim", "run", json!({}), user()))
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Agent);
    assert!(
        err.to_string().contains("submit exploded when called"),
        "{err}"
    );
    assert_eq!(victim_calls.load(Ordering::SeqCst), 0);
    let rejected = store
        .list_audit(&capecontrol_core::store::AuditFilter {
            event_type: Some("task.rejected".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].payload["rejected_by"], "panic");
    // The attempt: failed as the agent's error; the agent never ran.
    let id = p
        .submit(TaskRequest::new("other", "run", json!({}), user()))
        .await
        .unwrap();
    let done = wait(&p, id).await;
    assert_eq!(done.status, TaskStatus::Failed);
    assert_eq!(
        done.error.as_ref().map(Error::category),
        Some(ErrorCategory::Agent)
    );
    let message = done.error_message.as_deref().unwrap_or("");
    assert!(
        message.contains("execute exploded when called"),
        "{message}"
    );
    assert_eq!(other_calls.load(Ordering::SeqCst), 0);
    // The node still works.
    let id = p
        .submit(TaskRequest::new("bystander", "run", json!({}), user()))
        .await
        .unwrap();
    assert_eq!(wait(&p, id).await.status, TaskStatus::Completed);
}
