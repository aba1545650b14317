//! A node's background upkeep besides claiming: the heartbeat loop, which renews the leases of
//! the attempts running here and delivers cancellations requested elsewhere, and the
//! maintenance loop, which reclaims expired leases and sets the queue-depth gauge.

use std::sync::Arc;
use std::time::Duration;

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

/// The heartbeat loop: renews the lease of every attempt running on this node every third of
/// a lease; a heartbeat that reports a cancellation cancels the attempt, one that finds the
/// lease lost abandons it.
pub(crate) async fn heartbeats(node: Arc<Node>) {
    let every = (node.config.lease / 3).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = node.kill.cancelled() => return,
        }
        for running in node.running_leases() {
            match node
                .store
                .heartbeat(&running.lease, node.config.lease)
                .await
            {
                Ok(hb) if hb.cancel_requested => running.cancel.cancel(),
                Ok(_) => {}
                Err(e) if e.category() == ErrorCategory::Conflict => running.lost.cancel(),
                Err(e) => {
                    tracing::warn!(task_id = %running.lease.task_id, error = %e, "heartbeat failed")
                }
            }
        }
    }
}
