//! The one adapter between the HTTP routes and the platform's task API. Every check is the
//! platform's own (`Platform::get`, `cancel`, `watch_from`, `tasks` take the acting principal):
//! a task is seen, cancelled, watched and audited only by its submitter, an admin or whom the
//! host's `TaskAccessPolicy` allows; anyone else is told it does not exist, and the platform
//! audits the attempt (`task.access_denied`).

#[cfg(feature = "console")]
use capecontrol_core::events::{TaskEventKind, TriggerSource};
use capecontrol_core::runtime::{Platform, TaskEvents};
use capecontrol_core::store::{AuditEvent, AuditFilter, TaskFilter, TaskRecord};
use capecontrol_core::{Principal, Result};
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

    /// The task if `by` may see it; else not-found (audited by the platform).
    pub(crate) async fn get(&self, task_id: Uuid) -> Result<TaskRecord> {
        self.platform.get(task_id, self.by).await
    }

    /// Cancels the task.
    pub(crate) async fn cancel(&self, task_id: Uuid) -> Result<TaskRecord> {
        self.platform.cancel(task_id, self.by).await
    }

    /// The task's events after `after`.
    pub(crate) async fn watch_from(&self, task_id: Uuid, after: u64) -> Result<TaskEvents> {
        self.platform.watch_from(task_id, after, self.by).await
    }

    /// The steps of a task `by` was allowed to read (see [`Tasks::get`]).
    pub(crate) async fn steps(
        &self,
        task: &TaskRecord,
    ) -> Result<Vec<capecontrol_core::agent::StepRecord>> {
        self.platform.store().steps(task.id).await
    }

    /// What started a task `by` was allowed to read (see [`Tasks::get`]): the trigger its
    /// first event, `queued`, names (`None`: submitted directly). Only the console shows it.
    #[cfg(feature = "console")]
    pub(crate) async fn trigger(&self, task: &TaskRecord) -> Result<Option<TriggerSource>> {
        let events = self.platform.store().events(task.id, 0).await?;
        Ok(events.into_iter().next().and_then(|e| match e.kind {
            TaskEventKind::Queued { trigger } => trigger,
            _ => None,
        }))
    }

    /// The tasks `by` may see that match `filter` (a user's own; an admin's `filter` as given).
    pub(crate) async fn list(&self, filter: TaskFilter) -> Result<Vec<TaskRecord>> {
        self.platform.tasks(self.by, filter).await
    }

    /// One page of the audit rows `by` may see: an admin all; a user the rows of its own tasks
    /// (asking for a task checks it may be read) and its own rows.
    pub(crate) async fn audit(&self, mut filter: AuditFilter) -> Result<Vec<AuditEvent>> {
        if !is_admin(self.by) {
            match filter.task_id {
                Some(task_id) => {
                    self.get(task_id).await?;
                }
                None => filter.user_id = Some(self.by.user_id.clone()),
            }
        }
        self.platform.store().list_audit(&filter).await
    }
}
