//! The Prometheus exposition after a known workload, scraped over HTTP from a `/metrics` route
//! (its own test binary: the metrics recorder is global to the process).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capecontrol::agent::ToolContext;
use capecontrol::observability::{self, Metrics};
use capecontrol::prelude::*;
use capecontrol::runtime::PlatformConfig;
use capecontrol::store::memory::MemoryStore;
use capecontrol::store::{CatalogQuery, InstallationRecord, Store};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An agent at a version (each test its own: the recorder is shared by the tests of this binary).
struct Greeter(&'static str);

#[async_trait]
impl AgentBase for Greeter {
    fn manifest(&self) -> Manifest {
        serde_json::from_value(json!({
            "name": "Greeter", "version": self.0, "description": "greets or fails",
            "config": {"retries": 0}
        }))
        .unwrap()
    }
    async fn run_task(&self, name: &str, _input: Value, _cx: &TaskContext) -> Result<Value> {
        match name {
            "ok" => Ok(json!("hello")),
            _ => Err(Error::agent("boom")),
        }
    }
    async fn call_tool(&self, name: &str, _input: Value, _cx: &ToolContext) -> Result<Value> {
        Err(Error::not_found("tool", name))
    }
}

/// One sample line: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let value: f64 = value.parse().expect("a number");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("k=\"v\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.push((name, labels, value));
    }
    out
}

/// The value of the one sample of `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
    found.first().copied()
}

/// GET `path` from `addr` over HTTP/1.1: (content type, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    (content_type, body.to_owned())
}

async fn serve(metrics: &'static Metrics) -> std::net::SocketAddr {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            ([(CONTENT_TYPE, Metrics::CONTENT_TYPE)], metrics.render())
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_after_a_known_workload() {
    let metrics = observability::install().unwrap();
    assert!(
        std::ptr::eq(metrics, observability::install().unwrap()),
        "installed once per process"
    );
    let addr = serve(metrics).await;

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let p = Platform::builder()
        .store(store.clone())
        .config(PlatformConfig {
            poll_interval: Duration::from_millis(20),
            lease: Duration::from_millis(400),
            ..PlatformConfig::default()
        })
        .agent(Greeter("1.2.0"))
        .build()
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let users = ["alice", "bob"];
    for user in users {
        store
            .upsert_installation(InstallationRecord {
                id: uuid::Uuid::new_v4(),
                agent_id: "greeter".into(),
                user_id: user.into(),
                version: "1.2.0".into(),
                granted_scopes: vec![],
                settings: json!({}),
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
    }
    // Three successes and one failure by two users; two ratings (5 and 4); one catalog page.
    let mut ids = Vec::new();
    for (user, task) in [
        ("alice", "ok"),
        ("alice", "ok"),
        ("bob", "ok"),
        ("bob", "bad"),
    ] {
        let id = p
            .submit(TaskRequest::new(
                "greeter",
                task,
                json!({}),
                Principal::new(user),
            ))
            .await
            .unwrap();
        p.trusted().wait(id).await.unwrap();
        ids.push(id);
    }
    p.rate(ids[0], &Principal::new("alice"), 5).await.unwrap();
    p.rate(ids[2], &Principal::new("bob"), 4).await.unwrap();
    let page = p
        .registry()
        .catalog(&CatalogQuery::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    // The maintenance loop sets the queue depth every half lease.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (content_type, body) = get(addr, "/metrics").await;
    assert_eq!(content_type, Metrics::CONTENT_TYPE);
    let samples = parse(&body);
    let av = [("agent", "greeter"), ("version", "1.2.0")];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        av.iter().chain(extra).copied().collect()
    };

    assert_eq!(
        value(&samples, "tasks_submitted_total", &av),
        Some(4.0),
        "{body}"
    );
    let ok = with(&[("outcome", "success")]);
    let failed = with(&[("outcome", "agent")]);
    assert_eq!(value(&samples, "agent_attempts_total", &ok), Some(3.0));
    assert_eq!(value(&samples, "agent_attempts_total", &failed), Some(1.0));
    assert_eq!(
        value(&samples, "agent_execution_duration_seconds_count", &ok),
        Some(3.0)
    );
    assert_eq!(
        value(&samples, "agent_execution_duration_seconds_count", &failed),
        Some(1.0)
    );
    // Buckets from milliseconds to minutes; every in-process attempt is under 30 s.
    let buckets: Vec<&str> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "agent_execution_duration_seconds_bucket"
                && l["outcome"] == "success"
                && l["version"] == "1.2.0"
        })
        .map(|(_, l, _)| l["le"].as_str())
        .collect();
    assert_eq!(
        buckets,
        [
            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30",
            "60", "120", "300", "600", "+Inf"
        ]
    );
    let le30 = with(&[("outcome", "success"), ("le", "30")]);
    assert_eq!(
        value(&samples, "agent_execution_duration_seconds_bucket", &le30),
        Some(3.0)
    );
    assert_eq!(value(&samples, "agent_success_rate", &av), Some(0.75));
    assert_eq!(value(&samples, "agent_concurrent_tasks", &av), Some(0.0));
    assert_eq!(
        value(&samples, "agent_circuit_breaker_state", &av),
        Some(0.0)
    );
    assert_eq!(value(&samples, "user_satisfaction_score", &av), Some(4.5));
    assert_eq!(value(&samples, "user_ratings_total", &av), Some(2.0));
    assert_eq!(
        value(&samples, "marketplace_discovery_rate", &av),
        Some(1.0)
    );
    assert_eq!(value(&samples, "task_queue_depth", &[]), Some(0.0));
    assert!(body.contains("# TYPE agent_execution_duration_seconds histogram"));
    assert!(body.contains("# HELP user_satisfaction_score "));

    // Bounded cardinality: only these label names, and no task or user id anywhere in a label.
    for (name, labels, _) in &samples {
        for (k, v) in labels {
            assert!(
                // `action`: the task action of `task_access_denied_total`, a fixed set.
                ["agent", "version", "outcome", "action", "le"].contains(&k.as_str()),
                "{name} has label {k}"
            );
            assert!(
                !users.contains(&v.as_str()) && !ids.iter().any(|id| v.contains(&id.to_string())),
                "{name} has a user or task id in {k}={v}"
            );
        }
    }
    // Every metric of the platform that this workload produces is exported (container memory and
    // CPU come from the container executor: see capecontrol-exec's tests).
    for name in observability::METRIC_NAMES {
        if name.starts_with("agent_memory") || *name == "agent_cpu_usage_percent" {
            continue;
        }
        assert!(
            samples
                .iter()
                .any(|(n, _, _)| n == name || n.strip_suffix("_count") == Some(name)),
            "{name} missing from\n{body}"
        );
    }
    p.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn rating_refusals_are_typed_and_denials_audited() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let p = Platform::builder()
        .store(store.clone())
        .config(PlatformConfig {
            poll_interval: Duration::from_millis(20),
            ..PlatformConfig::default()
        })
        .agent(Greeter("2.0.0"))
        .build()
        .await
        .unwrap();
    let now = chrono::Utc::now();
    store
        .upsert_installation(InstallationRecord {
            id: uuid::Uuid::new_v4(),
            agent_id: "greeter".into(),
            user_id: "alice".into(),
            version: "2.0.0".into(),
            granted_scopes: vec![],
            settings: json!({}),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    let alice = Principal::new("alice");
    let id = p
        .submit(TaskRequest::new("greeter", "ok", json!({}), alice.clone()))
        .await
        .unwrap();
    p.trusted().wait(id).await.unwrap();
    let e = p.rate(id, &alice, 6).await.unwrap_err();
    assert_eq!(e.http_status(), 400);
    assert_eq!(e.field_errors()[0].pointer, "/score");
    // Another user is told the task does not exist (as for every task action), and the
    // attempt is audited.
    let e = p.rate(id, &Principal::new("mallory"), 5).await.unwrap_err();
    assert_eq!(e.category(), ErrorCategory::NotFound);
    let audit = p.trusted().audit(id).await.unwrap();
    let denied = audit
        .iter()
        .find(|a| a.event_type == capecontrol::runtime::platform::ACCESS_DENIED)
        .expect("the denial is audited");
    assert_eq!(denied.user_id.as_deref(), Some("mallory"));
    assert_eq!(denied.payload["action"], "rate");
    assert!(!audit.iter().any(|a| a.event_type == "task.rated"));
    p.rate(id, &alice, 5).await.unwrap();
    let audit = p.trusted().audit(id).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.event_type == "task.rated")
            .count(),
        1
    );
    p.shutdown(Duration::from_secs(1)).await;
}
