//! The dispatcher: claims as many due tasks as there are free worker slots (plus
//! `claim_prefetch` more, which wait for a slot), by priority, and starts an attempt for each;
//! it waits for the store's wake-ups or polls when idle.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

use super::attempt::{self, Slot};
use super::node::Node;
use crate::store::{ClaimRequest, Claimed};

/// The dispatcher: claims as many tasks as there are free worker slots and spawns them.
pub(crate) async fn dispatch(node: Arc<Node>) {
    // A worker slot frees when the agent returns, before the outcome is written; an attempt
    // holds a place in flight until it is written, so that attempts whose writes are slow
    // cannot pile up without bound (see `Slots`).
    let slots = &node.slots;
    let prefetch = node.config.claim_prefetch.min(node.config.workers);
    slots.active.store(true, Ordering::Release);
    let mut wakeups = node.store.wakeups();
    // Whether this round is a poll's: the node idle, no wake-up received.
    let mut polling = false;
    loop {
        if node.stop.is_cancelled() {
            return;
        }
        // A free worker slot and every other free one (up to a claim's batch), then a place in
        // flight for each task the claim may bring. A poll asks for one task: the other slots
        // stay free for the submissions made meanwhile, and a poll that finds work is followed
        // by a full claim at once.
        let batch = if polling { 1 } else { node.config.claim_batch };
        let Some(mut permits) = take(&node, &slots.workers, batch).await else {
            return;
        };
        let wanted = if polling {
            permits.len()
        } else {
            permits.len() + prefetch.saturating_sub(slots.waiting.load(Ordering::Relaxed))
        };
        let Some(mut flights) = take(&node, &slots.flight, wanted).await else {
            return;
        };
        // One claim answers every wake-up sent so far (each enqueue sends one, after its
        // commit): drop the ones queued, so that a burst of submissions is claimed in batches
        // rather than one claim per wake-up.
        drain(&mut wakeups);
        let request = ClaimRequest {
            worker: node.node_id.clone(),
            limit: flights.len(),
            lease: node.config.lease,
            agents: node.config.only_agents.clone(),
        };
        match node.store.claim(&request).await {
            Ok(claimed) if !claimed.is_empty() => {
                // Work was waiting (a poll found some): no longer idle.
                slots.parked.store(false, Ordering::Release);
                polling = false;
                for c in claimed {
                    let slot = match permits.pop() {
                        Some(permit) => Slot::Held(permit),
                        None => {
                            slots.waiting.fetch_add(1, Ordering::Relaxed);
                            Slot::Wait {
                                slots: Arc::clone(&slots.workers),
                                waiting: Arc::clone(&slots.waiting),
                            }
                        }
                    };
                    spawn_attempt(Arc::clone(&node), c, slot, flights.pop());
                }
                drop(permits);
                drop(flights);
                // The attempts just spawned run before the next claim counts the free slots:
                // a short agent returns at once and frees its slot. Claimed at once instead,
                // the next claim would ask only for the slots the last one did not hold, and
                // the claims of a backlog would alternate between the two halves of the
                // workers, each paying a claim's fixed cost (at 4 workers on PostgreSQL, 0.87
                // commits per task while draining against 0.57).
                tokio::task::yield_now().await;
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "claim failed"),
        }
        drop(permits);
        drop(flights);
        // Nothing to claim: until a wake-up, a task submitted here may start at once on a free
        // slot (its enqueue claims it), without a claim of this node in flight to pass or to
        // contend with. The polls' claims keep the node parked: a poll rarely finds work (a
        // task of another node that sent no wake-up, a delayed one come due), and sending the
        // submissions made during a poll's claim to the queue cost each that claim and the
        // next (at 200 tasks/s and a 10 ms poll, one in seven went that way). Such an
        // enqueue cannot pass what the poll takes: the claim and the enqueue decide under the
        // agent's lock, and a due task still queued makes the enqueue decline.
        slots.parked.store(true, Ordering::Release);
        polling = tokio::select! {
            _ = wakeups.recv() => {
                slots.parked.store(false, Ordering::Release);
                false
            }
            () = tokio::time::sleep(node.config.poll_interval) => true,
            () = node.stop.cancelled() => return,
        };
    }
}

/// Runs a claimed task's attempt in a task of its own, holding its place in flight until its
/// outcome is written.
pub(crate) fn spawn_attempt(
    node: Arc<Node>,
    claimed: Claimed,
    slot: Slot,
    in_flight: Option<OwnedSemaphorePermit>,
) {
    // Boxed: an attempt's future is large (about 7 KB), and tokio moves the future it spawns
    // by value, into its task cell and again when the task ends; a box moves as a pointer.
    tokio::spawn(Box::pin(async move {
        let _in_flight = in_flight;
        let task_id = claimed.task.id;
        // A panic outside the execute chain (which catches its own) must not go unnoticed;
        // the attempt's guard has unregistered it, so its lease expires and the task is
        // reclaimed.
        if let Err(payload) = AssertUnwindSafe(attempt::run(&node, claimed, slot))
            .catch_unwind()
            .await
        {
            tracing::error!(
                %task_id,
                panic = %attempt::panic_message(payload.as_ref()),
                "an attempt panicked outside the agent; its lease will expire"
            );
        }
    }));
}

/// Waits for one permit of `semaphore`, then takes the free ones up to `at_most` in all;
/// `None` when the node stops first.
async fn take(
    node: &Node,
    semaphore: &Arc<Semaphore>,
    at_most: usize,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        p = Arc::clone(semaphore).acquire_owned() => p.ok()?,
        () = node.stop.cancelled() => return None,
    };
    let mut permits = vec![first];
    while permits.len() < at_most {
        match Arc::clone(semaphore).try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
    Some(permits)
}

/// Drops the wake-ups already queued (a lagging receiver skips ahead; nothing is lost that the
/// next claim does not see).
fn drain(wakeups: &mut broadcast::Receiver<()>) {
    loop {
        match wakeups.try_recv() {
            Ok(()) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}
