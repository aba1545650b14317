//! Child tasks (`cx.spawn`, `cx.join`) on PostgreSQL: the test kit's runtime scenarios with
//! several nodes, each its own `PostgresStore` (pools, LISTEN connection) on one database.

mod common;

use capecontrol_testkit::children;

node_scenarios! {
    children;
    a_hundred_children_fan_out_and_join => fan_out_and_join(100);
    each_child_is_spawned_once_across_a_crash_of_the_parents_node => spawn_once_across_a_crash(100);
    a_child_failure_is_a_typed_value => a_child_failure_is_a_typed_value();
    cancelling_a_parent_cancels_its_children => cancelling_a_parent_cancels_its_children();
    a_child_spawned_while_the_cancel_travels_is_cancelled =>
        a_child_spawned_while_the_cancel_travels_is_cancelled();
}
