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

/// Sessions of this database other than the caller's waiting for a lock on `table`; only
/// those running `query`, when given.
async fn waiting_for_lock(pool: &sqlx::PgPool, table: &str, query: Option<&str>) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE NOT l.granted AND l.relation = $1::regclass \
           AND a.datname = current_database() AND ($2::text IS NULL OR a.query = $2)",
    )
    .bind(table)
    .bind(query)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A transaction holding `table` locked (`ACCESS EXCLUSIVE`) until it ends.
async fn lock_table(
    pool: &sqlx::PgPool,
    table: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx
}

/// A platform on `store` whose dispatcher polls and whose wait sweeper sweeps every 20 ms.
async fn platform_at_20_ms(
    store: &Arc<dyn capecontrol_core::store::Store>,
    agents: Vec<Arc<dyn capecontrol_core::AgentBase>>,
) -> capecontrol_core::runtime::Platform {
    let config = capecontrol_core::runtime::PlatformConfig {
        poll_interval: std::time::Duration::from_millis(20),
        ..common::fast_config()
    };
    let mut builder = capecontrol_core::runtime::Platform::builder()
        .store(store.clone())
        .config(config);
    for agent in agents {
        builder = builder.agent_arc(agent);
    }
    builder.build().await.unwrap()
}

/// The wait sweep (every `poll_interval`) reads the waits only while some task waits: with no
/// task waiting, another session holding `task_waits` locked keeps no sweep waiting for it;
/// once a task sleeps, a sweep reads the waits (it waits for the lock) and wakes the task when
/// the lock goes.
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweep_reads_the_waits_only_while_a_task_waits() {
    use std::time::Duration;

    use capecontrol_core::TaskStatus;
    use capecontrol_core::manifest::Config;
    use capecontrol_core::runtime::TaskRequest;
    use capecontrol_core::store::Store;
    use capecontrol_testkit::poll::until;
    use capecontrol_testkit::runtime::{self as testkit, user};
    use serde_json::json;

    let db = test_db!();
    let node = db.store().await;
    let store: Arc<dyn Store> = Arc::new(node.clone());
    let sleeper = testkit::agent(
        testkit::manifest("Sleeper", Config::default(), &[]),
        |_, _, cx| {
            Box::pin(async move {
                // Long enough that the task still sleeps when the test locks the waits.
                cx.sleep(Duration::from_secs(1)).await?;
                Ok(json!("rested"))
            })
        },
    );
    let p = platform_at_20_ms(&store, vec![Arc::new(sleeper)]).await;
    testkit::install(&store, "sleeper", "alice", &[]).await;

    let pg = db.store().await;
    let blocker = lock_table(pg.pool(), "task_waits").await;
    // Twenty-five sweeps' worth of time with no task waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        waiting_for_lock(pg.pool(), "task_waits", None).await,
        0,
        "a sweep with no task waiting reads no wait"
    );
    blocker.commit().await.unwrap();

    // A task that sleeps: now a sweep reads the waits.
    let id = p
        .submit(TaskRequest::new("sleeper", "run", json!({}), user()))
        .await
        .unwrap();
    until(
        Duration::from_secs(10),
        Duration::from_millis(10),
        "the task sleeps",
        async || store.get_task(id).await.unwrap().status == TaskStatus::Waiting,
    )
    .await;
    let blocker = lock_table(pg.pool(), "task_waits").await;
    until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "a sweep reads the waits while a task sleeps",
        async || waiting_for_lock(pg.pool(), "task_waits", None).await > 0,
    )
    .await;
    blocker.commit().await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), p.wait(id, &user()))
        .await
        .expect("the sleeping task is woken once the lock goes")
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.output, Some(json!("rested")));
    p.shutdown(Duration::from_secs(1)).await;
    pg.close().await;
    node.close().await;
    db.drop().await;
}

/// While no task waits, the sweeper counts the waiting tasks once a second, not every
/// `poll_interval` (on PostgreSQL each count is a transaction): with `tasks` locked by another
/// session, a count blocked on the lock is seen; the lock released (that count then finds no
/// task waiting) and, once the count has it, taken again, no count comes for half a second, at
/// 20 ms a sweep; the next one comes once the second is over.
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_sweeper_counts_the_waiting_tasks_once_a_second() {
    use std::time::{Duration, Instant};

    use capecontrol_core::store::Store;
    use capecontrol_testkit::poll::until;

    const COUNT: &str = "SELECT count(*) FROM tasks WHERE status = 'waiting'";
    let db = test_db!();
    let node = db.store().await;
    let store: Arc<dyn Store> = Arc::new(node.clone());
    let p = platform_at_20_ms(&store, Vec::new()).await;
    let pg = db.store().await;
    let counting = async || waiting_for_lock(pg.pool(), "tasks", Some(COUNT)).await;

    let blocker = lock_table(pg.pool(), "tasks").await;
    until(
        Duration::from_secs(10),
        Duration::from_millis(10),
        "a count of the waiting tasks waits for the lock",
        async || counting().await > 0,
    )
    .await;
    blocker.commit().await.unwrap();
    // The count has the lock once it no longer waits for it. (Taken again at once, the lock
    // was seen to go to this session while the count still waited: one run in three here.)
    until(
        Duration::from_secs(10),
        Duration::from_millis(1),
        "the count gets the lock once it is released",
        async || counting().await == 0,
    )
    .await;
    let counted = Instant::now();
    let blocker = lock_table(pg.pool(), "tasks").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let quiet = counted.elapsed();
    assert_eq!(
        counting().await,
        0,
        "no count for {quiet:?} after one found no task waiting (25 sweeps' worth)"
    );
    until(
        Duration::from_secs(10),
        Duration::from_millis(10),
        "the next count comes once the quiet second is over",
        async || counting().await > 0,
    )
    .await;
    assert!(
        counted.elapsed() >= Duration::from_millis(900),
        "the next count came after {:?}",
        counted.elapsed()
    );
    blocker.commit().await.unwrap();
    p.shutdown(Duration::from_secs(1)).await;
    pg.close().await;
    node.close().await;
    db.drop().await;
}
