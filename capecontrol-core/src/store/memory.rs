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
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
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
    CatalogEntry, CatalogQuery, CatalogSort, ClaimRequest, Claimed, ClaimedCatalog, Enqueued,
    Finish, Heartbeat, InstallationRecord, JournalWrite, KeyStore, Lease, NewAuditEvent, NewTask,
    Outcome, Page, QueueStore, RegistryStore, TaskFilter, TaskRecord, VersionRecord, lease_lost,
};
use crate::agent::StepRecord;
use crate::error::{Error, Result};
use crate::events::{TaskEvent, TaskEventKind};
use crate::policy::Principal;
use crate::state::{AgentStatus, TaskStatus, VersionStatus};
use crate::{FastMap, FastSet};

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
    /// The tasks, registry and indexes. `parking_lot`'s lock: the submitter, the dispatcher's
    /// claims and the attempts' finishes take it for a few microseconds each, and its short
    /// spin before parking cost less than `std`'s lock here (a zero-step task 5–10 % less wall
    /// time in `benches/throughput.rs`).
    state: parking_lot::Mutex<State>,
    /// Batches of audit rows handed over by the state's writers, in order, for the sealer; and
    /// the batches it emptied, for the writers to fill again.
    handoff: Mutex<Handoff>,
    /// The chained audit trail. Never locked by a writer that holds `state`, so a sealer at
    /// work holds up no queue operation: a writer that finds it busy leaves its batch in
    /// `handoff`, for the sealer at work or the next one (every read seals what is waiting).
    trail: Mutex<trail::Trail>,
    clock: Clock,
    events: broadcast::Sender<TaskEvent>,
    /// Held while live events go out (see [`StateGuard::release`]).
    send_order: parking_lot::Mutex<()>,
    wakeups: broadcast::Sender<()>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryStore")
            .field("agents", &state.agents.len())
            .field("tasks", &state.tasks.len())
            .field("audit_events", &state.audit_len)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// How many audit rows may wait to be chained before an append chains them.
const SEAL_BATCH: usize = 256;

/// At most this many emptied batches kept for the writers.
const SPARE_BATCHES: usize = 4;

/// What the state's writers and the sealer pass each other (see [`MemoryStore::seal`]).
#[derive(Default)]
struct Handoff {
    /// Full batches, in order, to chain.
    full: Vec<Vec<trail::Pending>>,
    /// Emptied batches (capacity [`SEAL_BATCH`]), to fill again.
    spare: Vec<Vec<trail::Pending>>,
}

#[derive(Default)]
struct State {
    /// Insertion counter: the tie-breaker of every "by age" order.
    counter: u64,
    agents: BTreeMap<String, AgentRecord>,
    /// Per agent id, versions in insertion order.
    versions: FastMap<String, Vec<(u64, VersionRecord)>>,
    installations: Installations,
    /// Boxed: growing the map moves pointers, not whole entries.
    tasks: FastMap<Uuid, Box<TaskEntry>>,
    /// (user, key) → task.
    idempotency: FastMap<(String, String), Uuid>,
    /// Audit rows appended in all (the last one's id).
    audit_len: usize,
    /// Audit rows appended and not chained yet, in order (fewer than [`SEAL_BATCH`]).
    audit_pending: Vec<trail::Pending>,
    /// Full batches of audit rows, to hand to the sealer when the lock is released.
    audit_full: Vec<Vec<trail::Pending>>,
    /// Emptied batches the sealer gave back, to fill next: a new batch is about 30 KB the
    /// allocator hands out as fresh pages (a `perf` profile put a fifth of the store's page
    /// faults there, when a batch was 72 KB).
    audit_spare: Vec<Vec<trail::Pending>>,
    /// The names the store's own task rows share (agents, users, task names, versions,
    /// workers): looked up, not copied, for each row.
    names: trail::Names,
    /// Ratings by task: the score and the task's (agent, version).
    ratings: FastMap<Uuid, (u8, String, String)>,
    /// Queued tasks that were due when last indexed, per agent, by priority (highest first),
    /// then age: a claim looks at the head of each agent's set, so tasks of an agent at its
    /// concurrency limit cost it nothing.
    ready: FastMap<String, BTreeSet<(Reverse<i32>, u64, Uuid)>>,
    /// Tasks in `ready`.
    ready_len: usize,
    /// Queued tasks not due yet, by due time.
    delayed: BTreeSet<(DateTime<Utc>, u64, Uuid)>,
    /// Running tasks.
    running: FastSet<Uuid>,
    /// Running tasks per agent (the concurrency limit's count).
    running_by_agent: FastMap<String, usize>,
    /// API keys by id, in insertion order of ids.
    keys: BTreeMap<(u64, String), ApiKeyRecord>,
    /// The waits of waiting tasks (see [`super::WaitStore`]).
    waits: FastMap<Uuid, super::Wait>,
    /// The children of each task that spawned some, in spawn order.
    children: FastMap<Uuid, Vec<Uuid>>,
    /// Schedule cursors, webhook secrets and delivery ids.
    triggers: triggers::TriggerState,
}

/// The locked state of a [`MemoryStore`]. Released, it hands the full batches of audit rows
/// its holder appended to the sealer, and chains them if no other thread is chaining.
struct StateGuard<'a> {
    guard: Option<parking_lot::MutexGuard<'a, State>>,
    store: &'a MemoryStore,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.guard
            .as_deref()
            .unwrap_or_else(|| unreachable!("held until dropped"))
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("held until dropped"))
    }
}

impl StateGuard<'_> {
    /// Releases the lock: hands the full batches of audit rows its holder appended to the
    /// sealer before (so that batches reach it in order), and chains them after if no other
    /// thread is chaining. `events`, the live events of the write made under the lock, go out
    /// just after the release, under the store's send lock taken before it: in the order of
    /// the writes, never before their write can be read, and without the state held through
    /// a send (which may wake a parked subscriber).
    fn release<E: IntoIterator<Item = TaskEvent>>(&mut self, events: Option<E>) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        let sealing = !guard.audit_full.is_empty();
        if sealing {
            self.store.hand_off(&mut guard, false);
        }
        let order = events.is_some().then(|| self.store.send_order.lock());
        drop(guard);
        if let Some(events) = events {
            self.store.broadcast(events);
        }
        drop(order);
        if sealing {
            self.store.seal(false);
        }
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        self.release(None::<[TaskEvent; 0]>);
    }
}

/// Installations by agent, then user: looked up by reference (each claimed task's is, and a
/// map keyed by the pair needed both strings copied to look one up), iterated in (agent, user)
/// order. Each record is shared: a claim hands it to its attempt without copying it.
#[derive(Default)]
struct Installations(BTreeMap<String, BTreeMap<String, Arc<InstallationRecord>>>);

impl Installations {
    fn get(&self, agent_id: &str, user_id: &str) -> Option<&Arc<InstallationRecord>> {
        self.0.get(agent_id)?.get(user_id)
    }

    fn insert(&mut self, record: InstallationRecord) {
        self.0
            .entry(record.agent_id.clone())
            .or_default()
            .insert(record.user_id.clone(), Arc::new(record));
    }

    fn remove(&mut self, agent_id: &str, user_id: &str) -> Option<InstallationRecord> {
        let of_agent = self.0.get_mut(agent_id)?;
        let removed = of_agent.remove(user_id);
        if of_agent.is_empty() {
            self.0.remove(agent_id);
        }
        removed.map(Arc::unwrap_or_clone)
    }

    fn values(&self) -> impl Iterator<Item = &InstallationRecord> {
        self.0.values().flat_map(BTreeMap::values).map(|r| &**r)
    }
}

/// Where a task is indexed (kept in step with its status by [`State::sync`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Indexed {
    None,
    Ready(Reverse<i32>, u64),
    Delayed(DateTime<Utc>, u64),
    Running,
}

struct TaskEntry {
    order: u64,
    /// Shared with the callers it was returned to (enqueue, claim, finish); a write changes a
    /// copy of its own only while one of them still holds it ([`TaskEntry::record_mut`]).
    record: Arc<TaskRecord>,
    token: Option<Uuid>,
    steps: BTreeMap<u32, StepRecord>,
    events: Vec<TaskEvent>,
    indexed: Indexed,
}

impl TaskEntry {
    /// The record, to change: copied first if a caller still holds the shared one.
    fn record_mut(&mut self) -> &mut TaskRecord {
        Arc::make_mut(&mut self.record)
    }

    fn last_seq(&self) -> u64 {
        self.events.last().map_or(0, |e| e.seq)
    }
}

impl State {
    /// The registry rows the attempt of `task` checks (see [`ClaimedCatalog`]).
    fn claimed_catalog(&self, task: &TaskRecord) -> ClaimedCatalog {
        ClaimedCatalog {
            version_status: self
                .versions
                .get(&task.agent_id)
                .and_then(|l| l.iter().find(|(_, v)| v.version == task.version))
                .map(|(_, v)| v.status),
            installation: self
                .installations
                .get(&task.agent_id, &task.user_id)
                .cloned(),
        }
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Appends an audit row, not chained yet. The rows are chained in order by the store's
    /// sealer ([`MemoryStore::seal`]), outside this state's lock: a batch of [`SEAL_BATCH`]
    /// rows is handed to it as the write that filled the batch releases the lock, and every read
    /// of the trail or its head hands it what is waiting and waits for it. So the writes that
    /// add rows (a submission adds two, an attempt two more) hash nothing while they hold the
    /// lock, and every read sees the rows chained.
    fn append_audit(&mut self, event: NewAuditEvent, now: DateTime<Utc>) {
        let id = self.next_audit_id();
        self.push_audit(trail::Pending::Event(Box::new(AuditEvent {
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
        })));
    }

    /// Appends one of the store's own rows of `task`'s lifecycle (what [`Self::append_audit`]
    /// of the same row and payload would chain), its names shared and its payload written only
    /// when it is chained. `client`: the submitter's address and user agent, if any.
    fn append_task_row(
        &mut self,
        task: &TaskRecord,
        kind: trail::TaskRowKind,
        client: trail::Client,
        now: DateTime<Utc>,
    ) {
        let id = self.next_audit_id();
        let row = trail::TaskRow {
            id,
            task_id: task.id,
            agent_id: self.names.get_str(&task.agent_id),
            user_id: self.names.get_str(&task.user_id),
            created_at: now,
            kind,
            client,
        };
        self.push_audit(trail::Pending::Task(row));
    }

    fn next_audit_id(&mut self) -> i64 {
        self.audit_len += 1;
        i64::try_from(self.audit_len).unwrap_or(i64::MAX)
    }

    fn push_audit(&mut self, row: trail::Pending) {
        self.audit_pending.push(row);
        if self.audit_pending.len() >= SEAL_BATCH {
            let next = self
                .audit_spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(SEAL_BATCH));
            let batch = std::mem::replace(&mut self.audit_pending, next);
            self.audit_full.push(batch);
        }
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
    /// operation that changes a task calls it for that task. (A task's agent never changes:
    /// its id is read from the record, and copied only into an index that lacks it.)
    fn sync(&mut self, id: Uuid, now: DateTime<Utc>) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        let r = &entry.record;
        let new = match r.status {
            TaskStatus::Queued if r.run_at <= now => {
                Indexed::Ready(Reverse(r.priority), entry.order)
            }
            TaskStatus::Queued => Indexed::Delayed(r.run_at, entry.order),
            TaskStatus::Running => Indexed::Running,
            _ => Indexed::None,
        };
        if entry.indexed == new {
            return;
        }
        let old = std::mem::replace(&mut entry.indexed, new.clone());
        let agent_id = entry.record.agent_id.as_str();
        match old {
            Indexed::None => {}
            Indexed::Ready(p, o) => {
                if let Some(set) = self.ready.get_mut(agent_id) {
                    if set.remove(&(p, o, id)) {
                        self.ready_len -= 1;
                    }
                    if set.is_empty() {
                        self.ready.remove(agent_id);
                    }
                }
            }
            Indexed::Delayed(at, o) => {
                self.delayed.remove(&(at, o, id));
            }
            Indexed::Running => {
                self.running.remove(&id);
                if let Some(n) = self.running_by_agent.get_mut(agent_id) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.running_by_agent.remove(agent_id);
                    }
                }
            }
        }
        match new {
            Indexed::None => {}
            Indexed::Ready(p, o) => {
                let inserted = match self.ready.get_mut(agent_id) {
                    Some(set) => set.insert((p, o, id)),
                    None => self
                        .ready
                        .entry(agent_id.to_owned())
                        .or_default()
                        .insert((p, o, id)),
                };
                if inserted {
                    self.ready_len += 1;
                }
            }
            Indexed::Delayed(at, o) => {
                self.delayed.insert((at, o, id));
            }
            Indexed::Running => {
                self.running.insert(id);
                match self.running_by_agent.get_mut(agent_id) {
                    Some(n) => *n += 1,
                    None => {
                        self.running_by_agent.insert(agent_id.to_owned(), 1);
                    }
                }
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
    let record = entry.record_mut();
    record.lease_owner = None;
    record.lease_expires_at = None;
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
            state: parking_lot::Mutex::new(State::default()),
            handoff: Mutex::default(),
            trail: Mutex::new(trail::Trail::default()),
            clock,
            events,
            send_order: parking_lot::Mutex::new(()),
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

    fn lock(&self) -> StateGuard<'_> {
        // A panic while holding the lock cannot leave the state half-written in a way later
        // calls would misread more than the panic itself did: keep serving (the lock is not
        // poisoned).
        StateGuard {
            guard: Some(self.state.lock()),
            store: self,
        }
    }

    /// Hands the full batches of audit rows (and with `all`, the rows of the batch being
    /// filled) to the sealer; called with the state locked, so batches arrive in order.
    fn hand_off(&self, state: &mut State, all: bool) {
        let partial = all && !state.audit_pending.is_empty();
        if state.audit_full.is_empty() && !partial {
            return;
        }
        let mut handoff = self.handoff.lock().unwrap_or_else(|e| e.into_inner());
        handoff.full.append(&mut state.audit_full);
        // The emptied batches go back to be filled again (a few).
        let room = SPARE_BATCHES.saturating_sub(state.audit_spare.len());
        state.audit_spare.extend(handoff.spare.drain(..).take(room));
        if partial {
            let next = state.audit_spare.pop().unwrap_or_default();
            handoff
                .full
                .push(std::mem::replace(&mut state.audit_pending, next));
        }
    }

    /// Chains the batches handed off so far, in order: waiting for the trail when `wait`, else
    /// only if no other thread is chaining (which then chains these too, or the next sealer
    /// does).
    fn seal(&self, wait: bool) -> Option<MutexGuard<'_, trail::Trail>> {
        let mut trail = if wait {
            self.trail.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            match self.trail.try_lock() {
                Ok(t) => t,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        };
        let mut emptied = Vec::new();
        loop {
            let batches = {
                let mut handoff = self.handoff.lock().unwrap_or_else(|e| e.into_inner());
                // The batches emptied by the last round, kept for the writers (a few: a burst
                // of appends may have handed off many).
                for batch in emptied.drain(..) {
                    if handoff.spare.len() < SPARE_BATCHES {
                        handoff.spare.push(batch);
                    }
                }
                std::mem::take(&mut handoff.full)
            };
            if batches.is_empty() {
                return Some(trail);
            }
            for mut batch in batches {
                trail.seal(&mut batch);
                if batch.capacity() == SEAL_BATCH {
                    emptied.push(batch);
                }
            }
        }
    }

    /// The trail with every row appended so far chained (for the reads of the trail).
    fn sealed_trail(&self) -> MutexGuard<'_, trail::Trail> {
        {
            let mut state = self.lock();
            let state = &mut *state;
            self.hand_off(state, true);
        }
        self.seal(true)
            .unwrap_or_else(|| unreachable!("a waiting seal returns the trail"))
    }

    /// Releases the state's lock, then sends `events`, the live events of the write just made
    /// under it (see [`StateGuard::release`]).
    fn send_events(&self, mut state: StateGuard<'_>, events: impl IntoIterator<Item = TaskEvent>) {
        state.release(Some(events));
    }

    /// Sends `events` to the live subscribers; the caller holds the send lock.
    fn broadcast(&self, events: impl IntoIterator<Item = TaskEvent>) {
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

mod audit;
mod keys;
mod queue;
mod ratings;
mod registry;
#[cfg(test)]
mod tests;
mod trail;
