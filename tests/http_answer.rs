//! `POST /api/agents/tasks/{task_id}/answer` over real HTTP: a wrong-shape answer is a 400
//! problem naming `/answer/...` (the task keeps waiting), another user gets a 404, the task's
//! user's answer resumes it, a second answer is a 409.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capecontrol::agent::AskOutcome;
use capecontrol::http::{Api, ApiKeys};
use capecontrol::prelude::*;
use capecontrol::registry::InstallRequest;
use reqwest::{Client, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

/// Asks before it acts.
#[derive(Agent, Default)]
#[agent(
    name = "Asker",
    version = "1.0.0",
    roles("user"),
    timeout = 30,
    retries = 0
)]
struct Asker;

/// Nothing to say.
#[derive(Debug, Deserialize, JsonSchema)]
struct Empty {}

#[agent_impl]
impl Asker {
    /// Asks whether to go on, and returns the outcome.
    #[task]
    async fn ask(&self, cx: &TaskContext, _req: Empty) -> Result<Value, Error> {
        let schema = json!({"type": "object", "required": ["go"],
                            "properties": {"go": {"type": "boolean"}}});
        let outcome: AskOutcome = cx.ask_user("Go on?", schema).await?;
        serde_json::to_value(outcome).map_err(|e| Error::agent(e.to_string()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_route() {
    let platform = Arc::new(Platform::builder().agent(Asker).build().await.unwrap());
    let keys = ApiKeys::new(platform.store().clone());
    let root = Principal::new("test-setup");
    let alice_key = keys
        .create(&root, "alice", &["user".to_owned()], "test")
        .await
        .unwrap()
        .key;
    let bob_key = keys
        .create(&root, "bob", &["user".to_owned()], "test")
        .await
        .unwrap()
        .key;
    let alice = Principal::new("alice").with_roles(["user"]);
    platform
        .registry()
        .install(&alice, InstallRequest::latest("asker"))
        .await
        .unwrap();
    let id = platform
        .submit(TaskRequest::new("asker", "ask", json!({}), alice.clone()))
        .await
        .unwrap();
    for _ in 0..500 {
        if platform.get(id, &alice).await.unwrap().status == TaskStatus::Waiting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        platform.get(id, &alice).await.unwrap().status,
        TaskStatus::Waiting
    );

    let app = Api::new(platform.clone(), keys).router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let http = Client::new();
    let url = format!("http://{addr}/api/agents/tasks/{id}/answer");
    let post = |key: &str, body: Value| http.post(&url).bearer_auth(key).json(&body).send();

    let r = post(&alice_key, json!({"answer": {"go": "yes"}}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["errors"][0]["pointer"], "/answer/go", "{problem}");
    assert_eq!(
        platform.get(id, &alice).await.unwrap().status,
        TaskStatus::Waiting
    );

    let r = post(&bob_key, json!({"answer": {"go": true}}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let r = post(&alice_key, json!({"answer": {"go": true}}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let done = platform.wait(id, &alice).await.unwrap();
    assert_eq!(
        done.output,
        Some(json!({"outcome": "answered", "answer": {"go": true}, "by": "alice"}))
    );
    let r = post(&alice_key, json!({"answer": {"go": true}}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
}
