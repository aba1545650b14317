//! Hostile workloads against the real engine: each is contained with a clear error, the host
//! is unaffected, and no container is left behind.

mod common;

#[path = "../examples/support/demo_agent.rs"]
mod demo_agent;

use std::time::{Duration, Instant};

use capecontrol_core::ErrorCategory;
use capecontrol_core::runtime::Executor;
use capecontrol_exec::LABEL_TASK;
use common::*;
use serde_json::json;

/// The host can still start processes and its engine still answers.
async fn host_is_fine(executor: &capecontrol_exec::ContainerExecutor) {
    let status = std::process::Command::new("true")
        .status()
        .expect("the host can fork");
    assert!(status.success());
    executor.docker().ping().await.expect("the engine answers");
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn a_memory_bomb_is_oom_killed_as_a_resource_error() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    let manifest = busybox(
        "x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done",
        &json!({"timeout": 20, "memory_limit": "32MiB"}),
    );
    let (cx, _) = context(json!({}), &[]);
    let err = executor
        .run(invocation(manifest, "bomb", json!(null)), cx)
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Resource, "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("out of memory"), "{err}");
    host_is_fine(&executor).await;
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn a_fork_bomb_hits_the_process_limit() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    let manifest = busybox(
        "bomb() { bomb | bomb & }; bomb; sleep 30",
        &json!({"timeout": 3, "memory_limit": "128MiB"}),
    );
    let (cx, _) = context(json!({}), &[]);
    let started = Instant::now();
    let err = executor
        .run(invocation(manifest, "bomb", json!(null)), cx)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.category(),
            ErrorCategory::Resource | ErrorCategory::Agent
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    host_is_fine(&executor).await;
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn a_busy_loop_past_the_timeout_is_killed() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    let manifest = busybox("while :; do :; done", &json!({"timeout": 2}));
    let (cx, _) = context(json!({}), &[]);
    let started = Instant::now();
    let err = executor
        .run(invocation(manifest, "spin", json!(null)), cx)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.category(), ErrorCategory::Resource, "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    host_is_fine(&executor).await;
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn a_process_that_ignores_sigterm_is_killed_at_the_timeout() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    let manifest = busybox(
        "trap '' TERM INT; while :; do sleep 1; done",
        &json!({"timeout": 1}),
    );
    let (cx, _) = context(json!({}), &[]);
    let err = executor
        .run(invocation(manifest, "stubborn", json!(null)), cx)
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Resource, "{err}");
    let settle = Instant::now();
    assert_no_containers(&executor).await;
    assert!(
        settle.elapsed() < Duration::from_secs(5),
        "killed, not stopped with a grace period"
    );
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn a_flood_of_output_is_capped() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    // Many short lines: the per-attempt cap.
    let (cx, _) = context(json!({}), &[]);
    let err = executor
        .run(
            invocation(
                busybox(
                    "yes '{\"type\":\"log\",\"message\":\"spam\"}'",
                    &json!({"timeout": 20}),
                ),
                "flood",
                json!(null),
            ),
            cx,
        )
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Agent, "{err}");
    assert!(err.to_string().contains("more than 1048576 bytes"), "{err}");
    // One endless line: the line cap.
    let (cx, _) = context(json!({}), &[]);
    let err = executor
        .run(
            invocation(
                busybox("tr '\\0' a < /dev/zero", &json!({"timeout": 20})),
                "line",
                json!(null),
            ),
            cx,
        )
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Agent, "{err}");
    assert!(err.to_string().contains("line longer than"), "{err}");
    // A flood on stderr counts too.
    let (cx, _) = context(json!({}), &[]);
    let err = executor
        .run(
            invocation(
                busybox("yes spam >&2", &json!({"timeout": 20})),
                "stderr",
                json!(null),
            ),
            cx,
        )
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Agent, "{err}");
    host_is_fine(&executor).await;
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn the_network_is_unreachable() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    // No interface but loopback and no route: nothing can leave. (No packet is sent anywhere:
    // the only connection attempted is to a closed loopback port inside the container.)
    let script = format!(
        "{OUT} ifs=$(ls /sys/class/net | tr '\\n' ' '); routes=$(tail -n +2 /proc/net/route | wc -l); \
         if nc -w 1 127.0.0.1 9 </dev/null 2>/dev/null; then c=open; else c=refused; fi; \
         out \"$ifs|$routes|$c\""
    );
    let (cx, _) = context(json!({}), &[]);
    let out = executor
        .run(
            invocation(
                busybox(&script, &json!({"timeout": 10})),
                "net",
                json!(null),
            ),
            cx,
        )
        .await
        .unwrap();
    assert_eq!(out, json!("lo |0|refused"));
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn the_root_filesystem_is_read_only_and_tmp_is_noexec() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    let script = format!(
        "{OUT} r=$(echo x 2>&1 > /bin/evil || true); \
         t=$(echo x > /tmp/ok && echo tmp-ok); \
         cp /bin/busybox /tmp/bb 2>/dev/null; e=$(/tmp/bb true >/dev/null 2>&1 && echo exec-ok || echo exec-denied); \
         out \"$r|$t|$e\""
    );
    let (cx, _) = context(json!({}), &[]);
    let out = executor
        .run(
            invocation(busybox(&script, &json!({"timeout": 10})), "fs", json!(null)),
            cx,
        )
        .await
        .unwrap();
    let out = out.as_str().unwrap().to_owned();
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("|tmp-ok|"), "{out}");
    assert!(out.ends_with("exec-denied"), "{out}");
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn runs_unprivileged_without_capabilities() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    let script = format!(
        "{OUT} out \"$(id -u):$(id -g)|$(grep CapEff /proc/self/status | tr -d '\\t')|$(grep NoNewPrivs /proc/self/status | tr -d '\\t')|$(grep Seccomp: /proc/self/status | tr -d '\\t')\""
    );
    let (cx, _) = context(json!({}), &[]);
    let out = executor
        .run(
            invocation(busybox(&script, &json!({"timeout": 10})), "id", json!(null)),
            cx,
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        json!("65534:65534|CapEff:0000000000000000|NoNewPrivs:1|Seccomp:2")
    );
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn a_secret_is_not_in_the_environment_of_another_task() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    const SECRET: &str = "S3CR3T-7f1c2e";
    // Task A holds the secret (it reads the start message, then waits).
    let holder = busybox(
        &format!("{OUT} read start; sleep 3; out held"),
        &json!({"timeout": 20}),
    );
    let (cx_a, _) = context(json!({"api_key": SECRET}), &[]);
    let a_id = cx_a.task_id().to_string();
    let exec_a = executor.clone();
    let a = tokio::spawn(async move {
        exec_a
            .run(invocation(holder, "hold", json!(null)), cx_a)
            .await
    });
    // While A runs: its container's configuration (env, command) does not carry the secret.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let docker = executor.docker();
    let mut inspected = 0;
    for id in executor.containers().await.unwrap() {
        let info = docker.inspect_container(&id, None).await.unwrap();
        let config = info.config.unwrap_or_default();
        if config.labels.unwrap_or_default().get(LABEL_TASK) == Some(&a_id) {
            inspected += 1;
            let env = config.env.unwrap_or_default().join(" ");
            let cmd = config.cmd.unwrap_or_default().join(" ");
            assert!(!env.contains(SECRET) && !cmd.contains(SECRET));
        }
    }
    assert_eq!(inspected, 1, "task A's container was running");
    // Task B looks for it in every environment it can see.
    let seeker = busybox(
        &format!(
            "{OUT} n=$( (env; cat /proc/*/environ) 2>/dev/null | tr '\\0' '\\n' | grep -c {SECRET}); out \"found $n\""
        ),
        &json!({"timeout": 10}),
    );
    let (cx_b, _) = context(json!({}), &[]);
    let b = executor
        .run(invocation(seeker, "seek", json!(null)), cx_b)
        .await
        .unwrap();
    assert_eq!(b, json!("found 0"));
    assert_eq!(a.await.unwrap().unwrap(), json!("held"));
    // And the agent that should get it does, on stdin.
    let (cx, _) = context(json!({"api_key": SECRET}), &[]);
    let out = executor
        .run(
            invocation(
                demo_agent::manifest(),
                "secret_check",
                json!({"expect": SECRET}),
            ),
            cx,
        )
        .await
        .unwrap();
    assert_eq!(out, json!({"has_secret": true}));
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn secret_settings_are_scrubbed_from_stderr_and_protocol_errors() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    let secret = "sk-live-SECRET-0123456789";
    let mut manifest = busybox(
        "read line; echo \"boom: token=$(echo $line | sed 's/.*api_key\":\"\\([^\"]*\\).*/\\1/')\" >&2; exit 3",
        &json!({"timeout": 20}),
    );
    manifest.ui = Some(
        serde_json::from_value(json!({
            "settings_schema": {
                "type": "object",
                "properties": { "api_key": { "type": "string", "secret": true } }
            }
        }))
        .unwrap(),
    );
    let (cx, _) = context(json!({ "api_key": secret }), &[]);
    let err = executor
        .run(invocation(manifest.clone(), "leak", json!(null)), cx)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.category(), ErrorCategory::Agent, "{err}");
    assert!(
        text.contains("boom: token="),
        "the stderr tail is shown: {text}"
    );
    assert!(!text.contains(secret), "the secret is scrubbed: {text}");
    assert!(text.contains(capecontrol_exec::SCRUBBED), "{text}");
    // A protocol-breaking line that carries the secret.
    manifest.runtime = busybox("read line; echo \"not json $line\"", &json!({})).runtime;
    let (cx, _) = context(json!({ "api_key": secret }), &[]);
    let err = executor
        .run(invocation(manifest, "leak", json!(null)), cx)
        .await
        .unwrap_err();
    assert!(!err.to_string().contains(secret), "{err}");
    assert_no_containers(&executor).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs Docker"
)]
#[tokio::test]
async fn tool_call_reports_are_capped_per_attempt() {
    if !docker_ready().await {
        return;
    }
    let executor = executor().await;
    let max = capecontrol_exec::MAX_TOOL_CALLS_PER_ATTEMPT;
    let script = |n: usize| {
        format!(
            "{OUT} read start; i=0; while [ $i -lt {n} ]; do \
             echo '{{\"type\":\"tool_call\",\"tool\":\"t\",\"allowed\":true}}'; read ack; \
             i=$((i+1)); done; out done"
        )
    };
    let (cx, journal) = context(json!({}), &[]);
    let out = executor
        .run(
            invocation(
                busybox(&script(max), &json!({"timeout": 30})),
                "t",
                json!(null),
            ),
            cx,
        )
        .await
        .unwrap();
    assert_eq!(out, json!("done"), "the cap itself is allowed");
    assert_eq!(journal.tool_calls().len(), max);
    let (cx, journal) = context(json!({}), &[]);
    let err = executor
        .run(
            invocation(
                busybox(&script(max + 1), &json!({"timeout": 30})),
                "t",
                json!(null),
            ),
            cx,
        )
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Agent, "{err}");
    assert!(err.to_string().contains("tool calls"), "{err}");
    assert_eq!(
        journal.tool_calls().len(),
        max,
        "none past the cap is recorded"
    );
    assert_no_containers(&executor).await;
}
