//! The web console over real HTTP (feature `console`): sessions, CSRF, security headers,
//! escaping, admin pages, and the same access checks as the JSON API. The browser tests
//! (scripts/console-test.sh) drive the same pages in headless Chromium.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capecontrol::http::{Api, ApiKeys};
use capecontrol::prelude::*;
use capecontrol::store::AuditFilter;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use reqwest::{Client, Response, StatusCode, redirect};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Echoes its text after a few short steps.
#[derive(Agent, Default)]
#[agent(
    name = "Echo Agent",
    version = "1.0.0",
    category = "utility",
    placement = "workflow",
    scopes("echo:run"),
    roles("user"),
    timeout = 30,
    retries = 0,
    ui(settings = EchoSettings)
)]
struct EchoAgent;

/// The echo agent's settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct EchoSettings {
    /// A prefix.
    #[serde(default)]
    prefix: Option<String>,
    /// A token (secret).
    #[schemars(extend("secret" = true))]
    #[serde(default)]
    token: Option<String>,
}

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

/// Another agent, in another category, for the marketplace's filters.
#[derive(Agent, Default)]
#[agent(
    name = "Ledger Agent",
    version = "1.0.0",
    category = "domain-specific",
    placement = "dashboard",
    scopes("ledger:read"),
    roles("user"),
    triggers(events("ledger.closed"))
)]
struct LedgerAgent;

#[agent_impl]
impl LedgerAgent {
    /// Nothing.
    #[task]
    async fn noop(&self, _cx: &TaskContext, _req: serde_json::Value) -> Result<u32, Error> {
        Ok(0)
    }
}

struct Server {
    url: String,
    http: Client,
    admin: String,
    alice: String,
    bob: String,
    keys: ApiKeys,
    platform: Arc<Platform>,
}

/// A signed-in browser: its session cookie and CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

fn cookie_of(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(String::from)
}

/// The value of the first `name="csrf" value="…"` of a page.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in {html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

impl Server {
    async fn start() -> Self {
        let platform = Arc::new(
            Platform::builder()
                .agent(EchoAgent)
                .agent(LedgerAgent)
                .build()
                .await
                .unwrap(),
        );
        let keys = ApiKeys::new(platform.store().clone());
        let root = Principal::new("test-setup");
        let mut made = Vec::new();
        for (user, roles) in [
            ("root", vec!["admin", "user"]),
            ("alice", vec!["user"]),
            ("bob", vec!["user"]),
        ] {
            let roles: Vec<String> = roles.into_iter().map(String::from).collect();
            made.push(keys.create(&root, user, &roles, "test").await.unwrap().key);
        }
        let app = Api::new(platform.clone(), keys.clone()).router();
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
        let bob = made.pop().unwrap();
        let alice = made.pop().unwrap();
        let admin = made.pop().unwrap();
        Self {
            url: format!("http://{addr}"),
            http: Client::builder()
                .redirect(redirect::Policy::none())
                .build()
                .unwrap(),
            admin,
            alice,
            bob,
            keys,
            platform,
        }
    }

    async fn get(&self, browser: Option<&Browser>, path: &str) -> Response {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(b) = browser {
            req = req.header("cookie", &b.cookie);
        }
        req.send().await.unwrap()
    }

    async fn post(&self, browser: &Browser, path: &str, form: &[(&str, &str)]) -> Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header("cookie", &browser.cookie)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    async fn sign_in(&self, key: &str) -> Browser {
        let form = self.get(None, "/console/sign-in").await;
        let pre = cookie_of(&form, "cc_console_signin").unwrap();
        let pre = pre.split(';').next().unwrap().to_owned();
        let csrf = csrf_of(&form.text().await.unwrap());
        let signed = self
            .http
            .post(format!("{}/console/sign-in", self.url))
            .header("cookie", &pre)
            .form(&[("csrf", csrf.as_str()), ("key", key)])
            .send()
            .await
            .unwrap();
        assert_eq!(signed.status(), StatusCode::SEE_OTHER);
        let session = cookie_of(&signed, "cc_console").expect("a session cookie");
        let cookie = session.split(';').next().unwrap().to_owned();
        let page = self
            .get(
                Some(&Browser {
                    cookie: cookie.clone(),
                    csrf: String::new(),
                }),
                "/console/marketplace",
            )
            .await;
        assert_eq!(page.status(), StatusCode::OK);
        let csrf = csrf_of(&page.text().await.unwrap());
        Browser { cookie, csrf }
    }

    async fn audit_types(&self, user: Option<&str>) -> Vec<(String, serde_json::Value)> {
        self.platform
            .store()
            .list_audit(&AuditFilter {
                user_id: user.map(String::from),
                ..AuditFilter::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.event_type, e.payload))
            .collect()
    }
}

#[tokio::test]
async fn signing_in_with_a_key_gives_an_http_only_same_site_session_cookie() {
    let s = Server::start().await;
    // Without a session every page sends the browser to the sign-in form.
    let r = s.get(None, "/console/marketplace").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/console/sign-in");

    // A wrong key is refused (401) and audited, without the key.
    let form = s.get(None, "/console/sign-in").await;
    let pre = cookie_of(&form, "cc_console_signin").unwrap();
    assert!(
        pre.contains("HttpOnly") && pre.contains("SameSite=Strict"),
        "{pre}"
    );
    let pre = pre.split(';').next().unwrap().to_owned();
    let csrf = csrf_of(&form.text().await.unwrap());
    let wrong = s
        .http
        .post(format!("{}/console/sign-in", s.url))
        .header("cookie", &pre)
        .form(&[("csrf", csrf.as_str()), ("key", "cc_nobody_0000")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie_of(&wrong, "cc_console").is_none());
    let audit = s.audit_types(None).await;
    let denied: Vec<_> = audit.iter().filter(|(t, _)| t == "auth.denied").collect();
    assert_eq!(denied.len(), 1, "{audit:?}");
    assert!(!denied[0].1.to_string().contains("cc_nobody_0000"));

    // The right key: a session cookie, HTTP-only and same-site, scoped to the console.
    let signed = s
        .http
        .post(format!("{}/console/sign-in", s.url))
        .header("cookie", &pre)
        .form(&[("csrf", csrf.as_str()), ("key", s.alice.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let session = cookie_of(&signed, "cc_console").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(!session.contains(&s.alice), "the cookie is not the key");
    let b = Browser {
        cookie: session.split(';').next().unwrap().to_owned(),
        csrf: String::new(),
    };
    let page = s.get(Some(&b), "/console/marketplace").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Echo Agent") && html.contains("Ledger Agent"));
    assert!(html.contains("Signed in as <strong id=\"who\">alice</strong>"));

    // Signing out ends the session.
    let b = Browser {
        csrf: csrf_of(&html),
        ..b
    };
    let out = s
        .post(&b, "/console/sign-out", &[("csrf", b.csrf.as_str())])
        .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = s.get(Some(&b), "/console/marketplace").await;
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_revoked_key_ends_its_sessions() {
    let s = Server::start().await;
    let b = s.sign_in(&s.bob).await;
    let id = s.bob.split('_').nth(1).unwrap().to_owned();
    s.keys.revoke(&Principal::new("root"), &id).await.unwrap();
    let r = s.get(Some(&b), "/console/tasks").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/console/sign-in");
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused_and_audited() {
    let s = Server::start().await;
    let b = s.sign_in(&s.alice).await;
    let install = "/console/agents/echo-agent/install";
    for form in [
        vec![("grant", "echo:run")],
        vec![("grant", "echo:run"), ("csrf", "0000")],
        vec![("grant", "echo:run"), ("csrf", "")],
    ] {
        let r = s.post(&b, install, &form).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{form:?}");
        assert!(r.text().await.unwrap().contains("CSRF token"));
    }
    let registry = s.platform.registry();
    assert!(registry.installations("alice").await.unwrap().is_empty());
    let audit = s.audit_types(Some("alice")).await;
    let refused = audit
        .iter()
        .filter(|(t, p)| t == "policy.denied" && p["reason"] == "CSRF token missing or wrong")
        .count();
    assert_eq!(refused, 3, "{audit:?}");

    // The same form with the session's token installs the agent.
    let ok = s
        .post(
            &b,
            install,
            &[("grant", "echo:run"), ("csrf", b.csrf.as_str())],
        )
        .await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(registry.installations("alice").await.unwrap().len(), 1);

    // Another session's token is not this session's.
    let other = s.sign_in(&s.bob).await;
    let r = s
        .post(
            &other,
            "/console/agents/echo-agent/install",
            &[("grant", "echo:run"), ("csrf", b.csrf.as_str())],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The sign-in form needs its own token too.
    let r = s
        .http
        .post(format!("{}/console/sign-in", s.url))
        .form(&[("key", s.alice.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(cookie_of(&r, "cc_console").is_none());
}

#[tokio::test]
async fn every_page_sends_a_strict_policy_and_no_store() {
    let s = Server::start().await;
    let b = s.sign_in(&s.admin).await;
    for path in [
        "/console/sign-in",
        "/console/marketplace",
        "/console/agents/echo-agent",
        "/console/tasks",
        "/console/audit",
        "/console/admin/keys",
        "/console/nowhere",
    ] {
        let r = s.get(Some(&b), path).await;
        let h = r.headers();
        let csp = h[CONTENT_SECURITY_POLICY].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h[CACHE_CONTROL], "no-store", "{path}");
        let html = r.text().await.unwrap();
        assert!(
            !html.contains("<script>") && !html.contains("style="),
            "{path}"
        );
    }
    let css = s.get(None, "/console/static/console.css").await;
    assert_eq!(css.status(), StatusCode::OK);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let js = s.get(None, "/console/static/task.js").await;
    assert!(js.text().await.unwrap().contains("EventSource"));
}

#[tokio::test]
async fn values_are_html_escaped_and_secrets_are_never_shown() {
    let s = Server::start().await;
    let b = s.sign_in(&s.alice).await;
    let csrf = b.csrf.as_str();
    let r = s
        .post(
            &b,
            "/console/agents/echo-agent/install",
            &[
                ("csrf", csrf),
                ("grant", "echo:run"),
                ("settings.prefix", "<b>hi</b>"),
                ("settings.token", "tok-s3cret-value"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = s.get(Some(&b), "/console/installations").await;
    let html = page.text().await.unwrap();
    assert!(!html.contains("tok-s3cret-value"), "{html}");
    assert!(html.contains("never shown"));
    assert!(
        html.contains("&#60;b&#62;hi&#60;/b&#62;") && !html.contains("<b>hi</b>"),
        "{html}"
    );
    // The settings form never shows the secret either.
    let agent = s.get(Some(&b), "/console/agents/echo-agent").await;
    let html = agent.text().await.unwrap();
    assert!(
        html.contains("type=\"password\" id=\"settings.token\""),
        "{html}"
    );
    assert!(!html.contains("tok-s3cret-value"));

    let text = "<script>alert(1)</script>";
    let submitted = s
        .post(
            &b,
            "/console/agents/echo-agent/tasks/echo",
            &[("csrf", csrf), ("input.text", text), ("input.steps", "2")],
        )
        .await;
    assert_eq!(submitted.status(), StatusCode::SEE_OTHER);
    let location = submitted.headers()[LOCATION].to_str().unwrap().to_owned();
    let id = location.rsplit('/').next().unwrap().to_owned();
    let task: uuid::Uuid = id.parse().unwrap();
    let done = tokio::time::timeout(
        Duration::from_secs(10),
        s.platform.wait(task, &Principal::new("alice")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    let html = s.get(Some(&b), &location).await.text().await.unwrap();
    assert!(!html.contains(text), "{html}");
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{html}"
    );
    assert!(html.contains("step-1"), "steps are listed: {html}");

    // A value of the wrong type names its field.
    let bad = s
        .post(
            &b,
            "/console/agents/echo-agent/tasks/echo",
            &[("csrf", csrf), ("input.text", "x"), ("input.steps", "many")],
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("/input/steps"));
}

#[tokio::test]
async fn the_live_view_streams_the_task_events_to_its_owner_only() {
    let s = Server::start().await;
    let alice = s.sign_in(&s.alice).await;
    let bob = s.sign_in(&s.bob).await;
    let ok = s
        .post(
            &alice,
            "/console/agents/echo-agent/install",
            &[("grant", "echo:run"), ("csrf", alice.csrf.as_str())],
        )
        .await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let submitted = s
        .post(
            &alice,
            "/console/agents/echo-agent/tasks/echo",
            &[
                ("csrf", alice.csrf.as_str()),
                ("input.text", "hi"),
                ("input.steps", "2"),
            ],
        )
        .await;
    let location = submitted.headers()[LOCATION].to_str().unwrap().to_owned();
    let events = s.get(Some(&alice), &format!("{location}/events")).await;
    assert_eq!(events.status(), StatusCode::OK);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = tokio::time::timeout(Duration::from_secs(10), events.text())
        .await
        .unwrap()
        .unwrap();
    for kind in ["event: queued", "event: step_started", "event: completed"] {
        assert!(body.contains(kind), "{body}");
    }
    // Bob is told the task does not exist, on the page and on the stream.
    assert_eq!(
        s.get(Some(&bob), &location).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get(Some(&bob), &format!("{location}/events"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // And cannot cancel it.
    let r = s
        .post(
            &bob,
            &format!("{location}/cancel"),
            &[("csrf", bob.csrf.as_str())],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_triggered_task_s_page_says_what_started_it() {
    let s = Server::start().await;
    let alice = s.sign_in(&s.alice).await;
    for (agent, grant) in [("ledger-agent", "ledger:read"), ("echo-agent", "echo:run")] {
        let r = s
            .post(
                &alice,
                &format!("/console/agents/{agent}/install"),
                &[("grant", grant), ("csrf", alice.csrf.as_str())],
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{agent}");
    }
    let host = Principal::new("host").with_roles(["admin"]);
    let fired = s
        .platform
        .emit(
            capecontrol::runtime::Event::new("ledger.closed", serde_json::json!({}))
                .with_id("close-<7>"),
            &host,
        )
        .await
        .unwrap();
    assert_eq!(fired.len(), 1);
    let task = *fired[0].task.as_ref().unwrap();
    let page = s.get(Some(&alice), &format!("/console/tasks/{task}")).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(
            "<dt>Started by</dt><dd id=\"task-trigger\">event ledger.closed (id close-&#60;7&#62;)</dd>"
        ),
        "the trigger is shown, escaped: {html}"
    );
    // Its event stream carries the trigger in the `queued` event.
    let events = s
        .get(Some(&alice), &format!("/console/tasks/{task}/events"))
        .await;
    // (The task completes at once: the stream ends after its `completed` event.)
    let text = tokio::time::timeout(Duration::from_secs(10), events.text())
        .await
        .unwrap()
        .unwrap();
    assert!(
        text.contains("event: queued")
            && text.contains(
                r#""trigger":{"kind":"event","event":"ledger.closed","event_id":"close-<7>"}"#
            ),
        "{text}"
    );

    // A task submitted by hand says nothing of the kind.
    let submitted = s
        .post(
            &alice,
            "/console/agents/echo-agent/tasks/echo",
            &[("csrf", alice.csrf.as_str()), ("input.text", "hi")],
        )
        .await;
    let location = submitted.headers()[LOCATION].to_str().unwrap().to_owned();
    let html = s.get(Some(&alice), &location).await.text().await.unwrap();
    assert!(!html.contains("Started by"), "{html}");
}

#[tokio::test]
async fn the_marketplace_filters_by_category_placement_and_text() {
    let s = Server::start().await;
    let b = s.sign_in(&s.alice).await;
    let html = |path: &'static str| {
        let s = &s;
        let b = &b;
        async move { s.get(Some(b), path).await.text().await.unwrap() }
    };
    let utility = html("/console/marketplace?category=utility").await;
    assert!(utility.contains("Echo Agent") && !utility.contains("Ledger Agent"));
    let dashboard = html("/console/marketplace?placement=dashboard").await;
    assert!(dashboard.contains("Ledger Agent") && !dashboard.contains("Echo Agent"));
    let text = html("/console/marketplace?q=ledger").await;
    assert!(text.contains("Ledger Agent") && !text.contains("Echo Agent"));
    let bad = s.get(Some(&b), "/console/marketplace?offset=x").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("/query/offset"));
    let deep = s.get(Some(&b), "/console/marketplace?offset=100001").await;
    assert_eq!(deep.status(), StatusCode::BAD_REQUEST);
    let edge = s.get(Some(&b), "/console/marketplace?offset=100000").await;
    assert_eq!(edge.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_non_admin_cannot_reach_admin_pages() {
    let s = Server::start().await;
    let alice = s.sign_in(&s.alice).await;
    for path in ["/console/admin/keys", "/console/admin/agents"] {
        let r = s.get(Some(&alice), path).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let html = s
        .get(Some(&alice), "/console/marketplace")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !html.contains("/console/admin/"),
        "no admin links for a user"
    );
    let r = s
        .post(
            &alice,
            "/console/admin/keys",
            &[
                ("csrf", alice.csrf.as_str()),
                ("user_id", "mallory"),
                ("roles", "admin"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = s
        .post(
            &alice,
            "/console/admin/agents/echo-agent/archive",
            &[("csrf", alice.csrf.as_str())],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        s.platform
            .store()
            .list_keys(Some("mallory"))
            .await
            .unwrap()
            .is_empty()
    );
    let audit = s.audit_types(Some("alice")).await;
    let denied = audit
        .iter()
        .filter(|(t, p)| t == "policy.denied" && p["reason"] == "role")
        .count();
    assert_eq!(denied, 4, "{audit:?}");

    // An admin manages keys (the new key shown once) and agents.
    let admin = s.sign_in(&s.admin).await;
    let created = s
        .post(
            &admin,
            "/console/admin/keys",
            &[
                ("csrf", admin.csrf.as_str()),
                ("user_id", "carol"),
                ("roles", "user"),
                ("name", "x"),
            ],
        )
        .await;
    assert_eq!(created.status(), StatusCode::OK);
    assert_eq!(created.headers()[CACHE_CONTROL], "no-store");
    let html = created.text().await.unwrap();
    assert!(html.contains("id=\"created-key\">cc_"), "{html}");
    assert_eq!(
        s.platform
            .store()
            .list_keys(Some("carol"))
            .await
            .unwrap()
            .len(),
        1
    );
    let agents = s.get(Some(&admin), "/console/admin/agents").await;
    assert_eq!(agents.status(), StatusCode::OK);
    let r = s
        .post(
            &admin,
            "/console/admin/agents/ledger-agent/versions/1.0.0/archive",
            &[("csrf", admin.csrf.as_str())],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let market = s
        .get(Some(&alice), "/console/marketplace")
        .await
        .text()
        .await
        .unwrap();
    assert!(!market.contains("Ledger Agent"), "archived: withdrawn");
}

#[tokio::test]
async fn a_form_is_read_up_to_the_body_limit() {
    let s = Server::start().await;
    let b = s.sign_in(&s.alice).await;
    let limit = capecontrol::http::HttpConfig::default().body_limit;
    let head = format!("csrf={}&grant=echo%3Arun&filler=", b.csrf);
    let post = |len: usize| {
        let body = format!("{head}{}", "x".repeat(len - head.len()));
        assert_eq!(body.len(), len);
        s.http
            .post(format!("{}/console/agents/echo-agent/install", s.url))
            .header("cookie", &b.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let over = post(limit + 1).await.unwrap();
    assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        s.platform
            .registry()
            .installations("alice")
            .await
            .unwrap()
            .is_empty()
    );
    let at = post(limit).await.unwrap();
    assert_eq!(at.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        s.platform
            .registry()
            .installations("alice")
            .await
            .unwrap()
            .len(),
        1
    );
}
