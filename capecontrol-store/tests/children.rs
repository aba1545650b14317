//! Child tasks (`cx.spawn`, `cx.join`) on PostgreSQL: the test kit's runtime scenarios with
//! several nodes, each its own `PostgresStore` (pools, LISTEN connection) on one database.

mod common;

use std::sync::Arc;
use std::time::Duration;

use capecontrol_core::runtime::PlatformConfig;
use capecontrol_core::store::Store;
use capecontrol_testkit::{children, runtime as testkit};

/// The test kit's fast configuration, polling every 50 ms (PostgreSQL round trips).
fn fast_config() -> PlatformConfig {
    PlatformConfig {
        poll_interval: Duration::from_millis(50),
        ..testkit::fast_config()
    }
}

macro_rules! scenarios {
    ($($name:ident => $scenario:ident($($arg:expr),*);)*) => {$(
        #[cfg_attr(capecontrol_skip_services, ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let db = Arc::new(test_db!());
            let nodes = {
                let db = db.clone();
                move || {
                    let db = db.clone();
                    async move { Arc::new(db.store().await) as Arc<dyn Store> }
                }
            };
            children::$scenario(nodes, fast_config() $(, $arg)*).await;
            if let Ok(db) = Arc::try_unwrap(db) {
                db.drop().await;
            }
        }
    )*};
}

scenarios! {
    a_hundred_children_fan_out_and_join => fan_out_and_join(100);
    each_child_is_spawned_once_across_a_crash_of_the_parents_node => spawn_once_across_a_crash(100);
    a_child_failure_is_a_typed_value => a_child_failure_is_a_typed_value();
    cancelling_a_parent_cancels_its_children => cancelling_a_parent_cancels_its_children();
    a_child_spawned_while_the_cancel_travels_is_cancelled =>
        a_child_spawned_while_the_cancel_travels_is_cancelled();
}
