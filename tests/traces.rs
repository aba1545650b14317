//! The spans of a task: an `attempt` span per attempt, a `step` span per durable step and a
//! `tool_call` span per tool call, each a child of the one it runs in, all with the task id,
//! agent, version and attempt; the attempt span carries the trace id of the submitting request's
//! W3C `traceparent` (its own test binary: the subscriber is global to the process).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capecontrol::prelude::*;
use capecontrol::registry::InstallRequest;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span as recorded: its name, parent and fields.
#[derive(Debug, Clone)]
struct Recorded {
    id: u64,
    name: String,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Recorded>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Recorded {
            id: id.into_u64(),
            name: attrs.metadata().name().to_owned(),
            parent,
            fields,
        });
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(s) = spans.iter_mut().rev().find(|s| s.id == id.into_u64()) {
            values.record(&mut Fields(&mut s.fields));
        }
    }
}

/// An agent whose task runs two steps and a tool.
#[derive(Agent, Default)]
#[agent(name = "Traced", version = "3.1.0", scopes("t:read"), retries = 0)]
struct Traced;

#[agent_impl]
impl Traced {
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

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_and_tool_spans_are_children_of_their_attempt_span_in_the_request_trace() {
    let spans = Spans::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(spans.clone()))
        .unwrap();

    let p = Platform::builder()
        .config(capecontrol::runtime::PlatformConfig {
            poll_interval: Duration::from_millis(20),
            ..Default::default()
        })
        .agent(Traced)
        .build()
        .await
        .unwrap();
    let alice = Principal::new("alice").with_roles(["user"]);
    p.registry()
        .install(&alice, InstallRequest::latest("traced").grant(["t:read"]))
        .await
        .unwrap();

    // A malformed trace context is refused at its field.
    let e = p
        .submit(
            TaskRequest::new("traced", "work", serde_json::json!(null), alice.clone())
                .traceparent("00-xyz"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.field_errors()[0].pointer, "/traceparent");

    let id = p
        .submit(
            TaskRequest::new("traced", "work", serde_json::json!(null), alice.clone())
                .traceparent(TRACEPARENT),
        )
        .await
        .unwrap();
    let done = p.trusted().wait(id).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{:?}", done.error);
    assert_eq!(
        done.traceparent.as_deref(),
        Some(TRACEPARENT),
        "stored with the task"
    );
    p.shutdown(Duration::from_secs(1)).await;

    let spans = spans.0.lock().unwrap().clone();
    let task = id.to_string();
    let of_task: Vec<&Recorded> = spans
        .iter()
        .filter(|s| s.fields.get("task_id") == Some(&task))
        .collect();
    let attempts: Vec<&&Recorded> = of_task.iter().filter(|s| s.name == "attempt").collect();
    assert_eq!(attempts.len(), 1, "{of_task:#?}");
    let attempt = attempts[0];
    assert_eq!(
        attempt.fields.get("trace_id").map(String::as_str),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let steps: Vec<&&Recorded> = of_task.iter().filter(|s| s.name == "step").collect();
    assert_eq!(steps.len(), 2, "{of_task:#?}");
    for (step, (n, name)) in steps.iter().zip([("1", "first"), ("2", "second")]) {
        assert_eq!(
            step.parent,
            Some(attempt.id),
            "step {name} is a child of the attempt"
        );
        assert_eq!(step.fields["step"], n);
        assert_eq!(step.fields["name"], name);
        assert_eq!(step.fields["agent"], "traced");
        assert_eq!(step.fields["version"], "3.1.0");
        assert_eq!(step.fields["attempt"], "1");
    }
    let tools: Vec<&&Recorded> = of_task.iter().filter(|s| s.name == "tool_call").collect();
    assert_eq!(tools.len(), 1, "{of_task:#?}");
    assert_eq!(
        tools[0].parent,
        Some(steps[1].id),
        "the tool call is a child of the step it runs in"
    );
    assert_eq!(tools[0].fields["tool"], "lookup");
    assert_eq!(tools[0].fields["version"], "3.1.0");
}
