//! [`Platform::answer`]: answers a waiting task's question (`ask_user`).

use serde_json::json;
use uuid::Uuid;

use super::{ACCESS_DENIED, Platform};
use crate::error::{Error, FieldError, Result};
use crate::policy::Principal;
use crate::runtime::access::{TaskAction, owns_or_admin};
use crate::runtime::waits::check_answer;
use crate::store::{MAX_VALUE_DEPTH, NewAuditEvent, TaskRecord, WaitFor, Wake};

impl Platform {
    /// Answers the question a waiting task asked with
    /// [`TaskContext::ask_user`](crate::TaskContext::ask_user), as `by`, and queues the task
    /// again: its next attempt (on any node) gets
    /// [`AskOutcome::Answered`](crate::agent::AskOutcome::Answered) with `answer` and `by`'s
    /// user id.
    ///
    /// Who may answer: the task's user, an admin, a user the question names
    /// ([`Ask::answerers`](crate::agent::Ask::answerers)), or whom the host's
    /// [`TaskAccessPolicy`](crate::runtime::access::TaskAccessPolicy) allows
    /// ([`TaskAction::Answer`]); anyone else is told the task does not exist (404), audited as
    /// `task.access_denied`. An answer that does not match the question's schema is a
    /// validation error (400) naming each field at its pointer under `/answer`; the task keeps
    /// waiting. A task not waiting for an answer (not asked, answered already, timed out) is a
    /// conflict (409). The answer is audited as `task.answered` with the answering user.
    pub async fn answer(
        &self,
        task_id: Uuid,
        by: &Principal,
        answer: serde_json::Value,
    ) -> Result<TaskRecord> {
        let store = &self.node.store;
        let task = store.get_task(task_id).await?;
        let wait = store.current_wait(task_id).await?;
        let named = wait.as_ref().is_some_and(|w| match &w.waiting_for {
            WaitFor::Input { answerers, .. } => {
                !by.user_id.is_empty() && answerers.contains(&by.user_id)
            }
            WaitFor::Timer | WaitFor::Children { .. } => false,
        });
        if !(owns_or_admin(by, &task)
            || named
            || self.access.allows(by, &task, TaskAction::Answer).await?)
        {
            let event = NewAuditEvent::by(
                by,
                ACCESS_DENIED,
                json!({ "action": TaskAction::Answer.as_str() }),
            )
            .task(task_id)
            .agent(task.agent_id.clone());
            store.append_audit(event).await?;
            metrics::counter!("task_access_denied_total", "action" => TaskAction::Answer.as_str())
                .increment(1);
            return Err(Error::not_found("task", task_id.to_string()));
        }
        let (step, schema) = match wait {
            Some(w) => match w.waiting_for {
                WaitFor::Input { schema, .. } => (w.step, schema),
                WaitFor::Timer => {
                    return Err(Error::conflict(format!(
                        "task {task_id} is sleeping, not waiting for an answer"
                    )));
                }
                WaitFor::Children { .. } => {
                    return Err(Error::conflict(format!(
                        "task {task_id} waits for its child tasks, not for an answer"
                    )));
                }
            },
            None => {
                return Err(Error::conflict(format!(
                    "task {task_id} is {}, not waiting for an answer",
                    task.status
                )));
            }
        };
        // The answer is stored one level down in the step's value (`{"answer": …}`).
        if crate::validate::value_depth_exceeds(&answer, MAX_VALUE_DEPTH - 1) {
            return Err(Error::validation(
                "the answer is out of bounds",
                vec![FieldError::new(
                    "/answer",
                    format!("is nested deeper than {} levels", MAX_VALUE_DEPTH - 1),
                )],
            ));
        }
        check_answer(&schema, &answer)?;
        let audit = NewAuditEvent::by(by, "task.answered", json!({ "step": step }))
            .task(task_id)
            .agent(task.agent_id.clone());
        store
            .wake(Wake {
                task_id,
                step,
                output: json!({ "outcome": "answered", "answer": answer, "by": by.user_id }),
                by: Some(by.user_id.clone()),
                audit: vec![audit],
            })
            .await
    }
}
