//! The trigger routes over HTTP: `POST /api/events`, the webhook secret, a signed delivery to
//! `POST /api/hooks/{installation}/{path}` (good: 202 and one task; bad signature, stale
//! timestamp: 401; replay: 409 — none starts a task) and `GET /api/schedules`.

use std::net::SocketAddr;
use std::sync::Arc;

use capecontrol::http::{Api, ApiKeys, DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use capecontrol::prelude::*;
use capecontrol::registry::InstallRequest;
use capecontrol::runtime::webhooks::sign;
use capecontrol::store::TaskFilter;
use reqwest::{Client, StatusCode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Books payments.
#[derive(Agent)]
#[agent(
    name = "Ledger",
    version = "1.0.0",
    triggers(
        events("payment.completed"),
        schedules("0 9 * * MON"),
        webhooks("/payments/{id}")
    )
)]
struct Ledger;

#[derive(Deserialize, JsonSchema)]
struct Payment {
    amount: i64,
}

#[derive(Serialize, JsonSchema)]
struct Booked {
    amount: i64,
}

#[agent_impl]
impl Ledger {
    /// Book a payment.
    #[task]
    async fn book(&self, _cx: &TaskContext, p: Payment) -> Result<Booked, Error> {
        Ok(Booked { amount: p.amount })
    }
}

#[tokio::test]
async fn events_webhooks_and_schedules_over_http() {
    let platform = Arc::new(Platform::builder().agent(Ledger).build().await.unwrap());
    let keys = ApiKeys::new(platform.store().clone());
    let root = Principal::new("test-setup");
    let admin = keys
        .create(&root, "root", &["admin".to_owned()], "t")
        .await
        .unwrap()
        .key;
    let alice_key = keys
        .create(&root, "alice", &["user".to_owned()], "t")
        .await
        .unwrap()
        .key;
    let alice = Principal::new("alice").with_roles(["user"]);
    platform
        .registry()
        .install(&alice, InstallRequest::latest("ledger"))
        .await
        .unwrap();
    let app = Api::new(platform.clone(), keys).router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let http = Client::new();

    // An event, by an admin: one task for alice's installation; by alice: 403.
    let body = json!({"event": "payment.completed", "id": "pay-1", "payload": {"amount": 5}});
    let res = http
        .post(format!("{url}/api/events"))
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let emitted: Value = res.json().await.unwrap();
    assert_eq!(emitted["event_id"], "pay-1");
    assert_eq!(emitted["tasks"].as_array().unwrap().len(), 1);
    let res = http
        .post(format!("{url}/api/events"))
        .bearer_auth(&alice_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // The secret, shown once.
    let res = http
        .post(format!("{url}/api/installations/ledger/webhook-secret"))
        .bearer_auth(&alice_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let secret: Value = res.json().await.unwrap();
    let (inst, secret) = (
        secret["installation_id"].as_str().unwrap().to_owned(),
        secret["secret"].as_str().unwrap().to_owned(),
    );
    let deliver = |id: &'static str, ts: i64, key: String, body: &'static [u8]| {
        let http = http.clone();
        let url = format!("{url}/api/hooks/{inst}/payments/p-1");
        async move {
            http.post(url)
                .header(DELIVERY_HEADER, id)
                .header(TIMESTAMP_HEADER, ts.to_string())
                .header(SIGNATURE_HEADER, sign(&key, ts, id, body))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let now = chrono::Utc::now().timestamp();
    let body: &[u8] = br#"{"amount": 12}"#;
    let res = deliver("d-1", now, secret.clone(), body).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let fired: Value = res.json().await.unwrap();
    let task: uuid::Uuid = fired["task_id"].as_str().unwrap().parse().unwrap();
    let done = platform.wait(task, &alice).await.unwrap();
    assert_eq!(done.output, Some(json!({"amount": 12})));
    // The task's event stream: its first event, `queued`, names the delivery.
    let stream = http
        .get(format!("{url}/api/agents/tasks/{task}/events"))
        .bearer_auth(&alice_key)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let text = stream.text().await.unwrap();
    let queued = text
        .split("\n\n")
        .find(|frame| frame.lines().any(|l| l == "event: queued"))
        .unwrap_or_else(|| panic!("no queued event in {text}"));
    let data = queued
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let event: Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["seq"], 1);
    assert_eq!(
        event["kind"],
        json!({"type": "queued", "trigger": {"kind": "webhook", "path": "/payments/{id}",
                                             "delivery_id": "d-1"}})
    );

    let bad = deliver("d-2", now, "wrong".into(), body).await;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let stale = deliver("d-3", now - 600, secret.clone(), body).await;
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);
    let replay = deliver("d-1", now, secret.clone(), body).await;
    assert_eq!(replay.status(), StatusCode::CONFLICT);
    let tasks = platform
        .trusted()
        .tasks(TaskFilter::default())
        .await
        .unwrap();
    assert_eq!(tasks.len(), 2, "the event's and the good delivery's");

    // The schedule listing, with its next fire time.
    let res = http
        .get(format!("{url}/api/schedules"))
        .bearer_auth(&alice_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let listed: Value = res.json().await.unwrap();
    assert_eq!(listed[0]["schedule"], "0 9 * * MON");
    assert!(listed[0]["next_fire"].as_str().unwrap().len() >= 20);
}
