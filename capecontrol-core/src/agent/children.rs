//! Child tasks: [`TaskContext::spawn`] submits a task as a child of the running one, and
//! [`TaskContext::join`] (or `.await` on one [`Child`]) waits durably for children to end.
//!
//! A spawn is a journal step (`spawn`) whose value is the child's id. On a platform the child
//! goes through the gateway as the parent's principal (policy, rate limits, middleware, a
//! `task.spawned` audit row naming the parent) with the idempotency key
//! `child:{parent_id}:{step}`: a parent that crashes after the enqueue but before its journal
//! write spawns the same child again on its replay, i.e. no second one.
//!
//! A join is a durable wait (`join`, [`WaitFor::Children`]): the parent leaves its worker as
//! `waiting` until every child is final, then resumes with the children's outcomes, journaled:
//! a replay returns them without waiting again. A cancelled parent cancels its children (the
//! store's cancel cascades).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::TaskContext;
use crate::error::{Error, Result};
use crate::state::TaskStatus;
use crate::store::{TaskRecord, Wait, WaitFor};

/// The journal step name of a spawn.
pub(crate) const SPAWN_STEP: &str = "spawn";
/// The journal step name of a join.
pub(crate) const JOIN_STEP: &str = "join";

/// How a child task ended: what [`TaskContext::join`] returns for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ChildOutcome {
    /// The child completed with `output`.
    Completed {
        /// The child.
        task_id: Uuid,
        /// Its output.
        output: Value,
    },
    /// The child failed for good with `error` (typed: its category and fields are kept).
    Failed {
        /// The child.
        task_id: Uuid,
        /// Why.
        error: Error,
    },
    /// The child was cancelled.
    Cancelled {
        /// The child.
        task_id: Uuid,
    },
}

impl ChildOutcome {
    /// The outcome of a final task (`None` if it is not final).
    pub fn of(task: &TaskRecord) -> Option<Self> {
        let task_id = task.id;
        Some(match task.status {
            TaskStatus::Completed => Self::Completed {
                task_id,
                output: task.output.clone().unwrap_or(Value::Null),
            },
            TaskStatus::Failed => Self::Failed {
                task_id,
                error: task.error.clone().unwrap_or_else(|| {
                    Error::agent(task.error_message.clone().unwrap_or_default())
                }),
            },
            TaskStatus::Cancelled => Self::Cancelled { task_id },
            _ => return None,
        })
    }

    /// The outcome of a child that no longer exists.
    pub fn missing(task_id: Uuid) -> Self {
        Self::Failed {
            task_id,
            error: Error::not_found("task", task_id.to_string()),
        }
    }

    /// The child's id.
    pub fn task_id(&self) -> Uuid {
        match self {
            Self::Completed { task_id, .. }
            | Self::Failed { task_id, .. }
            | Self::Cancelled { task_id } => *task_id,
        }
    }

    /// The output, if the child completed.
    pub fn output(&self) -> Option<&Value> {
        match self {
            Self::Completed { output, .. } => Some(output),
            _ => None,
        }
    }

    /// The output, or the child's error (a cancelled child: a `conflict` error).
    pub fn into_result(self) -> Result<Value> {
        match self {
            Self::Completed { output, .. } => Ok(output),
            Self::Failed { error, .. } => Err(error),
            Self::Cancelled { task_id } => Err(Error::conflict(format!(
                "child task {task_id} was cancelled"
            ))),
        }
    }
}

/// A child task spawned by [`TaskContext::spawn`]; `.await` it to wait durably for its
/// outcome, or hand several to [`TaskContext::join`].
#[derive(Clone)]
#[must_use = "a child is only waited for when awaited or joined"]
pub struct Child<'a> {
    cx: &'a TaskContext,
    id: Uuid,
}

impl std::fmt::Debug for Child<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child").field("id", &self.id).finish()
    }
}

impl Child<'_> {
    /// The child task's id.
    pub fn id(&self) -> Uuid {
        self.id
    }
}

impl<'a> IntoFuture for Child<'a> {
    type Output = Result<ChildOutcome>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<ChildOutcome>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let cx = self.cx;
            let mut outcomes = cx.join([self]).await?;
            outcomes
                .pop()
                .ok_or_else(|| Error::agent("the join of one child returned no outcome"))
        })
    }
}

impl TaskContext {
    /// Spawns task `task` of agent `agent` (id or slug) on `input` as a child of this task and
    /// returns its handle at once (the child is queued; it runs on any node).
    ///
    /// On a platform the child is submitted through the gateway as this task's principal (so
    /// the agent must be installed for the same user, and the policy, rate limits and
    /// middleware apply; a refusal is this call's error), linked to this task
    /// ([`TaskRecord::parent_id`]) and audited (`task.spawned`, naming the parent). The spawn is
    /// a journal step: a replay returns the same child, and a crash right after the enqueue
    /// spawns no second one. Outside a platform it is a `resource` error.
    ///
    /// ```no_run
    /// # async fn f(cx: &capecontrol_core::TaskContext) -> capecontrol_core::Result<()> {
    /// let mut children = Vec::new();
    /// for n in 0..10 {
    ///     children.push(cx.spawn("squarer", "square", serde_json::json!({"n": n})).await?);
    /// }
    /// let outcomes = cx.join(children).await?; // waits without a worker
    /// let sum: i64 = outcomes.iter().filter_map(|o| o.output()?.as_i64()).sum();
    /// # let _ = sum; Ok(()) }
    /// ```
    pub async fn spawn(&self, agent: &str, task: &str, input: Value) -> Result<Child<'_>> {
        let step = self.next_step.fetch_add(1, Ordering::SeqCst);
        if let Some(record) = self.completed.get(&step) {
            if record.name != SPAWN_STEP {
                return Err(Error::agent(format!(
                    "journal mismatch at step {step}: journaled `{}`, code runs `{SPAWN_STEP}`",
                    record.name
                )));
            }
            let id = record
                .output
                .as_ref()
                .and_then(|o| o.get("task_id"))
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    Error::agent(format!(
                        "journaled spawn at step {step} does not name its child task"
                    ))
                })?;
            return Ok(Child { cx: self, id });
        }
        if self.cancel.is_cancelled() {
            return Err(Error::conflict("task cancelled"));
        }
        self.host.step_started(step, SPAWN_STEP).await?;
        match self.host.spawn_child(step, agent, task, input).await {
            Ok(id) => {
                self.host
                    .step_completed(step, SPAWN_STEP, &json!({ "task_id": id }))
                    .await?;
                Ok(Child { cx: self, id })
            }
            Err(error) => {
                self.host.step_failed(step, SPAWN_STEP, &error).await?;
                Err(error)
            }
        }
    }

    /// Waits durably until every child in `children` is final and returns their outcomes, in
    /// the same order: the output, or the typed error of a child that failed, or
    /// [`ChildOutcome::Cancelled`].
    ///
    /// On a platform the task becomes `waiting` (no worker, no lease; a
    /// `waiting_for_children` event) and resumes on any node once the last child ends. The
    /// outcomes are a journal step (`join`): a replay returns them without waiting again. No
    /// children: an empty list at once, without a step. Outside a platform it is a `resource`
    /// error.
    pub async fn join<'c, I>(&self, children: I) -> Result<Vec<ChildOutcome>>
    where
        I: IntoIterator<Item = Child<'c>>,
    {
        let ids: Vec<Uuid> = children.into_iter().map(|c| c.id).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let step = self.next_step.fetch_add(1, Ordering::SeqCst);
        let wait = Wait {
            step,
            name: JOIN_STEP.to_owned(),
            until: None,
            on_timeout: Value::Null,
            waiting_for: WaitFor::Children { ids: ids.clone() },
        };
        let value = self.wait_step(wait).await?;
        let outcomes: Vec<ChildOutcome> = serde_json::from_value(value).map_err(|e| {
            Error::agent(format!("journaled outcomes of `join` do not decode: {e}"))
        })?;
        let journaled: Vec<Uuid> = outcomes.iter().map(ChildOutcome::task_id).collect();
        if journaled != ids {
            return Err(Error::agent(format!(
                "journal mismatch at step {step}: the join journaled other children"
            )));
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ErrorCategory;
    use crate::agent::{MemoryJournal, StepRecord};
    use crate::state::RunStatus;

    fn completed(step: u32, name: &str, output: Value) -> StepRecord {
        StepRecord {
            step,
            name: name.into(),
            status: RunStatus::Completed,
            output: Some(output),
            error: None,
            started_at: None,
            finished_at: None,
        }
    }

    #[tokio::test]
    async fn a_host_that_cannot_submit_refuses_and_journals_the_failure() {
        let journal = Arc::new(MemoryJournal::default());
        let cx = TaskContext::local().build(journal.clone());
        let err = cx.spawn("a", "t", json!({})).await.unwrap_err();
        assert_eq!(err.category(), ErrorCategory::Resource);
        assert!(err.to_string().contains("needs a platform"), "{err}");
        let steps = journal.steps();
        assert_eq!(steps.len(), 1);
        assert_eq!(
            (steps[0].name.as_str(), steps[0].status),
            (SPAWN_STEP, RunStatus::Failed)
        );
        assert!(cx.join(Vec::new()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_replay_returns_the_journaled_children_and_outcomes() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let outcomes = vec![
            ChildOutcome::Completed {
                task_id: a,
                output: json!(1),
            },
            ChildOutcome::Failed {
                task_id: b,
                error: Error::invalid_field("/n", "too big"),
            },
        ];
        let cx = TaskContext::local()
            .completed_steps(vec![
                completed(1, SPAWN_STEP, json!({"task_id": a})),
                completed(2, SPAWN_STEP, json!({"task_id": b})),
                completed(3, JOIN_STEP, serde_json::to_value(&outcomes).unwrap()),
            ])
            .build(Arc::new(MemoryJournal::default()));
        let first = cx.spawn("x", "t", json!(1)).await.unwrap();
        let second = cx.spawn("x", "t", json!(2)).await.unwrap();
        assert_eq!((first.id(), second.id()), (a, b));
        let got = cx.join([first, second]).await.unwrap();
        assert_eq!(got, outcomes);
        let err = got[1].clone().into_result().unwrap_err();
        assert_eq!(err.category(), ErrorCategory::Validation);
        assert_eq!(err.field_errors()[0].pointer, "/n");
    }

    #[tokio::test]
    async fn a_join_of_other_children_or_another_step_is_a_mismatch() {
        let a = Uuid::new_v4();
        let other = vec![ChildOutcome::Cancelled {
            task_id: Uuid::new_v4(),
        }];
        let cx = TaskContext::local()
            .completed_steps(vec![
                completed(1, SPAWN_STEP, json!({"task_id": a})),
                completed(2, JOIN_STEP, serde_json::to_value(&other).unwrap()),
            ])
            .build(Arc::new(MemoryJournal::default()));
        let child = cx.spawn("x", "t", json!(1)).await.unwrap();
        let err = child.await.unwrap_err();
        assert!(err.to_string().contains("journal mismatch"), "{err}");

        let cx = TaskContext::local()
            .completed_steps(vec![completed(1, "fetch", json!(1))])
            .build(Arc::new(MemoryJournal::default()));
        let err = cx.spawn("x", "t", json!(1)).await.unwrap_err();
        assert!(err.to_string().contains("journal mismatch"), "{err}");
    }
}
