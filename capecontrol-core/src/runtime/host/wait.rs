//! The platform host's side of durable waits: a task's wait request ends its attempt, whose
//! end writes the suspend (with what is pending) through [`WaitStore::suspend`].

use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use super::PlatformHost;
use crate::error::{Error, Result};
use crate::store::{Suspend, TaskRecord, Wait, WaitStore};

/// The wait a task asked for, and the signal that ends its attempt.
#[derive(Debug, Default)]
pub(crate) struct Suspension {
    wait: Mutex<Option<Wait>>,
    asked: CancellationToken,
}

impl PlatformHost {
    /// Records the task's wait and signals the attempt to end (the caller never resumes).
    pub(crate) fn request_suspend(&self, wait: Wait) -> Result<()> {
        let mut slot = self
            .wait
            .wait
            .lock()
            .map_err(|_| Error::agent("the wait request lock is poisoned"))?;
        if let Some(earlier) = slot.as_ref() {
            return Err(Error::agent(format!(
                "step {} waits while step {} already does (waits run one at a time)",
                wait.step, earlier.step
            )));
        }
        *slot = Some(wait);
        self.wait.asked.cancel();
        Ok(())
    }

    /// Fires when the task asked to wait.
    pub(crate) fn wait_requested(&self) -> &CancellationToken {
        &self.wait.asked
    }

    /// Writes the suspend with what is pending (events published live, the deferred step row,
    /// audit rows of failed journal writes); repeated on transient errors.
    pub(crate) async fn suspend_now(&self) -> Result<TaskRecord> {
        let wait = self
            .wait
            .wait
            .lock()
            .ok()
            .and_then(|mut w| w.take())
            .ok_or_else(|| Error::agent("no wait was requested"))?;
        let mut pending = self.take_pending();
        let suspend = Suspend {
            wait,
            steps: pending.steps(),
            events: pending.events,
            audit: pending.audit,
        };
        self.retried("suspend", || {
            WaitStore::suspend(&*self.store, &self.lease, suspend.clone())
        })
        .await
    }
}
