//! Observability end to end: the platform under a steady synthetic load, its metrics served at
//! `/metrics` for Prometheus (and so for the Grafana dashboard in `deploy/grafana/`).
//!
//! ```text
//! cargo run --example observability                       # serves http://127.0.0.1:9898/metrics
//! CAPECONTROL_METRICS_ADDR=0.0.0.0:9898 cargo run --example observability -- 300   # 300 s
//! ```
//!
//! Two agent versions take tasks from five users: `support-bot@2.0.0` answers in 20-400 ms and
//! fails about one task in twenty-five; `report-builder@1.4.0` takes 0.2-3 s (a long tail) and
//! fails one in ten. Users rate most completed tasks (the report builder rates lower), browse the
//! marketplace, and the load comes in waves so the queue fills and drains. See
//! `docs/observability.md` for Prometheus and Grafana.

use std::time::Duration;

use capecontrol::observability::{self, Metrics};
use capecontrol::prelude::*;
use capecontrol::registry::InstallRequest;
use capecontrol::runtime::PlatformConfig;
use capecontrol::store::CatalogQuery;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Answers support questions.
#[derive(Agent, Default)]
#[agent(
    name = "Support Bot",
    version = "2.0.0",
    retries = 0,
    concurrent_tasks = 8
)]
struct SupportBot;

/// A question.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Question {
    /// A number standing for the question: decides latency and outcome.
    n: u64,
}

/// An answer.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Answer {
    /// The text.
    text: String,
}

#[agent_impl]
impl SupportBot {
    /// Answer in two steps.
    #[task]
    async fn answer(&self, cx: &TaskContext, q: Question) -> Result<Answer, Error> {
        let n = q.n;
        cx.step("retrieve", async move {
            tokio::time::sleep(Duration::from_millis(20 + mix(n) % 200)).await;
            Ok::<_, Error>(())
        })
        .await?;
        cx.step("compose", async move {
            tokio::time::sleep(Duration::from_millis(mix(n + 1) % 200)).await;
            if mix(n + 2).is_multiple_of(25) {
                return Err(Error::agent("the model returned nothing"));
            }
            Ok(Answer {
                text: format!("answer {n}"),
            })
        })
        .await
    }
}

/// Builds reports.
#[derive(Agent, Default)]
#[agent(
    name = "Report Builder",
    version = "1.4.0",
    retries = 0,
    concurrent_tasks = 4
)]
struct ReportBuilder;

#[agent_impl]
impl ReportBuilder {
    /// Build a report.
    #[task]
    async fn build(&self, cx: &TaskContext, q: Question) -> Result<Answer, Error> {
        let n = q.n;
        cx.step("gather", async move {
            // A long tail: mostly 0.2-1 s, sometimes up to 3 s.
            let ms = 200
                + mix(n) % 800
                + if mix(n + 3).is_multiple_of(8) {
                    2000
                } else {
                    0
                };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if mix(n + 4).is_multiple_of(10) {
                return Err(Error::resource("the data source timed out"));
            }
            Ok(Answer {
                text: format!("report {n}"),
            })
        })
        .await
    }
}

/// A cheap deterministic hash (SplitMix64's finalizer) for pseudo-random latencies.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn serve_metrics(metrics: &'static Metrics, addr: &str) -> std::io::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            ([(CONTENT_TYPE, Metrics::CONTENT_TYPE)], metrics.render())
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("metrics at http://{}/metrics", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(u64::MAX), |s| s.parse())?;
    let addr =
        std::env::var("CAPECONTROL_METRICS_ADDR").unwrap_or_else(|_| "127.0.0.1:9898".into());
    let metrics = observability::install()?;
    serve_metrics(metrics, &addr).await?;

    let platform = std::sync::Arc::new(
        Platform::builder()
            .config(PlatformConfig {
                poll_interval: Duration::from_millis(20),
                ..PlatformConfig::default()
            })
            .agent(SupportBot)
            .agent(ReportBuilder)
            .build()
            .await?,
    );
    let users: Vec<Principal> = (1..=5)
        .map(|i| Principal::new(format!("user-{i}")).with_roles(["user"]))
        .collect();
    for user in &users {
        for agent in ["support-bot", "report-builder"] {
            platform
                .registry()
                .install(user, InstallRequest::latest(agent))
                .await?;
        }
    }

    let started = tokio::time::Instant::now();
    let mut n: u64 = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        // Waves: a burst every 20 s fills the queue, then a calm phase drains it.
        let burst = started.elapsed().as_secs() % 20 < 5;
        let per_tick = if burst { 12 } else { 3 };
        for _ in 0..per_tick {
            n += 1;
            let user = users[(mix(n) % users.len() as u64) as usize].clone();
            let (agent, task) = if n.is_multiple_of(3) {
                ("report-builder", "build")
            } else {
                ("support-bot", "answer")
            };
            let id = platform
                .submit(TaskRequest::new(agent, task, json!({"n": n}), user.clone()))
                .await?;
            let p = std::sync::Arc::clone(&platform);
            tokio::spawn(async move {
                let Ok(done) = p.trusted().wait(id).await else {
                    return;
                };
                if done.status == TaskStatus::Completed && !mix(n + 5).is_multiple_of(4) {
                    // The report builder is rated lower than the support bot.
                    let base = if agent == "report-builder" { 2 } else { 3 };
                    let score = (base + mix(n + 6) % 3) as u8;
                    let _ = p.rate(id, &user, score).await;
                }
            });
        }
        if n.is_multiple_of(4) {
            platform
                .registry()
                .catalog(&CatalogQuery::default())
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    platform.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
