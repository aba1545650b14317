//! Issue 11, item 9: a known secret value written by a container agent on its stderr is
//! scrubbed before it reaches the NOTIFY payloads that carry task events to other nodes. A real
//! container agent (busybox) echoes its start message — the installation's settings with the
//! secret `api_key` — to stderr and exits; a second connection LISTENs on the store's channel
//! for every payload of the task's life.

mod common;

#[path = "../../capecontrol-exec/tests/common/mod.rs"]
mod docker;

use std::sync::Arc;
use std::time::Duration;

use capecontrol_core::manifest::Runtime;
use capecontrol_core::policy::{PUBLISHER, Principal};
use capecontrol_core::registry::{InstallRequest, NewAgent, NewVersion};
use capecontrol_core::runtime::{Platform, PlatformConfig, TaskRequest};
use capecontrol_core::store::Store;
use capecontrol_core::{ErrorCategory, TaskStatus};
use capecontrol_exec::ContainerExecutor;
use capecontrol_store::sqlx::postgres::PgListener;
use serde_json::json;

/// The secret the installation holds.
const SECRET: &str = "sk-notify-SECRET-0123456789";

fn alice() -> Principal {
    Principal::new("alice").with_roles(["user"])
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL and Docker"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_on_container_stderr_never_reaches_a_notify_payload() {
    docker::docker_ready().await;
    let db = test_db!();
    let pg = db.store().await;
    let store: Arc<dyn Store> = Arc::new(pg.clone());

    let mut listener = PgListener::connect(&db.url()).await.unwrap();
    listener.listen(capecontrol_store::CHANNEL).await.unwrap();

    // A manifest whose `api_key` setting is secret, run as a shell that echoes its start line.
    let mut manifest = docker::busybox_with(
        "read line; echo \"leak: $line\" >&2; exit 3",
        &json!({"timeout": 20, "retries": 1}),
        &json!({}),
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
    assert!(matches!(manifest.runtime, Some(Runtime::Container { .. })));
    assert_eq!(manifest.config().retries, 1);

    let executor = ContainerExecutor::builder()
        .node_id(format!("test-{}", uuid::Uuid::new_v4()))
        .build()
        .await
        .unwrap();
    let platform = Platform::builder()
        .store(store.clone())
        .config(PlatformConfig {
            poll_interval: Duration::from_millis(50),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(100),
            ..PlatformConfig::default()
        })
        .executor(Arc::new(executor.clone()))
        .build()
        .await
        .unwrap();
    let publisher = Principal::new("publisher").with_roles([PUBLISHER]);
    let registry = platform.registry();
    let agent = registry
        .create_agent(&publisher, NewAgent::named("hostile").description("leaks"))
        .await
        .unwrap();
    let version = registry
        .add_version(
            &publisher,
            &agent.id,
            NewVersion::new(serde_json::to_value(&manifest).unwrap()),
        )
        .await
        .unwrap();
    registry
        .publish(&publisher, &agent.id, &version.version)
        .await
        .unwrap();
    registry
        .install(
            &alice(),
            InstallRequest::latest(&agent.id).settings(json!({ "api_key": SECRET })),
        )
        .await
        .unwrap();

    let id = platform
        .submit(TaskRequest::new(&agent.id, "leak", json!(null), alice()))
        .await
        .unwrap();
    let task = tokio::time::timeout(Duration::from_secs(60), platform.wait(id, &alice()))
        .await
        .expect("the task ends")
        .unwrap();
    assert_eq!(task.status, TaskStatus::Failed, "{task:?}");
    assert_eq!(task.attempts, 2, "{task:?}");
    let error = task.error.unwrap();
    assert_eq!(error.category(), ErrorCategory::Agent, "{error}");
    assert!(
        error.to_string().contains("leak: "),
        "the tail is shown: {error}"
    );
    assert!(!error.to_string().contains(SECRET), "{error}");

    // Every payload on the channel until the task's retrying and failed events were notified.
    let id_text = id.to_string();
    let mut payloads = Vec::new();
    let (mut retrying, mut failed) = (false, false);
    tokio::time::timeout(Duration::from_secs(20), async {
        while !(retrying && failed) {
            let payload = listener.recv().await.unwrap().payload().to_owned();
            if payload.contains(&id_text) {
                retrying |= payload.contains(r#""type":"retrying""#);
                failed |= payload.contains(r#""type":"failed""#);
            }
            payloads.push(payload);
        }
    })
    .await
    .expect("the retrying and failed events are notified");
    for payload in &payloads {
        assert!(
            !payload.contains(SECRET),
            "a NOTIFY payload carries the secret: {payload}"
        );
    }
    let redacted = payloads
        .iter()
        .filter(|p| p.contains(capecontrol_exec::SCRUBBED))
        .count();
    assert!(
        redacted > 0,
        "the scrubbed tail travels by NOTIFY: {payloads:?}"
    );

    // Nor is it in the task's events or audit rows.
    let events = serde_json::to_string(&store.events(id, 0).await.unwrap()).unwrap();
    assert!(!events.contains(SECRET));
    let audit = serde_json::to_string(&platform.audit(id, &alice()).await.unwrap()).unwrap();
    assert!(!audit.contains(SECRET));
    assert!(events.contains(capecontrol_exec::SCRUBBED));

    platform.shutdown(Duration::from_secs(1)).await;
    docker::assert_no_containers(&executor).await;
    pg.close().await;
    db.drop().await;
}
