//! The HTTP API over real HTTP: a server on an ephemeral port, a reqwest client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capecontrol::http::{Api, ApiKeys, HttpConfig, PROBLEM_JSON};
use capecontrol::prelude::*;
use capecontrol::runtime::middleware::rate_limit::{Rate, RateLimitConfig};
use reqwest::{Client, Method, StatusCode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_stream::StreamExt;

/// Echoes its input after a few short steps.
#[derive(Agent, Default)]
#[agent(
    name = "Echo Agent",
    version = "1.0.0",
    category = "utility",
    scopes("echo:run"),
    roles("user"),
    timeout = 30,
    retries = 0
)]
struct EchoAgent;

/// What to echo.
#[derive(Debug, Deserialize, JsonSchema)]
struct EchoIn {
    /// The text.
    text: String,
    /// Steps to take (each 50 ms).
    #[serde(default)]
    steps: u32,
}

/// The echo.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct EchoOut {
    /// The text.
    text: String,
}

#[agent_impl]
impl EchoAgent {
    /// Echo the text after `steps` steps.
    #[task]
    async fn echo(&self, cx: &TaskContext, req: EchoIn) -> Result<EchoOut, Error> {
        for i in 0..req.steps {
            cx.step(&format!("step-{i}"), async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, Error>(i)
            })
            .await?;
        }
        Ok(EchoOut { text: req.text })
    }
}

struct Server {
    url: String,
    http: Client,
    admin: String,
    alice: String,
    bob: String,
    platform: Arc<Platform>,
}

impl Server {
    async fn start() -> Self {
        Self::start_with(RateLimitConfig::default(), HttpConfig::default()).await
    }

    async fn start_with(limits: RateLimitConfig, config: HttpConfig) -> Self {
        let platform = Arc::new(
            Platform::builder()
                .agent(EchoAgent)
                .rate_limits(limits)
                .build()
                .await
                .unwrap(),
        );
        Self::serve(platform, config).await
    }

    /// The API of `platform`, with keys for root (admin), alice and bob.
    async fn serve(platform: Arc<Platform>, config: HttpConfig) -> Self {
        let keys = ApiKeys::new(platform.store().clone());
        let root = Principal::new("test-setup");
        let key = |user: &'static str, roles: &'static [&'static str]| {
            let keys = keys.clone();
            let root = root.clone();
            async move {
                let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
                keys.create(&root, user, &roles, "test").await.unwrap().key
            }
        };
        let admin = key("root", &["admin", "publisher", "user"]).await;
        let alice = key("alice", &["user"]).await;
        let bob = key("bob", &["user"]).await;
        let app = Api::new(platform.clone(), keys).config(config).router();
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
        Self {
            url: format!("http://{addr}"),
            http: Client::new(),
            admin,
            alice,
            bob,
            platform,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("user-agent", "http-test/1.0");
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        (status, headers, value)
    }

    async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::GET, path, Some(key), None).await;
        (s, v)
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::POST, path, Some(key), Some(body)).await;
        (s, v)
    }

    /// Installs the echo agent for alice (all scopes granted).
    async fn install_alice(&self) {
        let (s, v) = self
            .post(
                "/api/installations",
                &self.alice,
                json!({"agent": "echo-agent", "grant": ["echo:run"]}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    async fn submit(&self, key: &str, input: Value) -> uuid::Uuid {
        let (s, v) = self
            .post(
                "/api/agents/echo-agent/tasks",
                key,
                json!({"task": "echo", "input": input}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        v["task_id"].as_str().unwrap().parse().unwrap()
    }
}

fn assert_problem(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    want: u16,
    category: &str,
) {
    assert_eq!(status.as_u16(), want, "{body}");
    assert_eq!(headers["content-type"], PROBLEM_JSON);
    assert_eq!(body["status"], want);
    assert_eq!(body["category"], category);
    assert_eq!(body["type"], format!("urn:capecontrol:problem:{category}"));
}

/// Reads Server-Sent Events until the stream ends or `max` events came: (id, event, data).
async fn read_sse(res: reqwest::Response, max: usize) -> Vec<(u64, String, Value)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut stream = res.bytes_stream();
    let (mut id, mut event, mut data) = (None, String::new(), String::new());
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(nl) = buf.find('\n') {
            let line = buf[..nl].trim_end_matches('\r').to_owned();
            buf.drain(..=nl);
            if line.is_empty() {
                if !data.is_empty() {
                    out.push((
                        id.take().unwrap(),
                        std::mem::take(&mut event),
                        serde_json::from_str(&data).unwrap(),
                    ));
                    data.clear();
                    if out.len() == max {
                        return out;
                    }
                }
            } else if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().parse().unwrap());
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }
    out
}

#[tokio::test]
async fn health_is_open_and_every_api_route_needs_a_key() {
    let s = Server::start().await;
    let (st, _, v) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (st, _, v) = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["checks"]["store"], "ok");

    for (method, path) in [
        (Method::GET, "/api/agents"),
        (Method::POST, "/api/agents"),
        (Method::GET, "/api/marketplace"),
        (Method::GET, "/api/installations"),
        (Method::GET, "/api/agents/tasks"),
        (Method::GET, "/api/audit"),
        (Method::POST, "/api/keys"),
    ] {
        let (st, h, v) = s.call(method.clone(), path, None, None).await;
        assert_problem(st, &h, &v, 401, "unauthorized");
        assert!(h.contains_key("www-authenticate"), "{path}");
    }
    let (st, h, v) = s
        .call(Method::GET, "/api/agents", Some("cc_not_a_key"), None)
        .await;
    assert_problem(st, &h, &v, 401, "unauthorized");

    // Each failed authentication is audited, with the client's address, never the key.
    let denied = s
        .platform
        .store()
        .list_audit(&capecontrol::store::AuditFilter {
            event_type: Some("auth.denied".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 8);
    assert!(
        denied
            .iter()
            .all(|e| e.ip_address == Some("127.0.0.1".parse().unwrap()))
    );
    assert_eq!(denied[0].user_agent.as_deref(), Some("http-test/1.0"));
    assert!(
        !serde_json::to_string(&denied)
            .unwrap()
            .contains("cc_not_a_key")
    );
}

#[tokio::test]
async fn readyz_is_503_when_a_check_fails() {
    let platform = Arc::new(Platform::builder().build().await.unwrap());
    let keys = ApiKeys::new(platform.store().clone());
    let app = Api::new(platform, keys)
        .ready_check(
            "docker",
            Arc::new(|| Box::pin(async { Err("engine down".to_owned()) })),
        )
        .router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let res = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(res.status(), 503);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["category"], "resource");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("docker: engine down")
    );
}

#[tokio::test]
async fn agents_versions_marketplace_and_installations() {
    let s = Server::start().await;
    let admin = s.admin.clone();
    let (st, v) = s
        .post(
            "/api/agents",
            &admin,
            json!({"name": "Finance Agent", "category": "domain-specific"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["slug"], "finance-agent");
    assert_eq!(v["status"], "draft");

    // Conflict, validation with pointers, unknown fields.
    let (st, h, v) = s
        .call(
            Method::POST,
            "/api/agents",
            Some(&admin),
            Some(json!({"name": "Finance Agent"})),
        )
        .await;
    assert_problem(st, &h, &v, 409, "conflict");
    let (st, h, v) = s
        .call(
            Method::POST,
            "/api/agents",
            Some(&admin),
            Some(json!({"name": " "})),
        )
        .await;
    assert_problem(st, &h, &v, 400, "validation");
    assert_eq!(v["errors"][0]["pointer"], "/name");
    let (st, h, v) = s
        .call(
            Method::POST,
            "/api/agents",
            Some(&admin),
            Some(json!({"name": "X", "colour": "red"})),
        )
        .await;
    assert_problem(st, &h, &v, 400, "validation");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
    let (st, h, v) = s
        .call(Method::GET, "/api/agents?limit=0", Some(&admin), None)
        .await;
    assert_problem(st, &h, &v, 400, "validation");
    assert_eq!(v["errors"][0]["pointer"], "/query/limit");
    let (st, h, v) = s
        .call(
            Method::GET,
            "/api/marketplace?offset=100001",
            Some(&admin),
            None,
        )
        .await;
    assert_problem(st, &h, &v, 400, "validation");
    assert_eq!(v["errors"][0]["pointer"], "/query/offset");
    let (st, h, v) = s
        .call(Method::GET, "/api/agents?bogus=1", Some(&admin), None)
        .await;
    assert_problem(st, &h, &v, 400, "validation");
    let (st, h, v) = s
        .call(Method::GET, "/api/agents/no-such-agent", Some(&admin), None)
        .await;
    assert_problem(st, &h, &v, 404, "not_found");

    // Get, update, list.
    let (st, v) = s.get("/api/agents/finance-agent", &admin).await;
    assert_eq!(
        (st, v["name"].as_str()),
        (StatusCode::OK, Some("Finance Agent"))
    );
    let (st, _, v) = s
        .call(
            Method::PATCH,
            "/api/agents/finance-agent",
            Some(&admin),
            Some(json!({"description": "Budgets"})),
        )
        .await;
    assert_eq!(
        (st, v["description"].as_str()),
        (StatusCode::OK, Some("Budgets"))
    );
    let (st, v) = s.get("/api/agents?status=draft&limit=10", &admin).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["total"], 1);
    assert_eq!(v["items"][0]["id"], "finance-agent");

    // Validate: every error with its pointer.
    let (st, v) = s
        .post(
            "/api/agents/finance-agent/validate",
            &admin,
            json!({"name": "", "version": "one"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["valid"], false);
    let pointers: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert!(pointers.contains(&"/version"), "{pointers:?}");
    let manifest = json!({
        "name": "Finance Agent", "version": "1.0.0", "description": "Budgets and payments",
        "category": "domain-specific", "tools": ["ingest"],
        "permissions": { "scopes": ["finance:read"], "required_roles": ["user"] },
    });
    let (_, v) = s
        .post(
            "/api/agents/finance-agent/validate",
            &admin,
            manifest.clone(),
        )
        .await;
    assert_eq!(v, json!({"valid": true, "errors": []}));

    // Versions: add, suggest, list, publish.
    let (st, v) = s
        .post(
            "/api/agents/finance-agent/versions",
            &admin,
            json!({"manifest": manifest, "changelog": "First"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["version"], "1.0.0");
    let mut next = manifest.clone();
    next["tools"] = json!(["ingest", "report"]);
    next.as_object_mut().unwrap().remove("version");
    let (st, v) = s
        .post("/api/agents/finance-agent/versions/suggest", &admin, next)
        .await;
    assert_eq!((st, v["version"].as_str()), (StatusCode::OK, Some("1.1.0")));
    let (st, v) = s.get("/api/agents/finance-agent/versions", &admin).await;
    assert_eq!((st, v["total"].as_u64()), (StatusCode::OK, Some(1)));
    let (st, v) = s
        .post(
            "/api/agents/finance-agent/versions/1.0.0/publish",
            &admin,
            json!(null),
        )
        .await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("published"))
    );
    let (st, h, v) = s
        .call(
            Method::POST,
            "/api/agents/finance-agent/versions/1.0.0/publish",
            Some(&admin),
            None,
        )
        .await;
    assert_problem(st, &h, &v, 409, "conflict");

    // Marketplace: browse with filters and search, categories, detail.
    let (st, v) = s
        .get(
            "/api/marketplace?category=domain-specific&q=budg&limit=5",
            &s.alice,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["total"], 1);
    assert_eq!(v["items"][0]["agent"]["id"], "finance-agent");
    let (_, v) = s.get("/api/marketplace?q=nothing-matches", &s.alice).await;
    assert_eq!(v["total"], 0);
    let (st, v) = s.get("/api/marketplace/categories", &s.alice).await;
    assert_eq!(st, StatusCode::OK);
    let cats = v["items"].as_array().unwrap();
    assert!(cats.contains(&json!({"category": "domain-specific", "count": 1})));
    assert!(cats.contains(&json!({"category": "utility", "count": 1})));
    let (st, v) = s.get("/api/marketplace/finance-agent", &s.alice).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["published"]["version"], "1.0.0");
    assert_eq!(v["versions"][0]["changelog"], "First");

    // Installations: install (a missing grant is a permission problem), list, settings,
    // upgrade, uninstall.
    let (st, h, v) = s
        .call(
            Method::POST,
            "/api/installations",
            Some(&s.alice),
            Some(json!({"agent": "finance-agent", "grant": []})),
        )
        .await;
    assert_problem(st, &h, &v, 403, "permission");
    assert_eq!(v["missing_scopes"], json!(["finance:read"]));
    let (st, v) = s
        .post(
            "/api/installations",
            &s.alice,
            json!({"agent": "finance-agent", "grant": ["finance:read"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["version"], "1.0.0");
    let (_, v) = s.get("/api/installations", &s.alice).await;
    assert_eq!(v["items"][0]["agent_id"], "finance-agent");
    let (_, v) = s.get("/api/installations", &s.bob).await;
    assert_eq!(v["items"], json!([]));
    let (st, _, v) = s
        .call(
            Method::PATCH,
            "/api/installations/finance-agent/settings",
            Some(&s.alice),
            Some(json!({"settings": {"currency": "EUR"}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = s
        .post(
            "/api/installations/finance-agent/upgrade",
            &s.alice,
            json!({}),
        )
        .await;
    assert_eq!(
        (st, v["version"].as_str()),
        (StatusCode::OK, Some("1.0.0")),
        "{v}"
    );
    let (st, _, _) = s
        .call(
            Method::DELETE,
            "/api/installations/finance-agent",
            Some(&s.alice),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, h, v) = s
        .call(
            Method::DELETE,
            "/api/installations/finance-agent",
            Some(&s.alice),
            None,
        )
        .await;
    assert_problem(st, &h, &v, 404, "not_found");

    // Archive the version, then the agent.
    let (st, v) = s
        .post(
            "/api/agents/finance-agent/versions/1.0.0/archive",
            &admin,
            json!(null),
        )
        .await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("archived")),
        "{v}"
    );
    // Archiving its only published version archived the agent; archiving it again conflicts.
    let (_, v) = s.get("/api/agents/finance-agent", &admin).await;
    assert_eq!(v["status"], "archived");
    let (st, h, v) = s
        .call(
            Method::POST,
            "/api/agents/finance-agent/archive",
            Some(&admin),
            None,
        )
        .await;
    assert_problem(st, &h, &v, 409, "conflict");
    let (st, v) = s
        .post("/api/agents", &admin, json!({"name": "Short Lived"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = s
        .post("/api/agents/short-lived/archive", &admin, json!(null))
        .await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("archived")),
        "{v}"
    );

    // The registry's audit rows carry the HTTP caller's address and user agent.
    let (st, v) = s
        .get("/api/audit?agent=finance-agent&limit=100", &admin)
        .await;
    assert_eq!(st, StatusCode::OK);
    let created = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "agent.created")
        .expect("agent.created");
    assert_eq!(created["ip_address"], "127.0.0.1");
    assert_eq!(created["user_agent"], "http-test/1.0");
}

#[tokio::test]
async fn tasks_submit_get_list_cancel_and_another_users_task_is_not_found() {
    let s = Server::start().await;
    s.install_alice().await;

    // Not installed for bob: forbidden; an unknown task name: not found.
    let (st, h, v) = s
        .call(
            Method::POST,
            "/api/agents/echo-agent/tasks",
            Some(&s.bob),
            Some(json!({"task": "echo", "input": {"text": "hi"}})),
        )
        .await;
    assert_problem(st, &h, &v, 403, "permission");
    let (st, h, v) = s
        .call(
            Method::POST,
            "/api/agents/echo-agent/tasks",
            Some(&s.alice),
            Some(json!({"task": "nope", "input": {}})),
        )
        .await;
    assert_problem(st, &h, &v, 404, "not_found");

    // Idempotency-Key: the same task twice.
    let submit = |key: &'static str| {
        s.http
            .post(format!("{}/api/agents/echo-agent/tasks", s.url))
            .bearer_auth(&s.alice)
            .header("idempotency-key", key)
            .json(&json!({"task": "echo", "input": {"text": "hello"}}))
            .send()
    };
    let a: Value = submit("k1").await.unwrap().json().await.unwrap();
    let b: Value = submit("k1").await.unwrap().json().await.unwrap();
    assert_eq!(a["task_id"], b["task_id"]);
    let id = a["task_id"].as_str().unwrap().to_owned();

    let done = s
        .platform
        .trusted()
        .wait(id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    let (st, v) = s.get(&format!("/api/agents/tasks/{id}"), &s.alice).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"], json!({"text": "hello"}));
    assert_eq!(v["attempts"], 1);
    assert!(v["steps"].is_array());

    // Bob: 404 for alice's task (get, cancel, events, audit), and each attempt is audited.
    for (method, path) in [
        (Method::GET, format!("/api/agents/tasks/{id}")),
        (Method::POST, format!("/api/agents/tasks/{id}/cancel")),
        (Method::GET, format!("/api/agents/tasks/{id}/events")),
        (Method::GET, format!("/api/audit?task={id}")),
    ] {
        let (st, h, v) = s.call(method, &path, Some(&s.bob), None).await;
        assert_problem(st, &h, &v, 404, "not_found");
    }
    let denied = s
        .platform
        .store()
        .list_audit(&capecontrol::store::AuditFilter {
            user_id: Some("bob".into()),
            event_type: Some(capecontrol::runtime::platform::ACCESS_DENIED.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        denied
            .iter()
            .filter(|e| e.task_id == Some(id.parse().unwrap()))
            .count(),
        4
    );
    // The admin sees it.
    let (st, _) = s.get(&format!("/api/agents/tasks/{id}"), &s.admin).await;
    assert_eq!(st, StatusCode::OK);
    let (st, h, v) = s
        .call(
            Method::GET,
            "/api/agents/tasks/not-a-uuid",
            Some(&s.alice),
            None,
        )
        .await;
    assert_problem(st, &h, &v, 400, "validation");
    assert_eq!(v["errors"][0]["pointer"], "/path/task_id");

    // List mine with filters.
    let (_, v) = s.get("/api/agents/tasks?status=completed", &s.alice).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (_, v) = s.get("/api/agents/tasks", &s.bob).await;
    assert_eq!(v["items"], json!([]));

    // Cancel a task that is not due yet; cancelling it again is a conflict.
    let (st, v) = s
        .post(
            "/api/agents/echo-agent/tasks",
            &s.alice,
            json!({"task": "echo", "input": {"text": "later"},
                   "run_at": "2999-01-01T00:00:00Z", "priority": 5}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let later = v["task_id"].as_str().unwrap().to_owned();
    let (st, v) = s
        .post(
            &format!("/api/agents/tasks/{later}/cancel"),
            &s.alice,
            json!(null),
        )
        .await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{v}"
    );
    let (st, h, v) = s
        .call(
            Method::POST,
            &format!("/api/agents/tasks/{later}/cancel"),
            Some(&s.alice),
            None,
        )
        .await;
    assert_problem(st, &h, &v, 409, "conflict");

    // The task's audit trail, paged with a cursor.
    let (st, v) = s
        .get(&format!("/api/audit?task={id}&limit=1"), &s.alice)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let mut cursor = v["next_cursor"].as_i64().expect("a next page");
    let mut seen = vec![v["items"][0]["event_type"].as_str().unwrap().to_owned()];
    loop {
        let (_, v) = s
            .get(
                &format!("/api/audit?task={id}&limit=1&cursor={cursor}"),
                &s.alice,
            )
            .await;
        seen.extend(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["event_type"].as_str().unwrap().to_owned()),
        );
        match v["next_cursor"].as_i64() {
            Some(c) => cursor = c,
            None => break,
        }
    }
    assert!(seen.contains(&"task.queued".to_owned()), "{seen:?}");
    assert!(seen.contains(&"task.completed".to_owned()), "{seen:?}");
}

#[tokio::test]
async fn the_event_stream_replays_follows_and_resumes_from_last_event_id() {
    let s = Server::start().await;
    s.install_alice().await;
    let id = s
        .submit(&s.alice, json!({"text": "stream", "steps": 6}))
        .await;
    let url = format!("{}/api/agents/tasks/{id}/events", s.url);

    // Read the first three events, then drop the connection.
    let res = s.http.get(&url).bearer_auth(&s.alice).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let first = read_sse(res, 3).await;
    assert_eq!(first.len(), 3);
    let last = first.last().unwrap().0;

    // Resume from the last id seen: the rest, to the terminal event, then the stream closes.
    let res = s
        .http
        .get(&url)
        .bearer_auth(&s.alice)
        .header("last-event-id", last.to_string())
        .send()
        .await
        .unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(20), read_sse(res, usize::MAX))
        .await
        .expect("the stream closes after the terminal event");
    let all: Vec<u64> = first.iter().chain(&rest).map(|e| e.0).collect();
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(all, expected, "no gap and no duplicate");
    let (_, kind, data) = rest.last().unwrap();
    assert_eq!(kind, "completed");
    assert_eq!(data["kind"]["output"], json!({"text": "stream"}));
    assert_eq!(data["seq"], *all.last().unwrap());

    // After the end, a full replay gives the same sequence; `?after=` works like the header.
    let res = s.http.get(&url).bearer_auth(&s.alice).send().await.unwrap();
    let replay: Vec<u64> = read_sse(res, usize::MAX)
        .await
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(replay, expected);
    let res = s
        .http
        .get(format!("{url}?after={}", all.len() - 1))
        .bearer_auth(&s.alice)
        .send()
        .await
        .unwrap();
    let tail = read_sse(res, usize::MAX).await;
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].1, "completed");

    let (st, h, v) = s
        .call(
            Method::GET,
            &format!("/api/agents/tasks/{id}/events?after=x"),
            Some(&s.alice),
            None,
        )
        .await;
    assert_problem(st, &h, &v, 400, "validation");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let config = HttpConfig {
        body_limit: 1024,
        ..HttpConfig::default()
    };
    let s = Server::start_with(RateLimitConfig::default(), config).await;
    let big = json!({"name": "x".repeat(2048)});
    let (st, h, v) = s
        .call(Method::POST, "/api/agents", Some(&s.admin), Some(big))
        .await;
    assert_problem(st, &h, &v, 413, "payload_too_large");
    // Without a Content-Length (chunked): the same.
    let chunks = futures_chunks(3000);
    let res = s
        .http
        .post(format!("{}/api/agents", s.url))
        .bearer_auth(&s.admin)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    // Just under the limit is fine.
    let (st, _) = s
        .post("/api/agents", &s.admin, json!({"name": "Small"}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
}

fn futures_chunks(
    n: usize,
) -> impl tokio_stream::Stream<Item = std::result::Result<Vec<u8>, std::io::Error>> {
    tokio_stream::iter((0..n / 100).map(|_| Ok(vec![b' '; 100])))
}

#[tokio::test]
async fn submits_over_the_rate_limit_are_429_with_retry_after() {
    let limits = RateLimitConfig {
        per_principal: Some(Rate::per_second(1).with_burst(1)),
        per_agent: None,
    };
    let s = Server::start_with(limits, HttpConfig::default()).await;
    s.install_alice().await;
    s.submit(&s.alice, json!({"text": "one"})).await;
    let (st, h, v) = s
        .call(
            Method::POST,
            "/api/agents/echo-agent/tasks",
            Some(&s.alice),
            Some(json!({"task": "echo", "input": {"text": "two"}})),
        )
        .await;
    assert_problem(st, &h, &v, 429, "rate_limit");
    let secs: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&secs), "{secs}");
    assert!(v["retry_after_ms"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn keys_are_created_and_revoked_by_admins_only() {
    let s = Server::start().await;
    let (st, h, v) = s
        .call(
            Method::POST,
            "/api/keys",
            Some(&s.alice),
            Some(json!({"user_id": "carol", "roles": ["user"], "name": "x"})),
        )
        .await;
    assert_problem(st, &h, &v, 403, "permission");
    let denied = s
        .platform
        .store()
        .list_audit(&capecontrol::store::AuditFilter {
            user_id: Some("alice".into()),
            event_type: Some("policy.denied".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);

    let (st, v) = s
        .post(
            "/api/keys",
            &s.admin,
            json!({"user_id": "carol", "roles": ["user"], "name": "laptop"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let key = v["key"].as_str().unwrap().to_owned();
    let key_id = v["id"].as_str().unwrap().to_owned();
    let (st, v) = s.get("/api/installations", &key).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Carol sees her own audit rows only: none about keys.
    let (_, v) = s.get("/api/audit", &key).await;
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["user_id"] == "carol")
    );

    let (st, h, v) = s
        .call(
            Method::DELETE,
            &format!("/api/keys/{key_id}"),
            Some(&key),
            None,
        )
        .await;
    assert_problem(st, &h, &v, 403, "permission");
    let (st, _, v) = s
        .call(
            Method::DELETE,
            &format!("/api/keys/{key_id}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(v["revoked_at"].is_string());
    let (st, h, v) = s
        .call(Method::GET, "/api/installations", Some(&key), None)
        .await;
    assert_problem(st, &h, &v, 401, "unauthorized");
    let (st, h, v) = s
        .call(
            Method::DELETE,
            "/api/keys/no-such-key",
            Some(&s.admin),
            None,
        )
        .await;
    assert_problem(st, &h, &v, 404, "not_found");

    // The key never reaches the audit trail.
    let all = s
        .platform
        .store()
        .list_audit(&Default::default())
        .await
        .unwrap();
    assert!(!serde_json::to_string(&all).unwrap().contains(&key));
    assert!(all.iter().any(|e| e.event_type == "api_key.revoked"));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let s = Server::start().await;
    let (st, h, v) = s
        .call(Method::GET, "/api/nothing", Some(&s.alice), None)
        .await;
    assert_problem(st, &h, &v, 404, "not_found");
    let (st, h, v) = s
        .call(Method::PUT, "/api/agents", Some(&s.alice), None)
        .await;
    assert_eq!(st, 405, "{v}");
    assert_eq!(h["content-type"], PROBLEM_JSON);
}

/// The checked-in OpenAPI document is the generated one (`UPDATE_OPENAPI=1` rewrites it), and
/// the server serves it.
#[tokio::test]
async fn the_openapi_document_is_checked_in_and_served() {
    let generated = capecontrol::http::openapi_json();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "schemas/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test --test http openapi`"
    );
    let doc: Value = serde_json::from_str(&generated).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for route in [
        "/api/agents",
        "/api/agents/{id}/versions/{ver}/publish",
        "/api/marketplace/categories",
        "/api/installations/{agent}/settings",
        "/api/agents/tasks/{task_id}/events",
        "/api/audit",
        "/api/keys/{id}",
        "/readyz",
    ] {
        assert!(doc["paths"][route].is_object(), "{route} is documented");
    }

    let s = Server::start().await;
    let (st, _, served) = s.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(served, doc);

    // The manifest schema the document's request bodies reference (relative to the document),
    // served beside it without a key and the same as the checked-in one.
    let body = &doc["paths"]["/api/agents/{id}/versions/suggest"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"]["$ref"];
    assert_eq!(body, "#/components/schemas/Manifest");
    assert_eq!(
        doc["components"]["schemas"]["Manifest"]["$ref"],
        "manifest.schema.json"
    );
    let (st, _, served) = s
        .call(Method::GET, "/api/manifest.schema.json", None, None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let checked_in: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/manifest.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(served, checked_in);
}

/// `POST …/rating`: the task's user rates a completed task 1–5 (400 at `/score` outside that
/// range; another user is told the task does not exist); `/metrics` then shows the version's
/// mean as `user_satisfaction_score` in the Prometheus text format, without authentication.
#[tokio::test]
async fn a_completed_task_is_rated_and_the_score_is_exported() {
    let s = Server::start().await;
    s.install_alice().await;
    let (st, v) = s
        .post(
            "/api/agents/echo-agent/tasks",
            &s.alice,
            json!({"task": "echo", "input": {"text": "rate me"}}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["task_id"].as_str().unwrap().to_owned();
    let done = s
        .platform
        .trusted()
        .wait(id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    let path = format!("/api/agents/tasks/{id}/rating");

    // The score is an `integer` from 1 to 5 as JSON Schema defines it: `6` and `4.5` are no
    // score (`5.0` is 5, below).
    for score in [json!(6), json!(4.5)] {
        let (st, h, v) = s
            .call(
                Method::POST,
                &path,
                Some(&s.alice),
                Some(json!({ "score": score })),
            )
            .await;
        assert_problem(st, &h, &v, 400, "validation");
        assert_eq!(v["errors"][0]["pointer"], "/score", "{score}: {v}");
    }
    let (st, h, v) = s
        .call(Method::POST, &path, Some(&s.bob), Some(json!({"score": 5})))
        .await;
    assert_problem(st, &h, &v, 404, "not_found");

    let (st, v) = s.post(&path, &s.alice, json!({"score": 4})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["score"], 4);
    assert_eq!(v["count"], 1);
    assert_eq!(v["mean"], 4.0);

    let r = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
    );
    let text = r.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("user_satisfaction_score{") && l.contains("agent=\"echo-agent\""))
        .unwrap_or_else(|| panic!("no user_satisfaction_score for echo-agent in:\n{text}"));
    assert!(line.ends_with(" 4"), "{line}");

    let (st, v) = s.post(&path, &s.alice, json!({"score": 5.0})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["score"], 5, "{v}");
    assert_eq!(v["previous"], 4, "{v}");
}

/// `GET /api/agents?owner=`: only the agents that user created; the native agent's owner is
/// the platform itself.
#[tokio::test]
async fn agents_are_listed_by_owner() {
    let s = Server::start().await;
    let (st, v) = s
        .post("/api/agents", &s.admin, json!({"name": "Owned Agent"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["owner"], "root");
    let slugs = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["slug"].as_str().unwrap().to_string())
            .collect()
    };
    let (st, all) = s.get("/api/agents", &s.alice).await;
    assert_eq!(st, StatusCode::OK, "{all}");
    assert_eq!(all["total"], 2, "{all}");
    let (st, root) = s.get("/api/agents?owner=root", &s.alice).await;
    assert_eq!(st, StatusCode::OK, "{root}");
    assert_eq!(slugs(&root), ["owned-agent"]);
    assert_eq!(root["total"], 1);
    let (_, system) = s.get("/api/agents?owner=system", &s.alice).await;
    assert_eq!(slugs(&system), ["echo-agent"]);
    let (_, nobody) = s.get("/api/agents?owner=alice", &s.alice).await;
    assert_eq!(nobody["items"], json!([]));
    assert_eq!(nobody["total"], 0);
}

/// Every success response of the OpenAPI document names a schema with properties (a record
/// or a page of records), not an untyped object; problem responses name `Problem`.
#[tokio::test]
async fn the_openapi_document_types_every_response() {
    let doc: Value = serde_json::from_str(&capecontrol::http::openapi_json()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let resolve = |schema: &Value| -> Value {
        match schema["$ref"].as_str() {
            Some(r) => schemas[r.trim_start_matches("#/components/schemas/")].clone(),
            None => schema.clone(),
        }
    };
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                for (media, content) in response["content"].as_object().into_iter().flatten() {
                    let schema = resolve(&content["schema"]);
                    let at = format!("{method} {path} {status} {media}");
                    if status.starts_with('2') && media == "application/json" {
                        // A bare list is typed when its items are.
                        let schema = match schema["type"].as_str() {
                            Some("array") => resolve(&schema["items"]),
                            _ => schema,
                        };
                        assert!(
                            schema["properties"].is_object(),
                            "{at}: an untyped response: {schema}"
                        );
                        checked += 1;
                    } else if media == PROBLEM_JSON {
                        assert_eq!(
                            content["schema"]["$ref"], "#/components/schemas/Problem",
                            "{at}"
                        );
                    }
                }
            }
        }
    }
    assert!(checked >= 25, "{checked} typed responses");
    for (record, field) in [
        ("AgentRecord", "slug"),
        ("VersionRecord", "manifest"),
        ("CatalogEntry", "version"),
        ("AgentDetail", "versions"),
        ("Installation", "granted_scopes"),
        ("TaskView", "status"),
    ] {
        assert!(
            schemas[record]["properties"][field].is_object(),
            "{record}.{field}: {}",
            schemas[record]
        );
    }
    let list = &doc["paths"]["/api/agents"]["get"];
    let page = resolve(&list["responses"]["200"]["content"]["application/json"]["schema"]);
    let item = resolve(&page["properties"]["items"]["items"]);
    assert_eq!(
        item["properties"], schemas["AgentRecord"]["properties"],
        "{page}"
    );
    assert!(
        list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "owner"),
        "the owner filter is documented"
    );
}

/// A child task names its parent (`parent_id`), and `?parent=` lists the tasks a task spawned,
/// only the caller's own.
#[tokio::test]
async fn a_child_task_names_its_parent_and_is_listed_under_it() {
    let store: Arc<dyn capecontrol::store::Store> = Arc::new(MemoryStore::new());
    let platform =
        capecontrol_testkit::children::node(store, capecontrol_testkit::runtime::fast_config())
            .await;
    let s = Server::serve(Arc::new(platform), HttpConfig::default()).await;
    let (st, v) = s
        .post(
            "/api/agents/family/tasks",
            &s.alice,
            json!({"task": "fan", "input": {"n": 3}}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let parent: uuid::Uuid = v["task_id"].as_str().unwrap().parse().unwrap();
    let done = s.platform.trusted().wait(parent).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed);

    let (st, v) = s
        .get(&format!("/api/agents/tasks?parent={parent}"), &s.alice)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{v}");
    assert!(items.iter().all(|t| t["parent_id"] == json!(parent)), "{v}");
    assert!(items.iter().all(|t| t["task"] == json!("square")), "{v}");
    let child = items[0]["id"].as_str().unwrap();
    let (_, one) = s.get(&format!("/api/agents/tasks/{child}"), &s.alice).await;
    assert_eq!(one["parent_id"], json!(parent));
    let (_, top) = s
        .get(&format!("/api/agents/tasks/{parent}"), &s.alice)
        .await;
    assert_eq!(
        top["parent_id"],
        Value::Null,
        "a submitted task has no parent"
    );

    // Bob sees none of alice's children.
    let (st, v) = s
        .get(&format!("/api/agents/tasks?parent={parent}"), &s.bob)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["items"], json!([]), "{v}");
}

/// The request constraints of the OpenAPI document are the server's: for each constrained
/// field, a value its schema accepts is not a validation error (400) and a value it rejects is.
/// The byte limits are checked with ASCII values (a JSON Schema counts characters).
#[tokio::test]
async fn the_openapi_request_constraints_are_the_servers() {
    let doc: Value = serde_json::from_str(&capecontrol::http::openapi_json()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let field = |record: &str, name: &str| schemas[record]["properties"][name].clone();
    let header = |path: &str, method: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no {name}"))["schema"]
            .clone()
    };
    let valid = |schema: &Value, value: &Value| {
        jsonschema::validator_for(schema)
            .unwrap_or_else(|e| panic!("{schema}: {e}"))
            .is_valid(value)
    };
    let blank_and_long = |max: usize| -> Vec<String> {
        [
            "", " ", "\t\n", "\u{3000}", "a", " a ", "é", "user.1", "a b",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(["x".repeat(max), "x".repeat(max + 1)])
        .collect()
    };
    let s = Server::start().await;
    s.install_alice().await;
    let mut checked = 0;

    // POST /api/events: `event` (a dotted lowercase name), `id` (1 to 128 bytes).
    let schema = field("Emit", "event");
    for name in [
        "payment.completed",
        "a.b",
        "a-b_c.d9.e",
        "a",
        "A.b",
        "a..b",
        "a.",
        ".a",
        "1a.b",
        "a.b c",
        "a.b\n",
        "a.b-",
        "a_.b_",
    ] {
        let (st, v) = s
            .post("/api/events", &s.admin, json!({"event": name}))
            .await;
        assert_eq!(
            st != 400,
            valid(&schema, &json!(name)),
            "event {name:?}: {st} {v}"
        );
        checked += 1;
    }
    let schema = field("Emit", "id");
    for id in blank_and_long(128) {
        let body = json!({"event": "schema.check", "id": id});
        let (st, v) = s.post("/api/events", &s.admin, body).await;
        assert_eq!(
            st != 400,
            valid(&schema, &json!(id)),
            "event id {id:?}: {st} {v}"
        );
        checked += 1;
    }

    // POST /api/agents: `name` (1 to 64 characters, not blank).
    let schema = field("CreateAgent", "name");
    for (i, name) in blank_and_long(64).into_iter().enumerate() {
        let body = json!({"name": name, "id": format!("schema-check-{i}")});
        let (st, v) = s.post("/api/agents", &s.admin, body).await;
        assert_eq!(
            st != 400,
            valid(&schema, &json!(name)),
            "name {name:?}: {st} {v}"
        );
        checked += 1;
    }

    // POST /api/keys: `user_id` and each role (1 to 255 bytes, not blank), `name` (≤ 255).
    let (user_id, name) = (field("CreateKey", "user_id"), field("CreateKey", "name"));
    let roles = field("CreateKey", "roles");
    for value in blank_and_long(255) {
        for (body, schema, what) in [
            (json!({"user_id": value}), &user_id, json!(value)),
            (
                json!({"user_id": "u", "roles": [value]}),
                &roles,
                json!([value]),
            ),
            (json!({"user_id": "u", "name": value}), &name, json!(value)),
        ] {
            let (st, v) = s.post("/api/keys", &s.admin, body.clone()).await;
            assert_eq!(st != 400, valid(schema, &what), "{body}: {st} {v}");
            checked += 1;
        }
    }

    // POST /api/agents/{id}/versions: `version` (strict SemVer) when the manifest has none.
    let schema = field("AddVersion", "version");
    for (i, version) in [
        "1.0.0",
        "0.1.0-rc.1+build.5",
        "1.2",
        "v1.2.3",
        "01.2.3",
        "1.2.3-",
        "1.2.3-01",
        "1.2.3+01",
        "1.2.3 ",
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("schema-version-{i}");
        let (st, v) = s
            .post("/api/agents", &s.admin, json!({"name": id, "id": id}))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let manifest = json!({"name": "Versioned", "description": "A version check."});
        let body = json!({"manifest": manifest, "version": version});
        let (st, v) = s
            .post(&format!("/api/agents/{id}/versions"), &s.admin, body)
            .await;
        assert_eq!(
            st != 400,
            valid(&schema, &json!(version)),
            "version {version:?}: {st} {v}"
        );
        checked += 1;
    }

    // POST /api/agents/{id}/versions: a manifest's integer fields are JSON Schema `integer`s
    // in the schema the document references, so `30.0` is one and `30.5` is not.
    let schema = capecontrol::validate::manifest_schema();
    let id = "schema-manifest-integers";
    let (st, v) = s
        .post("/api/agents", &s.admin, json!({"name": id, "id": id}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let mut patch = 0;
    for (field, value) in [
        ("timeout", json!(30.0)),
        ("timeout", json!(300.0)),
        ("timeout", json!(30.5)),
        ("timeout", json!(301.0)),
        ("timeout", json!("30")),
        ("retries", json!(2.0)),
        ("retries", json!(-1.0)),
        ("concurrent_tasks", json!(8.0)),
        ("ask_timeout", json!(60.0)),
        ("ask_timeout", json!(0.5)),
        ("task_timeout", json!(20.0)),
        ("task_timeout", json!(20.5)),
    ] {
        patch += 1;
        let mut manifest = json!({
            "name": "Integers", "description": "An integer check.",
            "version": format!("1.0.{patch}"), "tasks": [{"name": "t"}],
        });
        match field {
            "task_timeout" => manifest["tasks"][0]["timeout"] = value.clone(),
            _ => manifest["config"] = json!({ field: value }),
        }
        let (st, v) = s
            .post(
                &format!("/api/agents/{id}/versions"),
                &s.admin,
                json!({"manifest": manifest}),
            )
            .await;
        assert_eq!(
            st != 400,
            valid(schema, &manifest),
            "{field} {value}: {st} {v}"
        );
        checked += 1;
    }

    // POST /api/agents/{id}/tasks: the `Idempotency-Key` header.
    let path = "/api/agents/{id}/tasks";
    let schema = header(path, "post", "Idempotency-Key");
    for key in ["k", "a b", "a\tb", "~!", &"x".repeat(255), &"x".repeat(256)] {
        let st = s
            .http
            .post(format!("{}/api/agents/echo-agent/tasks", s.url))
            .bearer_auth(&s.alice)
            .header("idempotency-key", key)
            .json(&json!({"task": "echo", "input": {"text": "key"}}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(st != 400, valid(&schema, &json!(key)), "key {key:?}: {st}");
        checked += 1;
    }
    let st = s
        .http
        .post(format!("{}/api/agents/echo-agent/tasks", s.url))
        .bearer_auth(&s.alice)
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        )
        .json(&json!({"task": "echo", "input": {"text": "key"}}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, 400, "a non-ASCII key");
    assert!(!valid(&schema, &json!("café")));

    // POST /api/agents/{id}/tasks: `priority` is an `integer` (int32), which in JSON Schema
    // includes numbers such as `2.0`.
    let schema = field("Submit", "priority");
    for priority in [
        json!(2),
        json!(2.0),
        json!(-3.0),
        json!(2.5),
        json!(2_147_483_647),
        json!(2_147_483_648_i64),
        json!(2_147_483_648.0),
        json!(-2_147_483_649.0),
        json!(1e300),
        json!("2"),
    ] {
        let body = json!({"task": "echo", "input": {"text": "p"}, "priority": priority});
        let (st, v) = s.post("/api/agents/echo-agent/tasks", &s.alice, body).await;
        assert_eq!(
            st != 400,
            valid(&schema, &priority),
            "priority {priority}: {st} {v}"
        );
        if st == 400 {
            assert_eq!(v["errors"][0]["pointer"], "/priority", "{v}");
        }
        checked += 1;
    }

    // GET …/events: `Last-Event-ID` is an unsigned integer.
    let schema = header("/api/agents/tasks/{task_id}/events", "get", "Last-Event-ID");
    assert_eq!(schema["type"], "integer", "{schema}");
    assert_eq!(schema["minimum"], 0, "{schema}");
    assert!(checked > 80, "{checked} values checked");
}
