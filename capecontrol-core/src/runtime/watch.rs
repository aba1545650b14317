//! `watch`: a task's events, replayed from the store and then followed live, each once and in
//! order, ending after the terminal event — or as soon as the stream is dropped, even on a task
//! that never ends (the watcher holds no subscription, timer or store read after that).
//!
//! Live delivery may be best-effort (across nodes it travels by NOTIFY): a gap in the live
//! sequence, a lagging subscription, or [`REREAD_AFTER`] without a live event of the task makes
//! the watcher read the rows again, so a lost notification delays it but never stalls it. A
//! live event whose output was elided ([`TaskEvent::into_live`]) is read from the rows too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::error::Result;
use crate::events::TaskEvent;
use crate::store::Store;

/// How long a watcher waits for a live event of its task before it reads the rows again.
pub const REREAD_AFTER: Duration = Duration::from_secs(1);

/// A stream of one task's events (see [`crate::runtime::Platform::watch`]).
pub type TaskEvents = ReceiverStream<Result<TaskEvent>>;

/// Watches `task_id` from event `after + 1` on.
pub fn watch(store: Arc<dyn Store>, task_id: Uuid, after: u64) -> TaskEvents {
    let (tx, rx) = mpsc::channel(256);
    // Subscribe before the first replay so that nothing falls between the two.
    let live = store.subscribe();
    tokio::spawn(async move {
        if let Err(e) = follow(store, task_id, after, live, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    ReceiverStream::new(rx)
}

async fn follow(
    store: Arc<dyn Store>,
    task_id: Uuid,
    after: u64,
    mut live: broadcast::Receiver<TaskEvent>,
    tx: &mpsc::Sender<Result<TaskEvent>>,
) -> Result<()> {
    let mut next = after + 1;
    // Live events that arrived ahead of a gap, waiting for the store to fill it.
    let mut ahead: BTreeMap<u64, TaskEvent> = BTreeMap::new();
    let mut replay = true;
    let mut quiet_until = tokio::time::Instant::now() + REREAD_AFTER;
    loop {
        if replay {
            for event in store.events(task_id, next - 1).await? {
                ahead.entry(event.seq).or_insert(event);
            }
            replay = false;
        }
        // Deliver whatever is contiguous.
        while let Some(event) = ahead.remove(&next) {
            let terminal = event.kind.is_terminal();
            if tx.send(Ok(event)).await.is_err() {
                return Ok(());
            }
            next += 1;
            if terminal {
                return Ok(());
            }
        }
        ahead.retain(|seq, _| *seq >= next);
        let received = tokio::select! {
            // Nobody reads any more: stop, even if the task never ends.
            () = tx.closed() => return Ok(()),
            r = tokio::time::timeout_at(quiet_until, live.recv()) => r,
        };
        match received {
            Ok(Ok(event)) if event.task_id != task_id || event.seq < next => {}
            // Its output is in the store only: read it (and anything before it) from there.
            Ok(Ok(event)) if event.is_elided() => {
                replay = true;
                quiet_until = tokio::time::Instant::now() + REREAD_AFTER;
            }
            Ok(Ok(event)) => {
                let gap = event.seq > next;
                ahead.insert(event.seq, event);
                replay = gap;
                quiet_until = tokio::time::Instant::now() + REREAD_AFTER;
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => replay = true,
            Ok(Err(broadcast::error::RecvError::Closed)) => return Ok(()),
            Err(_) => {
                replay = true;
                quiet_until = tokio::time::Instant::now() + REREAD_AFTER;
            }
        }
    }
}
