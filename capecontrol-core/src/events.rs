//! Live task events (`watch`): what happened to a task, numbered per task so that a watcher can
//! replay from the store and then follow live without gaps or duplicates.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::Error;

/// One event of one task. `seq` starts at 1 and grows by one per event of that task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// The task.
    pub task_id: Uuid,
    /// Position in the task's event sequence, from 1, without gaps.
    pub seq: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: TaskEventKind,
}

/// What happened to a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskEventKind {
    /// Accepted and queued.
    Queued,
    /// A worker started attempt `attempt`.
    Started {
        /// The attempt number, from 1.
        attempt: u32,
        /// The worker that holds the lease.
        worker: String,
    },
    /// A durable step started.
    StepStarted {
        /// The step's position, from 1.
        step: u32,
        /// The step's name.
        name: String,
    },
    /// A durable step completed.
    StepCompleted {
        /// The step's position, from 1.
        step: u32,
        /// The step's name.
        name: String,
    },
    /// A durable step failed.
    StepFailed {
        /// The step's position, from 1.
        step: u32,
        /// The step's name.
        name: String,
        /// Why.
        error: Error,
    },
    /// A tool was called (allowed or denied by the installation's grants).
    ToolCalled {
        /// The tool.
        tool: String,
        /// Whether the call was allowed.
        allowed: bool,
    },
    /// An attempt failed and the task is queued again after `delay_ms`.
    Retrying {
        /// The attempt that failed.
        attempt: u32,
        /// The backoff before the next attempt, in milliseconds.
        delay_ms: u64,
        /// Why the attempt failed.
        error: Error,
    },
    /// Finished with an output.
    Completed {
        /// The task's output.
        output: Value,
    },
    /// Failed for good.
    Failed {
        /// Why.
        error: Error,
    },
    /// Cancelled.
    Cancelled,
    /// The task asked its user (`ask_user`) and waits for an answer, without a worker.
    WaitingForInput {
        /// The journal position the answer fills.
        step: u32,
        /// The question.
        prompt: String,
        /// The JSON Schema the answer must match.
        schema: Value,
        /// When the question times out (`None`: never).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<DateTime<Utc>>,
    },
    /// The task sleeps on a durable timer, without a worker.
    Sleeping {
        /// The journal position the wake-up fills.
        step: u32,
        /// When it wakes.
        until: DateTime<Utc>,
    },
    /// A waiting task was woken (answered, or its time came) and is queued again.
    Resumed {
        /// The journal position the wake-up filled.
        step: u32,
        /// Who answered (`None`: the deadline passed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
}

impl TaskEventKind {
    /// The event's name as in the `type` tag (`step_completed`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Started { .. } => "started",
            Self::StepStarted { .. } => "step_started",
            Self::StepCompleted { .. } => "step_completed",
            Self::StepFailed { .. } => "step_failed",
            Self::ToolCalled { .. } => "tool_called",
            Self::Retrying { .. } => "retrying",
            Self::Completed { .. } => "completed",
            Self::Failed { .. } => "failed",
            Self::Cancelled => "cancelled",
            Self::WaitingForInput { .. } => "waiting_for_input",
            Self::Sleeping { .. } => "sleeping",
            Self::Resumed { .. } => "resumed",
        }
    }

    /// Whether no further event follows for the task (completed, failed, cancelled).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Completed { .. } | Self::Failed { .. } | Self::Cancelled
        )
    }
}
