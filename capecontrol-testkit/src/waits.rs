//! Runtime scenarios of durable waits (`ask_user`, `sleep`), written once against a node
//! factory: core's `tests/waits.rs` runs them on `MemoryStore` (nodes sharing one store) and
//! `capecontrol-store`'s `tests/waits.rs` on PostgreSQL (each node its own `PostgresStore` on
//! one database).
//!
//! A "node" is a [`Platform`] over a store from the factory; dropping it stops its workers at
//! once, as a crash would.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use capecontrol_core::agent::AskOutcome;
use capecontrol_core::events::TaskEventKind;
use capecontrol_core::manifest::Config;
use capecontrol_core::runtime::{Platform, PlatformConfig, TaskRequest};
use capecontrol_core::store::{AuditFilter, MAX_VALUE_DEPTH, Store, TaskRecord};
use capecontrol_core::{Error, ErrorCategory, Principal, TaskStatus};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::poll::eventually;
use crate::runtime::{TestAgent, agent, events_within, install, manifest, platform_with, user};

/// The answer schema of the approval question.
pub fn approval_schema() -> Value {
    json!({
        "type": "object",
        "required": ["approve"],
        "properties": {"approve": {"type": "boolean"}, "note": {"type": "string"}},
        "additionalProperties": false
    })
}

/// The agent `waiter`: task `ask` runs a step, asks for approval (timeout `timeout_ms` of the
/// input, if given; `bob` may answer too) and returns the outcome; task `sleep` sleeps
/// `ms` durably; task `quick` returns at once. `before` counts runs of the step before the
/// question.
pub fn waiter(before: Arc<AtomicU32>) -> TestAgent {
    waiter_with(before, Config::default())
}

/// [`waiter`] with the manifest's `config` (e.g. its `ask_timeout`).
pub fn waiter_with(before: Arc<AtomicU32>, config: Config) -> TestAgent {
    agent(manifest("Waiter", config, &[]), move |name, input, cx| {
        let before = before.clone();
        Box::pin(async move {
            match name {
                "ask" => {
                    let n: u32 = cx
                        .step("before", async move {
                            Ok::<_, Error>(before.fetch_add(1, Ordering::SeqCst) + 1)
                        })
                        .await?;
                    let mut ask = cx
                        .ask_user("Approve the payment?", approval_schema())
                        .answerers(["bob"]);
                    if let Some(ms) = input["timeout_ms"].as_u64() {
                        ask = ask.timeout(Duration::from_millis(ms));
                    }
                    let outcome = ask.await?;
                    Ok(json!({"before": n, "outcome": outcome}))
                }
                "sleep" => {
                    let ms = input["ms"].as_u64().unwrap_or(0);
                    cx.sleep(Duration::from_millis(ms)).await?;
                    Ok(json!({"slept_ms": ms}))
                }
                _ => Ok(json!("quick")),
            }
        })
    })
}

/// A node over a store from `make`, running [`waiter`] with `config`; the agent installed for
/// alice.
pub async fn node(
    store: Arc<dyn Store>,
    before: Arc<AtomicU32>,
    config: PlatformConfig,
) -> Platform {
    let p = platform_with(store.clone(), vec![waiter(before)], config).await;
    install(&store, "waiter", "alice", &[]).await;
    p
}

/// Polls until task `id` is in `status` (panics after 15 s).
pub async fn until_status(p: &Platform, id: Uuid, status: TaskStatus) -> TaskRecord {
    eventually(
        Duration::from_secs(15),
        Duration::from_millis(20),
        async || {
            let t = p.trusted().get(id).await.unwrap();
            if t.status == status {
                Ok(t)
            } else {
                Err(format!("task {id} is {} instead of {status}", t.status))
            }
        },
    )
    .await
}

async fn done(p: &Platform, id: Uuid) -> TaskRecord {
    tokio::time::timeout(Duration::from_secs(20), p.wait(id, &user()))
        .await
        .expect("the task ends in time")
        .unwrap()
}

/// A task asks; its node is dropped while it waits; on another node a stranger's answer is
/// not found (and audited), a wrong-shape answer is a 400 at its pointer and the task keeps
/// waiting, a named answerer's answer resumes it and it completes with that answer. The step
/// before the question ran once; a second answer is a conflict.
pub async fn ask_is_answered_on_another_node<F, Fut>(make: F, config: PlatformConfig)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let before = Arc::new(AtomicU32::new(0));
    let a = node(make().await, before.clone(), config.clone()).await;
    let id = a
        .submit(TaskRequest::new("waiter", "ask", json!({}), user()))
        .await
        .unwrap();
    let waiting = until_status(&a, id, TaskStatus::Waiting).await;
    assert_eq!(waiting.lease_owner, None, "no lease while waiting");
    let events = a.store().events(id, 0).await.unwrap();
    let asked = events
        .iter()
        .find_map(|e| match &e.kind {
            TaskEventKind::WaitingForInput { prompt, schema, .. } => {
                Some((prompt.clone(), schema.clone()))
            }
            _ => None,
        })
        .expect("a waiting_for_input event");
    assert_eq!(
        asked,
        ("Approve the payment?".to_owned(), approval_schema())
    );
    drop(a);

    let b = node(make().await, before.clone(), config).await;
    let mallory = Principal::new("mallory").with_roles(["user"]);
    let err = b
        .answer(id, &mallory, json!({"approve": true}))
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::NotFound);
    let denied = b
        .store()
        .list_audit(&AuditFilter {
            task_id: Some(id),
            event_type: Some("task.access_denied".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].user_id.as_deref(), Some("mallory"));
    assert_eq!(denied[0].payload["action"], "answer");

    let err = b
        .answer(id, &user(), json!({"approve": "yes"}))
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Validation);
    assert_eq!(err.http_status(), 400);
    let pointers: Vec<&str> = err
        .field_errors()
        .iter()
        .map(|f| f.pointer.as_str())
        .collect();
    assert_eq!(pointers, ["/answer/approve"]);
    let err = b.answer(id, &user(), json!({})).await.unwrap_err();
    let pointers: Vec<&str> = err
        .field_errors()
        .iter()
        .map(|f| f.pointer.as_str())
        .collect();
    assert_eq!(pointers, ["/answer/approve"]);
    // An answer nested deeper than a store keeps once wrapped in the step's value (whatever
    // the question's schema says) is refused at `/answer` before the schema is checked.
    let deep = (0..MAX_VALUE_DEPTH).fold(json!(true), |v, _| json!([v]));
    let err = b
        .answer(id, &user(), json!({ "approve": deep }))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert_eq!(err.field_errors()[0].pointer, "/answer", "{err}");
    assert_eq!(
        b.trusted().get(id).await.unwrap().status,
        TaskStatus::Waiting,
        "a refused answer leaves the task waiting"
    );

    let bob = Principal::new("bob").with_roles(["user"]);
    b.answer(id, &bob, json!({"approve": true, "note": "ok"}))
        .await
        .unwrap();
    let t = done(&b, id).await;
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    let outcome: AskOutcome =
        serde_json::from_value(t.output.clone().unwrap()["outcome"].clone()).unwrap();
    assert_eq!(
        outcome,
        AskOutcome::Answered {
            answer: json!({"approve": true, "note": "ok"}),
            by: "bob".into()
        }
    );
    assert_eq!(
        t.output.unwrap()["before"],
        1,
        "the journaled step is replayed"
    );
    assert_eq!(
        before.load(Ordering::SeqCst),
        1,
        "the step before the question ran once"
    );
    let err = b
        .answer(id, &user(), json!({"approve": false}))
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Conflict);
    let audit = b.audit(id, &user()).await.unwrap();
    let answered: Vec<_> = audit
        .iter()
        .filter(|a| a.event_type == "task.answered")
        .collect();
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].user_id.as_deref(), Some("bob"));
    let names: Vec<&str> = events_within(&b, id, Duration::from_secs(10))
        .await
        .iter()
        .map(|e| e.kind.name())
        .collect();
    for n in ["waiting_for_input", "resumed", "completed"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
}

/// A question with a short timeout and no answer: the task resumes with `TimedOut` and
/// completes; an answer after that is a conflict.
pub async fn ask_times_out<F, Fut>(make: F, config: PlatformConfig)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let p = node(make().await, Arc::new(AtomicU32::new(0)), config).await;
    let id = p
        .submit(TaskRequest::new(
            "waiter",
            "ask",
            json!({"timeout_ms": 300}),
            user(),
        ))
        .await
        .unwrap();
    let t = done(&p, id).await;
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    assert_eq!(
        t.output.unwrap()["outcome"],
        json!({"outcome": "timed_out"})
    );
    let err = p
        .answer(id, &user(), json!({"approve": true}))
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Conflict);
}

/// A durable sleep of `ms`: the node is dropped while the task sleeps, another node resumes
/// it after the time (not before), without the task holding a worker meanwhile (a one-worker
/// node runs another task during the sleep).
pub async fn sleep_survives_a_restart<F, Fut>(make: F, config: PlatformConfig, ms: u64)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let one_worker = PlatformConfig {
        workers: 1,
        claim_batch: 1,
        ..config
    };
    let a = node(
        make().await,
        Arc::new(AtomicU32::new(0)),
        one_worker.clone(),
    )
    .await;
    let started = Instant::now();
    let id = a
        .submit(TaskRequest::new(
            "waiter",
            "sleep",
            json!({"ms": ms}),
            user(),
        ))
        .await
        .unwrap();
    until_status(&a, id, TaskStatus::Waiting).await;
    // The only worker is free: another task runs while the first sleeps.
    let quick = a
        .submit(TaskRequest::new("waiter", "quick", json!({}), user()))
        .await
        .unwrap();
    assert_eq!(done(&a, quick).await.status, TaskStatus::Completed);
    assert_eq!(
        a.trusted().get(id).await.unwrap().status,
        TaskStatus::Waiting
    );
    drop(a);

    let b = node(make().await, Arc::new(AtomicU32::new(0)), one_worker).await;
    let t = done(&b, id).await;
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    assert_eq!(t.output, Some(json!({"slept_ms": ms})));
    assert!(
        started.elapsed() >= Duration::from_millis(ms),
        "resumed after {:?}, before its {ms} ms",
        started.elapsed()
    );
    let names: Vec<&str> = b
        .store()
        .events(id, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind.name())
        .collect();
    for n in ["sleeping", "resumed", "completed"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
}

/// Cancelling a waiting task cancels it at once.
pub async fn cancel_a_waiting_task<F, Fut>(make: F, config: PlatformConfig)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let p = node(make().await, Arc::new(AtomicU32::new(0)), config).await;
    let id = p
        .submit(TaskRequest::new("waiter", "ask", json!({}), user()))
        .await
        .unwrap();
    until_status(&p, id, TaskStatus::Waiting).await;
    let t = p.cancel(id, &user()).await.unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    let err = p
        .answer(id, &user(), json!({"approve": true}))
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Conflict);
}

/// The question's wait per the `waiting_for_input` event of task `id`: (asked at, until).
async fn asked(
    store: &Arc<dyn Store>,
    id: Uuid,
) -> (
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
) {
    store
        .events(id, 0)
        .await
        .unwrap()
        .into_iter()
        .find_map(|e| match e.kind {
            TaskEventKind::WaitingForInput { until, .. } => Some((e.at, until)),
            _ => None,
        })
        .expect("a waiting_for_input event")
}

/// The manifest's `config.ask_timeout` (1 s here) is how long a question without its own
/// timeout waits: the task resumes with `TimedOut`. A question's own timeout wins over it.
pub async fn the_manifest_sets_the_default_question_timeout<F, Fut>(make: F, config: PlatformConfig)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let store = make().await;
    let short = Config {
        ask_timeout: Some(1),
        ..Config::default()
    };
    let p = platform_with(
        store.clone(),
        vec![waiter_with(Arc::new(AtomicU32::new(0)), short)],
        config,
    )
    .await;
    install(&store, "waiter", "alice", &[]).await;

    let id = p
        .submit(TaskRequest::new("waiter", "ask", json!({}), user()))
        .await
        .unwrap();
    let t = done(&p, id).await;
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    assert_eq!(
        t.output.unwrap()["outcome"],
        json!({"outcome": "timed_out"})
    );
    let (at, until) = asked(&store, id).await;
    let waited = (until.expect("a deadline") - at).num_milliseconds();
    assert!(
        (900..=1500).contains(&waited),
        "the question waits the manifest's 1 s, not {waited} ms"
    );

    let id = p
        .submit(TaskRequest::new(
            "waiter",
            "ask",
            json!({"timeout_ms": 600_000}),
            user(),
        ))
        .await
        .unwrap();
    until_status(&p, id, TaskStatus::Waiting).await;
    let (at, until) = asked(&store, id).await;
    let waited = (until.expect("a deadline") - at).num_seconds();
    assert!(
        (599..=601).contains(&waited),
        "the question's own 600 s win, not {waited} s"
    );
    p.cancel(id, &user()).await.unwrap();
}
