//! The container executor against the real engine: protocol, journal, replay, errors, warm
//! pool, cancellation, orphans, network scope, metrics, and the same agent in both runtimes.

mod common;

#[path = "../examples/support/demo_agent.rs"]
mod demo_agent;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capecontrol_core::runtime::{Executor, InProcessExecutor};
use capecontrol_core::{ErrorCategory, RunStatus, StepRecord, TaskContext};
use capecontrol_exec::bollard::models::ContainerCreateBody;
use capecontrol_exec::{ContainerExecutor, LABEL_MANAGED, LABEL_NODE};
use common::*;
use serde_json::json;

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn runs_the_demo_agent_and_journals_its_steps() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    let (cx, journal) = context(json!({}), &["demo:read"]);
    let out = executor
        .run(
            invocation(demo_agent::manifest(), "greet", json!({"name": " ada "})),
            cx,
        )
        .await
        .unwrap();
    assert_eq!(out, json!({"greeting": "Hello, ADA!", "attempt": 1}));
    let steps = journal.steps();
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["normalize", "shout", "compose"]);
    assert!(steps.iter().all(|s| s.status == RunStatus::Completed));
    assert_eq!(steps[0].output, Some(json!("ada")));
    assert_eq!(steps[1].output, Some(json!("ADA")));
    let calls = journal.tool_calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].allowed);
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn the_container_agent_receives_the_trace_context() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let cx = TaskContext::builder(uuid::Uuid::new_v4())
        .agent_id("demo")
        .version("1.0.0")
        .traceparent(Some(traceparent.into()))
        .build(Arc::new(capecontrol_core::MemoryJournal::default()));
    let out = executor
        .run(
            invocation(demo_agent::manifest(), "trace_context", json!(null)),
            cx,
        )
        .await
        .unwrap();
    assert_eq!(out, json!({"traceparent": traceparent, "version": "1.0.0"}));
    assert_no_containers(&executor).await;
}

#[tokio::test]
async fn replays_journaled_steps_inside_the_container() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    let journaled = StepRecord {
        step: 1,
        name: "normalize".into(),
        status: RunStatus::Completed,
        output: Some(json!("grace")),
        error: None,
        started_at: None,
        finished_at: None,
    };
    let journal = Arc::new(capecontrol_core::agent::MemoryJournal::default());
    let cx = TaskContext::builder(uuid::Uuid::new_v4())
        .attempt(2)
        .granted(vec!["demo:read".parse().unwrap()])
        .completed_steps(vec![journaled])
        .build(journal.clone());
    let out = executor
        .run(
            invocation(demo_agent::manifest(), "greet", json!({"name": "ada"})),
            cx,
        )
        .await
        .unwrap();
    assert_eq!(out, json!({"greeting": "Hello, GRACE!", "attempt": 2}));
    let names: Vec<String> = journal.steps().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["shout", "compose"], "step 1 was replayed, not run");
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn typed_errors_crashes_and_permission_errors_cross_the_boundary() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    let (cx, _) = context(json!({}), &[]);
    let err = executor
        .run(invocation(demo_agent::manifest(), "fail", json!(null)), cx)
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Conflict, "{err}");

    let (cx, _) = context(json!({}), &[]);
    let err = executor
        .run(invocation(demo_agent::manifest(), "crash", json!(null)), cx)
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Agent, "{err}");
    assert!(err.to_string().contains("code 3"), "{err}");

    // The tool's scope is not granted: a permission error with the missing scope.
    let (cx, journal) = context(json!({}), &[]);
    let err = executor
        .run(
            invocation(demo_agent::manifest(), "greet", json!({"name": "x"})),
            cx,
        )
        .await
        .unwrap_err();
    assert_eq!(err.missing_scopes(), ["demo:read"], "{err}");
    assert!(!journal.tool_calls()[0].allowed);

    // Bad protocol output is an agent error.
    let (cx, _) = context(json!({}), &[]);
    let err = executor
        .run(
            invocation(busybox("echo hello there", &json!({})), "x", json!(null)),
            cx,
        )
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Agent, "{err}");
    assert!(err.to_string().contains("protocol"), "{err}");
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn a_missing_image_is_not_found_and_named() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    let mut manifest = demo_agent::manifest();
    manifest.runtime = Some(capecontrol_core::manifest::Runtime::Container {
        image: "capecontrol/no-such-image:dev".into(),
        command: vec![],
        env: Default::default(),
    });
    let (cx, _) = context(json!({}), &[]);
    let err = executor
        .run(invocation(manifest, "echo", json!(1)), cx)
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::NotFound, "{err}");
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("capecontrol/no-such-image:dev"),
        "{err}"
    );
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn the_same_agent_gives_the_same_output_in_process_and_in_a_container() {
    if !docker_ready().await {
        return;
    }
    let in_process = InProcessExecutor::new();
    in_process.register("demo", Arc::new(demo_agent::DemoAgent));
    let container = executor().await;
    let mut native = demo_agent::manifest();
    native.runtime = None;
    for (task, input) in [
        ("greet", json!({"name": " ada "})),
        ("echo", json!({"a": [1, 2, {"b": null}]})),
        ("secret_check", json!({"expect": "s3cr3t"})),
    ] {
        let (cx1, j1) = context(json!({"api_key": "s3cr3t"}), &["demo:read"]);
        let (cx2, j2) = context(json!({"api_key": "s3cr3t"}), &["demo:read"]);
        let a = in_process
            .run(invocation(native.clone(), task, input.clone()), cx1)
            .await
            .unwrap();
        let b = container
            .run(invocation(demo_agent::manifest(), task, input), cx2)
            .await
            .unwrap();
        assert_eq!(a, b, "task {task}");
        let strip = |s: Vec<StepRecord>| {
            s.into_iter()
                .map(|r| (r.step, r.name, r.status, r.output))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(j1.steps()), strip(j2.steps()), "task {task}");
        // The same calls; the container's are marked as reported by the agent (the host did
        // not make them), the in-process ones not.
        let (calls1, calls2) = (j1.tool_calls(), j2.tool_calls());
        assert!(
            calls1.iter().all(|c| !c.reported),
            "task {task}: {calls1:?}"
        );
        assert!(calls2.iter().all(|c| c.reported), "task {task}: {calls2:?}");
        let unmark = |calls: Vec<capecontrol_core::ToolCall>| {
            calls
                .into_iter()
                .map(|c| (c.tool, c.scope, c.allowed))
                .collect::<Vec<_>>()
        };
        assert_eq!(unmark(calls1), unmark(calls2), "task {task}");
    }
    assert_no_containers(&container).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn a_warm_container_serves_exactly_one_task_and_is_replaced() {
    if !docker_ready().await {
        return;
    }
    let executor = builder().warm_pool("demo@1.0.0", 2).build().await.unwrap();
    let manifest = demo_agent::manifest();
    assert_eq!(
        executor.prewarm("demo", "1.0.0", &manifest).await.unwrap(),
        2
    );
    let mut hosts = Vec::new();
    for _ in 0..4 {
        let (cx, _) = context(json!({}), &[]);
        let started = Instant::now();
        let host = executor
            .run(invocation(manifest.clone(), "hostname", json!(null)), cx)
            .await
            .unwrap();
        eprintln!("warm dispatch took {:?}", started.elapsed());
        hosts.push(host);
        // Let the pool refill in the background.
        for _ in 0..50 {
            if executor.warm_ready("demo", "1.0.0") == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let distinct: std::collections::HashSet<_> = hosts.iter().collect();
    assert_eq!(
        distinct.len(),
        4,
        "every task ran in a container of its own: {hosts:?}"
    );
    assert_eq!(executor.warm_ready("demo", "1.0.0"), 2, "the pool refilled");
    executor.shutdown().await;
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn cancellation_stops_the_container() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    let (cx, _) = context(json!({}), &[]);
    let cancel = cx.cancellation().clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel.cancel();
    });
    let started = Instant::now();
    let err = executor
        .run(
            invocation(demo_agent::manifest(), "sleep", json!({"ms": 8000})),
            cx,
        )
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Conflict, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn start_up_removes_this_nodes_orphans_only() {
    if !docker_ready().await {
        return;
    }
    let node = format!("test-{}", uuid::Uuid::new_v4());
    let other = format!("test-{}", uuid::Uuid::new_v4());
    let probe = executor().await;
    let docker = probe.docker();
    let mut ids = Vec::new();
    for n in [&node, &other] {
        let body = ContainerCreateBody {
            image: Some(BUSYBOX.into()),
            cmd: Some(vec!["sleep".into(), "60".into()]),
            labels: Some(HashMap::from([
                (LABEL_MANAGED.to_owned(), "true".to_owned()),
                (LABEL_NODE.to_owned(), n.clone()),
            ])),
            ..Default::default()
        };
        let id = docker.create_container(None, body).await.unwrap().id;
        docker.start_container(&id, None).await.unwrap();
        ids.push(id);
    }
    let restarted = ContainerExecutor::builder()
        .node_id(&node)
        .build()
        .await
        .unwrap();
    assert!(
        restarted.containers().await.unwrap().is_empty(),
        "the orphan is gone"
    );
    let others = ContainerExecutor::builder()
        .node_id(&other)
        .cleanup_orphans(false)
        .build()
        .await
        .unwrap();
    assert_eq!(
        others.containers().await.unwrap(),
        [ids[1].clone()],
        "another node's container stays"
    );
    assert_eq!(others.cleanup_orphans().await.unwrap(), 1);
    assert_no_containers(&others).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn network_needs_the_scope_in_the_manifest_and_the_grant() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    // Only looks at the interfaces: no traffic is sent anywhere.
    let script = format!("{OUT} out \"$(ls /sys/class/net | tr '\\n' ' ')\"");
    let asks = json!({"scopes": ["network:outbound"]});
    let cases = [
        (json!({}), vec![], false),
        (asks.clone(), vec![], false),
        (json!({}), vec!["network:outbound"], false),
        (asks, vec!["network:outbound"], true),
    ];
    for (permissions, granted, networked) in cases {
        let manifest = busybox_with(&script, &json!({"timeout": 5}), &permissions);
        let (cx, _) = context(json!({}), &granted);
        let out = executor
            .run(invocation(manifest, "x", json!(null)), cx)
            .await
            .unwrap();
        let ifaces = out.as_str().unwrap().trim().to_owned();
        if networked {
            assert!(
                ifaces.contains("eth0"),
                "{permissions} {granted:?}: {ifaces}"
            );
        } else {
            assert_eq!(ifaces, "lo", "{permissions} {granted:?}");
        }
    }
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn memory_and_cpu_are_sampled_into_the_metrics() {
    if !docker_ready().await {
        return;
    }
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    if recorder.install().is_err() {
        panic!("another recorder is installed");
    }
    let executor = builder()
        .stats_interval(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let manifest = busybox(
        &format!(
            "{OUT} end=$(($(date +%s)+3)); while [ $(date +%s) -lt $end ]; do :; done; out done"
        ),
        &json!({"timeout": 20}),
    );
    let (cx, _) = context(json!({}), &[]);
    executor
        .run(invocation(manifest, "x", json!(null)), cx)
        .await
        .unwrap();
    let names: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, _)| key.key().name().to_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "agent_memory_usage_bytes"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "agent_cpu_usage_percent"),
        "{names:?}"
    );
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn reaches_the_engine_by_unix_and_tcp_urls() {
    if !docker_ready().await {
        return;
    }
    // A loopback TCP listener that forwards every connection to the local socket stands in
    // for a remote engine at tcp://host:port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let proxy = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut unix) = tokio::net::UnixStream::connect("/var/run/docker.sock").await
                {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    for url in [
        "unix:///var/run/docker.sock".to_owned(),
        format!("tcp://127.0.0.1:{port}"),
    ] {
        let executor = builder().docker_url(&url).build().await.unwrap();
        let (cx, _) = context(json!({}), &[]);
        let out = executor
            .run(
                invocation(demo_agent::manifest(), "echo", json!({"via": url})),
                cx,
            )
            .await
            .unwrap();
        assert_eq!(out, json!({"via": url}));
        assert_no_containers(&executor).await;
    }
    proxy.abort();
}
