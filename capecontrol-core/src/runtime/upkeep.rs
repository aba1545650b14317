//! A node's background upkeep besides claiming: the heartbeat loop, which renews the leases of
//! the attempts running here and delivers cancellations requested elsewhere, and the
//! maintenance loop, which reclaims expired leases and sets the queue-depth gauge.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::node::Node;
use crate::error::ErrorCategory;

/// The maintenance loop: reclaims expired leases and updates the queue-depth gauge.
pub(crate) async fn maintain(node: Arc<Node>) {
    let every = (node.config.lease / 2).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = node.stop.cancelled() => return,
        }
        match node.store.reclaim_expired().await {
            Ok(ids) if !ids.is_empty() => {
                tracing::info!(count = ids.len(), "reclaimed tasks with expired leases")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reclaim failed"),
        }
        if let Ok(depth) = node.store.queue_depth().await {
            metrics::gauge!("task_queue_depth").set(depth as f64);
        }
    }
}

/// The heartbeat loop: renews the leases of all attempts running on this node every third of
/// a lease, in one store write; a heartbeat that reports a cancellation cancels the attempt, one that finds the
/// lease lost abandons it.
///
/// It runs on an OS thread of its own, with a single-threaded runtime of its own, so that an
/// in-process agent blocking a runtime thread (even the only one of a current-thread runtime)
/// does not stop the renewal of the leases. The thread ends when this future is dropped
/// (aborted) or the node is killed. If no thread can be started, the loop runs here instead.
pub(crate) async fn heartbeats(node: Arc<Node>) {
    let stop = CancellationToken::new();
    let _stop_on_drop = stop.clone().drop_guard();
    let (for_thread, stop_thread) = (Arc::clone(&node), stop.clone());
    let started = std::thread::Builder::new()
        .name("capecontrol-heartbeat".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(heartbeat_loop(for_thread, stop_thread)),
                Err(e) => tracing::error!(error = %e, "no runtime for the heartbeat thread"),
            }
        });
    match started {
        Ok(_) => std::future::pending::<()>().await,
        Err(e) => {
            tracing::warn!(error = %e, "no heartbeat thread; heartbeats share the runtime");
            heartbeat_loop(node, stop).await;
        }
    }
}

async fn heartbeat_loop(node: Arc<Node>, stop: CancellationToken) {
    let every = (node.config.lease / 3).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = node.kill.cancelled() => return,
            () = stop.cancelled() => return,
        }
        // One write for all the leases of this node (see `QueueStore::heartbeat_many`).
        let running = node.running_leases();
        if running.is_empty() {
            continue;
        }
        let leases: Vec<_> = running.iter().map(|r| r.lease.clone()).collect();
        match node.store.heartbeat_many(&leases, node.config.lease).await {
            Ok(beats) => {
                for (running, beat) in running.iter().zip(beats) {
                    match beat {
                        Ok(hb) if hb.cancel_requested => running.cancel.cancel(),
                        Ok(_) => {}
                        Err(e) if e.category() == ErrorCategory::Conflict => running.lost.cancel(),
                        Err(e) => {
                            tracing::warn!(task_id = %running.lease.task_id, error = %e, "heartbeat failed")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(leases = leases.len(), error = %e, "heartbeat failed"),
        }
    }
}
