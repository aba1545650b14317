//! Observability: the Prometheus exposition of the platform's metrics (blueprint §10.1).
//!
//! The platform records its metrics through the [`metrics`] facade; nothing is exported until
//! the host installs a recorder. [`install`] installs the Prometheus recorder of
//! `metrics-exporter-prometheus` once per process (without an HTTP listener of its own) and
//! returns a [`Metrics`] handle whose [`render`](Metrics::render) gives the text exposition
//! format for a `/metrics` route.
//!
//! Every series is labelled with the `agent` id and the `version` (never a user or task id, so
//! the number of series is bounded by the installed agent versions):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `agent_execution_duration_seconds` | histogram ([`LATENCY_BUCKETS`]) | `agent`, `version`, `outcome` |
//! | `agent_attempts_total` | counter | `agent`, `version`, `outcome` |
//! | `agent_success_rate` | gauge | `agent`, `version` |
//! | `agent_concurrent_tasks` | gauge | `agent`, `version` |
//! | `agent_memory_usage_bytes`, `agent_memory_limit_bytes` | gauge | `agent`, `version` |
//! | `agent_cpu_usage_percent` | gauge | `agent`, `version` |
//! | `agent_circuit_breaker_state` | gauge (0 closed, 1 half-open, 2 open) | `agent`, `version` |
//! | `tasks_submitted_total` | counter | `agent`, `version` |
//! | `task_queue_depth` | gauge | — (the whole queue) |
//! | `user_satisfaction_score` | gauge (mean rating 1–5) | `agent`, `version` |
//! | `user_ratings_total` | counter | `agent`, `version` |
//! | `marketplace_discovery_rate` | counter (listings served) | `agent`, `version` |
//!
//! ```
//! let metrics = capecontrol::observability::install()?;
//! metrics::counter!("tasks_submitted_total", "agent" => "a", "version" => "1.0.0").increment(1);
//! assert!(metrics.render().contains(r#"tasks_submitted_total{agent="a",version="1.0.0"} 1"#));
//! # Ok::<(), capecontrol::error::Error>(())
//! ```

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::Error;

/// The buckets of `agent_execution_duration_seconds`, in seconds: from 5 ms (an in-process
/// step) to 10 minutes (a long container agent), with 30 s as a bucket boundary so the p95
/// latency alert's threshold is exact.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The names of every metric the platform records (the dashboard and alert rules query only
/// these).
pub const METRIC_NAMES: &[&str] = &[
    "agent_execution_duration_seconds",
    "agent_attempts_total",
    "agent_success_rate",
    "agent_concurrent_tasks",
    "agent_memory_usage_bytes",
    "agent_memory_limit_bytes",
    "agent_cpu_usage_percent",
    "agent_circuit_breaker_state",
    "tasks_submitted_total",
    "task_queue_depth",
    "user_satisfaction_score",
    "user_ratings_total",
    "marketplace_discovery_rate",
];

/// The installed Prometheus recorder of this process.
#[derive(Debug, Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// The current values in the Prometheus text exposition format (what `/metrics` serves).
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// The `Content-Type` of [`render`](Self::render)'s text.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";
}

static INSTALLED: OnceLock<Metrics> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder, once: later calls
/// return the same handle. A conflict error when another recorder was installed first.
pub fn install() -> Result<&'static Metrics, Error> {
    if let Some(m) = INSTALLED.get() {
        return Ok(m);
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("agent_execution_duration_seconds".into()),
            LATENCY_BUCKETS,
        )
        .map_err(|e| Error::conflict(format!("prometheus buckets: {e}")))?
        .build_recorder();
    let handle = recorder.handle();
    // Two racing first calls: only one recorder can be set; the loser reads the winner's.
    let mut won = false;
    let metrics = INSTALLED.get_or_init(|| {
        won = true;
        Metrics { handle }
    });
    if won {
        metrics::set_global_recorder(recorder).map_err(|_| {
            Error::conflict("another metrics recorder is already installed in this process")
        })?;
        describe();
        spawn_upkeep(metrics.handle.clone());
    }
    Ok(metrics)
}

/// Drains the histograms' internal buffers now and then so memory stays bounded between scrapes
/// (only when a Tokio runtime is running; otherwise each `render` does it).
fn spawn_upkeep(handle: PrometheusHandle) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                handle.run_upkeep();
            }
        });
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        "agent_execution_duration_seconds",
        Unit::Seconds,
        "Duration of task attempts through the middleware chain and the executor."
    );
    describe_counter!(
        "agent_attempts_total",
        "Task attempts ended, by outcome (success or the error category)."
    );
    describe_gauge!(
        "agent_success_rate",
        "Successful attempts over all attempts on this node since start."
    );
    describe_gauge!("agent_concurrent_tasks", "Attempts running on this node.");
    describe_gauge!(
        "agent_memory_usage_bytes",
        Unit::Bytes,
        "Memory in use by a container agent (less page cache)."
    );
    describe_gauge!(
        "agent_memory_limit_bytes",
        Unit::Bytes,
        "Memory limit of a container agent."
    );
    describe_gauge!(
        "agent_cpu_usage_percent",
        Unit::Percent,
        "CPU use of a container agent (100 = one core)."
    );
    describe_gauge!(
        "agent_circuit_breaker_state",
        "Circuit breaker of an agent version: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!("tasks_submitted_total", "Tasks accepted by the gateway.");
    describe_gauge!("task_queue_depth", "Queued tasks.");
    describe_gauge!(
        "user_satisfaction_score",
        "Mean user rating (1-5) of an agent version's completed tasks."
    );
    describe_counter!("user_ratings_total", "Ratings given to completed tasks.");
    describe_counter!(
        "marketplace_discovery_rate",
        "Agent versions listed on catalog pages served."
    );
}
