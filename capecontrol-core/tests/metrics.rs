//! The platform's metrics (listed in `docs/contracts.md`), read back through a debugging recorder (its own test binary:
//! a metrics recorder is global to the process).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capecontrol_core::agent::{AgentBase, TaskContext, ToolContext};
use capecontrol_core::manifest::Manifest;
use capecontrol_core::runtime::{BreakerConfig, Platform, PlatformConfig, TaskRequest};
use capecontrol_core::store::Store;
use capecontrol_core::store::memory::MemoryStore;
use capecontrol_core::{Error, Principal, Result, TaskStatus};
use capecontrol_testkit::runtime::install_in;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::{Value, json};

struct Failing;

#[async_trait]
impl AgentBase for Failing {
    fn manifest(&self) -> Manifest {
        serde_json::from_value(json!({
            "name": "Failing", "version": "1.0.0", "description": "always fails",
            "config": {"retries": 0}
        }))
        .unwrap()
    }
    async fn run_task(&self, name: &str, _input: Value, _cx: &TaskContext) -> Result<Value> {
        if name == "ok" {
            Ok(json!(1))
        } else {
            Err(Error::agent("boom"))
        }
    }
    async fn call_tool(&self, name: &str, _input: Value, _cx: &ToolContext) -> Result<Value> {
        Err(Error::not_found("tool", name))
    }
}

/// One snapshot (a snapshot resets counters and gauges and drains histograms, so read
/// everything from one): each series' name, its `outcome` label if it has one, its value.
type Snapshot = Vec<(String, Option<String>, DebugValue)>;

fn snapshot(snapshotter: &Snapshotter) -> Snapshot {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let outcome = key
                .labels()
                .find(|l| l.key() == "outcome")
                .map(|l| l.value().to_owned());
            (key.name().to_owned(), outcome, value)
        })
        .collect()
}

fn gauge(snap: &Snapshot, name: &str) -> Option<f64> {
    snap.iter().find_map(|(n, _, v)| match v {
        DebugValue::Gauge(g) if n == name => Some(g.into_inner()),
        _ => None,
    })
}

fn histogram_len(snap: &Snapshot, name: &str) -> usize {
    snap.iter()
        .map(|(n, _, v)| match v {
            DebugValue::Histogram(h) if n == name => h.len(),
            _ => 0,
        })
        .sum()
}

/// The count of the counter `name` whose `outcome` label is `outcome` (0 if it has none).
fn counter(snap: &Snapshot, name: &str, outcome: Option<&str>) -> u64 {
    snap.iter()
        .map(|(n, o, v)| match v {
            DebugValue::Counter(c) if n == name && o.as_deref() == outcome => *c,
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn blueprint_metrics_and_breaker_state_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let p = Platform::builder()
        .store(store.clone())
        .config(PlatformConfig {
            lease: Duration::from_millis(300),
            poll_interval: Duration::from_millis(20),
            breaker: BreakerConfig {
                failure_threshold: 1,
                cool_down: Duration::from_secs(60),
            },
            ..PlatformConfig::default()
        })
        .agent(Failing)
        .build()
        .await
        .unwrap();
    install_in(store.as_ref(), "failing", "u", &[]).await;
    let id = p
        .submit(TaskRequest::new(
            "failing",
            "ok",
            json!({}),
            Principal::new("u"),
        ))
        .await
        .unwrap();
    assert_eq!(
        p.wait(id, &Principal::new("u")).await.unwrap().status,
        TaskStatus::Completed
    );
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    p.submit(TaskRequest::new("failing", "ok", json!({}), Principal::new("u")).run_at(later))
        .await
        .unwrap();
    let id = p
        .submit(TaskRequest::new(
            "failing",
            "bad",
            json!({}),
            Principal::new("u"),
        ))
        .await
        .unwrap();
    assert_eq!(
        p.wait(id, &Principal::new("u")).await.unwrap().status,
        TaskStatus::Failed
    );
    let snap = snapshot(&snapshotter);
    assert_eq!(
        histogram_len(&snap, "agent_execution_duration_seconds"),
        2,
        "{snap:?}"
    );
    assert_eq!(gauge(&snap, "agent_success_rate"), Some(0.5));
    // Three submissions; two attempts, each counted under its own outcome.
    assert_eq!(counter(&snap, "tasks_submitted_total", None), 3, "{snap:?}");
    assert_eq!(
        counter(&snap, "agent_attempts_total", Some("success")),
        1,
        "{snap:?}"
    );
    assert_eq!(
        counter(&snap, "agent_attempts_total", Some("agent")),
        1,
        "{snap:?}"
    );
    for outcome in ["success", "agent"] {
        let durations = snap.iter().find_map(|(n, o, v)| match v {
            DebugValue::Histogram(h)
                if n == "agent_execution_duration_seconds" && o.as_deref() == Some(outcome) =>
            {
                Some(h.len())
            }
            _ => None,
        });
        assert_eq!(durations, Some(1), "{outcome}: {snap:?}");
    }
    assert_eq!(gauge(&snap, "agent_concurrent_tasks"), Some(0.0));
    assert_eq!(
        gauge(&snap, "agent_circuit_breaker_state"),
        Some(2.0),
        "open after one failure"
    );
    // Every per-agent series is labelled with the agent and the version, never a task or user.
    for (key, _, _, _) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        if key.name() == "task_queue_depth" {
            continue;
        }
        let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
        assert!(labels.contains(&("agent", "failing")), "{key:?}");
        assert!(labels.contains(&("version", "1.0.0")), "{key:?}");
        assert!(
            labels
                .iter()
                .all(|(k, _)| ["agent", "version", "outcome"].contains(k)),
            "{key:?}"
        );
    }
    // The maintenance loop sets the queue depth every half lease: one task waits for later.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let snap = snapshot(&snapshotter);
    assert_eq!(gauge(&snap, "task_queue_depth"), Some(1.0), "{snap:?}");
}
