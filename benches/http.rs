//! The HTTP API on one node against a bare axum handler doing nothing, in the same run:
//!
//! 1. **submits per second**: `POST /api/agents/{id}/tasks` (bearer key lookup, principal,
//!    body limit and JSON, gateway with its middleware, the in-memory store's enqueue, the
//!    answer) from `CONCURRENCY` keep-alive clients, against `POST /nothing` answering `{}` to
//!    the same request;
//! 2. **concurrent SSE watchers**: `WATCHERS` clients each holding
//!    `GET /api/agents/tasks/{id}/events` open on a queued task (each has received the replayed
//!    `queued` event), against a bare SSE handler that sends one event and then nothing. Reported:
//!    the time to open them all, the resident memory per watcher (client and server are in this
//!    process, so both sides are counted, for both variants alike), and the latency of
//!    `/healthz` while they are held.
//!
//! The platform runs without workers (the submit path alone is measured, and the watched task
//! stays queued). `cargo bench --bench http`; `BENCH_SUBMITS`, `BENCH_CONCURRENCY`,
//! `BENCH_WATCHERS` change the sizes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use capecontrol::agent::{AgentBase, TaskContext, ToolContext};
use capecontrol::error::{Error, Result};
use capecontrol::http::{Api, ApiKeys};
use capecontrol::manifest::Manifest;
use capecontrol::policy::Principal;
use capecontrol::runtime::Platform;
use capecontrol::store::Store;
use capecontrol::store::memory::MemoryStore;
use futures::StreamExt;
use serde_json::{Value, json};

use capecontrol_testkit::runtime::{install_in, unlimited_rates};
use tokio::sync::Semaphore;

struct Nop;

#[async_trait]
impl AgentBase for Nop {
    fn manifest(&self) -> Manifest {
        serde_json::from_value(json!({
            "name": "Nop", "version": "1.0.0", "description": "does nothing",
            "config": {"concurrent_tasks": 1000}
        }))
        .expect("manifest")
    }
    async fn run_task(&self, _name: &str, _input: Value, _cx: &TaskContext) -> Result<Value> {
        Ok(Value::Null)
    }
    async fn call_tool(&self, name: &str, _input: Value, _cx: &ToolContext) -> Result<Value> {
        Err(Error::not_found("tool", name))
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    format!("http://{addr}")
}

/// The API on a platform without workers, the `nop` agent installed for `bench`; its key.
async fn api() -> (String, String) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let platform = Platform::builder()
        .store(store.clone())
        .rate_limits(unlimited_rates())
        .agent(Nop)
        .without_workers()
        .build()
        .await
        .expect("platform");
    install_in(store.as_ref(), "nop", "bench", &[]).await;
    let keys = ApiKeys::new(store);
    let admin = Principal::new("bench-admin").with_roles(["admin"]);
    let key = keys
        .create(&admin, "bench", &["user".into()], "bench")
        .await
        .expect("key")
        .key;
    let url = serve(Api::new(Arc::new(platform), keys).router()).await;
    (url, key)
}

/// The baseline: handlers that do nothing.
async fn bare() -> String {
    let app = Router::new()
        .route("/nothing", post(|| async { axum::Json(json!({})) }))
        .route(
            "/events",
            get(|| async {
                let once = futures::stream::once(async {
                    Ok::<_, std::convert::Infallible>(Event::default().id("1").data("{}"))
                });
                Sse::new(once.chain(futures::stream::pending()))
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    serve(app).await
}

/// `total` POSTs of the same submit body from `concurrency` clients; requests per second.
async fn submits(url: &str, key: &str, total: usize, concurrency: usize) -> f64 {
    let client = reqwest::Client::new();
    let body = json!({"task": "run", "input": {"n": 1}});
    let per = total / concurrency;
    let start = Instant::now();
    let mut joins = Vec::new();
    for _ in 0..concurrency {
        let (client, url, key, body) = (
            client.clone(),
            url.to_string(),
            key.to_string(),
            body.clone(),
        );
        joins.push(tokio::spawn(async move {
            for _ in 0..per {
                let r = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .expect("send");
                assert!(r.status().is_success(), "{}", r.status());
                r.bytes().await.expect("body");
            }
        }));
    }
    for j in joins {
        j.await.expect("client");
    }
    (per * concurrency) as f64 / start.elapsed().as_secs_f64()
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Held {
    open: Duration,
    kib_per_watcher: f64,
    healthz: Duration,
}

/// Opens `n` event streams on `url` (each until its first event), holds them, measures.
async fn watchers(url: &str, key: &str, health: &str, n: usize) -> Held {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let before = rss_kib();
    let gate = Arc::new(Semaphore::new(256));
    let start = Instant::now();
    let mut joins = Vec::with_capacity(n);
    for _ in 0..n {
        let (client, url, key, gate) = (
            client.clone(),
            url.to_string(),
            key.to_string(),
            gate.clone(),
        );
        joins.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("gate");
            let r = client
                .get(&url)
                .bearer_auth(&key)
                .header("accept", "text/event-stream")
                .send()
                .await
                .expect("open the stream");
            assert!(r.status().is_success(), "{}", r.status());
            let mut stream = r.bytes_stream();
            let mut seen = Vec::new();
            while !seen.windows(2).any(|w| w == b"\n\n") {
                let chunk = stream.next().await.expect("an event").expect("bytes");
                seen.extend_from_slice(&chunk);
            }
            drop(permit);
            stream
        }));
    }
    let mut held = Vec::with_capacity(n);
    for j in joins {
        held.push(j.await.expect("watcher"));
    }
    let open = start.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kib();
    let t = Instant::now();
    for _ in 0..20 {
        reqwest::get(health)
            .await
            .expect("healthz")
            .bytes()
            .await
            .expect("body");
    }
    let healthz = t.elapsed() / 20;
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Held {
        open,
        kib_per_watcher: after.saturating_sub(before) as f64 / n as f64,
        healthz,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let total = env("BENCH_SUBMITS", 20_000);
        let concurrency = env("BENCH_CONCURRENCY", 32).max(1);
        let n_watchers = env("BENCH_WATCHERS", 4_000);
        let (api, key) = api().await;
        let bare = bare().await;
        let submit_url = format!("{api}/api/agents/nop/tasks");
        let nothing_url = format!("{bare}/nothing");

        // Warm both up, then measure each twice, alternating.
        submits(&submit_url, &key, 1_000, concurrency).await;
        submits(&nothing_url, &key, 1_000, concurrency).await;
        let mut api_rates = Vec::new();
        let mut bare_rates = Vec::new();
        for _ in 0..2 {
            api_rates.push(submits(&submit_url, &key, total, concurrency).await);
            bare_rates.push(submits(&nothing_url, &key, total, concurrency).await);
        }
        let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let (api_rate, bare_rate) = (best(&api_rates), best(&bare_rates));
        println!(
            "submits over HTTP ({total} requests, {concurrency} clients, best of 2): \
             capecontrol {api_rate:.0}/s, bare axum handler {bare_rate:.0}/s ({:.1}x)",
            bare_rate / api_rate
        );

        // One queued task (no workers: it stays queued), watched by many.
        let submitted: Value = reqwest::Client::new()
            .post(&submit_url)
            .bearer_auth(&key)
            .json(&json!({"task": "run", "input": {}}))
            .send()
            .await
            .expect("submit")
            .json()
            .await
            .expect("json");
        let task = submitted["task_id"].as_str().expect("task id").to_string();
        let events = format!("{api}/api/agents/tasks/{task}/events");
        let a = watchers(&events, &key, &format!("{api}/healthz"), n_watchers).await;
        let b = watchers(
            &format!("{bare}/events"),
            &key,
            &format!("{bare}/healthz"),
            n_watchers,
        )
        .await;
        println!(
            "SSE watchers held ({n_watchers} on one node): capecontrol opened in {:.2?} \
             ({:.1} KiB each, /healthz {:.2?} meanwhile); bare axum SSE handler opened in {:.2?} \
             ({:.1} KiB each, /healthz {:.2?})",
            a.open, a.kib_per_watcher, a.healthz, b.open, b.kib_per_watcher, b.healthz
        );
    });
}
