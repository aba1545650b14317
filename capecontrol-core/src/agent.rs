//! The agent SDK's runtime side: the object-safe [`AgentBase`] trait every agent implements,
//! and the [`TaskContext`] / [`ToolContext`] a task or tool receives.
//!
//! Durable steps: [`TaskContext::step`] runs a step once and journals its JSON result through
//! the [`TaskHost`]; when a task is replayed (resumed after a crash, or retried), a step that the
//! journal already holds as completed returns the journaled value without running again.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::manifest::{Manifest, TaskDecl, ToolDecl};
use crate::policy::{Principal, Scope};
use crate::state::RunStatus;

mod children;
mod waiting;

pub use children::{Child, ChildOutcome};
pub use waiting::{Ask, AskOutcome, DEFAULT_ASK_TIMEOUT};

/// A task's declaration as an agent reports it (name, description, input and output schemas).
pub type TaskSpec = TaskDecl;
/// A tool's declaration as an agent reports it (name, description, scope, schemas).
pub type ToolSpec = ToolDecl;

/// The trait every agent implements. Object-safe: the platform holds `Arc<dyn AgentBase>`.
///
/// `#[derive(Agent)]` together with `#[capecontrol::agent_impl]` on the impl block write this
/// impl for you; a hand-written impl works the same way.
#[async_trait]
pub trait AgentBase: Send + Sync + 'static {
    /// The agent's manifest, including its task and tool declarations.
    fn manifest(&self) -> Manifest;

    /// The agent's tasks with their input and output schemas.
    fn task_specs(&self) -> Vec<TaskSpec> {
        self.manifest().tasks
    }

    /// The agent's tools with their scopes and schemas.
    fn tool_specs(&self) -> Vec<ToolSpec> {
        self.manifest().tool_specs
    }

    /// Runs task `name` on a JSON input. An unknown name is [`Error::NotFound`]; an input that
    /// does not fit the task's input type is [`Error::Validation`] with the field's pointer.
    async fn run_task(&self, name: &str, input: Value, cx: &TaskContext) -> Result<Value>;

    /// Calls tool `name` on a JSON input (as an LLM tool call would).
    async fn call_tool(&self, name: &str, input: Value, cx: &ToolContext) -> Result<Value>;
}

/// The manifest metadata of an agent type: everything but its tasks and tools.
///
/// `#[derive(Agent)]` implements it from the `#[agent(...)]` attribute; `#[agent_impl]` builds
/// the [`AgentBase`] impl on it, adding the `tools`, `tasks` and `tool_specs` it finds in the
/// impl block. Implement it by hand to compute metadata at run time.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no agent metadata",
    label = "`{Self}` needs `#[derive(Agent)]`",
    note = "add `#[derive(Agent)]` and `#[agent(name = \"...\", version = \"...\")]` to the struct, or implement `AgentMetadata` by hand"
)]
pub trait AgentMetadata {
    /// The scopes the agent declares, when known at compile time (`#[derive(Agent)]` sets
    /// them): `#[agent_impl]` then checks while compiling that each tool's scope is covered by
    /// one of them. `None`, the default, skips that check.
    const DECLARED_SCOPES: Option<&'static [&'static str]> = None;

    /// The agent's `config.timeout` in seconds, when known at compile time (`#[derive(Agent)]`
    /// sets it): `#[agent_impl]` then checks while compiling that no `#[task(timeout = ..)]`
    /// exceeds it. `None`, the default, skips that check.
    const DECLARED_TIMEOUT: Option<u32> = None;

    /// The manifest without tasks and tools.
    fn metadata() -> Manifest;
}

/// One journaled step of a task: a `runs` row (one per task and step number).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's position in the task, from 1.
    pub step: u32,
    /// The step's name as given to [`TaskContext::step`].
    pub name: String,
    /// Its status.
    pub status: RunStatus,
    /// The step's JSON result, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// A tool call as seen by the platform (for events and audit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The tool's name.
    pub tool: String,
    /// The scope the tool needs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Whether the installation's grants allowed the call.
    pub allowed: bool,
    /// The call was reported by an agent running out of the host's sight (a container): the
    /// host did not check it, so it is audited as `tool.reported`, not `tool.called`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reported: bool,
}

/// What a running task reports to the platform: the step journal, tool calls, logs.
///
/// The orchestrator implements it over the store and the event bus; [`MemoryJournal`] is a
/// stand-alone implementation for tests and for running an agent without a platform.
#[async_trait]
pub trait TaskHost: Send + Sync {
    /// A step starts (an event; an implementation need not persist it).
    async fn step_started(&self, step: u32, name: &str) -> Result<()>;
    /// A step completed with `output`: this is the durable journal write.
    async fn step_completed(&self, step: u32, name: &str, output: &Value) -> Result<()>;
    /// A step failed.
    async fn step_failed(&self, step: u32, name: &str, error: &Error) -> Result<()>;
    /// A tool was called (allowed or denied).
    async fn tool_called(&self, call: &ToolCall) -> Result<()>;
    /// A log line from the agent.
    fn log(&self, message: &str) {
        tracing::info!(target: "capecontrol::agent", "{message}");
    }
    /// The task suspends durably on `wait` (see [`TaskContext::ask_user`] and
    /// [`TaskContext::sleep`]): a host that can wait ends the attempt and stores the wait, the
    /// default refuses (a host without a store, such as [`MemoryJournal`], cannot wait).
    async fn suspend(&self, wait: crate::store::Wait) -> Result<()> {
        Err(Error::resource(format!(
            "step `{}` waits durably, which needs a platform (this host cannot wait)",
            wait.name
        )))
    }
    /// Submits task `task` of agent `agent` on `input` as a child of the running task, from
    /// its journal step `step` (see [`TaskContext::spawn`]), and returns the child's id. A
    /// host that can submit does so as the task's principal, idempotently per (task, step), so
    /// that a replay of the step returns the same child; the default refuses (a host without a
    /// platform, such as [`MemoryJournal`], cannot submit).
    async fn spawn_child(&self, step: u32, agent: &str, task: &str, input: Value) -> Result<Uuid> {
        let _ = (step, input);
        Err(Error::resource(format!(
            "spawning a child task (`{agent}`/`{task}`) needs a platform (this host cannot submit)"
        )))
    }
}

/// Identity and grants shared by task and tool contexts.
#[derive(Debug, Clone)]
struct Shared {
    task_id: Uuid,
    attempt: u32,
    identity: Identity,
    granted: Vec<Scope>,
    settings: Value,
    /// How long `ask_user` waits unless the question says otherwise.
    ask_timeout: Duration,
}

/// The task's agent, version, `traceparent` and principal: set one by one, or read from the
/// claimed task's record, shared with the store and the attempt (a platform's attempts: nothing
/// copied per attempt).
#[derive(Debug, Clone)]
enum Identity {
    Fields {
        agent_id: String,
        version: String,
        traceparent: Option<String>,
        principal: Principal,
    },
    Record(Arc<crate::store::TaskRecord>),
}

impl Identity {
    fn agent_id(&self) -> &str {
        match self {
            Self::Fields { agent_id, .. } => agent_id,
            Self::Record(r) => &r.agent_id,
        }
    }

    fn version(&self) -> &str {
        match self {
            Self::Fields { version, .. } => version,
            Self::Record(r) => &r.version,
        }
    }

    fn traceparent(&self) -> Option<&str> {
        match self {
            Self::Fields { traceparent, .. } => traceparent.as_deref(),
            Self::Record(r) => r.traceparent.as_deref(),
        }
    }

    fn principal(&self) -> &Principal {
        match self {
            Self::Fields { principal, .. } => principal,
            Self::Record(r) => &r.principal,
        }
    }

    /// The fields, to set one (copied out of the record first if there is one).
    fn fields(
        &mut self,
    ) -> (
        &mut String,
        &mut String,
        &mut Option<String>,
        &mut Principal,
    ) {
        match self {
            Self::Fields {
                agent_id,
                version,
                traceparent,
                principal,
            } => (agent_id, version, traceparent, principal),
            Self::Record(r) => {
                *self = Self::Fields {
                    agent_id: r.agent_id.clone(),
                    version: r.version.clone(),
                    traceparent: r.traceparent.clone(),
                    principal: r.principal.clone(),
                };
                self.fields()
            }
        }
    }
}

/// What a task receives: its identity, the principal, the installation's grants and settings,
/// the step journal and a cancellation signal.
pub struct TaskContext {
    shared: Arc<Shared>,
    host: Arc<dyn TaskHost>,
    completed: BTreeMap<u32, StepRecord>,
    next_step: AtomicU32,
    cancel: CancellationToken,
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("task_id", &self.shared.task_id)
            .field("attempt", &self.shared.attempt)
            .field("agent_id", &self.shared.identity.agent_id())
            .field("completed_steps", &self.completed.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`TaskContext`].
#[derive(Debug)]
pub struct TaskContextBuilder {
    shared: Shared,
    completed: Vec<StepRecord>,
    /// `None`: a token of its own, made by `build` (not made here only to be replaced).
    cancel: Option<CancellationToken>,
}

impl TaskContextBuilder {
    /// The attempt number, from 1.
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.shared.attempt = attempt;
        self
    }
    /// The claimed task's record: the context's task id, attempt, agent, version,
    /// `traceparent` and principal are the record's, shared rather than copied (a setter
    /// called after this one overrides its field). A platform's attempts build their context so.
    pub fn task(mut self, task: Arc<crate::store::TaskRecord>) -> Self {
        self.shared.task_id = task.id;
        self.shared.attempt = task.attempts;
        self.shared.identity = Identity::Record(task);
        self
    }
    /// The principal that submitted the task.
    pub fn principal(mut self, principal: Principal) -> Self {
        *self.shared.identity.fields().3 = principal;
        self
    }
    /// The agent's id.
    pub fn agent_id(mut self, agent_id: impl Into<String>) -> Self {
        *self.shared.identity.fields().0 = agent_id.into();
        self
    }
    /// The agent version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        *self.shared.identity.fields().1 = version.into();
        self
    }
    /// How long [`TaskContext::ask_user`] waits for an answer unless the question sets its own
    /// timeout: the manifest's `config.ask_timeout` on a platform, else
    /// [`DEFAULT_ASK_TIMEOUT`].
    pub fn ask_timeout(mut self, timeout: Duration) -> Self {
        self.shared.ask_timeout = timeout;
        self
    }
    /// The W3C `traceparent` the task was submitted under (see [`crate::trace`]).
    pub fn traceparent(mut self, traceparent: Option<String>) -> Self {
        *self.shared.identity.fields().2 = traceparent;
        self
    }
    /// The scopes the installation grants the agent.
    pub fn granted(mut self, granted: Vec<Scope>) -> Self {
        self.shared.granted = granted;
        self
    }
    /// The installation's settings (secrets included; never log them).
    pub fn settings(mut self, settings: Value) -> Self {
        self.shared.settings = settings;
        self
    }
    /// Steps already journaled (for a replay).
    pub fn completed_steps(mut self, steps: Vec<StepRecord>) -> Self {
        self.completed = steps;
        self
    }
    /// The cancellation signal.
    pub fn cancellation(mut self, cancel: CancellationToken) -> Self {
        self.cancel = Some(cancel);
        self
    }
    /// Finishes the context, reporting to `host`.
    pub fn build(self, host: Arc<dyn TaskHost>) -> TaskContext {
        let completed: BTreeMap<u32, StepRecord> = self
            .completed
            .into_iter()
            .filter(|r| r.status == RunStatus::Completed)
            .map(|r| (r.step, r))
            .collect();
        TaskContext {
            shared: Arc::new(self.shared),
            host,
            completed,
            next_step: AtomicU32::new(1),
            cancel: self.cancel.unwrap_or_default(),
        }
    }
}

impl TaskContext {
    /// Starts building a context for task `task_id`.
    pub fn builder(task_id: Uuid) -> TaskContextBuilder {
        TaskContextBuilder {
            shared: Shared {
                task_id,
                attempt: 1,
                identity: Identity::Fields {
                    agent_id: String::new(),
                    version: String::new(),
                    traceparent: None,
                    principal: Principal::default(),
                },
                granted: Vec::new(),
                settings: Value::Object(Default::default()),
                ask_timeout: DEFAULT_ASK_TIMEOUT,
            },
            completed: Vec::new(),
            cancel: None,
        }
    }

    /// Starts building a context for a new task run outside a platform (tests, examples,
    /// a CLI): a fresh task id, no grants until [`TaskContextBuilder::granted`].
    pub fn local() -> TaskContextBuilder {
        Self::builder(Uuid::now_v7())
    }

    /// The task's id.
    pub fn task_id(&self) -> Uuid {
        self.shared.task_id
    }
    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.shared.attempt
    }
    /// The agent's id.
    pub fn agent_id(&self) -> &str {
        self.shared.identity.agent_id()
    }
    /// The principal that submitted the task.
    pub fn principal(&self) -> &Principal {
        self.shared.identity.principal()
    }
    /// The installation's settings (secrets included: never log them).
    pub fn settings(&self) -> &Value {
        &self.shared.settings
    }
    /// The scopes the installation grants.
    pub fn granted(&self) -> &[Scope] {
        &self.shared.granted
    }
    /// A signal that fires when the task is cancelled or its attempt must stop.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }
    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
    /// The host the context reports to.
    pub fn host(&self) -> &Arc<dyn TaskHost> {
        &self.host
    }
    /// Steps journaled before this attempt started, by position.
    pub fn journaled_steps(&self) -> impl Iterator<Item = &StepRecord> {
        self.completed.values()
    }

    /// The agent version (empty outside a platform unless set).
    pub fn version(&self) -> &str {
        self.shared.identity.version()
    }

    /// The W3C `traceparent` of the request that submitted the task, when it had one.
    pub fn traceparent(&self) -> Option<&str> {
        self.shared.identity.traceparent()
    }

    /// A tool context for calling this agent's tools from the task.
    pub fn tool(&self) -> ToolContext {
        ToolContext {
            shared: Arc::clone(&self.shared),
            host: Arc::clone(&self.host),
        }
    }

    /// Writes a log line through the host.
    pub fn log(&self, message: &str) {
        self.host.log(message);
    }

    /// Runs `fut` as durable step `name` and journals its result.
    ///
    /// Steps are numbered in the order `step` is called (the number is taken at the call, not
    /// at the first poll). On a replay, a step whose number the journal holds as completed
    /// returns the journaled value and `fut` is dropped unpolled. A journaled step of another
    /// name at the same position is an agent error (the task's code changed between attempts).
    pub fn step<T, E, F>(&self, name: &str, fut: F) -> impl Future<Output = Result<T>> + Send
    where
        T: Serialize + DeserializeOwned + Send,
        E: Into<Error>,
        F: Future<Output = std::result::Result<T, E>> + Send,
    {
        let step = self.next_step.fetch_add(1, Ordering::SeqCst);
        let name = name.to_owned();
        // A child of the span current at the call (the attempt's, on a platform).
        let span = tracing::info_span!(
            "step",
            task_id = %self.shared.task_id,
            agent = %self.shared.identity.agent_id(),
            version = %self.shared.identity.version(),
            attempt = self.shared.attempt,
            step,
            name = %name,
        );
        tracing::Instrument::instrument(
            async move {
                if let Some(record) = self.completed.get(&step) {
                    if record.name != name {
                        return Err(Error::agent(format!(
                            "journal mismatch at step {step}: journaled `{}`, code runs `{name}`",
                            record.name
                        )));
                    }
                    let value = record.output.clone().unwrap_or(Value::Null);
                    return serde_json::from_value(value).map_err(|e| {
                        Error::agent(format!(
                            "journaled result of step `{name}` does not decode: {e}"
                        ))
                    });
                }
                if self.cancel.is_cancelled() {
                    return Err(Error::conflict("task cancelled"));
                }
                self.host.step_started(step, &name).await?;
                match fut.await.map_err(Into::into) {
                    Ok(value) => {
                        let json = serde_json::to_value(&value).map_err(|e| {
                            Error::agent(format!("result of step `{name}` does not serialize: {e}"))
                        })?;
                        if crate::store::nests_too_deep(&json) {
                            return Err(Error::validation(
                                format!("the result of step `{name}` is out of bounds"),
                                vec![crate::error::FieldError::new(
                                    "/output",
                                    format!(
                                        "is nested deeper than {} levels",
                                        crate::store::MAX_VALUE_DEPTH
                                    ),
                                )],
                            ));
                        }
                        self.host.step_completed(step, &name, &json).await?;
                        Ok(value)
                    }
                    Err(err) => {
                        self.host.step_failed(step, &name, &err).await?;
                        Err(err)
                    }
                }
            },
            span,
        )
    }
}

/// What a tool receives: the task's identity, the installation's grants and settings.
#[derive(Clone)]
pub struct ToolContext {
    shared: Arc<Shared>,
    host: Arc<dyn TaskHost>,
}

impl std::fmt::Debug for ToolContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolContext")
            .field("task_id", &self.shared.task_id)
            .field("agent_id", &self.shared.identity.agent_id())
            .finish_non_exhaustive()
    }
}

impl ToolContext {
    /// The task's id.
    pub fn task_id(&self) -> Uuid {
        self.shared.task_id
    }
    /// The agent's id.
    pub fn agent_id(&self) -> &str {
        self.shared.identity.agent_id()
    }
    /// The principal that submitted the task.
    pub fn principal(&self) -> &Principal {
        self.shared.identity.principal()
    }
    /// The installation's settings (secrets included: never log them).
    pub fn settings(&self) -> &Value {
        &self.shared.settings
    }
    /// The scopes the installation grants.
    pub fn granted(&self) -> &[Scope] {
        &self.shared.granted
    }

    /// The span of a call of `tool`: a child of the current span (a step's or the attempt's),
    /// with the task id, agent, version and attempt. Generated tool methods run in it.
    pub fn tool_span(&self, tool: &str) -> tracing::Span {
        tracing::info_span!(
            "tool_call",
            task_id = %self.shared.task_id,
            agent = %self.shared.identity.agent_id(),
            version = %self.shared.identity.version(),
            attempt = self.shared.attempt,
            tool = %tool,
        )
    }

    /// Checks that the installation grants `scope` for calling `tool`, and reports the call
    /// (allowed or denied) to the host. Generated tool methods call this first.
    pub async fn authorize(&self, tool: &str, scope: Option<&str>) -> Result<()> {
        let decision = match scope {
            None => Ok(()),
            Some(s) => match s.parse::<Scope>() {
                Ok(required) => {
                    if self.shared.granted.iter().any(|g| g.covers(&required)) {
                        Ok(())
                    } else {
                        Err(Error::permission([required.to_string()]))
                    }
                }
                Err(e) => Err(Error::agent(format!(
                    "tool `{tool}` declares a bad scope: {e}"
                ))),
            },
        };
        self.host
            .tool_called(&ToolCall {
                tool: tool.to_owned(),
                scope: scope.map(str::to_owned),
                allowed: decision.is_ok(),
                reported: false,
            })
            .await?;
        decision
    }
}

/// A [`TaskHost`] that keeps the journal and the tool calls in memory: for tests, and for
/// running an agent without a platform.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use capecontrol_core::agent::{MemoryJournal, TaskContext};
/// let journal = Arc::new(MemoryJournal::default());
/// let cx = TaskContext::builder(uuid::Uuid::new_v4()).build(journal.clone());
/// let n: u32 = cx.step("count", async { Ok::<_, capecontrol_core::Error>(41 + 1) }).await.unwrap();
/// assert_eq!(n, 42);
/// assert_eq!(journal.steps()[0].output, Some(serde_json::json!(42)));
/// # });
/// ```
#[derive(Debug, Default)]
pub struct MemoryJournal {
    steps: std::sync::Mutex<Vec<StepRecord>>,
    tool_calls: std::sync::Mutex<Vec<ToolCall>>,
}

impl MemoryJournal {
    /// The journaled steps, in the order they were reported.
    pub fn steps(&self) -> Vec<StepRecord> {
        self.steps.lock().map(|s| s.clone()).unwrap_or_default()
    }
    /// The tool calls reported.
    pub fn tool_calls(&self) -> Vec<ToolCall> {
        self.tool_calls
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
    /// The completed steps, to seed a replay.
    pub fn completed_steps(&self) -> Vec<StepRecord> {
        self.steps()
            .into_iter()
            .filter(|s| s.status == RunStatus::Completed)
            .collect()
    }

    fn upsert(&self, record: StepRecord) {
        if let Ok(mut steps) = self.steps.lock() {
            match steps.iter_mut().find(|s| s.step == record.step) {
                Some(existing) => {
                    let started_at = existing.started_at;
                    *existing = record;
                    existing.started_at = existing.started_at.or(started_at);
                }
                None => steps.push(record),
            }
        }
    }
}

#[async_trait]
impl TaskHost for MemoryJournal {
    async fn step_started(&self, step: u32, name: &str) -> Result<()> {
        self.upsert(StepRecord {
            step,
            name: name.to_owned(),
            status: RunStatus::Running,
            output: None,
            error: None,
            started_at: Some(Utc::now()),
            finished_at: None,
        });
        Ok(())
    }
    async fn step_completed(&self, step: u32, name: &str, output: &Value) -> Result<()> {
        self.upsert(StepRecord {
            step,
            name: name.to_owned(),
            status: RunStatus::Completed,
            output: Some(output.clone()),
            error: None,
            started_at: None,
            finished_at: Some(Utc::now()),
        });
        Ok(())
    }
    async fn step_failed(&self, step: u32, name: &str, error: &Error) -> Result<()> {
        self.upsert(StepRecord {
            step,
            name: name.to_owned(),
            status: RunStatus::Failed,
            output: None,
            error: Some(error.clone()),
            started_at: None,
            finished_at: Some(Utc::now()),
        });
        Ok(())
    }
    async fn tool_called(&self, call: &ToolCall) -> Result<()> {
        if let Ok(mut calls) = self.tool_calls.lock() {
            calls.push(call.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[tokio::test]
    async fn replay_skips_completed_steps() {
        let journal = Arc::new(MemoryJournal::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let task = Uuid::new_v4();
        {
            let cx = TaskContext::builder(task).build(journal.clone());
            let r = runs.clone();
            let a: u32 = cx
                .step("a", async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Error>(1)
                })
                .await
                .unwrap();
            assert_eq!(a, 1);
            let failed: Result<u32> = cx.step("b", async { Err(Error::agent("crash")) }).await;
            assert!(failed.is_err());
        }
        let cx = TaskContext::builder(task)
            .attempt(2)
            .completed_steps(journal.completed_steps())
            .build(journal.clone());
        let r = runs.clone();
        let a: u32 = cx
            .step("a", async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(99)
            })
            .await
            .unwrap();
        assert_eq!(a, 1, "the journaled value comes back");
        let b: u32 = cx.step("b", async { Ok::<_, Error>(2) }).await.unwrap();
        assert_eq!(b, 2);
        assert_eq!(runs.load(Ordering::SeqCst), 1, "step a ran once");
        let steps = journal.steps();
        assert_eq!(steps.len(), 2);
        assert!(steps.iter().all(|s| s.status == RunStatus::Completed));
    }

    #[tokio::test]
    async fn renamed_step_is_a_journal_mismatch() {
        let journal = Arc::new(MemoryJournal::default());
        let task = Uuid::new_v4();
        let cx = TaskContext::builder(task).build(journal.clone());
        let _: u32 = cx.step("a", async { Ok::<_, Error>(1) }).await.unwrap();
        let cx = TaskContext::builder(task)
            .completed_steps(journal.completed_steps())
            .build(journal.clone());
        let err = cx
            .step("other", async { Ok::<_, Error>(1u32) })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("journal mismatch"), "{err}");
    }

    #[tokio::test]
    async fn authorize_checks_grants_and_reports_the_call() {
        let journal = Arc::new(MemoryJournal::default());
        let cx = TaskContext::builder(Uuid::new_v4())
            .granted(vec!["finance:*".parse().unwrap()])
            .build(journal.clone());
        let tool = cx.tool();
        tool.authorize("ingest", Some("finance:read"))
            .await
            .unwrap();
        let err = tool
            .authorize("pay", Some("payments:manage"))
            .await
            .unwrap_err();
        assert_eq!(err.missing_scopes(), ["payments:manage"]);
        let calls = journal.tool_calls();
        assert_eq!(calls.len(), 2);
        assert!(calls[0].allowed && !calls[1].allowed);
    }
}
