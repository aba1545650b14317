//! `MemoryStore`: the in-memory store (the embedded default and the test double).
//!
//! All state sits behind one [`std::sync::Mutex`], which is never held across an `.await`: every
//! trait method locks, does its work synchronously and unlocks, so each call is one atomic
//! "transaction". Committed task events are sent to subscribers while the lock is held, so that
//! the events of one task reach a subscriber in sequence order.
//!
//! Details the module docs of [`crate::store`] leave open, decided here (and checked by the
//! conformance suite where a backend could differ):
//!
//! - A lease is held while the task is `running` with the lease's fencing token; a lease that
//!   expired but was not reclaimed yet still fences (nobody else holds the task).
//! - Events a worker hands to a fenced write must be of the lease's task and numbered without
//!   gaps (else a validation error), and continue the task's persisted sequence at
//!   `last + 1` (else a conflict); nothing is written then. The store numbers its own lifecycle
//!   event after them.
//! - [`QueueStore::release`] writes a `queued` event and a `task.released` audit event; a task
//!   whose cancellation was requested is cancelled instead of released. [`QueueStore::reclaim_expired`]
//!   likewise cancels a task whose cancellation was requested.
//! - An upserted installation keeps the `id` and `created_at` of the one it replaces.
//! - Timestamps are truncated to the microsecond, the clock's included (as PostgreSQL keeps
//!   them; see the port's docs).
//! - References are checked as the SQL schema's foreign keys do: a task, an installation or an
//!   audit event naming an unknown agent (or an audit event naming an unknown task) is
//!   not-found.
//! - Extra audit events handed to `enqueue`, `journal` or `finish` without a task or agent get
//!   the task's.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::json;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{
    AgentFilter, AgentPatch, AgentRecord, ApiKeyRecord, AuditEvent, AuditFilter, AuditStore,
    CatalogEntry, CatalogQuery, CatalogSort, ClaimRequest, Claimed, Enqueued, Finish, Heartbeat,
    InstallationRecord, JournalWrite, KeyStore, Lease, NewAuditEvent, NewTask, Outcome, Page,
    QueueStore, RegistryStore, TaskFilter, TaskRecord, VersionRecord, lease_lost,
};
use crate::agent::StepRecord;
use crate::error::{Error, Result};
use crate::events::{TaskEvent, TaskEventKind};
use crate::policy::Principal;
use crate::state::{AgentStatus, TaskStatus, VersionStatus};

mod triggers;

/// The clock of a [`MemoryStore`].
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

mod wait;

/// Capacity of the live event and wake-up channels.
const CHANNEL_CAPACITY: usize = 4096;

/// The in-memory [`Store`](super::Store): complete, concurrency-safe, not durable.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use capecontrol_core::store::{AuditStore, NewAuditEvent, memory::MemoryStore};
/// let store = MemoryStore::new();
/// let e = store.append_audit(NewAuditEvent { event_type: "hello".into(), ..Default::default() })
///     .await.unwrap();
/// assert_eq!(e.id, 1);
/// # });
/// ```
pub struct MemoryStore {
    state: Mutex<State>,
    clock: Clock,
    events: broadcast::Sender<TaskEvent>,
    wakeups: broadcast::Sender<()>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryStore")
            .field("agents", &state.agents.len())
            .field("tasks", &state.tasks.len())
            .field("audit_events", &state.audit.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Default)]
struct State {
    /// Insertion counter: the tie-breaker of every "by age" order.
    counter: u64,
    agents: BTreeMap<String, AgentRecord>,
    /// Per agent id, versions in insertion order.
    versions: HashMap<String, Vec<(u64, VersionRecord)>>,
    installations: BTreeMap<(String, String), InstallationRecord>,
    tasks: HashMap<Uuid, TaskEntry>,
    /// (user, key) → task.
    idempotency: HashMap<(String, String), Uuid>,
    audit: Vec<AuditEvent>,
    /// The end of the audit chain.
    audit_head: crate::audit::ChainHead,
    /// Ratings by task: the score and the task's (agent, version).
    ratings: HashMap<Uuid, (u8, String, String)>,
    /// Queued tasks that were due when last indexed, per agent, by priority (highest first),
    /// then age: a claim looks at the head of each agent's set, so tasks of an agent at its
    /// concurrency limit cost it nothing.
    ready: HashMap<String, BTreeSet<(Reverse<i32>, u64, Uuid)>>,
    /// Tasks in `ready`.
    ready_len: usize,
    /// Queued tasks not due yet, by due time.
    delayed: BTreeSet<(DateTime<Utc>, u64, Uuid)>,
    /// Running tasks.
    running: HashSet<Uuid>,
    /// Running tasks per agent (the concurrency limit's count).
    running_by_agent: HashMap<String, usize>,
    /// API keys by id, in insertion order of ids.
    keys: BTreeMap<(u64, String), ApiKeyRecord>,
    /// The waits of waiting tasks (see [`super::WaitStore`]).
    waits: HashMap<Uuid, super::Wait>,
    /// Schedule cursors, webhook secrets and delivery ids.
    triggers: triggers::TriggerState,
}

/// Where a task is indexed (kept in step with its status by [`State::sync`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Indexed {
    None,
    Ready(Reverse<i32>, u64),
    Delayed(DateTime<Utc>, u64),
    Running(String),
}

struct TaskEntry {
    order: u64,
    record: TaskRecord,
    token: Option<Uuid>,
    steps: BTreeMap<u32, StepRecord>,
    events: Vec<TaskEvent>,
    indexed: Indexed,
}

impl TaskEntry {
    fn last_seq(&self) -> u64 {
        self.events.last().map_or(0, |e| e.seq)
    }
}

impl State {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn append_audit(&mut self, event: NewAuditEvent, now: DateTime<Utc>) -> &AuditEvent {
        let id = i64::try_from(self.audit.len()).unwrap_or(i64::MAX - 1) + 1;
        let stored = AuditEvent {
            id,
            task_id: event.task_id,
            agent_id: event.agent_id,
            user_id: event.user_id,
            event_type: event.event_type,
            payload: event.payload,
            ip_address: event.ip_address,
            user_agent: event.user_agent,
            created_at: now,
            seq: 0,
            prev_hash: String::new(),
            hash: String::new(),
        };
        let mut stored = stored;
        self.audit_head = crate::audit::seal(&mut stored, &self.audit_head);
        self.audit.push(stored);
        &self.audit[self.audit.len() - 1]
    }

    /// Not-found unless the agent and task an audit event refers to exist (`new_task`: a task
    /// being inserted in the same call), as the foreign keys of the SQL schema require.
    fn check_audit_refs(&self, event: &NewAuditEvent, new_task: Option<Uuid>) -> Result<()> {
        if let Some(agent) = event
            .agent_id
            .as_ref()
            .filter(|a| !self.agents.contains_key(*a))
        {
            return Err(Error::not_found("agent", agent));
        }
        if let Some(task) = event
            .task_id
            .filter(|t| Some(*t) != new_task && !self.tasks.contains_key(t))
        {
            return Err(Error::not_found("task", task.to_string()));
        }
        Ok(())
    }

    fn agent_by_id_or_slug(&self, id_or_slug: &str) -> Option<&AgentRecord> {
        self.agents
            .get(id_or_slug)
            .or_else(|| self.agents.values().find(|a| a.slug == id_or_slug))
    }

    fn running_of_agent(&self, agent_id: &str) -> usize {
        self.running_by_agent.get(agent_id).copied().unwrap_or(0)
    }

    /// Brings the queue indexes in step with the task's status, due time and priority. Every
    /// operation that changes a task calls it for that task.
    fn sync(&mut self, id: Uuid, now: DateTime<Utc>) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        let r = &entry.record;
        let agent_id = r.agent_id.clone();
        let new = match r.status {
            TaskStatus::Queued if r.run_at <= now => {
                Indexed::Ready(Reverse(r.priority), entry.order)
            }
            TaskStatus::Queued => Indexed::Delayed(r.run_at, entry.order),
            TaskStatus::Running => Indexed::Running(r.agent_id.clone()),
            _ => Indexed::None,
        };
        if entry.indexed == new {
            return;
        }
        let old = std::mem::replace(&mut entry.indexed, new.clone());
        match old {
            Indexed::None => {}
            Indexed::Ready(p, o) => {
                if let Some(set) = self.ready.get_mut(&agent_id) {
                    if set.remove(&(p, o, id)) {
                        self.ready_len -= 1;
                    }
                    if set.is_empty() {
                        self.ready.remove(&agent_id);
                    }
                }
            }
            Indexed::Delayed(at, o) => {
                self.delayed.remove(&(at, o, id));
            }
            Indexed::Running(agent) => {
                self.running.remove(&id);
                if let Some(n) = self.running_by_agent.get_mut(&agent) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.running_by_agent.remove(&agent);
                    }
                }
            }
        }
        match new {
            Indexed::None => {}
            Indexed::Ready(p, o) => {
                if self.ready.entry(agent_id).or_default().insert((p, o, id)) {
                    self.ready_len += 1;
                }
            }
            Indexed::Delayed(at, o) => {
                self.delayed.insert((at, o, id));
            }
            Indexed::Running(agent) => {
                self.running.insert(id);
                *self.running_by_agent.entry(agent).or_insert(0) += 1;
            }
        }
    }

    /// Moves the delayed tasks that are due by `now` to the ready index.
    fn promote_due(&mut self, now: DateTime<Utc>) {
        while let Some(&(at, _, id)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.sync(id, now);
            // A task whose index did not change (clock moved back) must not loop forever.
            if self
                .delayed
                .first()
                .is_some_and(|&(_, _, first)| first == id)
            {
                break;
            }
        }
    }

    /// The task, if `lease` still fences it.
    fn fenced(&mut self, lease: &Lease) -> Result<&mut TaskEntry> {
        match self.tasks.get_mut(&lease.task_id) {
            Some(t)
                if t.record.status == TaskStatus::Running
                    && t.token == Some(lease.token)
                    && t.record.lease_owner.as_deref() == Some(lease.owner.as_str()) =>
            {
                Ok(t)
            }
            _ => Err(lease_lost(lease.task_id)),
        }
    }
}

/// Checks the shape of the events a worker hands to a fenced write: all of the lease's task,
/// numbered without gaps.
fn check_events(task_id: Uuid, events: &[TaskEvent]) -> Result<()> {
    let mut prev: Option<u64> = None;
    for (i, e) in events.iter().enumerate() {
        if e.task_id != task_id {
            return Err(Error::invalid_field(
                format!("/events/{i}/task_id"),
                format!("event of task {} in a write of task {task_id}", e.task_id),
            ));
        }
        if let Some(p) = prev.filter(|p| e.seq != p + 1) {
            return Err(Error::invalid_field(
                format!("/events/{i}/seq"),
                format!("events must be numbered without gaps: {} after {p}", e.seq),
            ));
        }
        prev = Some(e.seq);
    }
    Ok(())
}

/// Conflict unless `events` continue the task's persisted sequence.
fn check_continues(entry: &TaskEntry, events: &[TaskEvent]) -> Result<()> {
    match events.first() {
        Some(first) if first.seq != entry.last_seq() + 1 => Err(Error::conflict(format!(
            "events of task {} must continue at seq {}, not {}",
            entry.record.id,
            entry.last_seq() + 1,
            first.seq
        ))),
        _ => Ok(()),
    }
}

/// Appends `events` (checked by [`check_events`] and [`check_continues`]) to `entry`.
/// Inserts or replaces step rows by step number, times truncated to the microsecond.
fn put_steps(entry: &mut TaskEntry, steps: impl IntoIterator<Item = StepRecord>) {
    for mut step in steps {
        step.started_at = step.started_at.map(micros);
        step.finished_at = step.finished_at.map(micros);
        entry.steps.insert(step.step, step);
    }
}

fn persist_events(entry: &mut TaskEntry, mut events: Vec<TaskEvent>) -> Vec<TaskEvent> {
    for e in &mut events {
        e.at = micros(e.at);
    }
    entry.events.extend(events.iter().cloned());
    events
}

/// Timestamps are kept to the microsecond, as PostgreSQL keeps them (see the port's docs).
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Appends one lifecycle event written by the store.
fn lifecycle_event(entry: &mut TaskEntry, kind: TaskEventKind, now: DateTime<Utc>) -> TaskEvent {
    let e = TaskEvent {
        task_id: entry.record.id,
        seq: entry.last_seq() + 1,
        at: now,
        kind,
    };
    entry.events.push(e.clone());
    e
}

fn move_task(record: &mut TaskRecord, to: TaskStatus) -> Result<()> {
    record.status = record.status.transition(to)?;
    Ok(())
}

fn clear_lease(entry: &mut TaskEntry) {
    entry.token = None;
    entry.record.lease_owner = None;
    entry.record.lease_expires_at = None;
}

fn task_audit(record: &TaskRecord, event_type: &str, payload: serde_json::Value) -> NewAuditEvent {
    NewAuditEvent {
        task_id: Some(record.id),
        agent_id: Some(record.agent_id.clone()),
        user_id: Some(record.user_id.clone()),
        event_type: event_type.to_owned(),
        payload,
        ip_address: None,
        user_agent: None,
    }
}

fn extra_audit(record: &TaskRecord, mut event: NewAuditEvent) -> NewAuditEvent {
    if event.task_id.is_none() {
        event.task_id = Some(record.id);
    }
    if event.agent_id.is_none() {
        event.agent_id = Some(record.agent_id.clone());
    }
    event
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn millis_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_milliseconds()).unwrap_or(0)
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(Utc::now))
    }

    /// An empty store on `clock` (lease expiry, `run_at`, timestamps), for tests that move time
    /// by hand.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use capecontrol_core::store::memory::MemoryStore;
    /// let now = Arc::new(Mutex::new(chrono::Utc::now()));
    /// let clock = now.clone();
    /// let store = MemoryStore::with_clock(Arc::new(move || *clock.lock().unwrap()));
    /// *now.lock().unwrap() += chrono::Duration::seconds(60); // a minute later, for the store
    /// # let _ = store;
    /// ```
    pub fn with_clock(clock: Clock) -> Self {
        let (events, _) = broadcast::channel(CHANNEL_CAPACITY);
        let (wakeups, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            state: Mutex::new(State::default()),
            clock,
            events,
            wakeups,
        }
    }

    /// How many live event subscriptions are open (watchers following tasks, say).
    pub fn subscribers(&self) -> usize {
        self.events.receiver_count()
    }

    /// The store's current time.
    pub fn now(&self) -> DateTime<Utc> {
        micros((self.clock)())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written in a way later
        // calls would misread more than the panic itself did: keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send_events(&self, events: impl IntoIterator<Item = TaskEvent>) {
        for e in events {
            // No subscriber is not an error. Large outputs travel by reference (the ring keeps
            // its last events).
            let _ = self.events.send(e.into_live());
        }
    }

    fn wake(&self) {
        let _ = self.wakeups.send(());
    }
}

#[async_trait]
impl RegistryStore for MemoryStore {
    async fn insert_agent(&self, mut agent: AgentRecord) -> Result<AgentRecord> {
        agent.created_at = micros(agent.created_at);
        agent.updated_at = micros(agent.updated_at);
        let mut state = self.lock();
        if state.agents.contains_key(&agent.id) {
            return Err(Error::conflict(format!(
                "an agent with id `{}` exists",
                agent.id
            )));
        }
        if state.agents.values().any(|a| a.slug == agent.slug) {
            return Err(Error::conflict(format!(
                "an agent with slug `{}` exists",
                agent.slug
            )));
        }
        state.agents.insert(agent.id.clone(), agent.clone());
        Ok(agent)
    }

    async fn update_agent(&self, id: &str, patch: AgentPatch) -> Result<AgentRecord> {
        let now = self.now();
        let mut state = self.lock();
        let key = state
            .agent_by_id_or_slug(id)
            .map(|a| a.id.clone())
            .ok_or_else(|| Error::not_found("agent", id))?;
        let agent = state
            .agents
            .get_mut(&key)
            .ok_or_else(|| Error::not_found("agent", id))?;
        let AgentPatch {
            name,
            description,
            category,
            capabilities,
            policy_scopes,
            manifest,
            status,
        } = patch;
        if let Some(v) = name {
            agent.name = v;
        }
        if let Some(v) = description {
            agent.description = Some(v);
        }
        if let Some(v) = category {
            agent.category = Some(v);
        }
        if let Some(v) = capabilities {
            agent.capabilities = Some(v);
        }
        if let Some(v) = policy_scopes {
            agent.policy_scopes = v;
        }
        if let Some(v) = manifest {
            agent.manifest = Some(v);
        }
        if let Some(v) = status {
            agent.status = v;
        }
        agent.updated_at = now;
        Ok(agent.clone())
    }

    async fn get_agent(&self, id_or_slug: &str) -> Result<AgentRecord> {
        self.lock()
            .agent_by_id_or_slug(id_or_slug)
            .cloned()
            .ok_or_else(|| Error::not_found("agent", id_or_slug))
    }

    async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<AgentRecord>> {
        let state = self.lock();
        let mut out: Vec<AgentRecord> = state
            .agents
            .values()
            .filter(|a| filter.status.is_none_or(|s| a.status == s))
            .filter(|a| {
                filter
                    .category
                    .as_ref()
                    .is_none_or(|c| a.category.as_ref() == Some(c))
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn insert_version(&self, mut version: VersionRecord) -> Result<VersionRecord> {
        version.created_at = micros(version.created_at);
        version.published_at = version.published_at.map(micros);
        let mut state = self.lock();
        if !state.agents.contains_key(&version.agent_id) {
            return Err(Error::not_found("agent", &version.agent_id));
        }
        let order = state.next();
        let list = state.versions.entry(version.agent_id.clone()).or_default();
        if list.iter().any(|(_, v)| v.version == version.version) {
            return Err(Error::conflict(format!(
                "version {} of agent `{}` exists",
                version.version, version.agent_id
            )));
        }
        list.push((order, version.clone()));
        Ok(version)
    }

    async fn get_version(&self, agent_id: &str, version: &str) -> Result<VersionRecord> {
        let state = self.lock();
        state
            .versions
            .get(agent_id)
            .and_then(|l| l.iter().find(|(_, v)| v.version == version))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::not_found("agent version", format!("{agent_id}@{version}")))
    }

    async fn list_versions(&self, agent_id: &str) -> Result<Vec<VersionRecord>> {
        let state = self.lock();
        let mut list: Vec<(u64, VersionRecord)> =
            state.versions.get(agent_id).cloned().unwrap_or_default();
        list.sort_by(|(oa, a), (ob, b)| a.created_at.cmp(&b.created_at).then(oa.cmp(ob)));
        Ok(list.into_iter().map(|(_, v)| v).collect())
    }

    async fn publish_version(
        &self,
        agent_id: &str,
        version: &str,
    ) -> Result<(VersionRecord, Option<VersionRecord>)> {
        let now = self.now();
        let mut state = self.lock();
        let agent_status = state
            .agents
            .get(agent_id)
            .map(|a| a.status)
            .ok_or_else(|| Error::not_found("agent", agent_id))?;
        let list = state
            .versions
            .get_mut(agent_id)
            .ok_or_else(|| Error::not_found("agent version", format!("{agent_id}@{version}")))?;
        let target = list
            .iter()
            .position(|(_, v)| v.version == version)
            .ok_or_else(|| Error::not_found("agent version", format!("{agent_id}@{version}")))?;
        // Check every transition before changing anything.
        list[target].1.status.transition(VersionStatus::Published)?;
        agent_status.transition(AgentStatus::Published)?;
        let previous = list
            .iter()
            .position(|(_, v)| v.status == VersionStatus::Published);
        let archived = match previous {
            Some(i) => {
                let v = &mut list[i].1;
                v.status = v.status.transition(VersionStatus::Archived)?;
                Some(v.clone())
            }
            None => None,
        };
        let published = {
            let v = &mut list[target].1;
            v.status = VersionStatus::Published;
            v.published_at = Some(now);
            v.clone()
        };
        if let Some(agent) = state.agents.get_mut(agent_id) {
            agent.status = AgentStatus::Published;
            agent.manifest = Some(published.manifest.clone());
            agent.updated_at = now;
        }
        Ok((published, archived))
    }

    async fn set_version_status(
        &self,
        agent_id: &str,
        version: &str,
        from: VersionStatus,
        to: VersionStatus,
    ) -> Result<VersionRecord> {
        let mut state = self.lock();
        let v = state
            .versions
            .get_mut(agent_id)
            .and_then(|l| l.iter_mut().find(|(_, v)| v.version == version))
            .map(|(_, v)| v)
            .ok_or_else(|| Error::not_found("agent version", format!("{agent_id}@{version}")))?;
        if v.status != from {
            return Err(Error::conflict(format!(
                "version {version} of agent `{agent_id}` is {}, not {from}",
                v.status
            )));
        }
        v.status = from.transition(to)?;
        Ok(v.clone())
    }

    async fn catalog(&self, query: &CatalogQuery) -> Result<Page<CatalogEntry>> {
        let state = self.lock();
        let text = query.text.as_ref().map(|t| t.to_lowercase());
        let mut entries: Vec<CatalogEntry> = Vec::new();
        for agent in state.agents.values() {
            if agent.status != AgentStatus::Published {
                continue;
            }
            let Some(version) = state.versions.get(&agent.id).and_then(|l| {
                l.iter()
                    .find(|(_, v)| v.status == VersionStatus::Published)
                    .map(|(_, v)| v)
            }) else {
                continue;
            };
            if query
                .category
                .as_ref()
                .is_some_and(|c| agent.category.as_ref() != Some(c))
            {
                continue;
            }
            let placement = version.manifest.get("placement").and_then(|v| v.as_str());
            if query
                .placement
                .as_ref()
                .is_some_and(|p| placement != Some(p.as_str()))
            {
                continue;
            }
            if let Some(t) = &text {
                let in_name = agent.name.to_lowercase().contains(t.as_str());
                let in_description = agent
                    .description
                    .as_ref()
                    .is_some_and(|d| d.to_lowercase().contains(t.as_str()));
                if !in_name && !in_description {
                    continue;
                }
            }
            entries.push(CatalogEntry {
                agent: agent.clone(),
                version: version.clone(),
            });
        }
        match query.sort {
            CatalogSort::Name => entries.sort_by(|a, b| {
                a.agent
                    .name
                    .to_lowercase()
                    .cmp(&b.agent.name.to_lowercase())
                    .then_with(|| a.agent.name.cmp(&b.agent.name))
                    .then_with(|| a.agent.id.cmp(&b.agent.id))
            }),
            CatalogSort::RecentlyPublished => entries.sort_by(|a, b| {
                b.version
                    .published_at
                    .cmp(&a.version.published_at)
                    .then_with(|| a.agent.id.cmp(&b.agent.id))
            }),
            CatalogSort::RecentlyUpdated => entries.sort_by(|a, b| {
                b.agent
                    .updated_at
                    .cmp(&a.agent.updated_at)
                    .then_with(|| a.agent.id.cmp(&b.agent.id))
            }),
        }
        let total = entries.len();
        let limit = query.limit.clamp(1, 100);
        let items = entries.into_iter().skip(query.offset).take(limit).collect();
        Ok(Page { items, total })
    }

    async fn upsert_installation(
        &self,
        installation: InstallationRecord,
    ) -> Result<InstallationRecord> {
        let now = self.now();
        let mut state = self.lock();
        if !state.agents.contains_key(&installation.agent_id) {
            return Err(Error::not_found("agent", &installation.agent_id));
        }
        let key = (installation.agent_id.clone(), installation.user_id.clone());
        let mut record = installation;
        record.created_at = micros(record.created_at);
        if let Some(existing) = state.installations.get(&key) {
            record.id = existing.id;
            record.created_at = existing.created_at;
        }
        record.updated_at = now;
        state.installations.insert(key, record.clone());
        Ok(record)
    }

    async fn get_installation(&self, agent_id: &str, user_id: &str) -> Result<InstallationRecord> {
        self.lock()
            .installations
            .get(&(agent_id.to_owned(), user_id.to_owned()))
            .cloned()
            .ok_or_else(|| Error::not_found("installation", format!("{agent_id} for {user_id}")))
    }

    async fn list_installations(&self, user_id: &str) -> Result<Vec<InstallationRecord>> {
        Ok(self
            .lock()
            .installations
            .values()
            .filter(|i| i.user_id == user_id)
            .cloned()
            .collect())
    }

    async fn delete_installation(&self, agent_id: &str, user_id: &str) -> Result<()> {
        let mut state = self.lock();
        let removed = state
            .installations
            .remove(&(agent_id.to_owned(), user_id.to_owned()));
        if let Some(i) = &removed {
            state.triggers.forget(i.id);
        }
        removed
            .map(|_| ())
            .ok_or_else(|| Error::not_found("installation", format!("{agent_id} for {user_id}")))
    }
}

#[async_trait]
impl QueueStore for MemoryStore {
    async fn enqueue(&self, task: NewTask) -> Result<Enqueued> {
        task.check()?;
        let now = self.now();
        let mut state = self.lock();
        let user_id = task.principal.user_id.clone();
        let seen = task
            .idempotency_key
            .as_ref()
            .and_then(|key| state.idempotency.get(&(user_id.clone(), key.clone())))
            .and_then(|id| state.tasks.get(id));
        if let Some(existing) = seen {
            return Ok(Enqueued {
                task: existing.record.clone(),
                created: false,
            });
        }
        if state.tasks.contains_key(&task.id) {
            return Err(Error::conflict(format!("task {} exists", task.id)));
        }
        if !state.agents.contains_key(&task.agent_id) {
            return Err(Error::not_found("agent", &task.agent_id));
        }
        for extra in &task.audit {
            state.check_audit_refs(extra, Some(task.id))?;
        }
        let record = TaskRecord {
            id: task.id,
            user_id: user_id.clone(),
            agent_id: task.agent_id,
            version: task.version,
            task: task.task,
            input: task.input,
            output: None,
            status: TaskStatus::Queued,
            principal: task.principal,
            priority: task.priority,
            run_at: task.run_at.map_or(now, micros),
            attempts: 0,
            max_attempts: task.max_attempts,
            concurrency_limit: task.concurrency_limit,
            timeout: task.timeout,
            idempotency_key: task.idempotency_key,
            lease_owner: None,
            lease_expires_at: None,
            cancel_requested: false,
            error: None,
            error_message: None,
            started_at: None,
            completed_at: None,
            traceparent: task.traceparent,
            created_at: now,
        };
        let order = state.next();
        let mut entry = TaskEntry {
            order,
            record: record.clone(),
            token: None,
            steps: BTreeMap::new(),
            events: Vec::new(),
            indexed: Indexed::None,
        };
        let event = lifecycle_event(&mut entry, TaskEventKind::Queued, now);
        // The caller's audit (the policy decision that let the task in) comes first.
        for extra in task.audit {
            state.append_audit(extra_audit(&record, extra), now);
        }
        let mut queued = task_audit(
            &record,
            "task.queued",
            json!({ "task": record.task, "version": record.version, "priority": record.priority }),
        );
        queued.ip_address = record.principal.ip_address;
        queued.user_agent = record.principal.user_agent.clone();
        state.append_audit(queued, now);
        if let Some(key) = &record.idempotency_key {
            state.idempotency.insert((user_id, key.clone()), record.id);
        }
        state.tasks.insert(record.id, entry);
        state.sync(record.id, now);
        self.send_events([event]);
        drop(state);
        self.wake();
        Ok(Enqueued {
            task: record,
            created: true,
        })
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.now();
        let mut state = self.lock();
        state.promote_due(now);
        // Merge the agents' ready sets in order (priority, then age), taking what the agent
        // filter and the per-agent concurrency limits allow. An agent whose next task is over
        // its limit drops out of the merge, so its other queued tasks are never visited.
        let st = &*state;
        let mut due: Vec<Uuid> = Vec::new();
        let mut planned: HashMap<&str, usize> = HashMap::new();
        let mut cursors = Vec::new();
        let mut heads = BinaryHeap::new();
        for (agent, set) in &st.ready {
            if request.agents.as_ref().is_some_and(|a| !a.contains(agent)) {
                continue;
            }
            let mut it = set.iter();
            if let Some(&key) = it.next() {
                heads.push(Reverse((key, cursors.len())));
            }
            cursors.push((agent.as_str(), it));
        }
        while due.len() < request.limit {
            let Some(Reverse((key, c))) = heads.pop() else {
                break;
            };
            let (agent, it) = &mut cursors[c];
            let id = key.2;
            let Some(t) = st.tasks.get(&id) else {
                continue;
            };
            let r = &t.record;
            if r.run_at <= now {
                let n = planned
                    .entry(*agent)
                    .or_insert_with(|| st.running_of_agent(agent));
                if *n >= r.concurrency_limit as usize {
                    continue;
                }
                *n += 1;
                due.push(id);
            }
            if let Some(&next) = it.next() {
                heads.push(Reverse((next, c)));
            }
        }
        drop(cursors);
        let mut claimed = Vec::new();
        let mut sent = Vec::new();
        let expires_at = now + to_chrono(request.lease);
        for id in due {
            let Some(entry) = state.tasks.get_mut(&id) else {
                continue;
            };
            move_task(&mut entry.record, TaskStatus::Running)?;
            let token = Uuid::new_v4();
            entry.token = Some(token);
            entry.record.attempts += 1;
            entry.record.lease_owner = Some(request.worker.clone());
            entry.record.lease_expires_at = Some(expires_at);
            entry.record.started_at = Some(now);
            let attempt = entry.record.attempts;
            let event = lifecycle_event(
                entry,
                TaskEventKind::Started {
                    attempt,
                    worker: request.worker.clone(),
                },
                now,
            );
            sent.push(event);
            let audit = task_audit(
                &entry.record,
                "task.started",
                json!({ "attempt": attempt, "worker": request.worker }),
            );
            claimed.push(Claimed {
                lease: Lease {
                    task_id: id,
                    owner: request.worker.clone(),
                    token,
                    expires_at,
                },
                steps: entry.steps.values().cloned().collect(),
                last_seq: entry.last_seq(),
                task: entry.record.clone(),
            });
            state.append_audit(audit, now);
            state.sync(id, now);
        }
        self.send_events(sent);
        Ok(claimed)
    }

    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> Result<Heartbeat> {
        let now = self.now();
        let mut state = self.lock();
        let entry = state.fenced(lease)?;
        let expires_at = now + to_chrono(extend);
        entry.record.lease_expires_at = Some(expires_at);
        Ok(Heartbeat {
            expires_at,
            cancel_requested: entry.record.cancel_requested,
        })
    }

    async fn journal(&self, lease: &Lease, write: JournalWrite) -> Result<()> {
        let now = self.now();
        check_events(lease.task_id, &write.events)?;
        let mut state = self.lock();
        state.fenced(lease)?;
        for a in &write.audit {
            state.check_audit_refs(a, None)?;
        }
        let entry = state.fenced(lease)?;
        check_continues(entry, &write.events)?;
        put_steps(entry, write.step);
        let events = persist_events(entry, write.events);
        let record = entry.record.clone();
        for a in write.audit {
            state.append_audit(extra_audit(&record, a), now);
        }
        self.send_events(events);
        Ok(())
    }

    async fn finish(&self, lease: &Lease, finish: Finish) -> Result<TaskRecord> {
        let now = self.now();
        check_events(lease.task_id, &finish.events)?;
        let mut state = self.lock();
        state.fenced(lease)?;
        for a in &finish.audit {
            state.check_audit_refs(a, None)?;
        }
        let entry = state.fenced(lease)?;
        check_continues(entry, &finish.events)?;
        // Check the transition before writing anything.
        let target = match &finish.outcome {
            Outcome::Completed { .. } => TaskStatus::Completed,
            Outcome::Failed { .. } => TaskStatus::Failed,
            Outcome::Cancelled => TaskStatus::Cancelled,
        };
        entry.record.status.transition(target)?;
        put_steps(entry, finish.steps);
        let mut events = persist_events(entry, finish.events);
        let attempt = entry.record.attempts;
        let (kind, audit_type, payload) = match finish.outcome {
            Outcome::Completed { output } => {
                move_task(&mut entry.record, TaskStatus::Completed)?;
                entry.record.output = Some(output.clone());
                entry.record.completed_at = Some(now);
                (
                    TaskEventKind::Completed { output },
                    "task.completed",
                    json!({ "attempt": attempt }),
                )
            }
            // A cancel requested during the attempt wins over a retry or a failure: the task
            // ends cancelled (its last error kept), whatever path the attempt took.
            Outcome::Failed { error, .. } if entry.record.cancel_requested => {
                move_task(&mut entry.record, TaskStatus::Cancelled)?;
                entry.record.error_message = Some(error.to_string());
                entry.record.error = Some(error.clone());
                entry.record.completed_at = Some(now);
                (
                    TaskEventKind::Cancelled,
                    "task.cancelled",
                    json!({ "attempt": attempt, "error": error.to_string(), "category": error.category() }),
                )
            }
            Outcome::Failed { error, retry_at } => {
                move_task(&mut entry.record, TaskStatus::Failed)?;
                entry.record.error_message = Some(error.to_string());
                entry.record.error = Some(error.clone());
                match retry_at {
                    Some(at) => {
                        move_task(&mut entry.record, TaskStatus::Queued)?;
                        entry.record.run_at = micros(at);
                        let delay_ms = millis_between(now, at);
                        (
                            TaskEventKind::Retrying {
                                attempt,
                                delay_ms,
                                error: error.clone(),
                            },
                            "task.retrying",
                            json!({ "attempt": attempt, "delay_ms": delay_ms, "error": error.to_string(), "category": error.category() }),
                        )
                    }
                    None => {
                        entry.record.completed_at = Some(now);
                        (
                            TaskEventKind::Failed {
                                error: error.clone(),
                            },
                            "task.failed",
                            json!({ "attempt": attempt, "error": error.to_string(), "category": error.category() }),
                        )
                    }
                }
            }
            Outcome::Cancelled => {
                move_task(&mut entry.record, TaskStatus::Cancelled)?;
                entry.record.completed_at = Some(now);
                (
                    TaskEventKind::Cancelled,
                    "task.cancelled",
                    json!({ "attempt": attempt }),
                )
            }
        };
        clear_lease(entry);
        events.push(lifecycle_event(entry, kind, now));
        let record = entry.record.clone();
        state.sync(record.id, now);
        state.append_audit(task_audit(&record, audit_type, payload), now);
        for a in finish.audit {
            state.append_audit(extra_audit(&record, a), now);
        }
        self.send_events(events);
        drop(state);
        if record.status == TaskStatus::Queued {
            self.wake();
        }
        Ok(record)
    }

    async fn release(
        &self,
        lease: &Lease,
        events: Vec<TaskEvent>,
        steps: Vec<StepRecord>,
    ) -> Result<()> {
        let now = self.now();
        check_events(lease.task_id, &events)?;
        let mut state = self.lock();
        let entry = state.fenced(lease)?;
        check_continues(entry, &events)?;
        put_steps(entry, steps);
        let mut sent = persist_events(entry, events);
        let (kind, audit_type) = if entry.record.cancel_requested {
            move_task(&mut entry.record, TaskStatus::Cancelled)?;
            entry.record.completed_at = Some(now);
            (TaskEventKind::Cancelled, "task.cancelled")
        } else {
            // Not a state-machine transition: the claim is undone, the attempt not counted.
            entry.record.status = TaskStatus::Queued;
            entry.record.attempts = entry.record.attempts.saturating_sub(1);
            (TaskEventKind::Queued, "task.released")
        };
        clear_lease(entry);
        sent.push(lifecycle_event(entry, kind, now));
        let record = entry.record.clone();
        state.sync(record.id, now);
        state.append_audit(
            task_audit(&record, audit_type, json!({ "worker": lease.owner })),
            now,
        );
        self.send_events(sent);
        drop(state);
        self.wake();
        Ok(())
    }

    async fn reclaim_expired(&self) -> Result<Vec<Uuid>> {
        let now = self.now();
        let mut state = self.lock();
        let expired: Vec<Uuid> = state
            .running
            .iter()
            .filter_map(|id| state.tasks.get(id))
            .filter(|t| t.record.lease_expires_at.is_some_and(|at| at <= now))
            .map(|t| t.record.id)
            .collect();
        let mut sent = Vec::new();
        let mut requeued = false;
        for id in &expired {
            let Some(entry) = state.tasks.get_mut(id) else {
                continue;
            };
            let attempt = entry.record.attempts;
            let owner = entry.record.lease_owner.clone();
            let error = Error::resource(format!(
                "the lease of attempt {attempt} expired (worker {})",
                owner.as_deref().unwrap_or("unknown")
            ));
            let (kind, audit_type) = if entry.record.cancel_requested {
                move_task(&mut entry.record, TaskStatus::Cancelled)?;
                entry.record.completed_at = Some(now);
                (TaskEventKind::Cancelled, "task.cancelled")
            } else {
                move_task(&mut entry.record, TaskStatus::Failed)?;
                entry.record.error_message = Some(error.to_string());
                entry.record.error = Some(error.clone());
                if attempt < entry.record.max_attempts {
                    move_task(&mut entry.record, TaskStatus::Queued)?;
                    entry.record.run_at = now;
                    requeued = true;
                    (
                        TaskEventKind::Retrying {
                            attempt,
                            delay_ms: 0,
                            error: error.clone(),
                        },
                        "task.retrying",
                    )
                } else {
                    entry.record.completed_at = Some(now);
                    (
                        TaskEventKind::Failed {
                            error: error.clone(),
                        },
                        "task.failed",
                    )
                }
            };
            clear_lease(entry);
            sent.push(lifecycle_event(entry, kind, now));
            let record = entry.record.clone();
            state.sync(record.id, now);
            state.append_audit(
                task_audit(
                    &record,
                    audit_type,
                    json!({ "attempt": attempt, "reason": "lease_expired", "worker": owner }),
                ),
                now,
            );
        }
        self.send_events(sent);
        drop(state);
        if requeued {
            self.wake();
        }
        Ok(expired)
    }

    async fn cancel(&self, task_id: Uuid, by: &Principal) -> Result<TaskRecord> {
        let now = self.now();
        let mut state = self.lock();
        let entry = state
            .tasks
            .get_mut(&task_id)
            .ok_or_else(|| Error::not_found("task", task_id.to_string()))?;
        let mut sent = Vec::new();
        let event_type = match entry.record.status {
            TaskStatus::Queued | TaskStatus::Waiting => {
                move_task(&mut entry.record, TaskStatus::Cancelled)?;
                entry.record.completed_at = Some(now);
                sent.push(lifecycle_event(entry, TaskEventKind::Cancelled, now));
                "task.cancelled"
            }
            TaskStatus::Running => {
                entry.record.cancel_requested = true;
                "task.cancel_requested"
            }
            other => {
                return Err(Error::conflict(format!(
                    "task {task_id} is {other} and cannot be cancelled"
                )));
            }
        };
        let record = entry.record.clone();
        state.sync(task_id, now);
        let mut audit = NewAuditEvent::by(by, event_type, json!({})).task(task_id);
        audit.agent_id = Some(record.agent_id.clone());
        state.append_audit(audit, now);
        self.send_events(sent);
        Ok(record)
    }

    async fn get_task(&self, task_id: Uuid) -> Result<TaskRecord> {
        self.lock()
            .tasks
            .get(&task_id)
            .map(|t| t.record.clone())
            .ok_or_else(|| Error::not_found("task", task_id.to_string()))
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>> {
        let state = self.lock();
        let mut out: Vec<&TaskEntry> = state
            .tasks
            .values()
            .filter(|t| {
                filter
                    .user_id
                    .as_ref()
                    .is_none_or(|u| &t.record.user_id == u)
            })
            .filter(|t| {
                filter
                    .agent_id
                    .as_ref()
                    .is_none_or(|a| &t.record.agent_id == a)
            })
            .filter(|t| filter.status.is_none_or(|s| t.record.status == s))
            .collect();
        out.sort_by(|a, b| {
            b.record
                .created_at
                .cmp(&a.record.created_at)
                .then(b.order.cmp(&a.order))
        });
        Ok(out
            .into_iter()
            .take(filter.page_size())
            .map(|t| t.record.clone())
            .collect())
    }

    async fn steps(&self, task_id: Uuid) -> Result<Vec<StepRecord>> {
        self.lock()
            .tasks
            .get(&task_id)
            .map(|t| t.steps.values().cloned().collect())
            .ok_or_else(|| Error::not_found("task", task_id.to_string()))
    }

    async fn events(&self, task_id: Uuid, after: u64) -> Result<Vec<TaskEvent>> {
        self.lock()
            .tasks
            .get(&task_id)
            .map(|t| t.events.iter().filter(|e| e.seq > after).cloned().collect())
            .ok_or_else(|| Error::not_found("task", task_id.to_string()))
    }

    async fn publish(&self, mut event: TaskEvent) -> Result<()> {
        event.at = micros(event.at);
        self.send_events([event]);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.events.subscribe()
    }

    fn wakeups(&self) -> broadcast::Receiver<()> {
        self.wakeups.subscribe()
    }

    async fn queue_depth(&self) -> Result<u64> {
        let state = self.lock();
        let n = state.ready_len + state.delayed.len();
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append_audit(&self, event: NewAuditEvent) -> Result<AuditEvent> {
        let now = self.now();
        let mut state = self.lock();
        state.check_audit_refs(&event, None)?;
        Ok(state.append_audit(event, now).clone())
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        let state = self.lock();
        Ok(state
            .audit
            .iter()
            .filter(|e| filter.task_id.is_none_or(|t| e.task_id == Some(t)))
            .filter(|e| {
                filter
                    .agent_id
                    .as_ref()
                    .is_none_or(|a| e.agent_id.as_ref() == Some(a))
            })
            .filter(|e| {
                filter
                    .user_id
                    .as_ref()
                    .is_none_or(|u| e.user_id.as_ref() == Some(u))
            })
            .filter(|e| {
                filter
                    .event_type
                    .as_ref()
                    .is_none_or(|t| &e.event_type == t)
            })
            .filter(|e| filter.after.is_none_or(|after| e.seq > after))
            .filter(|e| !filter.unchained || e.seq == 0)
            .take(filter.page_size())
            .cloned()
            .collect())
    }

    async fn audit_head(&self) -> Result<crate::audit::ChainHead> {
        Ok(self.lock().audit_head.clone())
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn insert_key(&self, key: ApiKeyRecord) -> Result<ApiKeyRecord> {
        let now = self.now();
        let mut state = self.lock();
        if state
            .keys
            .values()
            .any(|k| k.id == key.id || k.hash == key.hash)
        {
            return Err(Error::conflict(format!("API key `{}` exists", key.id)));
        }
        let key = ApiKeyRecord {
            created_at: now,
            revoked_at: key.revoked_at.map(|t| t.trunc_subsecs(6)),
            ..key
        };
        state.counter += 1;
        let n = state.counter;
        state.keys.insert((n, key.id.clone()), key.clone());
        Ok(key)
    }

    async fn key_by_hash(&self, hash: &str) -> Result<ApiKeyRecord> {
        let state = self.lock();
        state
            .keys
            .values()
            .find(|k| k.hash == hash)
            .cloned()
            .ok_or_else(|| Error::not_found("api key", "(by hash)"))
    }

    async fn revoke_key(&self, id: &str) -> Result<ApiKeyRecord> {
        let now = self.now();
        let mut state = self.lock();
        let key = state
            .keys
            .values_mut()
            .find(|k| k.id == id)
            .ok_or_else(|| Error::not_found("api key", id))?;
        key.revoked_at.get_or_insert(now);
        Ok(key.clone())
    }

    async fn list_keys(&self, user_id: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        let state = self.lock();
        Ok(state
            .keys
            .values()
            .filter(|k| user_id.is_none_or(|u| k.user_id == u))
            .cloned()
            .collect())
    }
}

#[async_trait]
impl super::RatingStore for MemoryStore {
    async fn rate(&self, task_id: Uuid, by: &Principal, score: u8) -> Result<super::RatingSummary> {
        let now = self.now();
        let mut state = self.lock();
        let task = state.tasks.get(&task_id).map(|t| &t.record);
        super::check_rating(task, task_id, by, score)?;
        let (agent_id, version) = task
            .map(|t| (t.agent_id.clone(), t.version.clone()))
            .ok_or_else(|| Error::not_found("task", task_id.to_string()))?;
        let previous = state
            .ratings
            .insert(task_id, (score, agent_id.clone(), version.clone()))
            .map(|(s, _, _)| s);
        let (sum, count) = state
            .ratings
            .values()
            .filter(|(_, a, v)| *a == agent_id && *v == version)
            .fold((0u64, 0u64), |(sum, n), (s, _, _)| {
                (sum + u64::from(*s), n + 1)
            });
        let mut payload = json!({"score": score, "version": version});
        if let Some(p) = previous {
            payload["previous"] = json!(p);
        }
        let audit = NewAuditEvent::by(by, "task.rated", payload)
            .task(task_id)
            .agent(agent_id.clone());
        state.append_audit(audit, now);
        Ok(super::RatingSummary {
            task_id,
            agent_id,
            version,
            score,
            previous,
            mean: sum as f64 / count as f64,
            count,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct Manual(Arc<Mutex<DateTime<Utc>>>);

    impl Manual {
        fn advance(&self, d: Duration) {
            let mut now = self.0.lock().unwrap();
            *now += to_chrono(d);
        }
    }

    fn manual_store() -> (MemoryStore, Manual) {
        let now = Arc::new(Mutex::new(Utc::now()));
        let clock = now.clone();
        let store = MemoryStore::with_clock(Arc::new(move || *clock.lock().unwrap()));
        with_agent(&store);
        (store, Manual(now))
    }

    /// Registers agent `a`.
    fn with_agent(store: &MemoryStore) {
        let now = Utc::now();
        store.lock().agents.insert(
            "a".into(),
            AgentRecord {
                id: "a".into(),
                name: "A".into(),
                slug: "a".into(),
                description: None,
                category: None,
                capabilities: None,
                policy_scopes: Vec::new(),
                manifest: None,
                status: AgentStatus::Draft,
                owner: None,
                created_at: now,
                updated_at: now,
            },
        );
    }

    fn task(agent: &str) -> NewTask {
        NewTask {
            id: Uuid::new_v4(),
            agent_id: agent.into(),
            version: "1.0.0".into(),
            task: "t".into(),
            input: json!(null),
            principal: Principal::new("u"),
            priority: 0,
            run_at: None,
            idempotency_key: None,
            max_attempts: 2,
            concurrency_limit: 10,
            timeout: Duration::from_secs(1),
            traceparent: None,
            audit: Vec::new(),
        }
    }

    fn claim(limit: usize) -> ClaimRequest {
        ClaimRequest {
            worker: "w".into(),
            limit,
            lease: Duration::from_secs(30),
            agents: None,
        }
    }

    #[tokio::test]
    async fn lease_expiry_and_run_at_follow_the_injected_clock() {
        let (store, clock) = manual_store();
        let later = store.now() + chrono::Duration::seconds(60);
        let mut t = task("a");
        t.run_at = Some(later);
        let id = store.enqueue(t).await.unwrap().task.id;
        assert!(store.claim(&claim(1)).await.unwrap().is_empty());
        clock.advance(Duration::from_secs(60));
        let c = store.claim(&claim(1)).await.unwrap().remove(0);
        assert_eq!(
            c.lease.expires_at,
            store.now() + chrono::Duration::seconds(30)
        );
        clock.advance(Duration::from_secs(29));
        assert!(store.reclaim_expired().await.unwrap().is_empty());
        clock.advance(Duration::from_secs(1));
        assert_eq!(store.reclaim_expired().await.unwrap(), [id]);
        let t = store.get_task(id).await.unwrap();
        assert_eq!((t.status, t.attempts), (TaskStatus::Queued, 1));
        // The second attempt is the last: its expiry fails the task.
        let c = store.claim(&claim(1)).await.unwrap().remove(0);
        assert_eq!(c.task.attempts, 2);
        clock.advance(Duration::from_secs(31));
        assert_eq!(store.reclaim_expired().await.unwrap(), [id]);
        let t = store.get_task(id).await.unwrap();
        assert_eq!(t.status, TaskStatus::Failed);
        assert_eq!(
            t.error.map(|e| e.category()),
            Some(crate::ErrorCategory::Resource)
        );
    }

    #[tokio::test]
    async fn a_cancel_requested_task_is_cancelled_on_release_or_reclaim() {
        let (store, clock) = manual_store();
        let by = Principal::new("admin").with_roles(["admin"]);
        let a = store.enqueue(task("a")).await.unwrap().task.id;
        let b = store.enqueue(task("a")).await.unwrap().task.id;
        let claimed = store.claim(&claim(2)).await.unwrap();
        store.cancel(a, &by).await.unwrap();
        store.cancel(b, &by).await.unwrap();
        let lease_a = claimed
            .iter()
            .find(|c| c.task.id == a)
            .unwrap()
            .lease
            .clone();
        store
            .release(&lease_a, Vec::new(), Vec::new())
            .await
            .unwrap();
        assert_eq!(
            store.get_task(a).await.unwrap().status,
            TaskStatus::Cancelled
        );
        clock.advance(Duration::from_secs(31));
        assert_eq!(store.reclaim_expired().await.unwrap(), [b]);
        let t = store.get_task(b).await.unwrap();
        assert_eq!(t.status, TaskStatus::Cancelled);
        let events = store.events(b, 0).await.unwrap();
        assert_eq!(events.last().unwrap().kind, TaskEventKind::Cancelled);
    }

    #[tokio::test]
    async fn misnumbered_worker_events_change_nothing() {
        let (store, _) = manual_store();
        let id = store.enqueue(task("a")).await.unwrap().task.id;
        let c = store.claim(&claim(1)).await.unwrap().remove(0);
        let e = |task_id, seq| TaskEvent {
            task_id,
            seq,
            at: Utc::now(),
            kind: TaskEventKind::ToolCalled {
                tool: "x".into(),
                allowed: false,
            },
        };
        let write = |events| JournalWrite {
            step: None,
            events,
            audit: Vec::new(),
        };
        let gap = store
            .journal(&c.lease, write(vec![e(id, 3), e(id, 5)]))
            .await;
        assert_eq!(gap.unwrap_err().field_errors()[0].pointer, "/events/1/seq");
        let other = store
            .journal(&c.lease, write(vec![e(Uuid::new_v4(), 3)]))
            .await;
        assert_eq!(
            other.unwrap_err().field_errors()[0].pointer,
            "/events/0/task_id"
        );
        let stale = store.journal(&c.lease, write(vec![e(id, 2)])).await;
        assert_eq!(
            stale.unwrap_err().category(),
            crate::ErrorCategory::Conflict
        );
        let ahead = store
            .finish(
                &c.lease,
                Finish {
                    outcome: Outcome::Cancelled,
                    steps: Vec::new(),
                    events: vec![e(id, 4)],
                    audit: Vec::new(),
                },
            )
            .await;
        assert_eq!(
            ahead.unwrap_err().category(),
            crate::ErrorCategory::Conflict
        );
        assert_eq!(store.events(id, 0).await.unwrap().len(), 2);
        assert_eq!(
            store.get_task(id).await.unwrap().status,
            TaskStatus::Running
        );
        store
            .journal(&c.lease, write(vec![e(id, 3), e(id, 4)]))
            .await
            .unwrap();
        assert_eq!(store.events(id, 2).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn listings_are_capped() {
        let store = MemoryStore::new();
        with_agent(&store);
        for _ in 0..(super::super::MAX_LIST_TASKS + 5) {
            store.enqueue(task("a")).await.unwrap();
        }
        let all = TaskFilter {
            limit: Some(usize::MAX),
            ..TaskFilter::default()
        };
        assert_eq!(
            store.list_tasks(&all).await.unwrap().len(),
            super::super::MAX_LIST_TASKS
        );
        let audit = AuditFilter {
            limit: Some(usize::MAX),
            ..AuditFilter::default()
        };
        assert_eq!(
            store.list_audit(&audit).await.unwrap().len(),
            super::super::MAX_AUDIT_PAGE
        );
    }

    #[tokio::test]
    async fn enqueue_rejects_bad_limits_and_duplicate_ids() {
        let store = MemoryStore::new();
        assert_eq!(
            store.enqueue(task("a")).await.unwrap_err().category(),
            crate::ErrorCategory::NotFound
        );
        with_agent(&store);
        let mut t = task("a");
        t.max_attempts = 0;
        assert_eq!(
            store.enqueue(t).await.unwrap_err().field_errors()[0].pointer,
            "/max_attempts"
        );
        let mut t = task("a");
        t.concurrency_limit = 0;
        assert_eq!(
            store.enqueue(t).await.unwrap_err().field_errors()[0].pointer,
            "/concurrency_limit"
        );
        let t = task("a");
        store.enqueue(t.clone()).await.unwrap();
        assert_eq!(
            store.enqueue(t).await.unwrap_err().category(),
            crate::ErrorCategory::Conflict
        );
        assert!(store.claim(&claim(0)).await.unwrap().is_empty());
        assert_eq!(store.queue_depth().await.unwrap(), 1);
        assert!(format!("{store:?}").contains("tasks: 1"));
    }
}
