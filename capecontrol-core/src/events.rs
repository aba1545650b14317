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

/// What started a triggered task: the payload of its `task.triggered` audit event and the
/// `trigger` of its `queued` event (`TaskEventKind::Queued`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerSource {
    /// An emitted event.
    Event {
        /// The event's name (`user.onboard`).
        event: String,
        /// The event's id.
        event_id: String,
    },
    /// A schedule instant.
    Schedule {
        /// The cron expression.
        schedule: String,
        /// The instant, UTC.
        instant: DateTime<Utc>,
        /// Earlier instants of a missed window this fire stands for.
        missed: u32,
    },
    /// A webhook delivery.
    Webhook {
        /// The manifest's webhook path that matched.
        path: String,
        /// The delivery id.
        delivery_id: String,
    },
}

impl TriggerSource {
    /// The trigger's kind as in the `kind` tag: `event`, `schedule` or `webhook`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Event { .. } => "event",
            Self::Schedule { .. } => "schedule",
            Self::Webhook { .. } => "webhook",
        }
    }
}

/// For people (the console's task page): `event user.onboard (id evt-1)`,
/// `schedule 0 */6 * * * at 2027-03-28T01:00:00Z` (with `, standing for 3 missed` when a
/// missed window was fired once), `webhook /payments/{id} (delivery d-1)`.
impl std::fmt::Display for TriggerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Event { event, event_id } => write!(f, "event {event} (id {event_id})"),
            Self::Schedule {
                schedule,
                instant,
                missed,
            } => {
                let at = instant.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                write!(f, "schedule {schedule} at {at}")?;
                if *missed > 0 {
                    write!(f, ", standing for {missed} missed")?;
                }
                Ok(())
            }
            Self::Webhook { path, delivery_id } => {
                write!(f, "webhook {path} (delivery {delivery_id})")
            }
        }
    }
}

/// What happened to a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskEventKind {
    /// Accepted and queued (the task's first event). A task started by a trigger names what
    /// started it (`{"type": "queued", "trigger": {"kind": "event", …}}`); a submitted task's
    /// event is `{"type": "queued"}`. A released task's second `queued` never carries one.
    Queued {
        /// What started the task, when a trigger did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trigger: Option<TriggerSource>,
    },
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
            Self::Queued { .. } => "queued",
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

#[cfg(test)]
mod trigger_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_queued_event_s_json_keeps_its_bare_form_and_adds_the_trigger() {
        let bare = TaskEventKind::Queued { trigger: None };
        assert_eq!(
            serde_json::to_value(&bare).unwrap(),
            json!({"type": "queued"})
        );
        // Rows written before the trigger existed still decode.
        let old: TaskEventKind = serde_json::from_value(json!({"type": "queued"})).unwrap();
        assert_eq!(old, bare);
        let source = TriggerSource::Event {
            event: "user.onboard".into(),
            event_id: "evt-1".into(),
        };
        let triggered = TaskEventKind::Queued {
            trigger: Some(source.clone()),
        };
        let value = serde_json::to_value(&triggered).unwrap();
        assert_eq!(
            value,
            json!({"type": "queued",
                   "trigger": {"kind": "event", "event": "user.onboard", "event_id": "evt-1"}})
        );
        assert_eq!(
            serde_json::from_value::<TaskEventKind>(value).unwrap(),
            triggered
        );
        assert_eq!(triggered.name(), "queued");
        assert_eq!(source.to_string(), "event user.onboard (id evt-1)");
        let bad = json!({"type": "queued", "trigger": {"kind": "carrier-pigeon"}});
        assert!(serde_json::from_value::<TaskEventKind>(bad).is_err());
    }

    #[test]
    fn a_trigger_reads_well() {
        let at = DateTime::parse_from_rfc3339("2027-03-28T01:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut schedule = TriggerSource::Schedule {
            schedule: "0 */6 * * *".into(),
            instant: at,
            missed: 0,
        };
        assert_eq!(
            schedule.to_string(),
            "schedule 0 */6 * * * at 2027-03-28T01:00:00Z"
        );
        if let TriggerSource::Schedule { missed, .. } = &mut schedule {
            *missed = 3;
        }
        assert_eq!(
            schedule.to_string(),
            "schedule 0 */6 * * * at 2027-03-28T01:00:00Z, standing for 3 missed"
        );
        let hook = TriggerSource::Webhook {
            path: "/payments/{id}".into(),
            delivery_id: "d-1".into(),
        };
        assert_eq!(hook.to_string(), "webhook /payments/{id} (delivery d-1)");
        assert_eq!([schedule.kind(), hook.kind()], ["schedule", "webhook"]);
    }
}
