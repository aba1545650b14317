//! Durable waits from a task: [`TaskContext::ask_user`], [`TaskContext::sleep`] and
//! [`TaskContext::sleep_until`].
//!
//! A wait is a journal step. The first time a task reaches it, the host suspends the task (on a
//! platform: the attempt ends, its lease and worker slot are released, the task is `waiting`)
//! and the waiting call never returns in that attempt. When the task is woken (an answer, or the
//! deadline), it is queued again; the next attempt replays the journal and the waiting call
//! returns the journaled value at its position. Code before the wait that is not in a step runs
//! again on that replay, as after any retry.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::TaskContext;
use crate::error::{Error, Result};
use crate::store::{Wait, WaitFor};

/// How long a question waits for its answer unless [`Ask::timeout`] says otherwise: one day.
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The journal step name of a question.
pub(crate) const ASK_STEP: &str = "ask_user";
/// The journal step name of a durable sleep.
pub(crate) const SLEEP_STEP: &str = "sleep";

/// How a question ended: the value the task sees when it resumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AskOutcome {
    /// Answered with a value that matches the question's schema.
    Answered {
        /// The answer.
        answer: Value,
        /// The user who answered.
        by: String,
    },
    /// Nobody answered before the question's timeout.
    TimedOut,
}

impl AskOutcome {
    /// The answer, if there was one.
    pub fn answer(&self) -> Option<&Value> {
        match self {
            Self::Answered { answer, .. } => Some(answer),
            Self::TimedOut => None,
        }
    }
}

/// A question to the task's user, built by [`TaskContext::ask_user`]; `.await` it.
#[must_use = "a question does nothing until it is awaited"]
pub struct Ask<'a> {
    cx: &'a TaskContext,
    step: u32,
    prompt: String,
    schema: Value,
    timeout: Option<Duration>,
    answerers: Vec<String>,
}

impl std::fmt::Debug for Ask<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ask")
            .field("step", &self.step)
            .field("prompt", &self.prompt)
            .field("timeout", &self.timeout)
            .field("answerers", &self.answerers)
            .finish_non_exhaustive()
    }
}

impl Ask<'_> {
    /// Ends the wait with [`AskOutcome::TimedOut`] after `timeout` (default
    /// [`DEFAULT_ASK_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Waits for an answer without a deadline.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Lets these users answer too (besides the task's user and admins).
    pub fn answerers<I, S>(mut self, users: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.answerers = users.into_iter().map(Into::into).collect();
        self
    }
}

impl<'a> IntoFuture for Ask<'a> {
    type Output = Result<AskOutcome>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<AskOutcome>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let errors = crate::validate::validate_json_schema(&self.schema);
            if !errors.is_empty() {
                return Err(Error::agent(format!(
                    "the answer schema of `ask_user` is invalid at `{}`: {}",
                    errors[0].pointer, errors[0].message
                )));
            }
            let until = self.timeout.map(|t| deadline(Utc::now(), t));
            let wait = Wait {
                step: self.step,
                name: ASK_STEP.to_owned(),
                until,
                on_timeout: json!({ "outcome": "timed_out" }),
                waiting_for: WaitFor::Input {
                    prompt: self.prompt,
                    schema: self.schema,
                    answerers: self.answerers,
                },
            };
            let value = self.cx.wait_step(wait).await?;
            serde_json::from_value(value).map_err(|e| {
                Error::agent(format!(
                    "journaled outcome of `ask_user` does not decode: {e}"
                ))
            })
        })
    }
}

/// `now + d`, saturating.
fn deadline(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl TaskContext {
    /// Asks the task's user a question and waits durably for an answer matching `schema` (a
    /// JSON Schema) — or for the timeout ([`DEFAULT_ASK_TIMEOUT`] unless [`Ask::timeout`]).
    ///
    /// On a platform the task becomes `waiting`: no worker and no lease are held, a
    /// `waiting_for_input` event carries the prompt and the schema, and
    /// [`Platform::answer`](crate::runtime::Platform::answer) (or `POST
    /// /api/agents/tasks/{task_id}/answer`) resumes it on any node. The answer is a journal
    /// step: a replay returns it without asking again. Outside a platform (a host that cannot
    /// wait) it is a `resource` error.
    ///
    /// ```no_run
    /// # async fn f(cx: &capecontrol_core::TaskContext) -> capecontrol_core::Result<()> {
    /// use capecontrol_core::agent::AskOutcome;
    /// let schema = serde_json::json!({"type": "object", "required": ["approve"],
    ///     "properties": {"approve": {"type": "boolean"}}});
    /// match cx.ask_user("Pay 5,000 EUR to ACME?", schema)
    ///     .timeout(std::time::Duration::from_secs(3600)).await? {
    ///     AskOutcome::Answered { answer, by } => { let _ = (answer, by); }
    ///     AskOutcome::TimedOut => {}
    /// }
    /// # Ok(()) }
    /// ```
    pub fn ask_user(&self, prompt: impl Into<String>, schema: Value) -> Ask<'_> {
        Ask {
            cx: self,
            step: self.next_step.fetch_add(1, Ordering::SeqCst),
            prompt: prompt.into(),
            schema,
            timeout: Some(self.shared.ask_timeout),
            answerers: Vec::new(),
        }
    }

    /// Sleeps durably for `duration`: on a platform the task waits without a worker, survives
    /// restarts and resumes on any node after the time. A journal step (a replay does not
    /// sleep again).
    pub async fn sleep(&self, duration: Duration) -> Result<()> {
        let step = self.next_step.fetch_add(1, Ordering::SeqCst);
        self.sleep_step(step, deadline(Utc::now(), duration)).await
    }

    /// Sleeps durably until `at` (see [`TaskContext::sleep`]).
    pub async fn sleep_until(&self, at: DateTime<Utc>) -> Result<()> {
        let step = self.next_step.fetch_add(1, Ordering::SeqCst);
        self.sleep_step(step, at).await
    }

    async fn sleep_step(&self, step: u32, at: DateTime<Utc>) -> Result<()> {
        let wait = Wait {
            step,
            name: SLEEP_STEP.to_owned(),
            until: Some(at),
            on_timeout: Value::Null,
            waiting_for: WaitFor::Timer,
        };
        self.wait_step(wait).await.map(|_| ())
    }

    /// The journaled value of the wait's step, or (first time) suspends the task: the host
    /// ends the attempt and this future never completes.
    pub(super) async fn wait_step(&self, wait: Wait) -> Result<Value> {
        if let Some(record) = self.completed.get(&wait.step) {
            if record.name != wait.name {
                return Err(Error::agent(format!(
                    "journal mismatch at step {}: journaled `{}`, code runs `{}`",
                    wait.step, record.name, wait.name
                )));
            }
            return Ok(record.output.clone().unwrap_or(Value::Null));
        }
        if self.cancel.is_cancelled() {
            return Err(Error::conflict("task cancelled"));
        }
        self.host.suspend(wait).await?;
        // The host ends the attempt: nothing after the wait runs in it.
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::agent::{MemoryJournal, StepRecord};
    use crate::state::RunStatus;

    #[tokio::test]
    async fn a_journaled_answer_is_returned_at_its_position() {
        let journal = Arc::new(MemoryJournal::default());
        let answered = StepRecord {
            step: 1,
            name: ASK_STEP.into(),
            status: RunStatus::Completed,
            output: Some(json!({"outcome": "answered", "answer": {"ok": true}, "by": "u"})),
            error: None,
            started_at: None,
            finished_at: None,
        };
        let cx = TaskContext::local()
            .completed_steps(vec![answered])
            .build(journal);
        let outcome = cx.ask_user("ok?", json!({"type": "object"})).await.unwrap();
        assert_eq!(
            outcome,
            AskOutcome::Answered {
                answer: json!({"ok": true}),
                by: "u".into()
            }
        );
    }

    #[tokio::test]
    async fn a_host_that_cannot_wait_refuses() {
        let cx = TaskContext::local().build(Arc::new(MemoryJournal::default()));
        let err = cx
            .ask_user("ok?", json!({"type": "object"}))
            .await
            .unwrap_err();
        assert_eq!(err.category(), crate::ErrorCategory::Resource);
        let err = cx.sleep(Duration::from_secs(1)).await.unwrap_err();
        assert!(err.to_string().contains("needs a platform"), "{err}");
    }

    #[tokio::test]
    async fn a_sleep_journaled_under_another_name_is_a_mismatch() {
        let step = StepRecord {
            step: 1,
            name: "other".into(),
            status: RunStatus::Completed,
            output: None,
            error: None,
            started_at: None,
            finished_at: None,
        };
        let cx = TaskContext::local()
            .completed_steps(vec![step])
            .build(Arc::new(MemoryJournal::default()));
        let err = cx.sleep(Duration::from_secs(1)).await.unwrap_err();
        assert!(err.to_string().contains("journal mismatch"), "{err}");
    }
}
