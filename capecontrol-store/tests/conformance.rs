//! The core store conformance suite on [`PostgresStore`]: each case on a fresh database (one
//! test per case, so that they run in parallel and fail by name), the whole suite through
//! `run_all` (so that a case added to the suite runs here too), the cases again on one shared
//! database, and the whole suite once more with batched writes off (`batch_writes(false)`).

mod common;

use std::sync::{Arc, Mutex};

use capecontrol_core::store::Store;
use capecontrol_store::PostgresStore;
use capecontrol_testkit::conformance;
use common::TestDb;

/// One test per case, on a fresh database.
macro_rules! cases {
    ($($case:ident $(($($arg:expr),*))?;)*) => {$(
        #[cfg_attr(capecontrol_skip_services, ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            let db = test_db!();
            let store = db.store().await;
            conformance::$case(Arc::new(store.clone()) $($(, $arg)*)?).await;
            store.close().await;
            db.drop().await;
        }
    )*};
}

cases! {
    registry_crud_and_conflicts;
    versions_publish_and_archive;
    installations;
    trigger_state;
    catalog_filters_sort_and_pages;
    enqueue_and_idempotency;
    claim_by_priority_age_and_run_at;
    heartbeat_extends_the_lease;
    fencing_after_lease_loss;
    reclaim_fails_when_no_attempt_is_left;
    finish_outcomes;
    release_does_not_count_the_attempt;
    finish_and_release_write_steps_atomically;
    cancel_queued_and_running;
    cancel_requested_ends_the_task_on_release_or_reclaim;
    cancel_requested_wins_over_a_retry_or_a_failure_not_a_completion;
    concurrency_limit_per_agent;
    events_are_numbered_without_gaps;
    the_queued_event_carries_the_trigger;
    live_events_do_not_pin_large_outputs;
    misnumbered_events_change_nothing;
    audit_rows_for_every_state_change;
    the_store_writes_the_policy_decision_it_is_asked_to;
    timestamps_are_kept_to_the_microsecond;
    audit_chain_is_intact_and_pages;
    enqueue_enforces_the_task_bounds;
    ratings_of_completed_tasks;
    concurrent_claimers_never_share_a_task(16, 500);
    // Not in `run_all` (a store may leave every task to a claim); `PostgresStore` claims in
    // the enqueue.
    an_enqueue_claims_its_task_only_when_a_claim_would;
}

/// While the agent's claim lock is held (a claim, or another enqueue claiming its task), an
/// enqueue does not wait for it: its task is queued for a claim, and taken by the next one.
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enqueue_leaves_its_task_to_a_claim_while_the_agent_lock_is_held() {
    use capecontrol_core::store::QueueStore;
    use capecontrol_testkit::fixtures;
    let db = test_db!();
    let store = db.store().await;
    fixtures::register(&store, "locked").await;
    let request = fixtures::claim_req("w1", 1, 30_000);
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(1128353861, hashtext('locked'))")
        .execute(&mut *holder)
        .await
        .unwrap();
    let held = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store.enqueue_claimed(fixtures::task("locked", "user-1"), &request),
    )
    .await
    .expect("the enqueue does not wait for the lock")
    .unwrap();
    assert!(held.1.is_none(), "left to a claim while the lock is held");
    assert_eq!(held.0.task.status, capecontrol_core::TaskStatus::Queued);
    holder.rollback().await.unwrap();
    let claimed = store.claim(&request).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].task.id, held.0.task.id);
    // Free again: the next one is claimed in its enqueue.
    let done = capecontrol_core::store::Finish {
        outcome: capecontrol_core::store::Outcome::Completed {
            output: serde_json::json!(1),
        },
        steps: Vec::new(),
        events: Vec::new(),
        audit: Vec::new(),
    };
    store.finish(&claimed[0].lease, done).await.unwrap();
    let (_, next) = store
        .enqueue_claimed(fixtures::task("locked", "user-1"), &request)
        .await
        .unwrap();
    assert!(
        next.is_some(),
        "claimed in its enqueue once the lock is free"
    );
    pool.close().await;
    store.close().await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_with_a_fresh_database_per_case() {
    run_all_on_fresh_databases(true).await;
}

/// `run_all` with a fresh database (and store, `batch_writes` as given) per case.
async fn run_all_on_fresh_databases(batch_writes: bool) {
    // Fail without a server (saying how to run the test), as every PostgreSQL test does.
    TestDb::create().await.drop().await;
    let made: Arc<Mutex<Vec<(TestDb, PostgresStore)>>> = Arc::default();
    let factory = {
        let made = made.clone();
        move || {
            let made = made.clone();
            async move {
                // The cases run one after the other: the previous case's store is done, and
                // its pool closes before this one opens (the open pools of forty cases, two
                // suites at once, came near the server's connection limit: a pool that cannot
                // connect times out).
                let previous = made.lock().unwrap().last().map(|(_, s)| s.clone());
                if let Some(previous) = previous {
                    previous.close().await;
                }
                let db = TestDb::create().await;
                let store = db
                    .store_options()
                    .batch_writes(batch_writes)
                    .connect()
                    .await
                    .expect("connect");
                store.migrate().await.expect("migrate");
                made.lock().unwrap().push((db, store.clone()));
                Arc::new(store) as Arc<dyn Store>
            }
        }
    };
    conformance::run_all(factory).await;
    let made = std::mem::take(&mut *made.lock().unwrap());
    assert!(made.len() >= 20, "one fresh database per case");
    for (db, store) in made {
        store.close().await;
        db.drop().await;
    }
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cases_also_pass_on_one_shared_database() {
    let db = test_db!();
    let store = db.store().await;
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    conformance::registry_crud_and_conflicts(shared.clone()).await;
    conformance::catalog_filters_sort_and_pages(shared.clone()).await;
    conformance::enqueue_and_idempotency(shared.clone()).await;
    conformance::claim_by_priority_age_and_run_at(shared.clone()).await;
    conformance::finish_outcomes(shared.clone()).await;
    conformance::cancel_queued_and_running(shared.clone()).await;
    conformance::concurrency_limit_per_agent(shared.clone()).await;
    conformance::events_are_numbered_without_gaps(shared.clone()).await;
    conformance::concurrent_claimers_never_share_a_task(shared, 16, 200).await;
    store.close().await;
    db.drop().await;
}

/// The whole suite again with every write made inline, by its caller alone
/// (`batch_writes(false)`): both completers pass it.
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_with_inline_writes() {
    run_all_on_fresh_databases(false).await;
}
