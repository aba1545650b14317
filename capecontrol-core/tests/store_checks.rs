//! The generic store checks of the test kit (`capecontrol_testkit::checks`), written for
//! PostgreSQL, on [`MemoryStore`]: each on a fresh store.

use capecontrol_core::store::memory::MemoryStore;
use capecontrol_testkit::checks::*;

macro_rules! on_memory {
    ($($name:ident => $check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            $check(&MemoryStore::new()).await;
        }
    )*};
}

on_memory! {
    agents => check_agents,
    versions_and_catalog => check_versions_and_catalog,
    installations => check_installations,
    audit => check_audit,
    enqueue_and_idempotency => check_enqueue_and_idempotency,
    claim_order_and_filters => check_claim_order_and_filters,
    journal_and_finish => check_journal_and_finish,
    retry_fail_release_cancel => check_retry_fail_release_cancel,
    fencing_after_lease_loss => check_fencing_after_lease_loss,
}
