//! `PerformanceMonitor`: the metrics of blueprint §10.1 through the `metrics` crate.
//!
//! Every series is labelled `agent` and `version` (bounded: one series per agent version, never a
//! user or task id):
//!
//! - `agent_execution_duration_seconds` (histogram; labels `agent`, `version`, `outcome`)
//! - `agent_attempts_total` (counter; labels `agent`, `version`, `outcome`: the numerator and
//!   denominator of a failure rate over a window, which a since-start gauge cannot give)
//! - `agent_success_rate` (gauge, per agent version: successes over attempts since start)
//! - `agent_concurrent_tasks` (gauge, per agent version: attempts running on this node)
//! - `tasks_submitted_total` (counter; labels `agent`, `version`)
//!
//! Elsewhere: the maintenance loop sets `task_queue_depth`; the container executor reports
//! `agent_memory_usage_bytes`, `agent_memory_limit_bytes` and `agent_cpu_usage_percent`; the
//! registry counts `marketplace_discovery_rate`; ratings set `user_satisfaction_score`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use metrics::{Key, Label, Level, Metadata};
use serde_json::Value;

use super::{ExecuteNext, Execution, Middleware, Submission, SubmitNext};
use crate::error::{ErrorCategory, Result};
use crate::store::Enqueued;

/// What the series below are registered with (what the `metrics` macros would give them).
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The index of an attempt's outcome label among `success`, then the error categories in the
/// order of [`ErrorCategory::ALL`].
fn outcome(result: &Result<Value>) -> usize {
    match result {
        Ok(_) => 0,
        Err(e) => {
            let category = e.category();
            1 + ErrorCategory::ALL
                .iter()
                .position(|c| *c == category)
                .unwrap_or(0)
        }
    }
}

/// The series of one agent version: their keys, built once (a key built at each call copied
/// its label values and allocated its labels), and the version's success counts.
#[derive(Debug)]
struct Series {
    submitted: Key,
    concurrent: Key,
    success_rate: Key,
    /// Per outcome (see [`outcome`]): the duration histogram's key, the attempts counter's.
    by_outcome: Vec<(Key, Key)>,
    /// Successes and attempts since start.
    totals: Mutex<(u64, u64)>,
}

impl Series {
    fn new(agent: &str, version: &str) -> Self {
        let labels = |outcome: Option<&'static str>| {
            let mut l = vec![
                Label::new("agent", agent.to_owned()),
                Label::new("version", version.to_owned()),
            ];
            if let Some(o) = outcome {
                l.push(Label::new("outcome", o));
            }
            l
        };
        let outcomes = std::iter::once("success").chain(ErrorCategory::ALL.map(|c| c.as_str()));
        Self {
            submitted: Key::from_parts("tasks_submitted_total", labels(None)),
            concurrent: Key::from_parts("agent_concurrent_tasks", labels(None)),
            success_rate: Key::from_parts("agent_success_rate", labels(None)),
            by_outcome: outcomes
                .map(|o| {
                    (
                        Key::from_parts("agent_execution_duration_seconds", labels(Some(o))),
                        Key::from_parts("agent_attempts_total", labels(Some(o))),
                    )
                })
                .collect(),
            totals: Mutex::new((0, 0)),
        }
    }
}

/// Records the §10.1 metrics.
#[derive(Debug, Default)]
pub struct PerformanceMonitor {
    /// The series by agent, then version: looked up by reference at every submission and
    /// attempt, created once per agent version.
    series: Mutex<crate::FastMap<String, crate::FastMap<String, Arc<Series>>>>,
}

impl PerformanceMonitor {
    /// A monitor.
    pub fn new() -> Self {
        Self::default()
    }

    /// The series of `agent`'s `version` (`None` only if the lock was poisoned).
    fn series(&self, agent: &str, version: &str) -> Option<Arc<Series>> {
        let mut all = self.series.lock().ok()?;
        if let Some(s) = all.get(agent).and_then(|v| v.get(version)) {
            return Some(Arc::clone(s));
        }
        let s = Arc::new(Series::new(agent, version));
        all.entry(agent.to_owned())
            .or_default()
            .insert(version.to_owned(), Arc::clone(&s));
        Some(s)
    }
}

#[async_trait]
impl Middleware for PerformanceMonitor {
    fn name(&self) -> &str {
        "performance_monitor"
    }

    async fn submit(&self, sub: Submission, next: SubmitNext<'_>) -> Result<Enqueued> {
        if let Some(s) = self.series(&sub.agent_id, &sub.version) {
            metrics::with_recorder(|r| r.register_counter(&s.submitted, &METADATA)).increment(1);
        }
        next.run(sub).await
    }

    async fn execute(&self, exec: Execution, next: ExecuteNext<'_>) -> Result<Value> {
        let Some(s) = self.series(&exec.invocation.agent_id, &exec.invocation.version) else {
            return next.run(exec).await;
        };
        let concurrent = metrics::with_recorder(|r| r.register_gauge(&s.concurrent, &METADATA));
        concurrent.increment(1.0);
        let started = Instant::now();
        let result = next.run(exec).await;
        concurrent.decrement(1.0);
        let (duration, attempts) = &s.by_outcome[outcome(&result)];
        metrics::with_recorder(|r| r.register_histogram(duration, &METADATA))
            .record(started.elapsed().as_secs_f64());
        metrics::with_recorder(|r| r.register_counter(attempts, &METADATA)).increment(1);
        let rate = {
            let Ok(mut totals) = s.totals.lock() else {
                return result;
            };
            totals.1 += 1;
            if result.is_ok() {
                totals.0 += 1;
            }
            totals.0 as f64 / totals.1 as f64
        };
        metrics::with_recorder(|r| r.register_gauge(&s.success_rate, &METADATA)).set(rate);
        result
    }
}
