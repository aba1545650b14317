//! The platform's [`TaskHost`]: journals steps through the store under the attempt's lease,
//! numbers and publishes the task's events, audits tool calls.

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

pub(crate) struct PlatformHost {
    store: Arc<dyn Store>,
    lease: Lease,
    task: TaskRecord,
    seq: AtomicU64,
    pending: Mutex<Vec<TaskEvent>>,
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
            pending: Mutex::new(Vec::new()),
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

    /// Events published live but not persisted yet.
    pub(crate) fn lease(&self) -> &Lease {
        &self.lease
    }

    pub(crate) fn take_pending(&self) -> Vec<TaskEvent> {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }

    async fn write(
        &self,
        step: Option<StepRecord>,
        event: TaskEvent,
        audit: Vec<NewAuditEvent>,
    ) -> Result<()> {
        let mut events = self.take_pending();
        events.push(event);
        self.store
            .journal(
                &self.lease,
                JournalWrite {
                    step,
                    events,
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
        if let Ok(mut p) = self.pending.lock() {
            p.push(event.clone());
        }
        // Live only: persisted with the step's completion, in the same transaction.
        self.store.publish(event).await
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
        self.write(Some(record), event, Vec::new()).await
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
        self.write(Some(record), event, Vec::new()).await
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
        self.write(None, event, vec![audit]).await
    }

    fn log(&self, message: &str) {
        tracing::info!(target: "capecontrol::agent", task_id = %self.task.id, agent = %self.task.agent_id, "{message}");
    }
}
