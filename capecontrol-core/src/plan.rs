//! [`Plan`]: a chain of durable steps, each fed the previous step's result (an agent SDK's
//! `execute_steps([...])`).
//!
//! Every link of the chain is a [`TaskContext::step`], so a replayed task skips the steps its
//! journal already holds and resumes at the first one that did not complete.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use capecontrol_core::{Error, MemoryJournal, Plan, TaskContext};
//!
//! let journal = Arc::new(MemoryJournal::default());
//! let cx = TaskContext::builder(uuid::Uuid::new_v4()).build(journal.clone());
//! let words = Plan::new()
//!     .then("validate", |text: String| async move {
//!         if text.trim().is_empty() { Err(Error::invalid_field("", "empty text")) } else { Ok(text) }
//!     })
//!     .then("split", |text: String| async move {
//!         Ok::<_, Error>(text.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
//!     })
//!     .then("count", |words: Vec<String>| async move { Ok::<_, Error>(words.len()) })
//!     .run(&cx, "durable steps are journaled".to_owned())
//!     .await
//!     .unwrap();
//! assert_eq!(words, 4);
//! assert_eq!(journal.steps().len(), 3);
//! # });
//! ```

use std::future::Future;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::agent::TaskContext;
use crate::error::{Error, Result};

type Chain<'a, I, O> = Box<dyn FnOnce(&'a TaskContext, I) -> BoxFuture<'a, Result<O>> + Send + 'a>;

/// A chain of named durable steps from an input `I` to an output `O`.
///
/// Build it with [`Plan::new`] and [`Plan::then`], run it with [`Plan::run`]. A step's closure
/// receives the previous step's result (the plan's input for the first step) and returns the
/// future to run; put the step's work *inside* that future, because on a replay the closure is
/// still called but a journaled step's future is dropped without being polled.
pub struct Plan<'a, I, O> {
    names: Vec<String>,
    chain: Chain<'a, I, O>,
}

impl<I, O> std::fmt::Debug for Plan<'_, I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan").field("steps", &self.names).finish()
    }
}

impl<'a, I: Send + 'a> Plan<'a, I, I> {
    /// An empty plan: its output is its input.
    pub fn new() -> Self {
        Self {
            names: Vec::new(),
            chain: Box::new(|_, input| Box::pin(async move { Ok(input) })),
        }
    }
}

impl<'a, I: Send + 'a> Default for Plan<'a, I, I> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, I: Send + 'a, O: Send + 'a> Plan<'a, I, O> {
    /// Appends durable step `name`, which turns the previous result into a `P`.
    pub fn then<P, E, F, Fut>(self, name: &str, step: F) -> Plan<'a, I, P>
    where
        P: Serialize + DeserializeOwned + Send + 'a,
        E: Into<Error> + 'a,
        F: FnOnce(O) -> Fut + Send + 'a,
        Fut: Future<Output = std::result::Result<P, E>> + Send + 'a,
    {
        let mut names = self.names;
        names.push(name.to_owned());
        let step_name = name.to_owned();
        let prev = self.chain;
        Plan {
            names,
            chain: Box::new(move |cx, input| {
                Box::pin(async move {
                    let value = prev(cx, input).await?;
                    cx.step(&step_name, step(value)).await
                })
            }),
        }
    }

    /// The names of the plan's steps, in order.
    pub fn step_names(&self) -> &[String] {
        &self.names
    }

    /// Runs the plan's steps in order as durable steps of `cx`, starting from `input`.
    pub async fn run(self, cx: &'a TaskContext, input: I) -> Result<O> {
        (self.chain)(cx, input).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use uuid::Uuid;

    use super::*;
    use crate::agent::MemoryJournal;
    use crate::state::RunStatus;

    fn plan<'a>(runs: &'a AtomicUsize, fail_last: bool) -> Plan<'a, u32, String> {
        Plan::new()
            .then("double", move |n: u32| async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(n * 2)
            })
            .then("add", move |n: u32| async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(n + 1)
            })
            .then("render", move |n: u32| async move {
                runs.fetch_add(1, Ordering::SeqCst);
                if fail_last {
                    Err(Error::resource("renderer unavailable"))
                } else {
                    Ok(format!("n = {n}"))
                }
            })
    }

    #[tokio::test]
    async fn a_replayed_plan_resumes_at_the_failed_step() {
        let journal = Arc::new(MemoryJournal::default());
        let task = Uuid::new_v4();
        let runs = AtomicUsize::new(0);

        let cx = TaskContext::builder(task).build(journal.clone());
        let p = plan(&runs, true);
        assert_eq!(p.step_names(), ["double", "add", "render"]);
        let err = p.run(&cx, 20).await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(runs.load(Ordering::SeqCst), 3);

        let cx = TaskContext::builder(task)
            .attempt(2)
            .completed_steps(journal.completed_steps())
            .build(journal.clone());
        let out = plan(&runs, false).run(&cx, 20).await.unwrap();
        assert_eq!(out, "n = 41");
        assert_eq!(runs.load(Ordering::SeqCst), 4, "only `render` ran again");
        let steps = journal.steps();
        assert_eq!(steps.len(), 3);
        assert!(steps.iter().all(|s| s.status == RunStatus::Completed));
        assert_eq!(steps[2].output, Some(serde_json::json!("n = 41")));
    }

    #[tokio::test]
    async fn an_empty_plan_returns_its_input() {
        let journal = Arc::new(MemoryJournal::default());
        let cx = TaskContext::builder(Uuid::new_v4()).build(journal.clone());
        let out = Plan::<u8, u8>::new().run(&cx, 7).await.unwrap();
        assert_eq!(out, 7);
        assert!(journal.steps().is_empty());
    }
}
