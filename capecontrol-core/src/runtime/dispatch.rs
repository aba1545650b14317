//! The dispatcher: claims as many due tasks as there are free worker slots (plus
//! `claim_prefetch` more, which wait for a slot), by priority, and starts an attempt for each;
//! it waits for the store's wake-ups or polls when idle.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

use super::attempt::{self, Slot};
use super::node::Node;
use crate::store::ClaimRequest;

/// The dispatcher: claims as many tasks as there are free worker slots and spawns them.
pub(crate) async fn dispatch(node: Arc<Node>) {
    let slots = Arc::new(Semaphore::new(node.config.workers));
    let prefetch = node.config.claim_prefetch.min(node.config.workers);
    // A worker slot frees when the agent returns, before the outcome is written; an attempt
    // holds one of these until it is written, so that attempts whose writes are slow cannot
    // pile up without bound: per node, at most twice `workers` running or writing, plus the
    // prefetched ones waiting for a slot.
    let flight = Arc::new(Semaphore::new(
        node.config
            .workers
            .saturating_mul(2)
            .saturating_add(prefetch)
            .max(1),
    ));
    // Prefetched attempts waiting for a slot now (they queue for it before the dispatcher does:
    // tokio's semaphore is fair, so they start first).
    let waiting = Arc::new(AtomicUsize::new(0));
    let mut wakeups = node.store.wakeups();
    loop {
        if node.stop.is_cancelled() {
            return;
        }
        // Wait for one free slot, then take every other free one.
        let first = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            () = node.stop.cancelled() => return,
        };
        let mut permits: Vec<OwnedSemaphorePermit> = vec![first];
        while permits.len() < node.config.claim_batch {
            match Arc::clone(&slots).try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let wanted = permits.len() + prefetch.saturating_sub(waiting.load(Ordering::Relaxed));
        let first = tokio::select! {
            p = Arc::clone(&flight).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            () = node.stop.cancelled() => return,
        };
        let mut flights: Vec<OwnedSemaphorePermit> = vec![first];
        while flights.len() < wanted {
            match Arc::clone(&flight).try_acquire_owned() {
                Ok(p) => flights.push(p),
                Err(_) => break,
            }
        }
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
                for c in claimed {
                    let slot = match permits.pop() {
                        Some(permit) => Slot::Held(permit),
                        None => {
                            waiting.fetch_add(1, Ordering::Relaxed);
                            Slot::Wait {
                                slots: Arc::clone(&slots),
                                waiting: Arc::clone(&waiting),
                            }
                        }
                    };
                    let node = Arc::clone(&node);
                    let in_flight = flights.pop();
                    // Boxed: an attempt's future is large (about 7 KB), and tokio moves the
                    // future it spawns by value, into its task cell and again when the task
                    // ends; a box moves as a pointer.
                    tokio::spawn(Box::pin(async move {
                        let _in_flight = in_flight;
                        let task_id = c.task.id;
                        // A panic outside the execute chain (which catches its own) must not
                        // go unnoticed; the attempt's guard has unregistered it, so its lease
                        // expires and the task is reclaimed.
                        if let Err(payload) = AssertUnwindSafe(attempt::run(&node, c, slot))
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
                drop(permits);
                drop(flights);
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "claim failed"),
        }
        drop(permits);
        drop(flights);
        tokio::select! {
            _ = wakeups.recv() => {}
            () = tokio::time::sleep(node.config.poll_interval) => {}
            () = node.stop.cancelled() => return,
        }
    }
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
