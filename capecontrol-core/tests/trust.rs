//! Trust tests of the runtime on the in-memory store: task authorization, the worker's
//! re-checks, retry delays and output caps, watchers, cancellation races and breaker counting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use capecontrol_core::events::TaskEventKind;
use capecontrol_core::manifest::Config;
use capecontrol_core::runtime::{
    BreakerConfig, BreakerState, Platform, PlatformConfig, TaskAccessPolicy, TaskAction,
    TaskRequest,
};
use capecontrol_core::store::memory::MemoryStore;
use capecontrol_core::store::{AuditFilter, Store, TaskFilter, TaskRecord};
use capecontrol_core::{Error, ErrorCategory, Principal, Result, TaskStatus};
use serde_json::{Value, json};
use tokio_stream::StreamExt;

use capecontrol_testkit::poll::eventually;
use capecontrol_testkit::runtime::{
    TestAgent, agent, fast_config, install, manifest, platform_with, run_within, user,
};

/// How long a task of these tests may take to end.
const WITHIN: Duration = Duration::from_secs(10);

fn ok_agent(name: &str) -> TestAgent {
    agent(manifest(name, Config::default(), &[]), |_, _, _| {
        Box::pin(async { Ok(json!("ok")) })
    })
}

fn mallory() -> Principal {
    Principal::new("mallory").with_roles(["user"])
}

fn admin() -> Principal {
    Principal::new("root").with_roles([capecontrol_core::policy::ADMIN])
}

async fn denials(store: &Arc<dyn Store>) -> Vec<capecontrol_core::store::AuditEvent> {
    store
        .list_audit(&AuditFilter {
            event_type: Some("task.access_denied".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

#[tokio::test]
async fn a_stranger_is_told_the_task_does_not_exist_and_the_attempt_is_audited() {
    let store = memory();
    let p = platform_with(store.clone(), vec![ok_agent("Echo")], fast_config()).await;
    install(&store, "echo", "alice", &[]).await;
    let id = p
        .submit(TaskRequest::new("echo", "run", json!({}), user()))
        .await
        .unwrap();
    assert_eq!(
        p.wait(id, &user()).await.unwrap().status,
        TaskStatus::Completed
    );

    let missing = p.get(uuid::Uuid::new_v4(), &mallory()).await.unwrap_err();
    let checks: Vec<(&str, Error)> = vec![
        ("get", p.get(id, &mallory()).await.unwrap_err()),
        ("get", p.wait(id, &mallory()).await.unwrap_err()),
        ("watch", p.watch(id, &mallory()).await.unwrap_err()),
        ("watch", p.watch_from(id, 2, &mallory()).await.unwrap_err()),
        ("audit", p.audit(id, &mallory()).await.unwrap_err()),
        ("cancel", p.cancel(id, &mallory()).await.unwrap_err()),
    ];
    for (action, e) in &checks {
        assert_eq!(e.category(), ErrorCategory::NotFound, "{action}: {e}");
        assert_eq!(e.http_status(), 404);
        // Indistinguishable from a task that does not exist, but for the id.
        assert_eq!(
            e.to_string().replace(&id.to_string(), "ID"),
            missing.to_string().replace(&missing_id(&missing), "ID")
        );
    }
    let rows = denials(&store).await;
    let actions: Vec<&str> = rows
        .iter()
        .map(|r| r.payload["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, checks.iter().map(|(a, _)| *a).collect::<Vec<_>>());
    assert!(
        rows.iter()
            .all(|r| r.task_id == Some(id) && r.user_id.as_deref() == Some("mallory"))
    );
    // The submitter still reads everything, and sees who tried.
    assert_eq!(
        p.get(id, &user()).await.unwrap().status,
        TaskStatus::Completed
    );
    let trail = p.audit(id, &user()).await.unwrap();
    assert!(trail.iter().any(|r| r.event_type == "task.access_denied"));
    // An admin and trusted host code read it too, without a denial.
    assert_eq!(p.get(id, &admin()).await.unwrap().id, id);
    assert_eq!(p.trusted().get(id).await.unwrap().id, id);
    assert_eq!(denials(&store).await.len(), checks.len());
}

fn missing_id(e: &Error) -> String {
    match e {
        Error::NotFound { id, .. } => id.clone(),
        other => panic!("not a not-found error: {other}"),
    }
}

#[tokio::test]
async fn a_stranger_cannot_cancel_a_running_task() {
    let store = memory();
    let started = Arc::new(tokio::sync::Notify::new());
    let s = started.clone();
    let a = agent(manifest("Slow", Config::default(), &[]), move |_, _, cx| {
        let s = s.clone();
        Box::pin(async move {
            s.notify_one();
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(300)) => Ok(json!("done")),
                () = cx.cancellation().cancelled() => Err(Error::agent("stopped")),
            }
        })
    });
    let p = platform_with(store.clone(), vec![a], fast_config()).await;
    install(&store, "slow", "alice", &[]).await;
    let id = p
        .submit(TaskRequest::new("slow", "run", json!({}), user()))
        .await
        .unwrap();
    started.notified().await;
    assert_eq!(
        p.cancel(id, &mallory()).await.unwrap_err().category(),
        ErrorCategory::NotFound
    );
    let done = p.wait(id, &user()).await.unwrap();
    assert_eq!(
        done.status,
        TaskStatus::Completed,
        "the stranger's cancel had no effect"
    );
    assert!(!done.cancel_requested);
}

#[tokio::test]
async fn listing_shows_a_principal_its_own_tasks_and_an_admin_all() {
    let store = memory();
    let p = platform_with(store.clone(), vec![ok_agent("Echo")], fast_config()).await;
    install(&store, "echo", "alice", &[]).await;
    install(&store, "echo", "mallory", &[]).await;
    let mine = p
        .submit(TaskRequest::new("echo", "run", json!({}), user()))
        .await
        .unwrap();
    let theirs = p
        .submit(TaskRequest::new("echo", "run", json!({}), mallory()))
        .await
        .unwrap();
    let ids = |ts: Vec<TaskRecord>| ts.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(p.tasks(&user(), TaskFilter::default()).await.unwrap()),
        vec![mine]
    );
    // Asking for another user's tasks yields none of them, audited.
    let asked = TaskFilter {
        user_id: Some("mallory".into()),
        ..TaskFilter::default()
    };
    assert!(p.tasks(&user(), asked.clone()).await.unwrap().is_empty());
    let rows = denials(&store).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].payload["action"], "list");
    let mut all = ids(p.tasks(&admin(), TaskFilter::default()).await.unwrap());
    all.sort();
    let mut want = vec![mine, theirs];
    want.sort();
    assert_eq!(all, want);
    assert_eq!(ids(p.tasks(&admin(), asked).await.unwrap()), vec![theirs]);
    assert_eq!(
        p.trusted()
            .tasks(TaskFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
}

/// Support staff may read every task but cancel none.
struct SupportReads;

#[async_trait]
impl TaskAccessPolicy for SupportReads {
    async fn allows(&self, by: &Principal, _: &TaskRecord, action: TaskAction) -> Result<bool> {
        Ok(by.has_role("support") && action != TaskAction::Cancel)
    }
}

#[tokio::test]
async fn a_host_access_policy_widens_access_and_nothing_else() {
    let store = memory();
    let p = Platform::builder()
        .store(store.clone())
        .config(fast_config())
        .agent(ok_agent("Echo"))
        .task_access(SupportReads)
        .build()
        .await
        .unwrap();
    install(&store, "echo", "alice", &[]).await;
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let id = p
        .submit(TaskRequest::new("echo", "run", json!({}), user()).run_at(later))
        .await
        .unwrap();
    let support = Principal::new("sam").with_roles(["support"]);
    assert_eq!(p.get(id, &support).await.unwrap().id, id);
    assert!(!p.audit(id, &support).await.unwrap().is_empty());
    assert_eq!(
        p.cancel(id, &support).await.unwrap_err().category(),
        ErrorCategory::NotFound
    );
    assert_eq!(
        p.get(id, &support).await.unwrap().status,
        TaskStatus::Queued
    );
    let listed = p
        .tasks(
            &support,
            TaskFilter {
                user_id: Some("alice".into()),
                ..TaskFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        p.get(id, &mallory()).await.unwrap_err().category(),
        ErrorCategory::NotFound
    );
    let actions: Vec<String> = denials(&store)
        .await
        .iter()
        .map(|r| r.payload["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, vec!["cancel", "get"]);
}

fn once_then_ok(name: &str, first: Error) -> (TestAgent, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let config = Config {
        retries: 2,
        ..Config::default()
    };
    let a = agent(manifest(name, config, &[]), move |_, _, _| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        let first = first.clone();
        Box::pin(async move { if n == 0 { Err(first) } else { Ok(json!("ok")) } })
    });
    (a, calls)
}

#[tokio::test]
async fn an_absurd_retry_after_is_clamped_not_a_panic() {
    let store = memory();
    let (a, calls) = once_then_ok(
        "Absurd",
        Error::rate_limit("come back in forever", Duration::MAX),
    );
    let config = PlatformConfig {
        max_retry_delay: Duration::from_millis(150),
        ..fast_config()
    };
    let p = platform_with(store.clone(), vec![a], config).await;
    install(&store, "absurd", "alice", &[]).await;
    let id = p
        .submit(TaskRequest::new("absurd", "run", json!({}), user()))
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), p.wait(id, &user()))
        .await
        .expect("the retry is clamped to max_retry_delay")
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let events = p.trusted().watch(id).await.unwrap();
    let retrying: Vec<u64> = events
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter_map(|e| match e.unwrap().kind {
            TaskEventKind::Retrying { delay_ms, .. } => Some(delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(retrying.len(), 1);
    assert!(retrying[0] <= 150, "delay {} ms is clamped", retrying[0]);
}

fn big_output(name: &str, bytes: usize) -> (TestAgent, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let config = Config {
        retries: 2,
        ..Config::default()
    };
    let a = agent(manifest(name, config, &[]), move |_, _, _| {
        c.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(Value::String("x".repeat(bytes))) })
    });
    (a, calls)
}

#[tokio::test]
async fn a_50_mb_output_fails_once_with_a_validation_error_naming_the_limit() {
    let store = memory();
    let (a, calls) = big_output("Huge", 50 * 1024 * 1024);
    let p = platform_with(store.clone(), vec![a], fast_config()).await;
    install(&store, "huge", "alice", &[]).await;
    let done = run_within(&p, "huge", Duration::from_secs(20)).await;
    assert_eq!(done.status, TaskStatus::Failed);
    assert!(done.output.is_none());
    let error = done.error.unwrap();
    assert_eq!(error.category(), ErrorCategory::Validation);
    assert!(
        error.field_errors()[0].message.contains("1048576 bytes"),
        "{error:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried");
}

#[tokio::test]
async fn the_output_cap_is_configurable() {
    let store = memory();
    let (a, _) = big_output("Small", 64);
    let config = PlatformConfig {
        max_output_bytes: 66,
        ..fast_config()
    };
    let p = platform_with(store.clone(), vec![a], config).await;
    install(&store, "small", "alice", &[]).await;
    // 64 characters and two quotes: exactly at the limit.
    assert_eq!(
        run_within(&p, "small", WITHIN).await.status,
        TaskStatus::Completed
    );

    let store = memory();
    let (a, _) = big_output("Small", 65);
    let config = PlatformConfig {
        max_output_bytes: 66,
        ..fast_config()
    };
    let p = platform_with(store.clone(), vec![a], config).await;
    install(&store, "small", "alice", &[]).await;
    let done = run_within(&p, "small", WITHIN).await;
    assert_eq!(done.status, TaskStatus::Failed);
    assert!(done.error_message.unwrap().contains("66 bytes"));
}

#[tokio::test]
async fn resource_errors_never_trip_the_breaker_agent_errors_do() {
    let store = memory();
    let fail_with = |name: &str, error: Error| {
        let config = Config {
            retries: 0,
            ..Config::default()
        };
        agent(manifest(name, config, &[]), move |_, _, _| {
            let e = error.clone();
            Box::pin(async move { Err(e) })
        })
    };
    let config = PlatformConfig {
        breaker: BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_secs(60),
        },
        ..fast_config()
    };
    let p = platform_with(
        store.clone(),
        vec![
            fail_with("Infra", Error::resource("docker engine down")),
            fail_with("Buggy", Error::agent("bug")),
        ],
        config,
    )
    .await;
    install(&store, "infra", "alice", &[]).await;
    install(&store, "buggy", "alice", &[]).await;
    for _ in 0..4 {
        assert_eq!(
            run_within(&p, "infra", WITHIN).await.status,
            TaskStatus::Failed
        );
    }
    assert_eq!(p.breakers().state("infra@1.0.0"), BreakerState::Closed);
    for _ in 0..2 {
        assert_eq!(
            run_within(&p, "buggy", WITHIN).await.status,
            TaskStatus::Failed
        );
    }
    assert_eq!(p.breakers().state("buggy@1.0.0"), BreakerState::Open);
}

/// Submits a task due in `delay`, applies `change` while it waits in the queue, and returns
/// how it ended plus how often the agent ran.
async fn after_change<F, Fut>(
    scopes: &[&str],
    config: PlatformConfig,
    change: F,
) -> (TaskRecord, u32, Arc<dyn Store>)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let store = memory();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let a = agent(
        manifest("Guarded", Config::default(), scopes),
        move |_, _, _| {
            c.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(json!("ran")) })
        },
    );
    let p = platform_with(store.clone(), vec![a], config).await;
    install(&store, "guarded", "alice", scopes).await;
    let later = chrono::Utc::now() + chrono::Duration::milliseconds(300);
    let id = p
        .submit(TaskRequest::new("guarded", "run", json!({}), user()).run_at(later))
        .await
        .unwrap();
    change(store.clone()).await;
    let done = tokio::time::timeout(Duration::from_secs(10), p.wait(id, &user()))
        .await
        .unwrap()
        .unwrap();
    (done, calls.load(Ordering::SeqCst), store)
}

async fn failed_audit(store: &Arc<dyn Store>, id: uuid::Uuid) -> Value {
    store
        .list_audit(&AuditFilter {
            task_id: Some(id),
            event_type: Some("task.failed".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .pop()
        .expect("a task.failed audit row")
        .payload
}

#[tokio::test]
async fn the_worker_rechecks_grants_installation_and_version() {
    // Grants revoked after the submit.
    let (t, calls, store) = after_change(&["files:read"], fast_config(), |s| async move {
        install(&s, "guarded", "alice", &[]).await;
    })
    .await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(calls, 0, "never ran");
    let e = t.error.unwrap();
    assert_eq!(e.category(), ErrorCategory::Permission);
    assert_eq!(e.missing_scopes(), ["files:read"]);
    assert_eq!(failed_audit(&store, t.id).await["category"], "permission");

    // Uninstalled after the submit.
    let (t, calls, _) = after_change(&[], fast_config(), |s| async move {
        s.delete_installation("guarded", "alice").await.unwrap();
    })
    .await;
    assert_eq!((t.status, calls), (TaskStatus::Failed, 0));
    assert_eq!(t.error.unwrap().category(), ErrorCategory::Permission);

    // Version archived after the submit.
    let archive = |s: Arc<dyn Store>| async move {
        s.set_version_status(
            "guarded",
            "1.0.0",
            capecontrol_core::VersionStatus::Published,
            capecontrol_core::VersionStatus::Archived,
        )
        .await
        .unwrap();
    };
    let (t, calls, store) = after_change(&[], fast_config(), archive).await;
    assert_eq!((t.status, calls), (TaskStatus::Failed, 0));
    assert_eq!(t.error.unwrap().category(), ErrorCategory::Conflict);
    assert!(t.error_message.unwrap().contains("archived"));
    assert_eq!(failed_audit(&store, t.id).await["category"], "conflict");

    // ... unless pinned versions may finish.
    let config = PlatformConfig {
        finish_archived_versions: true,
        ..fast_config()
    };
    let (t, calls, _) = after_change(&[], config, archive).await;
    assert_eq!((t.status, calls), (TaskStatus::Completed, 1));
}

#[tokio::test]
async fn a_dropped_watcher_stops_even_on_a_task_that_never_ends() {
    let mem = Arc::new(MemoryStore::new());
    let store: Arc<dyn Store> = mem.clone();
    let p = platform_with(store.clone(), vec![ok_agent("Echo")], fast_config()).await;
    install(&store, "echo", "alice", &[]).await;
    let never = chrono::Utc::now() + chrono::Duration::days(365);
    let id = p
        .submit(TaskRequest::new("echo", "run", json!({}), user()).run_at(never))
        .await
        .unwrap();
    let before = mem.subscribers();
    let alice = user();
    let mut watchers = Vec::new();
    for _ in 0..20 {
        let mut w = p.watch(id, &alice).await.unwrap();
        // Each watcher is past its replay, waiting for live events, when it is dropped.
        let first = w.next().await.unwrap().unwrap();
        assert_eq!(first.kind.name(), "queued");
        watchers.push(w);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(mem.subscribers(), before + 20);
    drop(watchers);
    eventually(
        Duration::from_secs(2),
        Duration::from_millis(10),
        async || match mem.subscribers().saturating_sub(before) {
            0 => Ok(()),
            left => Err(format!(
                "{left} watchers still follow a task nobody watches"
            )),
        },
    )
    .await;
}

#[tokio::test]
async fn a_cancel_while_the_task_waits_for_its_retry_ends_it_cancelled() {
    let store = memory();
    let (a, calls) = once_then_ok("Flaky", Error::agent("transient"));
    let config = PlatformConfig {
        backoff_base: Duration::from_secs(30),
        backoff_max: Duration::from_secs(30),
        ..fast_config()
    };
    let p = platform_with(store.clone(), vec![a], config).await;
    install(&store, "flaky", "alice", &[]).await;
    let id = p
        .submit(TaskRequest::new("flaky", "run", json!({}), user()))
        .await
        .unwrap();
    let mut events = p.watch(id, &user()).await.unwrap();
    while let Some(e) = events.next().await {
        if matches!(e.unwrap().kind, TaskEventKind::Retrying { .. }) {
            break;
        }
    }
    let t = p.cancel(id, &user()).await.unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    let done = p.wait(id, &user()).await.unwrap();
    assert_eq!(done.status, TaskStatus::Cancelled);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "never ran again");
    let kinds: Vec<&str> = p
        .trusted()
        .watch(id)
        .await
        .unwrap()
        .map(|e| e.unwrap().kind.name())
        .collect::<Vec<_>>()
        .await;
    assert_eq!(kinds, ["queued", "started", "retrying", "cancelled"]);
}
