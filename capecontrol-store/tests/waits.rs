//! Durable waits on PostgreSQL: the `WaitStore` conformance cases (one test per case, on a
//! fresh database) and the test kit's runtime scenarios with several nodes, each its own
//! `PostgresStore` (pools, LISTEN connection) on one database.

mod common;

use std::sync::Arc;

use capecontrol_testkit::{conformance_waits, waits};

macro_rules! cases {
    ($($case:ident;)*) => {$(
        #[cfg_attr(capecontrol_skip_services, ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            let db = test_db!();
            let store = db.store().await;
            conformance_waits::$case(Arc::new(store.clone())).await;
            store.close().await;
            db.drop().await;
        }
    )*};
}

cases! {
    suspend_then_wake_replays_the_answer;
    deadline_wakes_once_and_an_answer_then_conflicts;
    cancel_a_waiting_task;
    suspend_is_fenced_and_honours_a_requested_cancel;
    children_join_and_cancel_cascade;
}

node_scenarios! {
    waits;
    platform_ask_is_answered_on_another_node => ask_is_answered_on_another_node();
    platform_ask_times_out => ask_times_out();
    platform_the_manifest_sets_the_default_question_timeout =>
        the_manifest_sets_the_default_question_timeout();
    platform_sleep_survives_a_restart => sleep_survives_a_restart(2000);
    platform_cancel_a_waiting_task => cancel_a_waiting_task();
}
