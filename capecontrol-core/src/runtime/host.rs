//! The platform's [`TaskHost`]: journals steps through the store under the attempt's lease,
//! numbers and publishes the task's events, audits tool calls.
//!
//! Events are published live at once and persisted (with the same numbers) by the next durable
//! write. A completed step's row is deferred too: it is written by the start of the next step
//! (before that step runs, so a completed step is durable before the following one executes),
//! by a tool call's or a failed step's journal write, or with the attempt's finish or release.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::agent::{StepRecord, TaskHost, ToolCall};
use crate::error::{Error, Result};
use crate::events::{TaskEvent, TaskEventKind};
use crate::state::RunStatus;
use crate::store::{JournalWrite, Lease, NewAuditEvent, Store, TaskRecord};

/// Published but not yet persisted: events in order, and the row of a completed step.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) events: Vec<TaskEvent>,
    pub(crate) step: Option<StepRecord>,
}

impl Pending {
    /// The deferred step row, as the `steps` of a finish or release.
    pub(crate) fn steps(&mut self) -> Vec<StepRecord> {
        self.step.take().into_iter().collect()
    }
}

pub(crate) struct PlatformHost {
    store: Arc<dyn Store>,
    lease: Lease,
    task: TaskRecord,
    seq: AtomicU64,
    pending: Mutex<Pending>,
    started: Mutex<HashMap<u32, DateTime<Utc>>>,
}

impl PlatformHost {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        lease: Lease,
        task: TaskRecord,
        last_seq: u64,
    ) -> Self {
        Self {
            store,
            lease,
            task,
            seq: AtomicU64::new(last_seq),
            pending: Mutex::new(Pending::default()),
            started: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn event(&self, kind: TaskEventKind) -> TaskEvent {
        TaskEvent {
            task_id: self.task.id,
            seq: self.seq.fetch_add(1, Ordering::SeqCst) + 1,
            at: Utc::now(),
            kind,
        }
    }

    pub(crate) fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Events published live and the step row not persisted yet.
    pub(crate) fn take_pending(&self) -> Pending {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }

    /// Adds a completed step's row and event to what is pending.
    fn defer(&self, event: TaskEvent, step: StepRecord) {
        if let Ok(mut p) = self.pending.lock() {
            p.events.push(event);
            p.step = Some(step);
        }
    }

    /// Persists what is pending plus `step`, `event` and `audit`, in order: one journal write,
    /// or two when a deferred step row is pending besides `step`.
    async fn write(
        &self,
        step: Option<StepRecord>,
        event: Option<TaskEvent>,
        audit: Vec<NewAuditEvent>,
    ) -> Result<()> {
        let Pending {
            events: mut earlier,
            step: deferred,
        } = self.take_pending();
        let step = match (deferred, step) {
            (Some(d), Some(s)) => {
                let write = JournalWrite {
                    step: Some(d),
                    events: std::mem::take(&mut earlier),
                    audit: Vec::new(),
                };
                self.store.journal(&self.lease, write).await?;
                Some(s)
            }
            (d, s) => s.or(d),
        };
        earlier.extend(event);
        self.store
            .journal(
                &self.lease,
                JournalWrite {
                    step,
                    events: earlier,
                    audit,
                },
            )
            .await
    }

    fn started_at(&self, step: u32) -> Option<DateTime<Utc>> {
        self.started.lock().ok().and_then(|s| s.get(&step).copied())
    }
}

#[async_trait]
impl TaskHost for PlatformHost {
    async fn step_started(&self, step: u32, name: &str) -> Result<()> {
        if let Ok(mut s) = self.started.lock() {
            s.insert(step, Utc::now());
        }
        let event = self.event(TaskEventKind::StepStarted {
            step,
            name: name.to_owned(),
        });
        let flush = match self.pending.lock() {
            Ok(mut p) => {
                p.events.push(event.clone());
                p.step.is_some()
            }
            Err(_) => false,
        };
        self.store.publish(event).await?;
        if flush {
            // The previous step's row (deferred by `step_completed`) becomes durable before
            // this step runs, so that a later attempt replays it instead of running it again.
            self.write(None, None, Vec::new()).await?;
        }
        // Otherwise live only: persisted by the next write (this step's completion's, at the
        // latest with the finish).
        Ok(())
    }

    async fn step_completed(&self, step: u32, name: &str, output: &Value) -> Result<()> {
        let record = StepRecord {
            step,
            name: name.to_owned(),
            status: RunStatus::Completed,
            output: Some(output.clone()),
            error: None,
            started_at: self.started_at(step),
            finished_at: Some(Utc::now()),
        };
        let event = self.event(TaskEventKind::StepCompleted {
            step,
            name: name.to_owned(),
        });
        // Two completions without a step start between them: the earlier row is written first.
        if self.pending.lock().is_ok_and(|p| p.step.is_some()) {
            self.write(None, None, Vec::new()).await?;
        }
        // Deferred: persisted by the next durable write (see the module docs); live at once.
        self.defer(event.clone(), record);
        self.store.publish(event).await
    }

    async fn step_failed(&self, step: u32, name: &str, error: &Error) -> Result<()> {
        let record = StepRecord {
            step,
            name: name.to_owned(),
            status: RunStatus::Failed,
            output: None,
            error: Some(error.clone()),
            started_at: self.started_at(step),
            finished_at: Some(Utc::now()),
        };
        let event = self.event(TaskEventKind::StepFailed {
            step,
            name: name.to_owned(),
            error: error.clone(),
        });
        self.write(Some(record), Some(event), Vec::new()).await
    }

    async fn tool_called(&self, call: &ToolCall) -> Result<()> {
        let event = self.event(TaskEventKind::ToolCalled {
            tool: call.tool.clone(),
            allowed: call.allowed,
        });
        let audit = NewAuditEvent::by(
            &self.task.principal,
            if call.allowed {
                "tool.called"
            } else {
                "tool.denied"
            },
            json!({"tool": call.tool, "scope": call.scope, "allowed": call.allowed}),
        )
        .agent(self.task.agent_id.clone())
        .task(self.task.id);
        self.write(None, Some(event), vec![audit]).await
    }

    fn log(&self, message: &str) {
        tracing::info!(target: "capecontrol::agent", task_id = %self.task.id, agent = %self.task.agent_id, "{message}");
    }
}
