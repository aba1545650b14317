//! Feature `otel`: the `attempt`, `step` and `tool_call` spans of a task are exported through
//! OpenTelemetry, the attempt's span a child of the submitting request's remote span (the
//! task's stored W3C `traceparent`: same trace id, its parent span id), each step a child of the
//! attempt and the tool call of its step (its own test binary: the subscriber is global).
//!
//! The exporter collects the finished spans in memory, as the SDK's `InMemorySpanExporter`
//! does; that one is behind the SDK's `testing` feature, which also compiles the SDK's metrics
//! and logs, so this ten-line one keeps the dependency small.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use capecontrol::otel::opentelemetry::Value;
use capecontrol::otel::opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use capecontrol::otel::opentelemetry_sdk::error::OTelSdkResult;
use capecontrol::otel::opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use capecontrol::prelude::*;
use capecontrol::registry::InstallRequest;
use tracing_subscriber::layer::SubscriberExt;

/// Keeps every exported span.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// An agent whose task runs two steps; the second calls a tool.
#[derive(Agent, Default)]
#[agent(name = "Exported", version = "2.0.0", scopes("t:read"), retries = 0)]
struct Exported;

#[agent_impl]
impl Exported {
    /// Two steps; the second calls a tool.
    #[task]
    async fn work(&self, cx: &TaskContext, _input: ()) -> Result<String, Error> {
        let a: u32 = cx.step("first", async { Ok::<_, Error>(1) }).await?;
        cx.step("second", async { self.lookup(&cx.tool(), a).await })
            .await
    }

    /// A tool.
    #[tool(scope = "t:read")]
    async fn lookup(&self, _cx: &ToolContext, n: u32) -> Result<String, Error> {
        Ok(format!("n={n}"))
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.as_str().to_owned(),
            other => other.to_string(),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_step_and_tool_spans_are_exported_under_the_requests_remote_span() {
    let collected = Collected::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(collected.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("capecontrol-test"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();
    capecontrol::otel::link_remote_parents();

    let p = Platform::builder()
        .config(capecontrol::PlatformConfig {
            poll_interval: Duration::from_millis(20),
            ..Default::default()
        })
        .agent(Exported)
        .build()
        .await
        .unwrap();
    let alice = Principal::new("alice").with_roles(["user"]);
    p.registry()
        .install(&alice, InstallRequest::latest("exported").grant(["t:read"]))
        .await
        .unwrap();
    let id = p
        .submit(
            TaskRequest::new("exported", "work", serde_json::json!(null), alice.clone())
                .traceparent(format!("00-{TRACE_ID}-{PARENT_ID}-01")),
        )
        .await
        .unwrap();
    let done = p.trusted().wait(id).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{:?}", done.error);

    // The attempt's span ends when the worker is done with it, just after the task's end.
    let task_id = id.to_string();
    let of_task = |name: &str| -> Vec<SpanData> {
        collected
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == name && attribute(s, "task_id").as_deref() == Some(&task_id))
            .cloned()
            .collect()
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while of_task("attempt").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the attempt span is exported");
    p.shutdown(Duration::from_secs(1)).await;

    let attempts = of_task("attempt");
    assert_eq!(attempts.len(), 1);
    let attempt = &attempts[0];
    let trace_id = TraceId::from_hex(TRACE_ID).unwrap();
    assert_eq!(
        attempt.span_context.trace_id(),
        trace_id,
        "the request's trace"
    );
    assert_eq!(
        attempt.parent_span_id,
        SpanId::from_hex(PARENT_ID).unwrap(),
        "the attempt is a child of the submitter's span"
    );
    assert!(attempt.parent_span_is_remote);
    assert_eq!(attribute(attempt, "agent").as_deref(), Some("exported"));
    assert_eq!(attribute(attempt, "version").as_deref(), Some("2.0.0"));

    let mut steps = of_task("step");
    steps.sort_by_key(|s| attribute(s, "step"));
    assert_eq!(steps.len(), 2, "{steps:?}");
    for (step, name) in steps.iter().zip(["first", "second"]) {
        assert_eq!(attribute(step, "name").as_deref(), Some(name));
        assert_eq!(step.span_context.trace_id(), trace_id);
        assert_eq!(
            step.parent_span_id,
            attempt.span_context.span_id(),
            "a step is a child of its attempt"
        );
        assert!(!step.parent_span_is_remote);
    }
    let tools = of_task("tool_call");
    assert_eq!(tools.len(), 1, "{tools:?}");
    assert_eq!(attribute(&tools[0], "tool").as_deref(), Some("lookup"));
    assert_eq!(tools[0].span_context.trace_id(), trace_id);
    assert_eq!(
        tools[0].parent_span_id,
        steps[1].span_context.span_id(),
        "the tool call is a child of the step it runs in"
    );
    provider.shutdown().unwrap();
}
