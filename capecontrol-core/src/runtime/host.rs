//! The platform's [`TaskHost`]: journals steps through the store under the attempt's lease,
//! numbers and publishes the task's events, audits tool calls.
//!
//! Events are published live at once and persisted (with the same numbers) by the next durable
//! write. A completed step's row is deferred too: it is written by the start of the next step
//! (before that step runs, so a completed step is durable before the following one executes),
//! by a tool call's or a failed step's journal write, or with the attempt's finish or release.
//!
//! Every write (journal, finish, release) is repeated with backoff while the store reports a
//! [transient](crate::Error::is_transient) error, until it commits, the lease is lost (the
//! heartbeat loop, which keeps renewing the lease meanwhile, found it gone), the node is
//! killed, or the retry window (two lease lengths) is over. A store that cannot tell whether an
//! interrupted write committed recognises the repeated write as already applied. A journal
//! write that fails for good puts its step row, events and audit rows back into what is pending,
//! so the attempt's finish or release carries them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use uuid::Uuid;

use super::node::Node;
use super::request::TaskRequest;
use crate::agent::{StepRecord, TaskHost, ToolCall};
use crate::error::{Error, Result};
use crate::events::{TaskEvent, TaskEventKind};
use crate::state::RunStatus;
use crate::store::{Finish, JournalWrite, Lease, NewAuditEvent, Outcome, Store, TaskRecord};

/// The first wait before a write is repeated after a transient error (doubling per try).
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// The longest wait between two tries of a write.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Published but not yet persisted: events in order, the row of a completed step (or of a
/// step whose journal write failed), and audit rows whose journal write failed.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) events: Vec<TaskEvent>,
    pub(crate) step: Option<StepRecord>,
    pub(crate) audit: Vec<NewAuditEvent>,
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
    /// The claimed task. `None` only after [`PlatformHost::let_go_of_task`], given the only handle
    /// on the host before the store writes the outcome.
    task: Option<Arc<TaskRecord>>,
    seq: AtomicU64,
    pending: Mutex<Pending>,
    started: Mutex<HashMap<u32, DateTime<Utc>>>,
    /// Fires when the lease is known to be lost: writes are not repeated after it.
    lost: CancellationToken,
    /// Fires when the node is killed: writes are not repeated after it.
    kill: CancellationToken,
    /// How long a write is repeated on transient errors at most.
    retry_for: Duration,
    /// The durable wait the task asked for (see the `wait` module).
    wait: wait::Suspension,
    /// The node whose gateway submits the task's children (`None`: the task cannot spawn).
    node: Option<Arc<Node>>,
}

mod wait;

impl PlatformHost {
    /// The host of the attempt holding `lease` on `task`. Its writes are not repeated once
    /// `lost` (the lease is gone) or `kill` (the node is dropped) fires, nor after `retry_for`.
    /// The tokens are the caller's: an attempt creates none of its own here.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        lease: Lease,
        task: Arc<TaskRecord>,
        last_seq: u64,
        lost: CancellationToken,
        kill: CancellationToken,
        retry_for: Duration,
    ) -> Self {
        Self {
            store,
            lease,
            task: Some(task),
            seq: AtomicU64::new(last_seq),
            pending: Mutex::new(Pending::default()),
            started: Mutex::new(HashMap::new()),
            lost,
            kill,
            retry_for,
            wait: wait::Suspension::default(),
            node: None,
        }
    }

    /// Lets the task spawn children through `node`'s gateway.
    pub(crate) fn submitting(mut self, node: Arc<Node>) -> Self {
        self.node = Some(node);
        self
    }

    /// Runs the write `op` until it does not fail transiently, waiting with exponential
    /// backoff between tries, while the lease is not known lost, the node not killed and the
    /// retry window not over.
    async fn retried<T, F, Fut>(&self, what: &'static str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.retry_for;
        let mut delay = RETRY_FIRST;
        let mut tries = 1u32;
        let mut last_try = false;
        loop {
            match op().await {
                Err(e) if e.is_transient() => {
                    let now = tokio::time::Instant::now();
                    if last_try || self.kill.is_cancelled() || now >= deadline {
                        return Err(e);
                    }
                    if self.lost.is_cancelled() {
                        // The lease is gone, perhaps because the write did commit: one more
                        // try tells an applied write from a lost lease.
                        last_try = true;
                        continue;
                    }
                    tracing::warn!(
                        task_id = %self.lease.task_id, write = what, tries, error = %e,
                        "transient store error; repeating the write"
                    );
                    metrics::counter!("store_write_retries_total", "write" => what).increment(1);
                    // Boxed: the rare wait would be laid out inside every write's future.
                    if !Box::pin(self.back_off(delay.min(deadline - now))).await {
                        return Err(e);
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Waits `delay` before a write is repeated, or less if the lease is lost meanwhile (one
    /// more try tells an applied write from a lost lease); `false` when the node is killed.
    async fn back_off(&self, delay: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = self.lost.cancelled() => true,
            () = self.kill.cancelled() => false,
        }
    }

    /// One journal write, repeated on transient errors.
    async fn journal(&self, write: JournalWrite) -> Result<()> {
        self.retried("journal", || self.store.journal(&self.lease, write.clone()))
            .await
    }

    /// Puts what a failed write took back in front of what is pending.
    fn restore(&self, events: Vec<TaskEvent>, step: Option<StepRecord>, audit: Vec<NewAuditEvent>) {
        if let Ok(mut p) = self.pending.lock() {
            let later = std::mem::replace(&mut p.events, events);
            p.events.extend(later);
            let later = std::mem::replace(&mut p.audit, audit);
            p.audit.extend(later);
            // A step row pending since is newer than the restored one.
            if p.step.is_none() {
                p.step = step;
            }
        }
    }

    pub(crate) fn event(&self, kind: TaskEventKind) -> TaskEvent {
        TaskEvent {
            task_id: self.lease.task_id,
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
    /// Repeated on transient errors (see the module docs).
    pub(crate) async fn finish(&self, outcome: Outcome) -> Result<Arc<TaskRecord>> {
        let finish = self.pending_finish(outcome);
        self.retried("finish", || self.store.finish(&self.lease, finish.clone()))
            .await
    }

    /// The finish of `outcome` with what is pending (not an `async` step of [`Self::finish`]:
    /// the pending rows would be laid out in its future beside the finish made of them).
    fn pending_finish(&self, outcome: Outcome) -> Finish {
        let mut pending = self.take_pending();
        Finish {
            outcome,
            steps: pending.steps(),
            events: pending.events,
            audit: pending.audit,
        }
    }

    /// Lets go of the claimed record, through the attempt's only handle on its host, before
    /// the host's last write ([`Self::finish`]): a store whose record nobody else holds any
    /// more (`MemoryStore`, once the attempt has let go of its own) changes it where it is
    /// instead of copying it. Nothing is dropped while the host is shared (the agent's
    /// context, a child's submission); the host is not moved either (it is about 700 bytes,
    /// and a future owning it would be laid out inside every attempt's future).
    pub(crate) fn let_go_of_task(host: &mut Arc<Self>) {
        if let Some(host) = Arc::get_mut(host) {
            host.task = None;
        }
    }

    /// The claimed task (see the `task` field for when it is not there: never while the host
    /// is shared).
    fn task(&self) -> &TaskRecord {
        self.task.as_deref().unwrap_or_else(|| {
            unreachable!("only `let_go_of_task`, with the only handle on the host, clears it")
        })
    }

    /// Gives the task back to the queue (the attempt is not counted) with what is pending;
    /// repeated on transient errors. Audit rows of failed journal writes are written as a
    /// journal write first.
    pub(crate) async fn release(&self) -> Result<()> {
        let mut pending = self.take_pending();
        let steps = pending.steps();
        let events = std::mem::take(&mut pending.events);
        let events = if pending.audit.is_empty() {
            events
        } else {
            self.journal(JournalWrite {
                step: None,
                events,
                audit: std::mem::take(&mut pending.audit),
            })
            .await?;
            Vec::new()
        };
        self.retried("release", || {
            self.store
                .release(&self.lease, events.clone(), steps.clone())
        })
        .await
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
            audit: mut earlier_audit,
        } = self.take_pending();
        earlier_audit.extend(audit);
        let step = match (deferred, step) {
            (Some(d), Some(s)) => {
                let write = JournalWrite {
                    step: Some(d),
                    events: std::mem::take(&mut earlier),
                    audit: Vec::new(),
                };
                if let Err(e) = self.journal(write.clone()).await {
                    // The newer step's row is lost with the error returned to its step; the
                    // deferred row, the events and the audit rows stay pending.
                    let mut events = write.events;
                    events.extend(event);
                    self.restore(events, write.step, earlier_audit);
                    return Err(e);
                }
                Some(s)
            }
            (d, s) => s.or(d),
        };
        earlier.extend(event);
        let write = JournalWrite {
            step,
            events: earlier,
            audit: earlier_audit,
        };
        if let Err(e) = self.journal(write.clone()).await {
            self.restore(write.events, write.step, write.audit);
            return Err(e);
        }
        Ok(())
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
            &self.task().principal,
            match (call.reported, call.allowed) {
                // Reported by a container agent: its own account, not a host decision.
                (true, _) => "tool.reported",
                (false, true) => "tool.called",
                (false, false) => "tool.denied",
            },
            json!({"tool": call.tool, "scope": call.scope, "allowed": call.allowed}),
        )
        .agent(self.task().agent_id.clone())
        .task(self.lease.task_id);
        self.write(None, Some(event), vec![audit]).await
    }

    fn log(&self, message: &str) {
        tracing::info!(target: "capecontrol::agent", task_id = %self.lease.task_id, agent = %self.task().agent_id, "{message}");
    }

    async fn suspend(&self, wait: crate::store::Wait) -> Result<()> {
        self.request_suspend(wait)
    }

    async fn spawn_child(&self, step: u32, agent: &str, task: &str, input: Value) -> Result<Uuid> {
        let Some(node) = &self.node else {
            return Err(Error::resource(format!(
                "spawning a child task (`{agent}`/`{task}`) needs a platform node"
            )));
        };
        let parent = self.task();
        let mut request = TaskRequest::new(agent, task, input, parent.principal.clone())
            .idempotency_key(format!("child:{}:{step}", parent.id));
        request.traceparent = parent.traceparent.clone();
        let spawned = NewAuditEvent::by(
            &parent.principal,
            "task.spawned",
            json!({ "parent_id": parent.id, "parent_agent": parent.agent_id, "step": step,
                    "task": task }),
        );
        node.gateway
            .submit_linked(node, request, Some(parent.id), vec![spawned])
            .await
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
                owner: None,
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
        store
            .enqueue(NewTask {
                id: Uuid::new_v4(),
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
                trigger: None,
                policy_allowed: false,
                audit: Vec::new(),
                parent_id: None,
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
        let host = PlatformHost::new(
            store.clone(),
            c.lease,
            c.task,
            c.last_seq,
            CancellationToken::new(),
            CancellationToken::new(),
            Duration::from_secs(60),
        );
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
            reported: false,
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
