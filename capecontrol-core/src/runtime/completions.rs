//! Cheap waiting: a per-node map of the tasks someone waits for, woken by one shared
//! subscription to the store's events, so that [`Platform::wait`](super::Platform::wait) costs
//! one registration and two reads of the task row instead of a replayed event stream (with its
//! own subscription, which would see every event of every task) per call.
//!
//! One listener per node (started by the first wait) reads the store's live events and wakes
//! the waiters of a task when its terminal event (`completed`, `failed`, `cancelled`) passes.
//! It lives only while someone waits: the first event that passes with no waiter registered
//! ends it and drops its subscription, so a node that waited once does not wake a task for
//! every event of every task from then on; the next wait starts a new one.
//! A waiter then reads the row; it never trusts the event alone. Live delivery may be lossy
//! (across nodes it travels by NOTIFY): a lagging listener wakes every waiter, and a waiter that
//! hears nothing for [`REREAD_AFTER`](super::watch::REREAD_AFTER) reads the row again, so a
//! lost notification delays a wait but never stalls it.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::watch::REREAD_AFTER;
use crate::error::Result;
use crate::store::{Store, TaskRecord};

/// The tasks waited for on one node.
#[derive(Default)]
pub(crate) struct Completions {
    /// By task ([`crate::FastMap`]: every wait inserts and every completion looks up).
    slots: Mutex<crate::FastMap<Uuid, Slot>>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

struct Slot {
    notify: Arc<Notify>,
    waiters: usize,
}

impl Drop for Completions {
    fn drop(&mut self) {
        if let Ok(mut l) = self.listener.lock()
            && let Some(handle) = l.take()
        {
            handle.abort();
        }
    }
}

impl Completions {
    /// Registers a waiter for `task_id` (starting the node's listener on first use). The
    /// registration ends when the returned [`Waiter`] is dropped.
    pub(crate) fn register(self: &Arc<Self>, store: &Arc<dyn Store>, task_id: Uuid) -> Waiter {
        // The listener lock is held until the slot is in: a listener that finds no waiter and
        // ends (under the same lock, see `retire`) either ends before this registration, which
        // then starts a new one, or sees its slot and stays.
        let mut listener = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        if listener.as_ref().is_none_or(|h| h.is_finished()) {
            // Subscribed here, before any waiter reads its row: no terminal event can fall
            // between.
            let events = store.subscribe();
            *listener = Some(tokio::spawn(listen(Arc::downgrade(self), events)));
        }
        let notify = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let slot = slots.entry(task_id).or_insert_with(|| Slot {
                notify: Arc::new(Notify::new()),
                waiters: 0,
            });
            slot.waiters += 1;
            Arc::clone(&slot.notify)
        };
        drop(listener);
        Waiter {
            completions: Arc::clone(self),
            task_id,
            notify,
        }
    }

    /// Whether no waiter is registered.
    fn idle(&self) -> bool {
        self.slots.lock().map(|s| s.is_empty()).unwrap_or_default()
    }

    /// Ends the listener if no waiter is registered (checked under the listener lock, which
    /// `register` holds until its slot is in); returns whether it did.
    fn retire(&self) -> bool {
        let mut listener = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        if self.idle() {
            *listener = None;
            true
        } else {
            false
        }
    }

    fn wake(&self, task_id: Uuid) {
        if let Some(notify) = self
            .slots
            .lock()
            .ok()
            .and_then(|s| s.get(&task_id).map(|slot| Arc::clone(&slot.notify)))
        {
            notify.notify_waiters();
        }
    }

    fn wake_all(&self) {
        let all: Vec<Arc<Notify>> = self
            .slots
            .lock()
            .map(|s| s.values().map(|slot| Arc::clone(&slot.notify)).collect())
            .unwrap_or_default();
        for notify in all {
            notify.notify_waiters();
        }
    }

    fn unregister(&self, task_id: Uuid) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get_mut(&task_id) {
            slot.waiters -= 1;
            if slot.waiters == 0 {
                slots.remove(&task_id);
            }
        }
    }
}

/// The node's listener: wakes the waiters of each task whose terminal event passes.
async fn listen(
    completions: Weak<Completions>,
    mut events: broadcast::Receiver<crate::events::TaskEvent>,
) {
    loop {
        let received = events.recv().await;
        let Some(completions) = completions.upgrade() else {
            return;
        };
        match received {
            Ok(event) if event.kind.is_terminal() => completions.wake(event.task_id),
            Ok(_) => {}
            // Missed some events: every waiter reads its row again.
            Err(broadcast::error::RecvError::Lagged(_)) => completions.wake_all(),
            Err(broadcast::error::RecvError::Closed) => {
                completions.wake_all();
                return;
            }
        }
        // Nobody waits: end here (dropping the subscription) rather than be woken by every
        // event of every task until the next wait.
        if completions.idle() && completions.retire() {
            return;
        }
    }
}

/// One registered wait for one task.
pub(crate) struct Waiter {
    completions: Arc<Completions>,
    task_id: Uuid,
    notify: Arc<Notify>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.completions.unregister(self.task_id);
    }
}

impl Waiter {
    /// Waits until the task is final: `first` reads the row (after this waiter is armed, so a
    /// terminal event between that read and the wait is not missed); each wake-up or
    /// [`REREAD_AFTER`] of silence reads it again from `store`.
    pub(crate) async fn until_final(
        &self,
        store: &dyn Store,
        first: impl Future<Output = Result<TaskRecord>>,
    ) -> Result<TaskRecord> {
        let mut notified = pin!(self.notify.notified());
        notified.as_mut().enable();
        let mut record = first.await?;
        loop {
            if record.status.is_final() {
                return Ok(record);
            }
            let _ = tokio::time::timeout(REREAD_AFTER, notified.as_mut()).await;
            notified.set(self.notify.notified());
            notified.as_mut().enable();
            record = store.get_task(self.task_id).await?;
        }
    }
}
