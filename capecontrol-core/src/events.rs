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
    /// The task waits, without a worker, until its child tasks are final
    /// ([`TaskContext::join`](crate::TaskContext::join)).
    WaitingForChildren {
        /// The journal position the children's outcomes fill.
        step: u32,
        /// The children waited for.
        children: Vec<Uuid>,
    },
    /// A waiting task was woken (answered, its time came, or its children ended) and is queued
    /// again.
    Resumed {
        /// The journal position the wake-up filled.
        step: u32,
        /// Who answered (`None`: the deadline passed, or the children ended).
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
            Self::WaitingForChildren { .. } => "waiting_for_children",
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

/// The largest serialized output, in bytes, that a `completed` event carries on a store's live
/// broadcast ([`Store::subscribe`](crate::store::Store::subscribe)). A bigger output travels by
/// reference (see [`TaskEvent::into_live`]): the broadcast ring keeps its last events for slow
/// subscribers, and must not pin thousands of large outputs.
pub const LIVE_OUTPUT_MAX: usize = 8 * 1024;

/// The key of the reference object that replaces an elided output on the live broadcast.
pub const ELIDED_OUTPUT_KEY: &str = "$capecontrol_output_elided";

impl TaskEvent {
    /// The form of this event on a store's live broadcast: the event itself, except that a
    /// `completed` event whose output serializes to more than [`LIVE_OUTPUT_MAX`] bytes carries
    /// the reference `{"$capecontrol_output_elided": {"bytes_over": LIVE_OUTPUT_MAX}}` instead of
    /// its output. The stored event (and so [`Store::events`](crate::store::Store::events)) keeps
    /// the output; a subscriber that needs it reads the event `(task_id, seq)` back from the
    /// store, as `watch` does, so watchers and the HTTP event stream still get the whole output.
    pub fn into_live(self) -> TaskEvent {
        match &self.kind {
            TaskEventKind::Completed { output } if serialized_over(output, LIVE_OUTPUT_MAX) => {
                TaskEvent {
                    kind: TaskEventKind::Completed {
                        output: serde_json::json!({
                            ELIDED_OUTPUT_KEY: { "bytes_over": LIVE_OUTPUT_MAX }
                        }),
                    },
                    ..self
                }
            }
            _ => self,
        }
    }

    /// Whether this is a live event whose output was elided by [`TaskEvent::into_live`] (the
    /// whole event is in the store). An output that happens to look like the reference only makes
    /// a watcher read the stored event, which is the same.
    pub fn is_elided(&self) -> bool {
        match &self.kind {
            TaskEventKind::Completed {
                output: Value::Object(o),
            } => o.len() == 1 && o.contains_key(ELIDED_OUTPUT_KEY),
            _ => false,
        }
    }
}

/// Whether `value` serializes to more than `max` bytes; stops serializing past `max`.
fn serialized_over(value: &Value, max: usize) -> bool {
    struct Counter {
        left: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if buf.len() > self.left {
                self.left = 0;
                return Err(std::io::Error::other("over the limit"));
            }
            self.left -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(&mut Counter { left: max }, value).is_err()
}

#[cfg(test)]
mod live_tests {
    use super::*;
    use serde_json::json;

    fn completed(output: Value) -> TaskEvent {
        TaskEvent {
            task_id: Uuid::nil(),
            seq: 7,
            at: Utc::now(),
            kind: TaskEventKind::Completed { output },
        }
    }

    #[test]
    fn a_completed_event_keeps_its_output_up_to_the_limit_and_a_reference_past_it() {
        // `"x…x"` serializes to its length plus two quotes.
        let at_limit = completed(json!("x".repeat(LIVE_OUTPUT_MAX - 2)));
        assert_eq!(at_limit.clone().into_live(), at_limit);
        assert!(!at_limit.is_elided());

        let over = completed(json!("x".repeat(LIVE_OUTPUT_MAX - 1)));
        let live = over.clone().into_live();
        assert!(live.is_elided());
        assert_eq!(
            (live.task_id, live.seq, live.at),
            (over.task_id, over.seq, over.at)
        );
        assert!(serde_json::to_vec(&live).unwrap().len() < 200);

        // Other events pass unchanged, whatever their size.
        let failed = TaskEvent {
            kind: TaskEventKind::Failed {
                error: Error::agent("y".repeat(3 * LIVE_OUTPUT_MAX)),
            },
            ..at_limit
        };
        assert_eq!(failed.clone().into_live(), failed);
    }
}
