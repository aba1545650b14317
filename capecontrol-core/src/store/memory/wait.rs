//! [`WaitStore`] on [`MemoryStore`]: the same semantics as PostgreSQL's (see
//! [`crate::store::WaitStore`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{
    MemoryStore, State, TaskStatus, check_continues, check_events, clear_lease, extra_audit,
    lifecycle_event, move_task, persist_events, put_steps, task_audit,
};
use crate::agent::StepRecord;
use crate::error::{Error, Result};
use crate::events::TaskEventKind;
use crate::state::RunStatus;
use crate::store::{Lease, Suspend, TaskRecord, Wait, WaitFor, WaitStore, Wake};

/// Completes the waited-on step with `output`, queues the task, writes its `resumed` event and
/// `task.resumed` audit row. The caller checked that the task waits on that step.
fn wake_one(
    state: &mut State,
    task_id: Uuid,
    wait: &Wait,
    output: serde_json::Value,
    by: Option<String>,
    now: DateTime<Utc>,
) -> Result<(TaskRecord, crate::events::TaskEvent)> {
    let entry = state
        .tasks
        .get_mut(&task_id)
        .ok_or_else(|| Error::not_found("task", task_id.to_string()))?;
    let record = entry.record_mut();
    move_task(record, TaskStatus::Queued)?;
    record.run_at = now;
    put_steps(
        entry,
        [StepRecord {
            step: wait.step,
            name: wait.name.clone(),
            status: RunStatus::Completed,
            output: Some(output),
            error: None,
            started_at: None,
            finished_at: Some(now),
        }],
    );
    let event = lifecycle_event(
        entry,
        TaskEventKind::Resumed {
            step: wait.step,
            by: by.clone(),
        },
        now,
    );
    let record = entry.record.clone();
    state.waits.remove(&task_id);
    state.sync(task_id, now);
    let reason = wait.wake_reason(by.is_some());
    let mut audit = task_audit(
        &record,
        "task.resumed",
        json!({ "step": wait.step, "kind": wait.kind(), "reason": reason }),
    );
    if by.is_some() {
        audit.user_id = by;
    }
    state.append_audit(audit, now);
    Ok((TaskRecord::clone(&record), event))
}

#[async_trait]
impl WaitStore for MemoryStore {
    async fn suspend(&self, lease: &Lease, suspend: Suspend) -> Result<TaskRecord> {
        suspend.check()?;
        let now = self.now();
        check_events(lease.task_id, &suspend.events)?;
        let mut state = self.lock();
        state.fenced(lease)?;
        for a in &suspend.audit {
            state.check_audit_refs(a, None)?;
        }
        let entry = state.fenced(lease)?;
        check_continues(entry, &suspend.events)?;
        put_steps(entry, suspend.steps);
        let mut sent = persist_events(entry, suspend.events);
        let mut wait = suspend.wait;
        wait.until = wait.until.map(super::micros);
        let record = entry.record_mut();
        let cancelled = record.cancel_requested;
        let (kind, audit_type) = if cancelled {
            move_task(record, TaskStatus::Cancelled)?;
            record.completed_at = Some(now);
            (TaskEventKind::Cancelled, "task.cancelled")
        } else {
            move_task(record, TaskStatus::Waiting)?;
            // The attempt is not counted: a task may wait any number of times.
            record.attempts = record.attempts.saturating_sub(1);
            if let Some(until) = wait.until {
                record.run_at = until;
            }
            (wait.event_kind(), "task.waiting")
        };
        clear_lease(entry);
        sent.push(lifecycle_event(entry, kind, now));
        let record = entry.record.clone();
        state.sync(record.id, now);
        for a in suspend.audit {
            state.append_audit(extra_audit(&record, a), now);
        }
        state.append_audit(
            task_audit(
                &record,
                audit_type,
                json!({ "step": wait.step, "kind": wait.kind(), "until": wait.until, "worker": lease.owner }),
            ),
            now,
        );
        if !cancelled {
            state.waits.insert(record.id, wait);
        }
        self.send_events(state, sent);
        Ok(TaskRecord::clone(&record))
    }

    async fn current_wait(&self, task_id: Uuid) -> Result<Option<Wait>> {
        let state = self.lock();
        let entry = state
            .tasks
            .get(&task_id)
            .ok_or_else(|| Error::not_found("task", task_id.to_string()))?;
        if entry.record.status != TaskStatus::Waiting {
            return Ok(None);
        }
        Ok(state.waits.get(&task_id).cloned())
    }

    async fn wake(&self, wake: Wake) -> Result<TaskRecord> {
        wake.check()?;
        let now = self.now();
        let mut state = self.lock();
        let status = state
            .tasks
            .get(&wake.task_id)
            .map(|t| t.record.status)
            .ok_or_else(|| Error::not_found("task", wake.task_id.to_string()))?;
        let wait = match state.waits.get(&wake.task_id) {
            Some(w) if status == TaskStatus::Waiting && w.step == wake.step => w.clone(),
            _ => {
                return Err(Error::conflict(format!(
                    "task {} is {status}, not waiting on step {}",
                    wake.task_id, wake.step
                )));
            }
        };
        for a in &wake.audit {
            state.check_audit_refs(a, None)?;
        }
        let (record, event) = wake_one(&mut state, wake.task_id, &wait, wake.output, wake.by, now)?;
        for a in wake.audit {
            state.append_audit(extra_audit(&record, a), now);
        }
        self.send_events(state, [event]);
        self.wake();
        Ok(record)
    }

    async fn wake_due(&self) -> Result<Vec<Uuid>> {
        let now = self.now();
        let mut state = self.lock();
        let due: Vec<(Uuid, Wait)> = state
            .waits
            .iter()
            .filter(|(_, w)| w.until.is_some_and(|u| u <= now))
            .map(|(id, w)| (*id, w.clone()))
            .collect();
        let mut ids = Vec::new();
        let mut sent = Vec::new();
        for (id, wait) in due {
            if state
                .tasks
                .get(&id)
                .is_none_or(|t| t.record.status != TaskStatus::Waiting)
            {
                state.waits.remove(&id);
                continue;
            }
            let on_timeout = wait.on_timeout.clone();
            let (_, event) = wake_one(&mut state, id, &wait, on_timeout, None, now)?;
            sent.push(event);
            ids.push(id);
        }
        self.send_events(state, sent);
        if !ids.is_empty() {
            self.wake();
        }
        Ok(ids)
    }

    async fn waiting_count(&self) -> Result<u64> {
        let state = self.lock();
        // Every waiting task has a wait (a cancelled one may keep a stale one: filtered).
        let n = state
            .waits
            .keys()
            .filter(|id| {
                state
                    .tasks
                    .get(id)
                    .is_some_and(|t| t.record.status == TaskStatus::Waiting)
            })
            .count();
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    async fn joinable(&self, task_id: Option<Uuid>, limit: usize) -> Result<Vec<(Uuid, Wait)>> {
        let state = self.lock();
        let ready = |id: &Uuid, wait: &Wait| {
            let WaitFor::Children { ids } = &wait.waiting_for else {
                return false;
            };
            state
                .tasks
                .get(id)
                .is_some_and(|t| t.record.status == TaskStatus::Waiting)
                && ids.iter().all(|c| {
                    state
                        .tasks
                        .get(c)
                        .is_none_or(|t| t.record.status.is_final())
                })
        };
        Ok(match task_id {
            Some(id) => state
                .waits
                .get(&id)
                .filter(|w| ready(&id, w))
                .map(|w| (id, w.clone()))
                .into_iter()
                .collect(),
            None => state
                .waits
                .iter()
                .filter(|(id, w)| ready(id, w))
                .take(limit)
                .map(|(id, w)| (*id, w.clone()))
                .collect(),
        })
    }
}
