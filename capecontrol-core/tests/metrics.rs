//! The blueprint §10.1 metrics, read back through a debugging recorder (its own test binary:
//! a metrics recorder is global to the process).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capecontrol_core::agent::{AgentBase, TaskContext, ToolContext};
use capecontrol_core::manifest::{Config, Manifest};
use capecontrol_core::runtime::{BreakerConfig, Platform, PlatformConfig, TaskRequest};
use capecontrol_core::store::memory::MemoryStore;
use capecontrol_core::store::{InstallationRecord, Store};
use capecontrol_core::{Error, Principal, Result, TaskStatus};
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
        if name == "ok" { Ok(json!(1)) } else { Err(Error::agent("boom")) }
    }
    async fn call_tool(&self, name: &str, _input: Value, _cx: &ToolContext) -> Result<Value> {
        Err(Error::not_found("tool", name))
    }
}

fn gauge(snapshotter: &Snapshotter, name: &str) -> Option<f64> {
    snapshotter.snapshot().into_vec().into_iter().find_map(|(key, _, _, value)| {
        match (key.key().name() == name, value) {
            (true, DebugValue::Gauge(g)) => Some(g.into_inner()),
            _ => None,
        }
    })
}

fn has_histogram(snapshotter: &Snapshotter, name: &str) -> bool {
    snapshotter.snapshot().into_vec().into_iter().any(|(key, _, _, value)| {
        key.key().name() == name && matches!(value, DebugValue::Histogram(ref h) if !h.is_empty())
    })
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
            breaker: BreakerConfig { failure_threshold: 1, cool_down: Duration::from_secs(60) },
            ..PlatformConfig::default()
        })
        .agent(Failing)
        .build()
        .await
        .unwrap();
    let now = chrono::Utc::now();
    store
        .upsert_installation(InstallationRecord {
            id: uuid::Uuid::new_v4(),
            agent_id: "failing".into(),
            user_id: "u".into(),
            version: "1.0.0".into(),
            granted_scopes: vec![],
            settings: json!({}),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    let id = p.submit(TaskRequest::new("failing", "ok", json!({}), Principal::new("u"))).await.unwrap();
    assert_eq!(p.wait(id).await.unwrap().status, TaskStatus::Completed);
    assert_eq!(gauge(&snapshotter, "agent_success_rate"), Some(1.0));
    let id = p.submit(TaskRequest::new("failing", "bad", json!({}), Principal::new("u"))).await.unwrap();
    assert_eq!(p.wait(id).await.unwrap().status, TaskStatus::Failed);
    assert_eq!(gauge(&snapshotter, "agent_success_rate"), Some(0.5));
    assert!(has_histogram(&snapshotter, "agent_execution_duration_seconds"));
    assert_eq!(gauge(&snapshotter, "agent_concurrent_tasks"), Some(0.0));
    assert_eq!(gauge(&snapshotter, "agent_circuit_breaker_state"), Some(2.0), "open");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(gauge(&snapshotter, "task_queue_depth"), Some(0.0));
}
