//! Behaviour tests of the orchestrator runtime on the in-memory store, with hand-written
//! agents (the macros have their own tests).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use capecontrol_core::events::TaskEventKind;
use capecontrol_core::manifest::{Config, TaskDecl};
use capecontrol_core::runtime::middleware::rate_limit::{Rate, RateLimitConfig};
use capecontrol_core::runtime::{
    BreakerConfig, BreakerState, Platform, PlatformConfig, TaskRequest,
};
use capecontrol_core::store::Store;
use capecontrol_core::store::memory::MemoryStore;
use capecontrol_core::{Error, ErrorCategory, TaskStatus};
use serde_json::json;
use tokio_stream::StreamExt;

use capecontrol_testkit::poll::until;
use capecontrol_testkit::runtime::{
    agent, events_within, fast_config, install, manifest, platform_with, user,
};

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

async fn events_of(p: &Platform, id: uuid::Uuid) -> Vec<capecontrol_core::events::TaskEvent> {
    events_within(p, id, Duration::from_secs(10)).await
}

#[tokio::test]
async fn completes_with_steps_and_events_in_order() {
    let store = memory();
    let a = agent(
        manifest("Stepper", Config::default(), &[]),
        |_, input, cx| {
            Box::pin(async move {
                let a: i64 = cx.step("one", async { Ok::<_, Error>(1) }).await?;
                let b: i64 = cx.step("two", async { Ok::<_, Error>(2) }).await?;
                Ok(json!({"sum": a + b + input["x"].as_i64().unwrap_or(0)}))
            })
        },
    );
    let p = platform_with(store.clone(), vec![a], fast_config()).await;
    install(&store, "stepper", "alice", &[]).await;
    let id = p
        .submit(TaskRequest::new("stepper", "run", json!({"x": 3}), user()))
        .await
        .unwrap();
    let done = p.wait(id, &user()).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.output, Some(json!({"sum": 6})));
    let events = events_of(&p, id).await;
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        names,
        [
            "queued",
            "started",
            "step_started",
            "step_completed",
            "step_started",
            "step_completed",
            "completed"
        ]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>(), "gap-free, each once");
    let steps = store.steps(id).await.unwrap();
    assert_eq!(steps.len(), 2);
    let audit = p.audit(id, &user()).await.unwrap();
    let types: Vec<&str> = audit.iter().map(|a| a.event_type.as_str()).collect();
    assert!(types.contains(&"policy.allowed"), "{types:?}");
    assert!(types.contains(&"task.completed"), "{types:?}");
}

#[tokio::test]
async fn retries_with_backoff_then_succeeds() {
    let store = memory();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let a = agent(
        manifest(
            "Flaky",
            Config {
                retries: 3,
                ..Config::default()
            },
            &[],
        ),
        move |_, _, _| {
            let c = c.clone();
            Box::pin(async move {
                if c.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Error::agent("transient"))
                } else {
                    Ok(json!("ok"))
                }
            })
        },
    );
    let p = platform_with(store.clone(), vec![a], fast_config()).await;
    install(&store, "flaky", "alice", &[]).await;
    let id = p
        .submit(TaskRequest::new("flaky", "run", json!({}), user()))
        .await
        .unwrap();
    let done = p.wait(id, &user()).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.attempts, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let retries: Vec<(u32, u64)> = events_of(&p, id)
        .await
        .into_iter()
        .filter_map(|e| match e.kind {
            TaskEventKind::Retrying {
                attempt, delay_ms, ..
            } => Some((attempt, delay_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 2);
    // base 20 ms: attempt 1 → [10, 20] ms, attempt 2 → [20, 40] ms (equal jitter); the store
    // reports the delay from its own clock a moment later, so allow a few ms below.
    assert_eq!(retries[0].0, 1);
    assert_eq!(retries[1].0, 2);
    assert!((5..=20).contains(&retries[0].1), "{retries:?}");
    assert!((15..=40).contains(&retries[1].1), "{retries:?}");
}

#[tokio::test]
async fn exhausted_retries_fail_for_good_and_keep_the_category() {
    let store = memory();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let a = agent(
        manifest(
            "Broken",
            Config {
                retries: 2,
                ..Config::default()
            },
            &[],
        ),
        move |_, _, _| {
            c.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Err(Error::resource("disk full")) })
        },
    );
    let calls2 = Arc::new(AtomicU32::new(0));
    let c2 = calls2.clone();
    let b = agent(manifest("Picky", Config::default(), &[]), move |_, _, _| {
        c2.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(Error::invalid_field("/x", "bad")) })
    });
    let p = platform_with(store.clone(), vec![a, b], fast_config()).await;
    install(&store, "broken", "alice", &[]).await;
    install(&store, "picky", "alice", &[]).await;
    let id = p
        .submit(TaskRequest::new("broken", "run", json!({}), user()))
        .await
        .unwrap();
    let done = p.wait(id, &user()).await.unwrap();
    assert_eq!(done.status, TaskStatus::Failed);
    assert_eq!(done.attempts, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        done.error.as_ref().map(Error::category),
        Some(ErrorCategory::Resource)
    );
    assert!(
        done.error_message
            .as_deref()
            .unwrap_or("")
            .contains("disk full")
    );

    let id = p
        .submit(TaskRequest::new("picky", "run", json!({}), user()))
        .await
        .unwrap();
    let done = p.wait(id, &user()).await.unwrap();
    assert_eq!(done.status, TaskStatus::Failed);
    assert_eq!(done.attempts, 1, "validation errors are not retried");
    assert_eq!(calls2.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn timeout_ends_the_attempt_as_a_resource_error() {
    let store = memory();
    let a = agent(
        manifest(
            "Sleepy",
            Config {
                timeout: 1,
                retries: 0,
                ..Config::default()
            },
            &[],
        ),
        |_, input, _| {
            Box::pin(async move {
                let ms = input["sleep_ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(json!(ms))
            })
        },
    );
    let p = platform_with(store.clone(), vec![a], fast_config()).await;
    install(&store, "sleepy", "alice", &[]).await;
    let under = p
        .submit(TaskRequest::new(
            "sleepy",
            "run",
            json!({"sleep_ms": 700}),
            user(),
        ))
        .await
        .unwrap();
    let over = p
        .submit(TaskRequest::new(
            "sleepy",
            "run",
            json!({"sleep_ms": 1500}),
            user(),
        ))
        .await
        .unwrap();
    assert_eq!(
        p.wait(under, &user()).await.unwrap().status,
        TaskStatus::Completed
    );
    let t = p.wait(over, &user()).await.unwrap();
    assert_eq!(t.status, TaskStatus::Failed);
    let err = t.error.unwrap();
    assert_eq!(err.category(), ErrorCategory::Resource);
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn cancels_queued_and_running_tasks() {
    let store = memory();
    let started = Arc::new(tokio::sync::Notify::new());
    let s = started.clone();
    let a = agent(
        manifest("Waiter", Config::default(), &[]),
        move |_, _, cx| {
            let s = s.clone();
            Box::pin(async move {
                s.notify_one();
                // Ignores cancellation: the platform must stop it after the grace period.
                tokio::time::sleep(Duration::from_secs(30)).await;
                let _ = cx;
                Ok(json!("late"))
            })
        },
    );
    let p = platform_with(store.clone(), vec![a], fast_config()).await;
    install(&store, "waiter", "alice", &[]).await;
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let queued = p
        .submit(TaskRequest::new("waiter", "run", json!({}), user()).run_at(later))
        .await
        .unwrap();
    let t = p.cancel(queued, &user()).await.unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);

    let running = p
        .submit(TaskRequest::new("waiter", "run", json!({}), user()))
        .await
        .unwrap();
    started.notified().await;
    p.cancel(running, &user()).await.unwrap();
    let t = tokio::time::timeout(Duration::from_secs(5), p.wait(running, &user()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    let last = events_of(&p, running).await.pop().unwrap();
    assert_eq!(last.kind, TaskEventKind::Cancelled);
    // A final task cannot be cancelled again.
    assert_eq!(
        p.cancel(running, &user()).await.unwrap_err().category(),
        ErrorCategory::Conflict
    );
}

#[tokio::test]
async fn breaker_opens_half_opens_and_closes() {
    let store = memory();
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = healthy.clone();
    let a = agent(
        manifest(
            "Shaky",
            Config {
                retries: 0,
                ..Config::default()
            },
            &[],
        ),
        move |_, _, _| {
            let ok = h.load(Ordering::SeqCst);
            Box::pin(async move {
                if ok {
                    Ok(json!("ok"))
                } else {
                    Err(Error::agent("down"))
                }
            })
        },
    );
    let config = PlatformConfig {
        breaker: BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_millis(300),
        },
        ..fast_config()
    };
    let p = platform_with(store.clone(), vec![a], config).await;
    install(&store, "shaky", "alice", &[]).await;
    for _ in 0..2 {
        let id = p
            .submit(TaskRequest::new("shaky", "run", json!({}), user()))
            .await
            .unwrap();
        assert_eq!(
            p.wait(id, &user()).await.unwrap().status,
            TaskStatus::Failed
        );
    }
    assert_eq!(p.breakers().state("shaky@1.0.0"), BreakerState::Open);
    let err = p
        .submit(TaskRequest::new("shaky", "run", json!({}), user()))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 503, "fails fast while open: {err}");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(p.breakers().state("shaky@1.0.0"), BreakerState::HalfOpen);
    healthy.store(true, Ordering::SeqCst);
    let id = p
        .submit(TaskRequest::new("shaky", "run", json!({}), user()))
        .await
        .unwrap();
    assert_eq!(
        p.wait(id, &user()).await.unwrap().status,
        TaskStatus::Completed
    );
    assert_eq!(p.breakers().state("shaky@1.0.0"), BreakerState::Closed);
}

#[tokio::test]
async fn concurrency_limit_is_never_exceeded() {
    let store = memory();
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (n, m) = (now.clone(), max.clone());
    let a = agent(
        manifest(
            "Narrow",
            Config {
                concurrent_tasks: 2,
                ..Config::default()
            },
            &[],
        ),
        move |_, _, _| {
            let (n, m) = (n.clone(), m.clone());
            Box::pin(async move {
                let cur = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(cur, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                Ok(json!(null))
            })
        },
    );
    let p = platform_with(store.clone(), vec![a], fast_config()).await;
    install(&store, "narrow", "alice", &[]).await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(
            p.submit(TaskRequest::new("narrow", "run", json!({}), user()))
                .await
                .unwrap(),
        );
    }
    for id in ids {
        assert_eq!(
            p.wait(id, &user()).await.unwrap().status,
            TaskStatus::Completed
        );
    }
    assert_eq!(max.load(Ordering::SeqCst), 2, "ran two at once, never more");
}

#[tokio::test]
async fn higher_priority_runs_first() {
    let store = memory();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let o = order.clone();
    let make = move || {
        let o = o.clone();
        agent(
            manifest("Ordered", Config::default(), &[]),
            move |_, input, _| {
                o.lock().unwrap().push(input["n"].as_i64().unwrap());
                Box::pin(async { Ok(json!(null)) })
            },
        )
    };
    // Submit on a node without workers, then start one worker on the same store.
    let submitter = Platform::builder()
        .store(store.clone())
        .agent(make())
        .without_workers()
        .build()
        .await
        .unwrap();
    install(&store, "ordered", "alice", &[]).await;
    let mut ids = Vec::new();
    for (n, prio) in [(1, 0), (2, 5), (3, 1), (4, 5), (5, -1)] {
        ids.push(
            submitter
                .submit(TaskRequest::new("ordered", "run", json!({"n": n}), user()).priority(prio))
                .await
                .unwrap(),
        );
    }
    let worker = platform_with(
        store.clone(),
        vec![make()],
        PlatformConfig {
            workers: 1,
            claim_batch: 1,
            ..fast_config()
        },
    )
    .await;
    for id in ids {
        worker.wait(id, &user()).await.unwrap();
    }
    assert_eq!(
        *order.lock().unwrap(),
        [2, 4, 3, 1, 5],
        "priority, then age"
    );
}

#[tokio::test]
async fn idempotent_submit_returns_the_same_task() {
    let store = memory();
    let a = agent(manifest("Once", Config::default(), &[]), |_, _, _| {
        Box::pin(async { Ok(json!(1)) })
    });
    let p = platform_with(store.clone(), vec![a], fast_config()).await;
    install(&store, "once", "alice", &[]).await;
    let r = TaskRequest::new("once", "run", json!({}), user()).idempotency_key("order-42");
    let a = p.submit(r.clone()).await.unwrap();
    let b = p.submit(r).await.unwrap();
    assert_eq!(a, b);
    let other = p
        .submit(TaskRequest::new("once", "run", json!({}), user()).idempotency_key("order-43"))
        .await
        .unwrap();
    assert_ne!(a, other);
}

#[tokio::test]
async fn resumed_task_does_not_rerun_completed_steps() {
    let store = memory();
    let runs = Arc::new([AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)]);
    let in_step_two = Arc::new(tokio::sync::Notify::new());
    let make = |block: bool| {
        let runs = runs.clone();
        let in_two = in_step_two.clone();
        agent(
            manifest("Durable", Config::default(), &[]),
            move |_, _, cx| {
                let runs = runs.clone();
                let in_two = in_two.clone();
                Box::pin(async move {
                    let r = runs.clone();
                    let a: u32 = cx
                        .step("fetch", async move {
                            r[0].fetch_add(1, Ordering::SeqCst);
                            Ok::<_, Error>(10)
                        })
                        .await?;
                    let r = runs.clone();
                    let b: u32 = cx
                        .step("transform", async move {
                            r[1].fetch_add(1, Ordering::SeqCst);
                            if block {
                                in_two.notify_one();
                                std::future::pending::<()>().await;
                            }
                            Ok::<_, Error>(a * 2)
                        })
                        .await?;
                    let r = runs.clone();
                    let c: u32 = cx
                        .step("store", async move {
                            r[2].fetch_add(1, Ordering::SeqCst);
                            Ok::<_, Error>(b + 1)
                        })
                        .await?;
                    Ok(json!(c))
                })
            },
        )
    };
    let config = PlatformConfig {
        lease: Duration::from_millis(300),
        ..fast_config()
    };
    let first = platform_with(store.clone(), vec![make(true)], config.clone()).await;
    install(&store, "durable", "alice", &[]).await;
    let id = first
        .submit(TaskRequest::new("durable", "run", json!({}), user()))
        .await
        .unwrap();
    in_step_two.notified().await;
    drop(first); // a crash: no lease released, nothing more written
    let second = platform_with(store.clone(), vec![make(false)], config).await;
    let done = tokio::time::timeout(Duration::from_secs(10), second.wait(id, &user()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.output, Some(json!(21)));
    assert_eq!(
        runs[0].load(Ordering::SeqCst),
        1,
        "the completed step was not run again"
    );
    assert_eq!(
        runs[1].load(Ordering::SeqCst),
        2,
        "the interrupted step ran again"
    );
    assert_eq!(runs[2].load(Ordering::SeqCst), 1);
    let steps = store.steps(id).await.unwrap();
    assert_eq!(steps.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2, 3]);
}

#[tokio::test]
async fn late_watcher_sees_every_event_once() {
    let store = memory();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let a = agent(
        manifest("Gated", Config::default(), &[]),
        move |_, _, cx| {
            let g = g.clone();
            Box::pin(async move {
                for i in 0..5u32 {
                    let g = g.clone();
                    let _: u32 = cx
                        .step(&format!("s{i}"), async move {
                            g.acquire()
                                .await
                                .map(|p| p.forget())
                                .map_err(|_| Error::agent("closed"))?;
                            Ok::<_, Error>(i)
                        })
                        .await?;
                }
                Ok(json!("done"))
            })
        },
    );
    let p = platform_with(store.clone(), vec![a], fast_config()).await;
    install(&store, "gated", "alice", &[]).await;
    let id = p
        .submit(TaskRequest::new("gated", "run", json!({}), user()))
        .await
        .unwrap();
    gate.add_permits(2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Joins mid-run, and another reconnects from a known sequence number.
    let late = p.watch(id, &user()).await.unwrap();
    let resumed = p.watch_from(id, 3, &user()).await.unwrap();
    gate.add_permits(3);
    let all: Vec<_> = tokio::time::timeout(
        Duration::from_secs(10),
        late.map(|e| e.unwrap()).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
    assert_eq!(all.len(), 2 + 5 * 2 + 1);
    let rest: Vec<_> = tokio::time::timeout(
        Duration::from_secs(10),
        resumed.map(|e| e.unwrap()).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_eq!(rest.first().map(|e| e.seq), Some(4));
    assert_eq!(rest.len(), all.len() - 3);
}

#[tokio::test]
async fn policy_denies_with_the_missing_scopes_and_audits() {
    let store = memory();
    let a = agent(
        manifest(
            "Payer",
            Config::default(),
            &["finance:read", "payments:manage"],
        ),
        |_, _, _| Box::pin(async { Ok(json!(null)) }),
    );
    let p = platform_with(store.clone(), vec![a], fast_config()).await;
    let err = p
        .submit(TaskRequest::new("payer", "run", json!({}), user()))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 403, "not installed: {err}");
    install(&store, "payer", "alice", &["finance:*"]).await;
    let err = p
        .submit(TaskRequest::new("payer", "run", json!({}), user()))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 403);
    assert_eq!(err.missing_scopes(), ["payments:manage"]);
    let denied = store
        .list_audit(&capecontrol_core::store::AuditFilter {
            event_type: Some("policy.denied".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 2);
    assert_eq!(
        denied[1].payload["missing_scopes"],
        json!(["payments:manage"])
    );
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let store = memory();
    let a = agent(manifest("Limited", Config::default(), &[]), |_, _, _| {
        Box::pin(async { Ok(json!(null)) })
    });
    let p = Platform::builder()
        .store(store.clone())
        .config(fast_config())
        .rate_limits(RateLimitConfig {
            per_principal: Some(Rate::per_second(1)),
            per_agent: None,
        })
        .agent(a)
        .build()
        .await
        .unwrap();
    install(&store, "limited", "alice", &[]).await;
    p.submit(TaskRequest::new("limited", "run", json!({}), user()))
        .await
        .unwrap();
    let err = p
        .submit(TaskRequest::new("limited", "run", json!({}), user()))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 429);
    let after = err.retry_after().unwrap();
    assert!(
        after > Duration::ZERO && after <= Duration::from_secs(1),
        "{after:?}"
    );
    let rejected = store
        .list_audit(&capecontrol_core::store::AuditFilter {
            event_type: Some("task.rejected".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rejected.len(), 1, "the middleware rejection is audited");
    assert_eq!(
        rejected[0].payload["rejected_by"],
        json!("rate_limiting"),
        "the audit row names the middleware that rejected the task"
    );
}

#[tokio::test]
async fn bad_input_is_400_with_field_pointers() {
    let store = memory();
    let mut m = manifest("Typed", Config::default(), &[]);
    m.tasks = vec![TaskDecl {
        name: "report".into(),
        description: None,
        input_schema: Some(json!({
            "type": "object",
            "properties": {"month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}},
            "required": ["month"],
            "additionalProperties": false
        })),
        output_schema: None,
        timeout: None,
    }];
    let a = agent(m, |_, _, _| Box::pin(async { Ok(json!(null)) }));
    let p = platform_with(store.clone(), vec![a], fast_config()).await;
    install(&store, "typed", "alice", &[]).await;
    let err = p
        .submit(TaskRequest::new(
            "typed",
            "report",
            json!({"month": "May"}),
            user(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert_eq!(err.field_errors()[0].pointer, "/month");
    let err = p
        .submit(TaskRequest::new("typed", "report", json!({}), user()))
        .await
        .unwrap_err();
    assert_eq!(err.field_errors()[0].pointer, "/month");
    let err = p
        .submit(TaskRequest::new("typed", "nope", json!({}), user()))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 404);
    let ok = p
        .submit(TaskRequest::new(
            "typed",
            "report",
            json!({"month": "2026-05"}),
            user(),
        ))
        .await
        .unwrap();
    assert_eq!(
        p.wait(ok, &user()).await.unwrap().status,
        TaskStatus::Completed
    );
}

#[tokio::test]
async fn graceful_shutdown_releases_running_tasks_to_another_node() {
    let store = memory();
    let started = Arc::new(tokio::sync::Notify::new());
    let runs = Arc::new(AtomicU32::new(0));
    let make = |block: bool| {
        let started = started.clone();
        let runs = runs.clone();
        agent(manifest("Long", Config::default(), &[]), move |_, _, cx| {
            let started = started.clone();
            let runs = runs.clone();
            Box::pin(async move {
                let _: u32 = cx
                    .step("first", async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Error>(1)
                    })
                    .await?;
                if block {
                    started.notify_one();
                    std::future::pending::<()>().await;
                }
                Ok(json!("done"))
            })
        })
    };
    // A long lease: only a release (not an expiry) can hand the task over within the test.
    let config = PlatformConfig {
        lease: Duration::from_secs(60),
        ..fast_config()
    };
    let first = platform_with(store.clone(), vec![make(true)], config.clone()).await;
    install(&store, "long", "alice", &[]).await;
    let id = first
        .submit(TaskRequest::new("long", "run", json!({}), user()))
        .await
        .unwrap();
    started.notified().await;
    first.shutdown(Duration::from_millis(100)).await;
    let t = store.get_task(id).await.unwrap();
    assert_eq!(t.status, TaskStatus::Queued, "released, not failed");
    assert_eq!(t.attempts, 0, "a released attempt does not count");
    let second = platform_with(store.clone(), vec![make(false)], config).await;
    let done = tokio::time::timeout(Duration::from_secs(5), second.wait(id, &user()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the journaled step was not run again"
    );
}

#[tokio::test]
async fn a_rejected_submission_is_audited_without_the_submitted_values() {
    let store = memory();
    let mut m = manifest("Typed", Config::default(), &[]);
    m.tasks = vec![TaskDecl {
        name: "report".into(),
        description: None,
        input_schema: Some(json!({
            "type": "object",
            "properties": {"month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}},
            "required": ["month"]
        })),
        output_schema: None,
        timeout: None,
    }];
    let a = agent(m, |_, _, _| Box::pin(async { Ok(json!(null)) }));
    let p = platform_with(store.clone(), vec![a], fast_config()).await;
    install(&store, "typed", "alice", &[]).await;
    let err = p
        .submit(TaskRequest::new(
            "typed",
            "report",
            json!({"month": "leaked-value-4242"}),
            user(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert!(
        err.to_string().contains("leaked-value-4242"),
        "the caller's own error may quote it: {err}"
    );
    let rejected = store
        .list_audit(&capecontrol_core::store::AuditFilter {
            event_type: Some("task.rejected".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].payload["error"]["fields"], json!(["/month"]));
    let all = store
        .list_audit(&capecontrol_core::store::AuditFilter::default())
        .await
        .unwrap();
    for row in &all {
        assert!(
            !row.payload.to_string().contains("leaked-value"),
            "{} echoes the value: {}",
            row.event_type,
            row.payload
        );
    }
}

/// An agent that takes `ms` per task and counts the tasks it runs at once.
fn timed_agent(
    name: &str,
    ms: u64,
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
) -> capecontrol_testkit::runtime::TestAgent {
    agent(manifest(name, Config::default(), &[]), move |_, _, _| {
        let (now, most) = (now.clone(), most.clone());
        Box::pin(async move {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(json!(null))
        })
    })
}

/// One worker prefetching one task, running an agent `name` that takes `ms` per task, with two
/// tasks submitted, returned once the second is prefetched: the platform, the two ids, and the
/// agent's (running now, most at once).
async fn one_worker_one_prefetched(
    store: &Arc<dyn Store>,
    name: &str,
    ms: u64,
    lease: Duration,
) -> (
    Platform,
    [uuid::Uuid; 2],
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
) {
    one_worker_one_prefetched_with(store, name, ms, lease, fast_config().policy_cache_ttl).await
}

/// [`one_worker_one_prefetched`] with the node's `policy_cache_ttl`.
async fn one_worker_one_prefetched_with(
    store: &Arc<dyn Store>,
    name: &str,
    ms: u64,
    lease: Duration,
    policy_cache_ttl: Duration,
) -> (
    Platform,
    [uuid::Uuid; 2],
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
) {
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let config = PlatformConfig {
        workers: 1,
        claim_batch: 1,
        claim_prefetch: 1,
        lease,
        policy_cache_ttl,
        ..fast_config()
    };
    let p = platform_with(
        store.clone(),
        vec![timed_agent(name, ms, now.clone(), most.clone())],
        config,
    )
    .await;
    let id = name.to_lowercase();
    install(store, &id, "alice", &[]).await;
    let request = || TaskRequest::new(id.clone(), "run", json!({}), user());
    let first = p.submit(request()).await.unwrap();
    let second = p.submit(request()).await.unwrap();
    // The second is claimed (prefetched) while the first holds the one slot.
    until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        "the second task is prefetched",
        async || store.get_task(second).await.unwrap().status == TaskStatus::Running,
    )
    .await;
    (p, [first, second], now, most)
}

/// `claim_prefetch`: a task claimed beyond the free slots is leased (`running`) while the one
/// worker is busy, does not run before a slot frees, and keeps its lease while it waits longer
/// than the lease (heartbeats renew it): it runs once, at its first attempt.
#[tokio::test]
async fn a_prefetched_task_waits_for_a_slot_with_its_lease_renewed() {
    let store = memory();
    let (p, [first, second], now, most) =
        one_worker_one_prefetched(&store, "Prefetched", 900, Duration::from_millis(300)).await;
    // While the first runs, the second is claimed and waits.
    assert_eq!(
        store.get_task(first).await.unwrap().status,
        TaskStatus::Running
    );
    assert_eq!(now.load(Ordering::SeqCst), 1, "one worker: one task runs");
    for id in [first, second] {
        let done = p.wait(id, &user()).await.unwrap();
        assert_eq!(done.status, TaskStatus::Completed);
        assert_eq!(done.attempts, 1, "its lease was never lost");
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once");
}

/// A graceful shutdown hands a prefetched task back with the running ones: queued again, its
/// attempt not counted.
#[tokio::test]
async fn shutdown_hands_a_prefetched_task_back() {
    let store = memory();
    let (p, [first, second], now, _) =
        one_worker_one_prefetched(&store, "Handed", 60_000, fast_config().lease).await;
    assert_eq!(now.load(Ordering::SeqCst), 1);
    p.shutdown(Duration::from_millis(50)).await;
    for id in [first, second] {
        let t = store.get_task(id).await.unwrap();
        assert_eq!(t.status, TaskStatus::Queued, "handed back");
        assert_eq!(t.attempts, 0, "a released attempt does not count");
    }
}

/// A prefetched task that waited for its slot at least `policy_cache_ttl` (here 100 ms, the
/// wait 600 ms) checks its installation when it gets the slot, not as read with its claim:
/// uninstalled while it waited, it fails with a permission error and never runs.
#[tokio::test]
async fn a_prefetched_task_uninstalled_while_it_waits_does_not_run() {
    let store = memory();
    let (p, [first, second], now, most) = one_worker_one_prefetched_with(
        &store,
        "Revoked",
        600,
        fast_config().lease,
        Duration::from_millis(100),
    )
    .await;
    assert_eq!(now.load(Ordering::SeqCst), 1, "only the first runs");
    store.delete_installation("revoked", "alice").await.unwrap();
    let done = p.wait(first, &user()).await.unwrap();
    assert_eq!(
        done.status,
        TaskStatus::Completed,
        "the running one finishes"
    );
    let refused = p.wait(second, &user()).await.unwrap();
    assert_eq!(refused.status, TaskStatus::Failed);
    assert_eq!(
        refused.error.as_ref().map(Error::category),
        Some(ErrorCategory::Permission),
        "{:?}",
        refused.error
    );
    assert_eq!(most.load(Ordering::SeqCst), 1, "the second never ran");
}

/// A prefetched task that gets its slot sooner than `policy_cache_ttl` (here 60 s, the wait
/// 300 ms) keeps what its claim read, as the gateway keeps its cache that long: uninstalled
/// while it waited, it still runs.
#[tokio::test]
async fn a_prefetched_task_uses_its_claims_catalog_within_the_policy_cache_ttl() {
    let store = memory();
    let (p, [first, second], _, most) = one_worker_one_prefetched_with(
        &store,
        "Kept",
        300,
        fast_config().lease,
        Duration::from_secs(60),
    )
    .await;
    store.delete_installation("kept", "alice").await.unwrap();
    for id in [first, second] {
        let done = p.wait(id, &user()).await.unwrap();
        assert_eq!(done.status, TaskStatus::Completed, "{:?}", done.error);
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "one after the other");
}

/// Counts the calls of each of its two methods; in the chains `chains` names.
struct Counting {
    chains: capecontrol_core::runtime::middleware::Chains,
    submits: Arc<AtomicUsize>,
    executes: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl capecontrol_core::runtime::Middleware for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    async fn submit(
        &self,
        sub: capecontrol_core::runtime::middleware::Submission,
        next: capecontrol_core::runtime::middleware::SubmitNext<'_>,
    ) -> capecontrol_core::Result<capecontrol_core::store::Enqueued> {
        self.submits.fetch_add(1, Ordering::SeqCst);
        next.run(sub).await
    }
    async fn execute(
        &self,
        exec: capecontrol_core::runtime::middleware::Execution,
        next: capecontrol_core::runtime::middleware::ExecuteNext<'_>,
    ) -> capecontrol_core::Result<serde_json::Value> {
        self.executes.fetch_add(1, Ordering::SeqCst);
        next.run(exec).await
    }
    fn chains(&self) -> capecontrol_core::runtime::middleware::Chains {
        self.chains
    }
}

#[tokio::test]
async fn a_middleware_is_left_out_of_the_chain_it_declines() {
    use capecontrol_core::runtime::middleware::Chains;
    let store = memory();
    let counters: Vec<_> = [Chains::Both, Chains::Submit, Chains::Execute]
        .into_iter()
        .map(|c| {
            (
                c,
                Arc::new(AtomicUsize::new(0)),
                Arc::new(AtomicUsize::new(0)),
            )
        })
        .collect();
    let mut b = Platform::builder()
        .store(store.clone())
        .config(fast_config());
    for (chains, submits, executes) in &counters {
        b = b.middleware(Counting {
            chains: *chains,
            submits: Arc::clone(submits),
            executes: Arc::clone(executes),
        });
    }
    let p = b
        .agent(agent(
            manifest("Echo", Config::default(), &[]),
            |_, input, _| Box::pin(async move { Ok(input) }),
        ))
        .build()
        .await
        .unwrap();
    install(&store, "echo", "alice", &[]).await;
    for i in 0..3 {
        let id = p
            .submit(TaskRequest::new("echo", "run", json!({"i": i}), user()))
            .await
            .unwrap();
        let done = p.wait(id, &user()).await.unwrap();
        assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
        assert_eq!(done.output, Some(json!({"i": i})));
    }
    let calls: Vec<(Chains, usize, usize)> = counters
        .iter()
        .map(|(c, s, e)| (*c, s.load(Ordering::SeqCst), e.load(Ordering::SeqCst)))
        .collect();
    assert_eq!(
        calls,
        [
            (Chains::Both, 3, 3),
            (Chains::Submit, 3, 0),
            (Chains::Execute, 0, 3),
        ]
    );
}

/// A rejection's audit row names who submitted which task of which agent, whether the audit
/// layer runs in the gateway's chain (it reads the gateway's record of the submission) or in a
/// chain of the host's own without one (it keeps a copy of its own).
#[tokio::test]
async fn the_audit_layer_names_the_rejected_submission_with_or_without_the_gateway_s_record() {
    use capecontrol_core::runtime::middleware::audit::AuditLogging;
    use capecontrol_core::runtime::middleware::{
        Middleware, Rejection, Submission, SubmitEndpoint, SubmitNext, Submitted,
    };
    use capecontrol_core::store::{AuditFilter, Enqueued};

    struct Refusing;
    #[async_trait::async_trait]
    impl SubmitEndpoint for Refusing {
        async fn call(&self, _sub: Submission) -> capecontrol_core::Result<Enqueued> {
            Err(Error::conflict("refused"))
        }
    }

    let store = memory();
    let m = manifest("Echo", Config::default(), &[]);
    let a = agent(m.clone(), |_, input, _| Box::pin(async move { Ok(input) }));
    let _p = platform_with(store.clone(), vec![a], fast_config()).await;
    let layers: Vec<Arc<dyn Middleware>> = vec![Arc::new(AuditLogging::new(store.clone()))];
    let principal = user()
        .with_ip("10.9.8.7".parse().unwrap())
        .with_user_agent("audit-test/1");
    let submission = |task_id| Submission {
        task_id,
        request: Box::new(TaskRequest::new(
            "echo",
            "run",
            json!({"x": 1}),
            principal.clone(),
        )),
        agent_id: "echo".into(),
        version: "1.0.0".into(),
        manifest: Arc::new(m.clone()),
        task: None,
        audit: Vec::new(),
        parent_id: None,
    };
    let (alone, recorded) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let err = SubmitNext::new(&layers, &Refusing)
        .run(submission(alone))
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Conflict);
    let rejection = Rejection::of(Submitted {
        task_id: recorded,
        principal: principal.clone(),
        agent_id: "echo".into(),
        task: "run".into(),
    });
    SubmitNext::recording(&layers, &Refusing, &rejection)
        .run(submission(recorded))
        .await
        .unwrap_err();
    assert_eq!(rejection.by(), Some("enqueue"));
    let rows = store
        .list_audit(&AuditFilter {
            event_type: Some("task.rejected".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (row, (id, by)) in rows
        .iter()
        .zip([(alone, json!(null)), (recorded, json!("enqueue"))])
    {
        assert_eq!(row.user_id.as_deref(), Some("alice"));
        assert_eq!(row.agent_id.as_deref(), Some("echo"));
        assert_eq!(row.ip_address, Some("10.9.8.7".parse().unwrap()));
        assert_eq!(row.user_agent.as_deref(), Some("audit-test/1"));
        assert_eq!(row.payload["task_id"], json!(id));
        assert_eq!(row.payload["task"], json!("run"));
        assert_eq!(row.payload["status"], json!(409));
        assert_eq!(row.payload["rejected_by"], by);
    }
}
