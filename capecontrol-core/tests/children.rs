//! Child tasks (`cx.spawn`, `cx.join`) on the in-memory store: the test kit's scenarios, the
//! "nodes" being platforms over one shared `MemoryStore`.

use std::sync::Arc;

use capecontrol_core::store::Store;
use capecontrol_core::store::memory::MemoryStore;
use capecontrol_testkit::children;
use capecontrol_testkit::runtime::fast_config;

/// A factory of nodes' stores: the same store every time (one process, several nodes).
fn shared() -> impl Fn() -> std::future::Ready<Arc<dyn Store>> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    move || std::future::ready(store.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_children_fan_out_and_join() {
    children::fan_out_and_join(shared(), fast_config(), 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_child_is_spawned_once_across_a_crash_of_the_parents_node() {
    children::spawn_once_across_a_crash(shared(), fast_config(), 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_failure_is_a_typed_value() {
    children::a_child_failure_is_a_typed_value(shared(), fast_config()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_parent_cancels_its_children() {
    children::cancelling_a_parent_cancels_its_children(shared(), fast_config()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_spawned_while_the_cancel_travels_is_cancelled() {
    children::a_child_spawned_while_the_cancel_travels_is_cancelled(shared(), fast_config()).await;
}
