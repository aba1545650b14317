//! Task-level authorization: who may read or act on a task.
//!
//! The rule of [`Platform`](super::platform::Platform)'s task API: a principal may read and act
//! on a task it submitted; a principal with the [`ADMIN`](crate::policy::ADMIN) role on every
//! task; anyone else only where the host's [`TaskAccessPolicy`] allows it. Everyone else is
//! told the task does not exist ([`Error::not_found`](crate::Error::not_found), HTTP 404), and
//! the attempt is audited as `task.access_denied` with the action. Trusted host code reaches
//! every task through [`Platform::trusted`](super::platform::Platform::trusted).

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::policy::Principal;
use crate::store::TaskRecord;

/// What a principal wants to do with a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskAction {
    /// Read the task's record (`get`, `wait`).
    Get,
    /// Follow the task's events (`watch`, `watch_from`).
    Watch,
    /// Read the task's audit trail.
    Audit,
    /// Cancel the task.
    Cancel,
    /// See the task in a listing of another user's tasks.
    List,
    /// Rate the task (`Platform::rate`).
    Rate,
    /// Answer the task's question (`Platform::answer`).
    Answer,
}

impl TaskAction {
    /// The action's name, as written in `task.access_denied` audit rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Watch => "watch",
            Self::Audit => "audit",
            Self::Cancel => "cancel",
            Self::List => "list",
            Self::Rate => "rate",
            Self::Answer => "answer",
        }
    }
}

impl fmt::Display for TaskAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host-supplied rule that lets principals reach tasks they did not submit (a team's tasks,
/// a support role, …). Consulted only when the principal is neither the task's submitter nor an
/// admin; registered with
/// [`PlatformBuilder::task_access`](super::builder::PlatformBuilder::task_access).
///
/// ```
/// use async_trait::async_trait;
/// use capecontrol_core::runtime::access::{TaskAccessPolicy, TaskAction};
/// use capecontrol_core::store::TaskRecord;
/// use capecontrol_core::Principal;
///
/// /// Support staff may read (never cancel) every task.
/// struct SupportReads;
///
/// #[async_trait]
/// impl TaskAccessPolicy for SupportReads {
///     async fn allows(&self, by: &Principal, _task: &TaskRecord, action: TaskAction)
///         -> capecontrol_core::Result<bool> {
///         Ok(by.has_role("support") && action != TaskAction::Cancel)
///     }
/// }
/// ```
#[async_trait]
pub trait TaskAccessPolicy: Send + Sync + 'static {
    /// Whether `by` may perform `action` on `task`. An error is returned to the caller as is
    /// (nothing is granted).
    async fn allows(&self, by: &Principal, task: &TaskRecord, action: TaskAction) -> Result<bool>;
}

/// The default policy: nobody beyond the submitter and admins.
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnerOrAdmin;

#[async_trait]
impl TaskAccessPolicy for OwnerOrAdmin {
    async fn allows(&self, _: &Principal, _: &TaskRecord, _: TaskAction) -> Result<bool> {
        Ok(false)
    }
}

/// Whether `by` is the task's submitter or an admin (no policy consulted).
pub(crate) fn owns_or_admin(by: &Principal, task: &TaskRecord) -> bool {
    by.is_admin() || (!by.user_id.is_empty() && by.user_id == task.user_id)
}
