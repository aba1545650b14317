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
use serde_json::Value;

use super::{ExecuteNext, Execution, Middleware, Submission, SubmitNext};
use crate::error::Result;
use crate::store::Enqueued;

/// Successes and attempts per version of one agent.
type VersionTotals = crate::FastMap<String, (u64, u64)>;

/// Records the §10.1 metrics.
#[derive(Debug, Default)]
pub struct PerformanceMonitor {
    /// Successes and attempts by agent, then version.
    /// Both levels are [`crate::FastMap`]s: every attempt looks them up.
    totals: Mutex<crate::FastMap<String, VersionTotals>>,
}

impl PerformanceMonitor {
    /// A monitor.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Middleware for PerformanceMonitor {
    fn name(&self) -> &str {
        "performance_monitor"
    }

    async fn submit(&self, sub: Submission, next: SubmitNext<'_>) -> Result<Enqueued> {
        metrics::counter!(
            "tasks_submitted_total",
            "agent" => sub.agent_id.clone(),
            "version" => sub.version.clone()
        )
        .increment(1);
        next.run(sub).await
    }

    async fn execute(&self, exec: Execution, next: ExecuteNext<'_>) -> Result<Value> {
        // Shared label values: each series below takes a reference, not a copy of the strings.
        let agent: Arc<str> = Arc::from(exec.invocation.agent_id.as_str());
        let version: Arc<str> = Arc::from(exec.invocation.version.as_str());
        let concurrent = metrics::gauge!(
            "agent_concurrent_tasks",
            "agent" => agent.clone(),
            "version" => version.clone()
        );
        concurrent.increment(1.0);
        let started = Instant::now();
        let result = next.run(exec).await;
        concurrent.decrement(1.0);
        let outcome = match &result {
            Ok(_) => "success",
            Err(e) => e.category().as_str(),
        };
        metrics::histogram!(
            "agent_execution_duration_seconds",
            "agent" => agent.clone(),
            "version" => version.clone(),
            "outcome" => outcome
        )
        .record(started.elapsed().as_secs_f64());
        metrics::counter!(
            "agent_attempts_total",
            "agent" => agent.clone(),
            "version" => version.clone(),
            "outcome" => outcome
        )
        .increment(1);
        let rate = {
            let Ok(mut totals) = self.totals.lock() else {
                return result;
            };
            // Looked up by reference: keys are allocated once per agent version, not per attempt.
            if !totals
                .get(&*agent)
                .is_some_and(|v| v.contains_key(&*version))
            {
                totals
                    .entry(agent.to_string())
                    .or_default()
                    .insert(version.to_string(), (0, 0));
            }
            let Some(entry) = totals.get_mut(&*agent).and_then(|v| v.get_mut(&*version)) else {
                return result;
            };
            entry.1 += 1;
            if result.is_ok() {
                entry.0 += 1;
            }
            entry.0 as f64 / entry.1 as f64
        };
        metrics::gauge!("agent_success_rate", "agent" => agent, "version" => version).set(rate);
        result
    }
}
