//! The `children` example (`examples/children.rs`) run end to end: a parent task fans out to
//! twenty child tasks through the embedded platform and joins them.

#[allow(dead_code)]
#[path = "../examples/children.rs"]
pub mod children_example;

use capecontrol::TaskStatus;
use children_example::Report;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parent_joins_its_twenty_children_and_sees_the_failed_one() {
    let (parent, children) = children_example::run(20).await.unwrap();
    assert_eq!(parent.status, TaskStatus::Completed, "{:?}", parent.error);
    let report: Report = serde_json::from_value(parent.output.unwrap()).unwrap();
    let sum: u64 = (1..=20u64).filter(|n| *n != 13).map(|n| n * n).sum();
    assert_eq!(
        report,
        Report {
            sum,
            children: 20,
            failed: vec!["Validation: invalid input; /n: 13 is unlucky".into()],
        }
    );
    assert_eq!(children.len(), 20);
    assert!(children.iter().all(|c| c.parent_id == Some(parent.id)));
    let failed: Vec<_> = children
        .iter()
        .filter(|c| c.status == TaskStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].input["n"], 13);
}

#[test]
fn the_example_runs() {
    children_example::main().unwrap();
}
