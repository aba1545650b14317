//! Middleware: a chain of layers around a `next`, as tower layers and axum's `from_fn` do.
//!
//! A [`Middleware`] sees every submission on its way to the queue ([`Middleware::submit`]) and
//! every attempt on its way to the executor ([`Middleware::execute`]); each may inspect, change,
//! reject, or pass to `next`. The five middleware of blueprint §8, one module each:
//! [`audit::AuditLogging`], [`perf::PerformanceMonitor`], [`rate_limit::RateLimiting`],
//! [`sanitize::InputSanitization`] and [`moderation::ContentModeration`]. Host applications add
//! their own with [`crate::runtime::PlatformBuilder::middleware`].

pub mod audit;
pub mod moderation;
pub mod perf;
pub mod rate_limit;
pub mod sanitize;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use serde_json::Value;
use uuid::Uuid;

use crate::agent::TaskContext;
use crate::error::Result;
use crate::manifest::{Manifest, TaskDecl};
use crate::runtime::executor::Invocation;
use crate::runtime::request::TaskRequest;
use crate::store::{Enqueued, NewAuditEvent, TaskRecord};

/// A submission on its way through the gateway, after policy checks.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The id the task will have.
    pub task_id: Uuid,
    /// The request as submitted (boxed: the submission moves through every layer's future,
    /// and a pointer moves cheaper than the request).
    pub request: Box<TaskRequest>,
    /// The resolved agent id.
    pub agent_id: String,
    /// The resolved version.
    pub version: String,
    /// The version's manifest.
    pub manifest: Arc<Manifest>,
    /// The task's declaration in the manifest, when the agent declares its tasks (shared by
    /// every submission of the task: the gateway resolves it once per installation).
    pub task: Option<Arc<TaskDecl>>,
    /// Audit events to write together with the enqueue, after the `policy.allowed` row the
    /// store writes itself ([`NewTask::policy_allowed`](crate::store::NewTask::policy_allowed)).
    pub audit: Vec<NewAuditEvent>,
    /// The task that spawns this one ([`TaskContext::spawn`](crate::TaskContext::spawn)), if
    /// a task does.
    pub parent_id: Option<Uuid>,
}

/// One attempt on its way to the executor.
#[derive(Debug)]
pub struct Execution {
    /// The task as claimed (shared with the worker: cheap to clone).
    pub task: Arc<TaskRecord>,
    /// What to run.
    pub invocation: Invocation,
    /// The task's context (steps, tools, cancellation).
    pub cx: TaskContext,
}

/// A middleware layer. Both methods default to passing through.
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// A short name, used in audit events and errors.
    fn name(&self) -> &str;

    /// Sees a submission; call `next.run(sub)` to pass it on.
    async fn submit(&self, sub: Submission, next: SubmitNext<'_>) -> Result<Enqueued> {
        next.run(sub).await
    }

    /// Sees an attempt; call `next.run(exec)` to pass it on. The output may be inspected or
    /// replaced.
    async fn execute(&self, exec: Execution, next: ExecuteNext<'_>) -> Result<Value> {
        next.run(exec).await
    }

    /// The chains this layer is in: both by default. A layer that overrides only one of
    /// [`Middleware::submit`] and [`Middleware::execute`] may say so: the platform then leaves
    /// it out of the other chain, whose tasks no longer pay for its pass-through (a boxed
    /// future and a dynamic call each). The method it is left out of is never called.
    ///
    /// ```
    /// use async_trait::async_trait;
    /// use capecontrol_core::runtime::middleware::{Chains, Middleware, Submission, SubmitNext};
    /// use capecontrol_core::store::Enqueued;
    ///
    /// /// Counts submissions; attempts pass it by.
    /// struct Counter(std::sync::atomic::AtomicU64);
    ///
    /// #[async_trait]
    /// impl Middleware for Counter {
    ///     fn name(&self) -> &str {
    ///         "counter"
    ///     }
    ///     async fn submit(&self, sub: Submission, next: SubmitNext<'_>) -> capecontrol_core::Result<Enqueued> {
    ///         self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ///         next.run(sub).await
    ///     }
    ///     fn chains(&self) -> Chains {
    ///         Chains::Submit
    ///     }
    /// }
    /// ```
    fn chains(&self) -> Chains {
        Chains::Both
    }
}

/// The chains a [`Middleware`] is in (see [`Middleware::chains`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chains {
    /// Submissions and attempts.
    Both,
    /// Submissions only: [`Middleware::execute`] is never called.
    Submit,
    /// Attempts only: [`Middleware::submit`] is never called.
    Execute,
}

impl Chains {
    /// Whether submissions pass the layer.
    pub fn submit(self) -> bool {
        matches!(self, Self::Both | Self::Submit)
    }

    /// Whether attempts pass the layer.
    pub fn execute(self) -> bool {
        matches!(self, Self::Both | Self::Execute)
    }
}

/// The end of the submit chain (the enqueue).
#[async_trait]
pub trait SubmitEndpoint: Send + Sync {
    /// Enqueues the submission.
    async fn call(&self, sub: Submission) -> Result<Enqueued>;
}

/// The end of the execute chain (the executor).
#[async_trait]
pub trait ExecuteEndpoint: Send + Sync {
    /// Runs the attempt.
    async fn call(&self, exec: Execution) -> Result<Value>;
}

/// Which part of the submit chain rejected a submission: the name of the innermost
/// middleware that returned an error (see [`Middleware::name`]), or `"enqueue"` when the store
/// refused it. Set once per submission. The gateway's also holds what was submitted
/// ([`Rejection::submitted`]), for the layers that audit a rejection.
#[derive(Debug, Default)]
pub struct Rejection {
    by: std::sync::OnceLock<String>,
    submitted: Option<Submitted>,
}

/// Who submitted what, as the gateway let it into the chain: what a rejection's audit row
/// names once the submission itself has moved on down the chain (and is gone with the error).
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The id the task would have had.
    pub task_id: Uuid,
    /// Who submitted it.
    pub principal: crate::policy::Principal,
    /// The resolved agent id.
    pub agent_id: String,
    /// The task's name.
    pub task: String,
}

impl Rejection {
    /// A record of the rejection of `submitted`, if a part of the chain rejects it.
    ///
    /// ```
    /// use capecontrol_core::policy::Principal;
    /// use capecontrol_core::runtime::middleware::{Rejection, Submitted};
    ///
    /// let submitted = Submitted {
    ///     task_id: uuid::Uuid::nil(),
    ///     principal: Principal::new("ada"),
    ///     agent_id: "adder".into(),
    ///     task: "add".into(),
    /// };
    /// let rejection = Rejection::of(submitted.clone());
    /// assert_eq!(rejection.submitted(), Some(&submitted));
    /// assert_eq!(rejection.by(), None); // nothing rejected it yet
    /// ```
    pub fn of(submitted: Submitted) -> Self {
        Self {
            by: std::sync::OnceLock::new(),
            submitted: Some(submitted),
        }
    }

    /// The name of the layer that rejected the submission, once one has.
    pub fn by(&self) -> Option<&str> {
        self.by.get().map(String::as_str)
    }

    /// What was submitted, when the record was made [`of`](Self::of) it (the gateway's is).
    pub fn submitted(&self) -> Option<&Submitted> {
        self.submitted.as_ref()
    }

    fn record(&self, name: &str) {
        let _ = self.by.set(name.to_owned());
    }
}

/// The rest of the submit chain.
pub struct SubmitNext<'a> {
    rest: &'a [Arc<dyn Middleware>],
    endpoint: &'a dyn SubmitEndpoint,
    rejection: Option<&'a Rejection>,
}

impl fmt::Debug for SubmitNext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmitNext")
            .field("rest", &layer_names(self.rest))
            .finish_non_exhaustive()
    }
}

/// The names of `layers`, for `Debug`.
fn layer_names(layers: &[Arc<dyn Middleware>]) -> Vec<&str> {
    layers.iter().map(|m| m.name()).collect()
}

impl<'a> SubmitNext<'a> {
    /// The chain `layers` ending in `endpoint`.
    pub fn new(layers: &'a [Arc<dyn Middleware>], endpoint: &'a dyn SubmitEndpoint) -> Self {
        Self {
            rest: layers,
            endpoint,
            rejection: None,
        }
    }

    /// The chain `layers` ending in `endpoint`, recording in `rejection` which layer rejects
    /// the submission, if one does.
    pub fn recording(
        layers: &'a [Arc<dyn Middleware>],
        endpoint: &'a dyn SubmitEndpoint,
        rejection: &'a Rejection,
    ) -> Self {
        Self {
            rest: layers,
            endpoint,
            rejection: Some(rejection),
        }
    }

    /// Where this chain records which layer rejected the submission (read it after `run`).
    pub fn rejection(&self) -> Option<&'a Rejection> {
        self.rejection
    }

    /// Passes `sub` to the next layer, or to the endpoint: `next.run(sub).await`.
    ///
    /// The future is the next layer's own (boxed by `#[async_trait]`), not one wrapping it: a
    /// wrapper would hold the submission a second time and be laid out inside the calling
    /// layer's future, at every layer of the chain.
    pub fn run(self, sub: Submission) -> impl Future<Output = Result<Enqueued>> + Send + 'a {
        let (next, name) = match self.rest.split_first() {
            Some((layer, rest)) => {
                let next = SubmitNext {
                    rest,
                    endpoint: self.endpoint,
                    rejection: self.rejection,
                };
                (layer.submit(sub, next), layer.name())
            }
            None => (self.endpoint.call(sub), "enqueue"),
        };
        let rejection = self.rejection;
        next.map(move |result| {
            if result.is_err()
                && let Some(rejection) = rejection
            {
                // The innermost failing part records first; the layers around it only pass the
                // error on.
                rejection.record(name);
            }
            result
        })
    }
}

/// The rest of the execute chain.
pub struct ExecuteNext<'a> {
    rest: &'a [Arc<dyn Middleware>],
    endpoint: &'a dyn ExecuteEndpoint,
}

impl fmt::Debug for ExecuteNext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecuteNext")
            .field("rest", &layer_names(self.rest))
            .finish_non_exhaustive()
    }
}

impl<'a> ExecuteNext<'a> {
    /// The chain `layers` ending in `endpoint`.
    pub fn new(layers: &'a [Arc<dyn Middleware>], endpoint: &'a dyn ExecuteEndpoint) -> Self {
        Self {
            rest: layers,
            endpoint,
        }
    }

    /// Passes `exec` to the next layer, or to the endpoint: `next.run(exec).await`.
    ///
    /// The future is the next layer's own (boxed by `#[async_trait]`), not one wrapping it
    /// (see [`SubmitNext::run`]).
    pub fn run(self, exec: Execution) -> impl Future<Output = Result<Value>> + Send + 'a {
        match self.rest.split_first() {
            Some((layer, rest)) => layer.execute(
                exec,
                ExecuteNext {
                    rest,
                    endpoint: self.endpoint,
                },
            ),
            None => self.endpoint.call(exec),
        }
    }
}
