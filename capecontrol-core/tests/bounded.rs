//! Nothing grows without bound (issue 11, item 7): the live event broadcast does not pin large
//! outputs while watchers still get them whole, and `Platform::audit` reads a task's whole trail
//! page by page instead of stopping at the first page.

use std::sync::Arc;
use std::time::Duration;

use capecontrol_core::error::ErrorCategory;
use capecontrol_core::events::{LIVE_OUTPUT_MAX, TaskEventKind};
use capecontrol_core::manifest::Config;
use capecontrol_core::runtime::TaskRequest;
use capecontrol_core::state::TaskStatus;
use capecontrol_core::store::memory::MemoryStore;
use capecontrol_core::store::{MAX_AUDIT_PAGE, MAX_VALUE_DEPTH, NewAuditEvent, Store};
use serde_json::json;
use tokio_stream::StreamExt;

use capecontrol_testkit::runtime::{agent, fast_config, install, manifest, platform_with, user};

/// Size of each task's output.
const OUTPUT: usize = 256 * 1024;
/// Tasks run.
const TASKS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_get_large_outputs_whole_while_the_live_ring_holds_only_references() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let big = agent(manifest("Big", Config::default(), &[]), |_, input, _| {
        Box::pin(async move {
            // Late enough that the watcher below follows the completion live.
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(json!({ "n": input["n"], "blob": "x".repeat(OUTPUT) }))
        })
    });
    let p = platform_with(store.clone(), vec![big], fast_config()).await;
    install(&store, "big", "alice", &[]).await;
    // A subscriber that reads nothing: the ring keeps every event for it.
    let mut idle = store.subscribe();

    for n in 0..TASKS {
        let id = p
            .submit(TaskRequest::new("big", "run", json!({ "n": n }), user()))
            .await
            .unwrap();
        let events: Vec<_> = p
            .watch(id, &user())
            .await
            .unwrap()
            .map(|e| e.unwrap())
            .collect()
            .await;
        let last = events.last().unwrap();
        let TaskEventKind::Completed { output } = &last.kind else {
            panic!("{last:?}");
        };
        assert_eq!(output["n"], json!(n));
        assert_eq!(output["blob"].as_str().unwrap().len(), OUTPUT);
        assert!(!last.is_elided());
    }

    let mut held = 0usize;
    let mut completions = 0;
    while let Ok(event) = idle.try_recv() {
        let size = serde_json::to_vec(&event).unwrap().len();
        assert!(
            size <= LIVE_OUTPUT_MAX,
            "the ring holds a {size}-byte {} event",
            event.kind.name()
        );
        held += size;
        if matches!(event.kind, TaskEventKind::Completed { .. }) {
            assert!(event.is_elided());
            completions += 1;
        }
    }
    assert_eq!(completions, TASKS);
    assert!(
        held < OUTPUT,
        "the ring held {held} bytes for {TASKS} tasks"
    );
    p.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn audit_reads_a_trail_longer_than_a_page() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let ok = agent(manifest("Echo", Config::default(), &[]), |_, _, _| {
        Box::pin(async { Ok(json!("ok")) })
    });
    let p = platform_with(store.clone(), vec![ok], fast_config()).await;
    install(&store, "echo", "alice", &[]).await;
    let id = p
        .submit(TaskRequest::new("echo", "run", json!({}), user()))
        .await
        .unwrap();
    p.wait(id, &user()).await.unwrap();
    let own = p.audit(id, &user()).await.unwrap().len();
    assert!(own > 0);

    let extra = MAX_AUDIT_PAGE + 100;
    for i in 0..extra {
        store
            .append_audit(NewAuditEvent::by(&user(), "test.note", json!({ "i": i })).task(id))
            .await
            .unwrap();
    }
    let all = p.audit(id, &user()).await.unwrap();
    assert_eq!(all.len(), own + extra);
    assert!(all.iter().all(|row| row.task_id == Some(id)));
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "chain order");
    assert_eq!(all.last().unwrap().payload, json!({ "i": extra - 1 }));
    assert_eq!(p.trusted().audit(id).await.unwrap(), all);

    // Page by page through the cursor.
    let first = p.audit_page(id, None, None, &user()).await.unwrap();
    assert_eq!(first.len(), MAX_AUDIT_PAGE);
    let second = p
        .audit_page(id, Some(first.last().unwrap().seq), None, &user())
        .await
        .unwrap();
    assert_eq!(second.len(), own + extra - MAX_AUDIT_PAGE);
    assert_eq!([first, second].concat(), all);
    let small = p.audit_page(id, None, Some(3), &user()).await.unwrap();
    assert_eq!(small, all[..3]);
    p.shutdown(Duration::from_secs(1)).await;
}

/// A value `levels` deep.
fn nested(levels: usize) -> serde_json::Value {
    (0..levels).fold(json!("bottom"), |v, _| json!({ "n": v }))
}

/// An agent's output or step result nested deeper than a store keeps (`MAX_VALUE_DEPTH`)
/// fails its task at once with a validation error at `/output`, no retry (on PostgreSQL the
/// row would otherwise be written and never read back); one of exactly that depth completes.
#[tokio::test]
async fn an_output_nested_too_deep_fails_its_task_and_one_at_the_edge_completes() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let deep = agent(
        manifest(
            "Deep",
            Config {
                retries: 3,
                ..Config::default()
            },
            &[],
        ),
        |_, input, cx| {
            Box::pin(async move {
                let levels = usize::try_from(input["levels"].as_u64().unwrap()).unwrap();
                if input["in_step"] == json!(true) {
                    let v: serde_json::Value = cx
                        .step("deep", async move {
                            Ok::<_, capecontrol_core::Error>(nested(levels))
                        })
                        .await?;
                    return Ok(json!({ "len": v.to_string().len() }));
                }
                Ok(nested(levels))
            })
        },
    );
    let p = platform_with(store.clone(), vec![deep], fast_config()).await;
    install(&store, "deep", "alice", &[]).await;
    let run = |levels: usize, in_step: bool| {
        let p = &p;
        async move {
            let id = p
                .submit(TaskRequest::new(
                    "deep",
                    "run",
                    json!({ "levels": levels, "in_step": in_step }),
                    user(),
                ))
                .await
                .unwrap();
            p.wait(id, &user()).await.unwrap()
        }
    };
    for in_step in [false, true] {
        let t = run(MAX_VALUE_DEPTH + 1, in_step).await;
        assert_eq!(t.status, TaskStatus::Failed, "{t:?}");
        assert_eq!(t.attempts, 1, "not retried");
        let error = t.error.unwrap();
        assert_eq!(error.category(), ErrorCategory::Validation, "{error}");
        assert_eq!(error.field_errors()[0].pointer, "/output");
        let t = run(MAX_VALUE_DEPTH, in_step).await;
        assert_eq!(t.status, TaskStatus::Completed, "{t:?}");
        if !in_step {
            assert_eq!(t.output, Some(nested(MAX_VALUE_DEPTH)));
        }
    }
    p.shutdown(Duration::from_secs(1)).await;
}
