//! Conformance: the live broadcast of a store ([`Store::subscribe`]) does not pin large outputs.
//! A `completed` event whose output is over [`LIVE_OUTPUT_MAX`] reaches subscribers as a
//! reference; the stored event keeps the whole output.

use std::sync::Arc;

use serde_json::json;

use capecontrol_core::events::{LIVE_OUTPUT_MAX, TaskEventKind};
use capecontrol_core::store::Store;

use crate::conformance::{claim_one, completed, fresh_agent, new_task};

/// How many large-output tasks the case finishes while a subscriber reads nothing.
const TASKS: usize = 20;

/// `TASKS` tasks finish with 256 KiB outputs while a subscriber reads nothing: every event it then
/// finds in the ring is at most a few KiB (the completed ones carry a reference, not the
/// output), and the stored `completed` events keep the whole outputs. A small output is still
/// sent whole.
pub async fn live_events_do_not_pin_large_outputs(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let mut live = store.subscribe();
    let big = json!({ "blob": "x".repeat(256 * 1024) });
    let mut ids = Vec::new();
    for _ in 0..TASKS {
        let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
        let c = claim_one(&store, "w1", &agent).await;
        store
            .finish(&c.lease, completed(big.clone()))
            .await
            .unwrap();
        ids.push(id);
    }
    let small_id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    store
        .finish(&c.lease, completed(json!({ "ok": true })))
        .await
        .unwrap();

    // Drain what the ring holds for this subscriber (it may hold other cases' events too).
    let mut completed_big = 0;
    let mut completed_small = None;
    let mut held = 0usize;
    loop {
        let event = match live.try_recv() {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        };
        let size = serde_json::to_vec(&event).unwrap().len();
        held += size;
        assert!(
            size <= LIVE_OUTPUT_MAX + 1024,
            "a live event of {size} bytes: {}",
            event.kind.name()
        );
        if let TaskEventKind::Completed { output } = &event.kind {
            if ids.contains(&event.task_id) {
                assert!(event.is_elided(), "{output}");
                completed_big += 1;
            } else if event.task_id == small_id {
                completed_small = Some(output.clone());
            }
        }
    }
    assert_eq!(completed_big, TASKS, "every large completion was announced");
    assert_eq!(completed_small, Some(json!({ "ok": true })));
    assert!(held < TASKS * 4096, "the ring held {held} bytes");

    // The stored events keep the outputs.
    for id in ids {
        let events = store.events(id, 0).await.unwrap();
        let last = events.last().unwrap();
        assert_eq!(
            last.kind,
            TaskEventKind::Completed {
                output: big.clone()
            }
        );
    }
}
