//! The `Store` port: agents, versions, installations, tasks (the queue), runs (the step
//! journal), task events and audit events — the five original tables (agents, agent_versions, tasks, runs, audit_events) plus installations and
//! task events.
//!
//! The port is split into small object-safe traits, as sqlx and apalis split capabilities:
//! [`RegistryStore`], [`QueueStore`], [`AuditStore`], [`KeyStore`], [`RatingStore`] and
//! [`WaitStore`] (durable waits, see its module); [`Store`] is all six. Backends:
//! [`memory::MemoryStore`] (the embedded default) here and `PostgresStore` in
//! `capecontrol-store`. Both pass the same conformance suite.
//!
//! # Queue semantics
//!
//! - [`QueueStore::enqueue`] inserts a `queued` task with a priority (higher first), a run-at
//!   time and an optional idempotency key (unique per user: a second enqueue with the same key
//!   returns the first task, `created = false`).
//! - [`QueueStore::claim`] takes up to `limit` due tasks, by priority then age, sets them
//!   `running` under a [`Lease`] that expires at `now + lease` (the backend's clock), and never
//!   exceeds a task's `concurrency_limit` counted over all running tasks of the same agent.
//!   Claimers never get the same task (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
//! - Every write by a worker ([`QueueStore::heartbeat`], [`QueueStore::journal`],
//!   [`QueueStore::finish`], [`QueueStore::release`]) is *fenced* by the lease: if the lease was
//!   lost (expired and reclaimed, or the task was finished by someone else), the call returns
//!   [`Error::Conflict`] and changes nothing.
//! - [`QueueStore::reclaim_expired`] puts tasks whose lease expired back to `queued` (through
//!   `failed → queued`, the task state machine's retry edge), or fails them when no attempt is left; it
//!   writes a `retrying` or `failed` event and a `task.retrying` or `task.failed` audit event
//!   (`reason: "lease_expired"`, the attempt and the worker).
//! - [`QueueStore::release`] puts a running task back as `queued` without counting the attempt
//!   (a `queued` event, a `task.released` audit event).
//! - [`QueueStore::cancel`] cancels a queued (or waiting) task at once; for a running task it
//!   sets a flag that the holder of the lease learns from its next heartbeat. A task whose
//!   cancellation was requested is cancelled (a `cancelled` event, a `task.cancelled` audit
//!   event), never requeued, when it is released or reclaimed. The cancel cascades, in the same
//!   transaction, to every descendant that is not final (children, their children, …: tasks
//!   linked by [`NewTask::parent_id`]), each with its own event and audit row (payload
//!   `cascade_from`: the cancelled ancestor).
//!
//! # Events and audit
//!
//! Each state change of a task writes one [`TaskEvent`] and one audit event *in the same
//! transaction* as the change. Event sequence numbers are per task and gap-free: a worker holding
//! a lease numbers the events it reports (starting after [`Claimed::last_seq`]); the store numbers
//! the lifecycle events it writes itself after those. Committed events are published to
//! [`QueueStore::subscribe`]rs; [`QueueStore::publish`] sends a not-yet-persisted event live (a
//! step that started or completed), which is persisted later with the same number by the next
//! fenced write.
//!
//! # Step rows
//!
//! A step row (the `runs` table) is written by a fenced write: [`QueueStore::journal`] (one
//! row), [`QueueStore::finish`] and [`QueueStore::release`] (any number, in the same transaction
//! as the outcome — one statement on PostgreSQL). The platform's worker defers a completed
//! step's row and event to the next durable write of the same attempt: the start of the next
//! step (before it runs, so a completed step is never run again after a crash once a later step
//! began), a tool call's journal write, or the finish. A 1-step task thus commits once while
//! running; the last step of an attempt that dies before its finish is run again.
//! Extra audit events handed to an enqueue, a journal write or a finish are about the task:
//! their `task_id` and `agent_id` default to the task's; an enqueue writes them before its
//! `task.queued` event.
//!
//! # Time
//!
//! Timestamps are kept to the microsecond (PostgreSQL's resolution): a store truncates finer
//! ones it is given (run-at, step and event times, record times) and reads its own clock in
//! microseconds, so that what a write returns, what is read back and what subscribers see are
//! equal. [`RegistryStore::upsert_installation`] keeps the `created_at` of the installation it
//! replaces and sets `updated_at` to the store's clock.

pub mod memory;
mod rating;
pub mod triggers;
mod wait;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::agent::StepRecord;
use crate::error::{Error, FieldError, Result};
use crate::events::{TaskEvent, TriggerSource};
use crate::policy::Principal;
use crate::state::{AgentStatus, TaskStatus, VersionStatus};

pub use rating::{MAX_SCORE, MIN_SCORE, RatingStore, RatingSummary, check_rating, check_score};
pub use triggers::TriggerStore;
pub use wait::{Suspend, Wait, WaitFor, WaitStore, Wake};

/// A registered agent (the `agents` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentRecord {
    /// Stable identifier (the slug, unless given).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unique URL-safe name derived from `name`.
    pub slug: String,
    /// What the agent does.
    pub description: Option<String>,
    /// Marketplace category (`domain-specific`).
    pub category: Option<String>,
    /// Capabilities (the tools and tasks of the current manifest), as JSON.
    pub capabilities: Option<Value>,
    /// The policy scopes of the current manifest.
    pub policy_scopes: Vec<String>,
    /// The current manifest.
    pub manifest: Option<Value>,
    /// Lifecycle status.
    pub status: AgentStatus,
    /// The user that created it: with admins, the only one who may manage it (`None`: created
    /// before owners were recorded; only admins may manage it). Never changed by an update.
    #[serde(default)]
    pub owner: Option<String>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last updated at (set by the store on every update).
    pub updated_at: DateTime<Utc>,
}

/// A partial update of an agent (PATCH semantics: `None` leaves a field as it is).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentPatch {
    /// New display name (the slug does not change).
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New category.
    pub category: Option<String>,
    /// New capabilities.
    pub capabilities: Option<Value>,
    /// New policy scopes.
    pub policy_scopes: Option<Vec<String>>,
    /// New current manifest.
    pub manifest: Option<Value>,
    /// New status (checked against the agent state machine by the caller).
    pub status: Option<AgentStatus>,
}

/// A version of an agent (the `agent_versions` table, plus a changelog).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionRecord {
    /// Identifier.
    pub id: Uuid,
    /// The agent.
    pub agent_id: String,
    /// SemVer string, equal to `manifest.version`.
    pub version: String,
    /// The manifest of this version.
    pub manifest: Value,
    /// Lifecycle status.
    pub status: VersionStatus,
    /// What changed, for the marketplace's version history.
    pub changelog: Option<String>,
    /// When it was published.
    pub published_at: Option<DateTime<Utc>>,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

/// An agent installed for a principal (user), with the scopes granted and the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallationRecord {
    /// Identifier.
    pub id: Uuid,
    /// The agent.
    pub agent_id: String,
    /// The user it is installed for (one installation per agent and user).
    pub user_id: String,
    /// The installed version.
    pub version: String,
    /// Scopes granted to the agent.
    pub granted_scopes: Vec<String>,
    /// Settings, validated against the manifest's `ui.settings_schema`. Secrets included: never
    /// list, log or audit this field unredacted.
    pub settings: Value,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last updated at.
    pub updated_at: DateTime<Utc>,
}

/// Filters of [`RegistryStore::list_agents`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentFilter {
    /// Only agents of this status.
    pub status: Option<AgentStatus>,
    /// Only agents of this category.
    pub category: Option<String>,
}

/// Sort order of the catalog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogSort {
    /// By name, A to Z.
    #[default]
    Name,
    /// Most recently published first.
    RecentlyPublished,
    /// Most recently updated first.
    RecentlyUpdated,
}

/// A marketplace query: published agents only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogQuery {
    /// Only this category (`domain-specific`).
    pub category: Option<String>,
    /// Only this placement (`dashboard`).
    pub placement: Option<String>,
    /// Case-insensitive text matched against name and description.
    pub text: Option<String>,
    /// Sort order.
    pub sort: CatalogSort,
    /// Entries to skip.
    pub offset: usize,
    /// Entries to return at most (1..=100).
    pub limit: usize,
}

impl Default for CatalogQuery {
    fn default() -> Self {
        Self {
            category: None,
            placement: None,
            text: None,
            sort: CatalogSort::default(),
            offset: 0,
            limit: 20,
        }
    }
}

/// One entry of the marketplace: an agent and its published version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CatalogEntry {
    /// The agent.
    pub agent: AgentRecord,
    /// Its published version.
    pub version: VersionRecord,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// How many items match in all.
    pub total: usize,
}

/// Agents, versions and installations.
#[async_trait]
pub trait RegistryStore: Send + Sync {
    /// Inserts an agent; a duplicate id or slug is [`Error::Conflict`].
    async fn insert_agent(&self, agent: AgentRecord) -> Result<AgentRecord>;
    /// Applies a partial update; sets `updated_at`. Unknown agent → not-found.
    async fn update_agent(&self, id: &str, patch: AgentPatch) -> Result<AgentRecord>;
    /// The agent with this id or slug.
    async fn get_agent(&self, id_or_slug: &str) -> Result<AgentRecord>;
    /// Agents matching `filter`, by name.
    async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<AgentRecord>>;

    /// Inserts a version; a duplicate (agent, version) is [`Error::Conflict`].
    async fn insert_version(&self, version: VersionRecord) -> Result<VersionRecord>;
    /// One version of an agent.
    async fn get_version(&self, agent_id: &str, version: &str) -> Result<VersionRecord>;
    /// The status of one version of an agent (unknown → not-found, as
    /// [`get_version`](Self::get_version)): what a worker checks at each attempt. The default
    /// reads the whole version; a store may answer without copying its manifest.
    async fn version_status(&self, agent_id: &str, version: &str) -> Result<VersionStatus> {
        self.get_version(agent_id, version).await.map(|v| v.status)
    }
    /// All versions of an agent, oldest first.
    async fn list_versions(&self, agent_id: &str) -> Result<Vec<VersionRecord>>;
    /// Publishes `version` (it must be `draft`) and archives the previously published version,
    /// atomically; sets the agent `published` with the version's manifest. Returns the
    /// published version and the archived one.
    async fn publish_version(
        &self,
        agent_id: &str,
        version: &str,
    ) -> Result<(VersionRecord, Option<VersionRecord>)>;
    /// Moves a version from `from` to `to` if it is in `from` (else conflict).
    async fn set_version_status(
        &self,
        agent_id: &str,
        version: &str,
        from: VersionStatus,
        to: VersionStatus,
    ) -> Result<VersionRecord>;
    /// Published agents for the marketplace.
    async fn catalog(&self, query: &CatalogQuery) -> Result<Page<CatalogEntry>>;

    /// Inserts or replaces the installation of (agent, user).
    async fn upsert_installation(
        &self,
        installation: InstallationRecord,
    ) -> Result<InstallationRecord>;
    /// The installation of `agent_id` for `user_id`.
    async fn get_installation(&self, agent_id: &str, user_id: &str) -> Result<InstallationRecord>;
    /// The installations of a user.
    async fn list_installations(&self, user_id: &str) -> Result<Vec<InstallationRecord>>;
    /// Removes an installation; not installed → not-found.
    async fn delete_installation(&self, agent_id: &str, user_id: &str) -> Result<()>;
}

/// A task to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    /// The task's id (chosen by the caller, so that an enqueue inside the caller's transaction
    /// can be referred to).
    pub id: Uuid,
    /// The agent.
    pub agent_id: String,
    /// The agent version to run.
    pub version: String,
    /// The task's name within the agent (stored in `goal`).
    pub task: String,
    /// The JSON input.
    pub input: Value,
    /// Who submitted it (its `user_id` is the task's user).
    pub principal: Principal,
    /// Higher runs first.
    pub priority: i32,
    /// Not before this time (`None`: now).
    pub run_at: Option<DateTime<Utc>>,
    /// Submits with the same key (per user) return the same task.
    pub idempotency_key: Option<String>,
    /// Attempts in all (1 + `config.retries`).
    pub max_attempts: u32,
    /// At most this many tasks of the agent run at once (`config.concurrent_tasks`).
    pub concurrency_limit: u32,
    /// Wall-clock limit of one attempt.
    pub timeout: Duration,
    /// The W3C `traceparent` of the submitting request.
    pub traceparent: Option<String>,
    /// What started the task, when a trigger did: its `queued` event carries it
    /// ([`TaskEventKind::Queued`](crate::events::TaskEventKind::Queued)).
    pub trigger: Option<TriggerSource>,
    /// Whether the store writes the task's `policy.allowed` audit row itself: by the
    /// principal (with its address and user agent), about this task and agent, with the payload
    /// `{"task": task, "version": version}`, before `audit`'s rows and `task.queued`. The
    /// gateway sets it for every task it lets in: the store builds the row from the task's own
    /// fields (`MemoryStore` keeps it as a few shared names until it is chained) instead of
    /// taking a [`NewAuditEvent`] built, copied and freed for every submission.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub policy_allowed: bool,
    /// Extra audit events written in the same transaction (after `policy.allowed` when the
    /// store writes it): a trigger's `task.triggered`, say.
    pub audit: Vec<NewAuditEvent>,
    /// The task that spawned this one ([`TaskContext::spawn`](crate::TaskContext::spawn)):
    /// cancelling it cancels this task too. It must exist (else not-found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<Uuid>,
}

/// The longest idempotency key a task may carry, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;
/// The longest task name, in bytes.
pub const MAX_TASK_NAME_BYTES: usize = 128;
/// The longest user id of a principal, in bytes.
pub const MAX_USER_ID_BYTES: usize = 255;
/// The longest user agent a principal (and so an audit row) may carry, in bytes.
pub const MAX_USER_AGENT_BYTES: usize = 512;
/// The largest installation settings document, serialized, in bytes.
pub const MAX_SETTINGS_BYTES: usize = 64 * 1024;
/// The most tasks [`QueueStore::list_tasks`] returns: a larger `limit` is capped to it.
pub const MAX_LIST_TASKS: usize = 1000;

/// The deepest nesting of arrays and objects a stored value may have: a task's input and
/// output, a step's output, an audit row's payload. PostgreSQL keeps deeper values, but they
/// could not be read back (`serde_json` reads at most 127 levels, and the store's rows wrap a
/// value in a few more), so a deeper value is refused where it is written, and a task or an
/// audit trail never becomes unreadable.
pub const MAX_VALUE_DEPTH: usize = 100;

/// Whether `value` nests deeper than [`MAX_VALUE_DEPTH`] (counted without recursion, so a
/// hostile value cannot overflow the stack).
pub(crate) fn nests_too_deep(value: &Value) -> bool {
    crate::validate::value_depth_exceeds(value, MAX_VALUE_DEPTH)
}

/// The error at `pointer` when `value` [nests too deep](nests_too_deep).
/// (The pointer is built only then: these checks run on every enqueue and finish.)
fn too_deep(pointer: impl FnOnce() -> String, value: &Value) -> Option<FieldError> {
    nests_too_deep(value).then(|| {
        FieldError::new(
            pointer(),
            format!("is nested deeper than {MAX_VALUE_DEPTH} levels"),
        )
    })
}

/// `Err` with the errors found, if any.
fn refuse(what: &str, errors: Vec<FieldError>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::validation(what, errors))
    }
}

impl Finish {
    /// Checks the values an attempt's end would store (both stores' `finish` call it): its
    /// output, its steps' outputs and its audit payloads nest at most [`MAX_VALUE_DEPTH`] levels.
    pub fn check(&self) -> Result<()> {
        let mut errors = Vec::new();
        if let Outcome::Completed { output } = &self.outcome {
            errors.extend(too_deep(|| "/outcome/output".to_owned(), output));
        }
        steps_too_deep(&self.steps, &mut errors);
        audit_too_deep(&self.audit, &mut errors);
        refuse("the attempt's end is out of bounds", errors)
    }
}

/// Checks the steps a [`QueueStore::release`] would store (both stores call it): their outputs
/// nest at most [`MAX_VALUE_DEPTH`] levels (a validation error at `/steps/{i}/output`).
pub fn check_steps(steps: &[StepRecord]) -> Result<()> {
    let mut errors = Vec::new();
    steps_too_deep(steps, &mut errors);
    refuse("the steps are out of bounds", errors)
}

/// The errors of the step outputs of `steps` nested too deep, at `/steps/{i}/output`.
fn steps_too_deep(steps: &[StepRecord], errors: &mut Vec<FieldError>) {
    for (i, step) in steps.iter().enumerate() {
        if let Some(output) = &step.output {
            errors.extend(too_deep(|| format!("/steps/{i}/output"), output));
        }
    }
}

/// The errors of the audit payloads of `audit` nested too deep, at `/audit/{i}/payload`.
fn audit_too_deep(audit: &[NewAuditEvent], errors: &mut Vec<FieldError>) {
    for (i, a) in audit.iter().enumerate() {
        errors.extend(too_deep(|| format!("/audit/{i}/payload"), &a.payload));
    }
}

impl JournalWrite {
    /// [`Finish::check`] for a journal write (both stores' `journal` call it).
    pub fn check(&self) -> Result<()> {
        let mut errors = Vec::new();
        if let Some(output) = self.step.as_ref().and_then(|s| s.output.as_ref()) {
            errors.extend(too_deep(|| "/step/output".to_owned(), output));
        }
        audit_too_deep(&self.audit, &mut errors);
        refuse("the journal write is out of bounds", errors)
    }
}

fn too_long(pointer: &str, what: &str, max: usize) -> FieldError {
    FieldError::new(pointer, format!("{what} is longer than {max} bytes"))
}

impl NewTask {
    /// Checks the bounds of a task before it is stored (both stores' `enqueue` call it, and a
    /// gateway may call it first): the idempotency key, the task name, the principal's user id
    /// and user agent are at most [`MAX_IDEMPOTENCY_KEY_BYTES`], [`MAX_TASK_NAME_BYTES`],
    /// [`MAX_USER_ID_BYTES`] and [`MAX_USER_AGENT_BYTES`]; attempts and the concurrency limit
    /// at least 1; the input and the audit payloads nest at most [`MAX_VALUE_DEPTH`] levels.
    /// A validation error names every field at fault and never echoes its value.
    pub fn check(&self) -> Result<()> {
        let mut errors = Vec::new();
        if self
            .idempotency_key
            .as_ref()
            .is_some_and(|k| k.len() > MAX_IDEMPOTENCY_KEY_BYTES)
        {
            errors.push(too_long(
                "/idempotency_key",
                "the idempotency key",
                MAX_IDEMPOTENCY_KEY_BYTES,
            ));
        }
        if self.task.len() > MAX_TASK_NAME_BYTES {
            errors.push(too_long("/task", "the task name", MAX_TASK_NAME_BYTES));
        }
        if self.principal.user_id.len() > MAX_USER_ID_BYTES {
            errors.push(too_long(
                "/principal/user_id",
                "the user id",
                MAX_USER_ID_BYTES,
            ));
        }
        if self
            .principal
            .user_agent
            .as_ref()
            .is_some_and(|u| u.len() > MAX_USER_AGENT_BYTES)
        {
            errors.push(too_long(
                "/principal/user_agent",
                "the user agent",
                MAX_USER_AGENT_BYTES,
            ));
        }
        if self.max_attempts == 0 {
            errors.push(FieldError::new("/max_attempts", "at least one attempt"));
        }
        if self.concurrency_limit == 0 {
            errors.push(FieldError::new("/concurrency_limit", "must be at least 1"));
        }
        errors.extend(too_deep(|| "/input".to_owned(), &self.input));
        audit_too_deep(&self.audit, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::validation("the task is out of bounds", errors))
        }
    }
}

/// A task (the `tasks` table plus the queue columns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Identifier.
    pub id: Uuid,
    /// The user that submitted it.
    pub user_id: String,
    /// The agent.
    pub agent_id: String,
    /// The agent version.
    pub version: String,
    /// The task's name (the `goal` column).
    pub task: String,
    /// The input.
    pub input: Value,
    /// The output, once completed.
    pub output: Option<Value>,
    /// Status.
    pub status: TaskStatus,
    /// The principal that submitted it.
    pub principal: Principal,
    /// Priority, higher first.
    pub priority: i32,
    /// Due time.
    pub run_at: DateTime<Utc>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// Per-agent concurrency limit.
    pub concurrency_limit: u32,
    /// Wall-clock limit of one attempt.
    pub timeout: Duration,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// The worker holding the lease.
    pub lease_owner: Option<String>,
    /// When the lease expires.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Whether a cancellation was requested while running.
    pub cancel_requested: bool,
    /// The last error (message in `error_message`, the whole error here).
    pub error: Option<Error>,
    /// The last error's message (the `error_message` column).
    pub error_message: Option<String>,
    /// When the current or last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub completed_at: Option<DateTime<Utc>>,
    /// The W3C `traceparent` of the submitting request.
    pub traceparent: Option<String>,
    /// The task that spawned this one, if a task did ([`NewTask::parent_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<Uuid>,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

/// The result of [`QueueStore::enqueue`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enqueued {
    /// The task (an existing one when the idempotency key was seen before). Shared: a store
    /// that keeps its records in memory hands out the record it holds, not a copy.
    pub task: Arc<TaskRecord>,
    /// Whether this call created it.
    pub created: bool,
}

/// A claim request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// The claiming worker (node and worker id).
    pub worker: String,
    /// Tasks to claim at most.
    pub limit: usize,
    /// How long the lease lasts without a heartbeat.
    pub lease: Duration,
    /// Only tasks of these agents (`None`: any).
    pub agents: Option<Vec<String>>,
}

/// The right to write a running task: fenced by `token`, fresh on every claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The task.
    pub task_id: Uuid,
    /// The worker.
    pub owner: String,
    /// Fencing token, unique per claim.
    pub token: Uuid,
    /// Expiry on the store's clock.
    pub expires_at: DateTime<Utc>,
}

/// A claimed task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claimed {
    /// The task, now `running`, `attempts` counting this attempt (shared, as in
    /// [`Enqueued::task`]).
    pub task: Arc<TaskRecord>,
    /// The lease.
    pub lease: Lease,
    /// The steps journaled so far (for a replay).
    pub steps: Vec<StepRecord>,
    /// The task's last event number (the `started` event the claim wrote): the worker numbers
    /// its own events after it.
    pub last_seq: u64,
    /// What the attempt checks before it runs, read by the claim itself (`None`: the worker
    /// reads it with [`RegistryStore::version_status`] and
    /// [`RegistryStore::get_installation`], two more round trips per attempt).
    pub catalog: Option<ClaimedCatalog>,
}

/// The registry rows an attempt checks, read with its claim: as current as reading them right
/// after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimedCatalog {
    /// The status of the task's agent version (`None`: the version is not in the registry).
    pub version_status: Option<VersionStatus>,
    /// The installation of the task's agent for its user (`None`: not installed); shared, so
    /// that a store that keeps its records (`MemoryStore`) hands out the one it keeps.
    pub installation: Option<Arc<InstallationRecord>>,
}

/// What a heartbeat learns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The lease's new expiry.
    pub expires_at: DateTime<Utc>,
    /// Whether someone asked to cancel the task.
    pub cancel_requested: bool,
}

/// A fenced journal write: a step row, events and audit, in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JournalWrite {
    /// A step to insert or update (by task and step number).
    pub step: Option<StepRecord>,
    /// Events, numbered by the worker, to persist.
    pub events: Vec<TaskEvent>,
    /// Audit events to persist.
    pub audit: Vec<NewAuditEvent>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Completed with an output.
    Completed {
        /// The output.
        output: Value,
    },
    /// Failed; queued again at `retry_at` if given (`failed → queued`), else failed for good.
    Failed {
        /// Why.
        error: Error,
        /// When to run again (`None`: terminal).
        retry_at: Option<DateTime<Utc>>,
    },
    /// Stopped because of a cancellation.
    Cancelled,
}

/// The end of an attempt: the outcome plus step rows, events and audit not yet persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    /// How the attempt ended.
    pub outcome: Outcome,
    /// Steps to insert or update (by task and step number) in the same transaction, fenced by
    /// the same lease: a worker defers a completed step's row to its next durable write.
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// Events, numbered by the worker, to persist before the outcome's own event.
    pub events: Vec<TaskEvent>,
    /// Audit events to persist.
    pub audit: Vec<NewAuditEvent>,
}

/// Filters of [`QueueStore::list_tasks`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskFilter {
    /// Only this user's tasks.
    pub user_id: Option<String>,
    /// Only this agent's tasks.
    pub agent_id: Option<String>,
    /// Only tasks in this status.
    pub status: Option<TaskStatus>,
    /// Only the children of this task (the tasks it spawned).
    #[serde(default)]
    pub parent_id: Option<Uuid>,
    /// At most this many, newest first (`None`: 100; larger values are capped to
    /// [`MAX_LIST_TASKS`]).
    pub limit: Option<usize>,
}

impl TaskFilter {
    /// The page size: `limit` (100 when `None`), at most [`MAX_LIST_TASKS`].
    pub fn page_size(&self) -> usize {
        self.limit.unwrap_or(100).min(MAX_LIST_TASKS)
    }
}

/// The task queue, the step journal and task events.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Enqueues a task (see the module docs); writes its `queued` event and audit event.
    async fn enqueue(&self, task: NewTask) -> Result<Enqueued>;
    /// Claims due tasks under leases (see the module docs); writes `started` events.
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>>;
    /// Enqueues a task and, when a claim by `claim.worker` would take it at once, claims it in
    /// the same write: a node with a free worker slot starts a task submitted to it without a
    /// claim's round trip (and, on PostgreSQL, without the claim's commit).
    ///
    /// The task is claimed only when it is due (no `run_at` in the future), its agent is one
    /// of `claim.agents` (when given), no due task of its agent with at least its priority is
    /// queued (a claim would take that one first), and its agent runs fewer tasks than its
    /// concurrency limit (counted as a claim counts them). The claimed task has its `queued`
    /// then its `started` event and its `task.queued` then `task.started` audit rows, as an
    /// enqueue followed by a claim would have written; it is not announced as new work. An
    /// idempotent repeat (`created = false`) is never claimed; an unclaimed task is queued
    /// exactly as by [`enqueue`](QueueStore::enqueue).
    ///
    /// A store may always leave the task to a claim instead (`None`), and this default does:
    /// the enqueue alone. `PostgresStore` claims in the enqueue, which saves the claim's
    /// statement and commit, unless another claim or such enqueue of the agent holds the
    /// agent's lock at that moment; `MemoryStore` keeps the default, its claims being a lock
    /// taken once for a whole batch (claiming each submission on its own measured slower).
    async fn enqueue_claimed(
        &self,
        task: NewTask,
        claim: &ClaimRequest,
    ) -> Result<(Enqueued, Option<Claimed>)> {
        let _ = claim;
        Ok((self.enqueue(task).await?, None))
    }
    /// Extends a lease by `extend` from now; reports a requested cancellation.
    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> Result<Heartbeat>;
    /// A fenced write of a step, events and audit, in one transaction.
    async fn journal(&self, lease: &Lease, write: JournalWrite) -> Result<()>;
    /// Ends the attempt (fenced): completed, failed (maybe requeued) or cancelled. Returns the
    /// task as it now is (shared, as in [`Enqueued::task`]).
    async fn finish(&self, lease: &Lease, finish: Finish) -> Result<Arc<TaskRecord>>;
    /// Gives a running task back to the queue without counting the attempt (graceful shutdown);
    /// writes `events` and `steps` (by task and step number) in the same fenced transaction.
    async fn release(
        &self,
        lease: &Lease,
        events: Vec<TaskEvent>,
        steps: Vec<StepRecord>,
    ) -> Result<()>;
    /// Requeues (or fails, when no attempt is left) the running tasks whose lease expired on
    /// the store's clock; returns their ids.
    async fn reclaim_expired(&self) -> Result<Vec<Uuid>>;
    /// Cancels a queued or waiting task at once, or flags a running one, and its descendants
    /// that are not final the same way (see the module docs); a final task is a conflict.
    async fn cancel(&self, task_id: Uuid, by: &Principal) -> Result<TaskRecord>;
    /// One task.
    async fn get_task(&self, task_id: Uuid) -> Result<TaskRecord>;
    /// Tasks matching `filter`, newest first.
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>>;
    /// The journaled steps of a task, by step number.
    async fn steps(&self, task_id: Uuid) -> Result<Vec<StepRecord>>;
    /// The persisted events of a task with `seq > after`, in order.
    async fn events(&self, task_id: Uuid, after: u64) -> Result<Vec<TaskEvent>>;
    /// Sends an event live without persisting it (it is persisted later by a fenced write).
    async fn publish(&self, event: TaskEvent) -> Result<()>;
    /// Live events of all tasks: committed ones and published ones (a watcher deduplicates by
    /// sequence number). A `completed` event with a large output carries a reference instead
    /// ([`TaskEvent::into_live`]); its whole form is in [`Store::events`].
    fn subscribe(&self) -> broadcast::Receiver<TaskEvent>;
    /// A signal that fires when new work may be due (an enqueue, a release, a reclaim).
    fn wakeups(&self) -> broadcast::Receiver<()>;
    /// Queued tasks (the `task_queue_depth` metric).
    async fn queue_depth(&self) -> Result<u64>;
    /// Extends every lease of `leases` by `extend` from now, in one write where the store can
    /// (the heartbeat loop sends one per node and interval): for each lease, in order, what
    /// [`heartbeat`](QueueStore::heartbeat) would have answered — its new expiry and whether a
    /// cancel was requested, or the lease-lost conflict. An error of the one write (say, a
    /// lost connection) is the outer error. By default, one heartbeat per lease, each with its
    /// own result.
    async fn heartbeat_many(
        &self,
        leases: &[Lease],
        extend: Duration,
    ) -> Result<Vec<Result<Heartbeat>>> {
        let mut out = Vec::with_capacity(leases.len());
        for lease in leases {
            out.push(self.heartbeat(lease, extend).await);
        }
        Ok(out)
    }
}

/// An audit event to write.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEvent {
    /// The task concerned.
    pub task_id: Option<Uuid>,
    /// The agent concerned.
    pub agent_id: Option<String>,
    /// Who acted.
    pub user_id: Option<String>,
    /// What happened (`agent.created`, `task.queued`, `policy.denied`, …).
    pub event_type: String,
    /// Details (never secrets).
    pub payload: Value,
    /// The client's IP address, when known.
    pub ip_address: Option<std::net::IpAddr>,
    /// The client's user agent, when known.
    pub user_agent: Option<String>,
}

impl NewAuditEvent {
    /// An audit event of `event_type` by `principal` (who, IP, user agent).
    pub fn by(principal: &Principal, event_type: impl Into<String>, payload: Value) -> Self {
        Self {
            task_id: None,
            agent_id: None,
            user_id: Some(principal.user_id.clone()),
            event_type: event_type.into(),
            payload,
            ip_address: principal.ip_address,
            user_agent: principal.user_agent.clone(),
        }
    }

    /// Checks the row before it is stored (both stores' `append_audit` call it): its payload
    /// nests at most [`MAX_VALUE_DEPTH`] levels (a validation error at `/payload`).
    pub fn check(&self) -> Result<()> {
        refuse(
            "the audit event is out of bounds",
            too_deep(|| "/payload".to_owned(), &self.payload)
                .into_iter()
                .collect(),
        )
    }

    /// Sets the agent concerned.
    pub fn agent(mut self, agent_id: impl Into<String>) -> Self {
        self.agent_id = Some(agent_id.into());
        self
    }

    /// Sets the task concerned.
    pub fn task(mut self, task_id: Uuid) -> Self {
        self.task_id = Some(task_id);
        self
    }
}

/// A stored audit event (the `audit_events` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// Identifier, increasing.
    pub id: i64,
    /// The task concerned.
    pub task_id: Option<Uuid>,
    /// The agent concerned.
    pub agent_id: Option<String>,
    /// Who acted.
    pub user_id: Option<String>,
    /// What happened.
    pub event_type: String,
    /// Details.
    pub payload: Value,
    /// The client's IP address.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub ip_address: Option<std::net::IpAddr>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Position in the store's audit chain, from 1, without gaps (`0`: not chained, a row
    /// inserted past the store).
    #[serde(default)]
    pub seq: u64,
    /// The previous row's hash ([`crate::audit::GENESIS`] for the first row).
    #[serde(default)]
    pub prev_hash: String,
    /// SHA-256 of this row's canonical form ([`crate::audit::row_hash`]).
    #[serde(default)]
    pub hash: String,
}

/// The largest page [`AuditStore::list_audit`] returns: a larger `limit` is capped to it.
pub const MAX_AUDIT_PAGE: usize = 1000;

/// Filters of [`AuditStore::list_audit`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Only events of this task.
    pub task_id: Option<Uuid>,
    /// Only events of this agent.
    pub agent_id: Option<String>,
    /// Only events by this user.
    pub user_id: Option<String>,
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Only events after this chain position (`seq`): the cursor of the next page is the last
    /// event's `seq`.
    #[serde(default)]
    pub after: Option<u64>,
    /// Only events outside the chain (no `seq`: inserted past the store); the other filters
    /// still apply.
    #[serde(default)]
    pub unchained: bool,
    /// At most this many, in chain order (`None`: [`MAX_AUDIT_PAGE`]; larger values are capped
    /// to it).
    pub limit: Option<usize>,
}

impl AuditFilter {
    /// The page size: `limit`, at most [`MAX_AUDIT_PAGE`].
    pub fn page_size(&self) -> usize {
        self.limit.unwrap_or(MAX_AUDIT_PAGE).min(MAX_AUDIT_PAGE)
    }
}

/// The audit trail: a hash chain (see [`crate::audit`]).
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends one audit event at the end of the chain.
    async fn append_audit(&self, event: NewAuditEvent) -> Result<AuditEvent>;
    /// Audit events matching `filter`, in chain order (`seq`), one page of at most
    /// [`MAX_AUDIT_PAGE`].
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>>;
    /// The end of the chain as the store records it.
    async fn audit_head(&self) -> Result<crate::audit::ChainHead>;
}

/// An API key as stored (the `api_keys` table): its SHA-256 hash, never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// The key's public identifier (its prefix), used to revoke it.
    pub id: String,
    /// The hex SHA-256 of the whole key (unique).
    pub hash: String,
    /// The user the key authenticates as.
    pub user_id: String,
    /// The roles of that user.
    pub roles: Vec<String>,
    /// A label for people (`"ci"`, `"alice's laptop"`).
    pub name: String,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// When it was revoked (a revoked key authenticates nobody).
    pub revoked_at: Option<DateTime<Utc>>,
}

/// API keys (hashes only).
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Inserts a key; a duplicate id or hash is [`Error::Conflict`].
    async fn insert_key(&self, key: ApiKeyRecord) -> Result<ApiKeyRecord>;
    /// The key whose hash is `hash`, revoked or not; none → not-found.
    async fn key_by_hash(&self, hash: &str) -> Result<ApiKeyRecord>;
    /// Revokes the key `id` (revoking a revoked key keeps its first revocation time); unknown
    /// id → not-found.
    async fn revoke_key(&self, id: &str) -> Result<ApiKeyRecord>;
    /// The keys of `user_id` (`None`: all), oldest first.
    async fn list_keys(&self, user_id: Option<&str>) -> Result<Vec<ApiKeyRecord>>;
}

/// A complete store: registry, queue, audit, API keys, ratings and durable waits.
pub trait Store:
    RegistryStore
    + QueueStore
    + AuditStore
    + KeyStore
    + RatingStore
    + WaitStore
    + TriggerStore
    + Send
    + Sync
    + 'static
{
}

impl<
    T: RegistryStore
        + QueueStore
        + AuditStore
        + KeyStore
        + RatingStore
        + WaitStore
        + TriggerStore
        + Send
        + Sync
        + 'static,
> Store for T
{
}

/// The error a fenced write returns when its lease is gone.
pub fn lease_lost(task_id: Uuid) -> Error {
    Error::conflict(format!("lease on task {task_id} was lost"))
}
