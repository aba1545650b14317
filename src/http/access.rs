//! The one adapter between the HTTP routes and the platform's task API. It checks ownership
//! itself (a task is seen, cancelled, watched and audited only by its submitter or an admin;
//! another user's task is not found, and the attempt is audited as `policy.denied`), so that
//! moving to principal-checked `Platform` methods is a change of this file only.

use capecontrol_core::runtime::{Platform, TaskEvents};
use capecontrol_core::store::{AuditEvent, AuditFilter, NewAuditEvent, TaskFilter, TaskRecord};
use capecontrol_core::{Error, Principal, Result};
use serde_json::json;
use uuid::Uuid;

use super::is_admin;

/// The task API of a platform as `by` may use it.
pub(crate) struct Tasks<'a> {
    platform: &'a Platform,
    by: &'a Principal,
}

impl<'a> Tasks<'a> {
    pub(crate) fn new(platform: &'a Platform, by: &'a Principal) -> Self {
        Self { platform, by }
    }

    /// The task if `by` may see it; else not-found (audited).
    pub(crate) async fn get(&self, task_id: Uuid, action: &str) -> Result<TaskRecord> {
        let task = self.platform.get(task_id).await?;
        if task.user_id == self.by.user_id || is_admin(self.by) {
            return Ok(task);
        }
        let event = NewAuditEvent::by(
            self.by,
            "policy.denied",
            json!({"action": action, "reason": "not the task's owner"}),
        )
        .task(task_id)
        .agent(task.agent_id.clone());
        self.platform.store().append_audit(event).await?;
        Err(Error::not_found("task", task_id.to_string()))
    }

    /// Cancels the task.
    pub(crate) async fn cancel(&self, task_id: Uuid) -> Result<TaskRecord> {
        self.get(task_id, "task.cancel").await?;
        self.platform.cancel(task_id, self.by).await
    }

    /// The task's events after `after`.
    pub(crate) async fn watch_from(&self, task_id: Uuid, after: u64) -> Result<TaskEvents> {
        self.get(task_id, "task.watch").await?;
        self.platform.watch_from(task_id, after).await
    }

    /// The task's steps.
    pub(crate) async fn steps(
        &self,
        task: &TaskRecord,
    ) -> Result<Vec<capecontrol_core::agent::StepRecord>> {
        self.platform.store().steps(task.id).await
    }

    /// The tasks `by` may see that match `filter` (a user's own; an admin's `filter` as given).
    pub(crate) async fn list(&self, mut filter: TaskFilter) -> Result<Vec<TaskRecord>> {
        if !is_admin(self.by) {
            filter.user_id = Some(self.by.user_id.clone());
        }
        self.platform.store().list_tasks(&filter).await
    }

    /// Audit rows `by` may see: an admin all; a user the rows of its own tasks (asking for a
    /// task checks it is theirs) and its own rows.
    pub(crate) async fn audit(&self, mut filter: AuditFilter) -> Result<Vec<AuditEvent>> {
        if !is_admin(self.by) {
            match filter.task_id {
                Some(task_id) => {
                    self.get(task_id, "audit.read").await?;
                }
                None => filter.user_id = Some(self.by.user_id.clone()),
            }
        }
        self.platform.store().list_audit(&filter).await
    }
}
