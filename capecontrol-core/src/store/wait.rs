//! Durable waits: a running task suspends ([`WaitStore::suspend`]) until an answer
//! ([`WaitStore::wake`]) or its deadline ([`WaitStore::wake_due`]) wakes it.
//!
//! A suspend is a fenced write like a finish: the task moves `running → waiting`, its lease is
//! cleared (no worker holds it), the attempt is not counted (as with a release), the pending
//! step rows and events are written with a `waiting_for_input` or `sleeping` event and a
//! `task.waiting` audit row, and the [`Wait`] is stored. A task whose cancellation was requested
//! is cancelled instead.
//!
//! A wake completes the journal step the wait names ([`Wait::step`]) with a value (the answer,
//! or [`Wait::on_timeout`] when the deadline passed), moves the task `waiting → queued` (due at
//! once), writes a `resumed` event and a `task.resumed` audit row, and signals a wake-up. The
//! next attempt replays the journal: the waiting call returns the value at its position. A
//! wake of a task that is not waiting on that step is a conflict and changes nothing, so of an
//! answer and a deadline racing, exactly one wins.
//!
//! A wait on child tasks ([`WaitFor::Children`]) has no deadline: [`WaitStore::joinable`]
//! finds the waiting parents whose children are all final, and the runtime wakes each with the
//! children's outcomes (the sweeper every `poll_interval`, and at once when a child finishes on
//! a node).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{Lease, NewAuditEvent, TaskRecord};
use crate::agent::StepRecord;
use crate::error::Result;
use crate::events::{TaskEvent, TaskEventKind};

/// What a waiting task waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WaitFor {
    /// An answer from a person (`ask_user`).
    Input {
        /// The question.
        prompt: String,
        /// The JSON Schema the answer must match.
        schema: Value,
        /// Users besides the task's own user (and admins) who may answer.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        answerers: Vec<String>,
    },
    /// A durable timer (`sleep`, `sleep_until`): only the deadline wakes it.
    Timer,
    /// Child tasks ([`TaskContext::join`](crate::TaskContext::join)): woken once every one of
    /// them is final (completed, failed for good or cancelled).
    Children {
        /// The children, in the order their outcomes are returned.
        ids: Vec<Uuid>,
    },
}

/// The wait of a `waiting` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wait {
    /// The journal position (step number) the wake-up completes.
    pub step: u32,
    /// The name of that journal step (`ask_user`, `sleep`).
    pub name: String,
    /// When the wait ends by itself (`None`: only an answer ends it).
    pub until: Option<DateTime<Utc>>,
    /// The step's value when `until` passes first.
    pub on_timeout: Value,
    /// What it waits for.
    pub waiting_for: WaitFor,
}

impl Wait {
    /// The event a suspend writes for this wait.
    pub fn event_kind(&self) -> TaskEventKind {
        match &self.waiting_for {
            WaitFor::Input { prompt, schema, .. } => TaskEventKind::WaitingForInput {
                step: self.step,
                prompt: prompt.clone(),
                schema: schema.clone(),
                until: self.until,
            },
            WaitFor::Timer => TaskEventKind::Sleeping {
                step: self.step,
                until: self.until.unwrap_or(DateTime::<Utc>::MAX_UTC),
            },
            WaitFor::Children { ids } => TaskEventKind::WaitingForChildren {
                step: self.step,
                children: ids.clone(),
            },
        }
    }

    /// The kind's name, as in audit payloads (`input`, `timer`, `children`).
    pub fn kind(&self) -> &'static str {
        match self.waiting_for {
            WaitFor::Input { .. } => "input",
            WaitFor::Timer => "timer",
            WaitFor::Children { .. } => "children",
        }
    }

    /// Why a wake-up of this wait happened, as the `reason` of its `task.resumed` audit row:
    /// `answered` (a wake by someone), `children` (the children are final) or `deadline`.
    pub fn wake_reason(&self, by_someone: bool) -> &'static str {
        match (&self.waiting_for, by_someone) {
            (_, true) => "answered",
            (WaitFor::Children { .. }, false) => "children",
            (_, false) => "deadline",
        }
    }
}

/// A fenced suspend: the wait, plus the step rows, events and audit rows not yet persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspend {
    /// The wait.
    pub wait: Wait,
    /// Step rows to write in the same transaction (by task and step number).
    pub steps: Vec<StepRecord>,
    /// Events, numbered by the worker, to persist before the suspend's own event.
    pub events: Vec<TaskEvent>,
    /// Audit rows to persist.
    pub audit: Vec<NewAuditEvent>,
}

/// A wake-up of a waiting task by an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wake {
    /// The task.
    pub task_id: Uuid,
    /// The journal position the task must be waiting on.
    pub step: u32,
    /// The step's value (what the waiting call returns on resume).
    pub output: Value,
    /// Who woke it (the `by` of the `resumed` event and the `task.resumed` audit row).
    pub by: Option<String>,
    /// Extra audit rows, written in the same transaction.
    pub audit: Vec<NewAuditEvent>,
}

impl Suspend {
    /// Checks the values the suspension would store (both stores' `suspend` call it): the
    /// value on timeout, the question's schema, the steps' outputs and the audit payloads nest
    /// at most [`MAX_VALUE_DEPTH`](super::MAX_VALUE_DEPTH) levels.
    pub fn check(&self) -> Result<()> {
        let mut errors: Vec<_> =
            super::too_deep(|| "/wait/on_timeout".to_owned(), &self.wait.on_timeout)
                .into_iter()
                .collect();
        if let WaitFor::Input { schema, .. } = &self.wait.waiting_for {
            errors.extend(super::too_deep(
                || "/wait/waiting_for/schema".to_owned(),
                schema,
            ));
        }
        super::steps_too_deep(&self.steps, &mut errors);
        super::audit_too_deep(&self.audit, &mut errors);
        super::refuse("the suspension is out of bounds", errors)
    }
}

impl Wake {
    /// Checks the values the wake would store (both stores' `wake` call it): the step's value
    /// and the audit payloads nest at most [`MAX_VALUE_DEPTH`](super::MAX_VALUE_DEPTH) levels.
    pub fn check(&self) -> Result<()> {
        let mut errors: Vec<_> = super::too_deep(|| "/output".to_owned(), &self.output)
            .into_iter()
            .collect();
        super::audit_too_deep(&self.audit, &mut errors);
        super::refuse("the wake is out of bounds", errors)
    }
}

/// Durable waits (see the module docs). Both stores implement it and pass the same
/// conformance cases.
#[async_trait]
pub trait WaitStore: Send + Sync {
    /// Suspends the running task fenced by `lease`: `waiting` (or `cancelled` when a
    /// cancellation was requested), lease cleared, attempt not counted. A lost lease is a
    /// conflict that changes nothing.
    async fn suspend(&self, lease: &Lease, suspend: Suspend) -> Result<TaskRecord>;
    /// The wait of a waiting task (`None` if the task is not waiting); unknown task → not-found.
    async fn current_wait(&self, task_id: Uuid) -> Result<Option<Wait>>;
    /// Wakes a task waiting on `wake.step`: the step completed with `wake.output`, the task
    /// queued. Not waiting on that step → conflict, nothing changed.
    async fn wake(&self, wake: Wake) -> Result<TaskRecord>;
    /// Wakes every waiting task whose deadline passed (on the store's clock) with its
    /// [`Wait::on_timeout`]; returns their ids.
    async fn wake_due(&self) -> Result<Vec<Uuid>>;
    /// Waiting tasks (the `task_waiting` gauge).
    async fn waiting_count(&self) -> Result<u64>;
    /// Tasks waiting on [`WaitFor::Children`] whose children are all final, with their waits:
    /// at most `limit`, or only `task_id` when given (the caller wakes them with
    /// [`WaitStore::wake`], the value being the children's outcomes). A child that no longer
    /// exists counts as final.
    async fn joinable(&self, task_id: Option<Uuid>, limit: usize) -> Result<Vec<(Uuid, Wait)>>;
}
