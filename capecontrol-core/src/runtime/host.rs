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
use crate::store::{Finish, JournalWrite, Lease, NewAuditEvent, Outcome, Store, TaskRecord};

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
    task: Arc<TaskRecord>,
    seq: AtomicU64,
    pending: Mutex<Pending>,
    started: Mutex<HashMap<u32, DateTime<Utc>>>,
}

impl PlatformHost {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        lease: Lease,
        task: Arc<TaskRecord>,
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

    /// Writes the attempt's outcome together with what is pending (events published live,
    /// the deferred step row): the attempt's one writer of its finish.
    pub(crate) async fn finish(&self, outcome: Outcome) -> Result<TaskRecord> {
        let mut pending = self.take_pending();
        let finish = Finish {
            outcome,
            steps: pending.steps(),
            events: pending.events,
            audit: Vec::new(),
        };
        self.store.finish(&self.lease, finish).await
    }

    /// Gives the task back to the queue (the attempt is not counted) with what is pending.
    pub(crate) async fn release(&self) -> Result<()> {
        let mut pending = self.take_pending();
        let steps = pending.steps();
        self.store.release(&self.lease, pending.events, steps).await
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::Principal;
    use crate::store::memory::MemoryStore;
    use crate::store::{ClaimRequest, NewTask, QueueStore, RegistryStore};

    async fn claimed() -> (Arc<MemoryStore>, PlatformHost) {
        let store = Arc::new(MemoryStore::new());
        let now = Utc::now();
        store
            .insert_agent(crate::store::AgentRecord {
                id: "a".into(),
                name: "a".into(),
                slug: "a".into(),
                description: None,
                category: None,
                capabilities: None,
                policy_scopes: Vec::new(),
                manifest: None,
                status: crate::state::AgentStatus::Draft,
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
        store
            .enqueue(NewTask {
                id: uuid::Uuid::new_v4(),
                agent_id: "a".into(),
                version: "1.0.0".into(),
                task: "t".into(),
                input: Value::Null,
                principal: Principal::new("u"),
                priority: 0,
                run_at: None,
                idempotency_key: None,
                max_attempts: 1,
                concurrency_limit: 10,
                timeout: Duration::from_secs(5),
                traceparent: None,
                audit: Vec::new(),
            })
            .await
            .unwrap();
        let c = store
            .claim(&ClaimRequest {
                worker: "w".into(),
                limit: 1,
                lease: Duration::from_secs(30),
                agents: None,
            })
            .await
            .unwrap()
            .remove(0);
        let host = PlatformHost::new(store.clone(), c.lease, Arc::new(c.task), c.last_seq);
        (store, host)
    }

    fn kinds(events: &[TaskEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind.name()).collect()
    }

    #[tokio::test]
    async fn a_completed_step_is_durable_before_the_next_step_and_merged_into_the_finish() {
        let (store, host) = claimed().await;
        let id = host.lease().task_id;
        let mut live = store.subscribe();
        host.step_started(1, "one").await.unwrap();
        host.step_completed(1, "one", &json!(1)).await.unwrap();
        // Published live at once, not written yet.
        assert_eq!(live.recv().await.unwrap().kind.name(), "step_started");
        assert_eq!(live.recv().await.unwrap().kind.name(), "step_completed");
        assert!(store.steps(id).await.unwrap().is_empty());
        assert_eq!(
            kinds(&store.events(id, 0).await.unwrap()),
            ["queued", "started"]
        );

        // The next step's start writes the previous step before returning.
        host.step_started(2, "two").await.unwrap();
        assert_eq!(store.steps(id).await.unwrap().len(), 1);
        assert_eq!(
            kinds(&store.events(id, 0).await.unwrap()),
            [
                "queued",
                "started",
                "step_started",
                "step_completed",
                "step_started"
            ]
        );

        // A tool call's journal write carries a pending step too.
        host.step_completed(2, "two", &json!(2)).await.unwrap();
        host.tool_called(&ToolCall {
            tool: "x".into(),
            scope: None,
            allowed: true,
        })
        .await
        .unwrap();
        assert_eq!(store.steps(id).await.unwrap().len(), 2);

        // The last step's row goes with the finish.
        host.step_started(3, "three").await.unwrap();
        host.step_completed(3, "three", &json!(3)).await.unwrap();
        assert_eq!(store.steps(id).await.unwrap().len(), 2);
        host.finish(Outcome::Completed { output: json!(3) })
            .await
            .unwrap();
        let steps = store.steps(id).await.unwrap();
        assert_eq!(
            steps.iter().map(|s| s.output.clone()).collect::<Vec<_>>(),
            [Some(json!(1)), Some(json!(2)), Some(json!(3))]
        );
        let events = store.events(id, 0).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=events.len() as u64).collect::<Vec<_>>()
        );
        assert_eq!(events.last().unwrap().kind.name(), "completed");
    }

    #[tokio::test]
    async fn a_failed_step_writes_a_pending_completed_one_first() {
        let (store, host) = claimed().await;
        let id = host.lease().task_id;
        host.step_started(1, "one").await.unwrap();
        host.step_completed(1, "one", &json!(1)).await.unwrap();
        host.step_completed(2, "two", &json!(2)).await.unwrap();
        assert_eq!(store.steps(id).await.unwrap().len(), 1);
        host.step_failed(3, "three", &Error::agent("no"))
            .await
            .unwrap();
        let steps = store.steps(id).await.unwrap();
        assert_eq!(
            steps.iter().map(|s| s.status).collect::<Vec<_>>(),
            [
                RunStatus::Completed,
                RunStatus::Completed,
                RunStatus::Failed
            ]
        );
        let events = store.events(id, 0).await.unwrap();
        assert_eq!(
            kinds(&events),
            [
                "queued",
                "started",
                "step_started",
                "step_completed",
                "step_completed",
                "step_failed"
            ]
        );
    }
}
