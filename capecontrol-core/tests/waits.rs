//! Durable waits (`ask_user`, `sleep`) on the in-memory store: the test kit's scenarios, the
//! "nodes" being platforms over one shared `MemoryStore`.

use std::sync::Arc;

use capecontrol_core::store::Store;
use capecontrol_core::store::memory::MemoryStore;
use capecontrol_testkit::runtime::fast_config;
use capecontrol_testkit::waits;

/// A factory of nodes' stores: the same store every time (one process, several nodes).
fn shared() -> impl Fn() -> std::future::Ready<Arc<dyn Store>> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    move || std::future::ready(store.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ask_is_answered_on_another_node() {
    waits::ask_is_answered_on_another_node(shared(), fast_config()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ask_times_out() {
    waits::ask_times_out(shared(), fast_config()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_manifest_sets_the_default_question_timeout() {
    waits::the_manifest_sets_the_default_question_timeout(shared(), fast_config()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sleep_survives_a_restart() {
    waits::sleep_survives_a_restart(shared(), fast_config(), 2000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_a_waiting_task() {
    waits::cancel_a_waiting_task(shared(), fast_config()).await;
}
