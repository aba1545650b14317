//! The store conformance suite on [`MemoryStore`].

use std::sync::Arc;

use capecontrol_core::store::Store;
use capecontrol_core::store::memory::MemoryStore;
use capecontrol_testkit::conformance;

fn store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_whole_suite() {
    conformance::run_all(|| async { store() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cases_also_pass_on_one_shared_store() {
    let shared = store();
    conformance::registry_crud_and_conflicts(shared.clone()).await;
    conformance::catalog_filters_sort_and_pages(shared.clone()).await;
    conformance::enqueue_and_idempotency(shared.clone()).await;
    conformance::claim_by_priority_age_and_run_at(shared.clone()).await;
    conformance::finish_outcomes(shared.clone()).await;
    conformance::cancel_queued_and_running(shared.clone()).await;
    conformance::concurrency_limit_per_agent(shared.clone()).await;
    conformance::events_are_numbered_without_gaps(shared.clone()).await;
    conformance::concurrent_claimers_never_share_a_task(shared, 16, 200).await;
}
