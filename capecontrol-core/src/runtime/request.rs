//! [`TaskRequest`]: what a caller asks the gateway to run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::TriggerSource;
use crate::policy::Principal;

/// A request to run a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRequest {
    /// The agent's id or slug.
    pub agent: String,
    /// The task's name.
    pub task: String,
    /// The JSON input.
    pub input: Value,
    /// Who submits it.
    pub principal: Principal,
    /// Higher runs first (default 0).
    pub priority: i32,
    /// Submits with the same key (per user) return the same task.
    pub idempotency_key: Option<String>,
    /// Not before this time.
    pub run_at: Option<DateTime<Utc>>,
    /// The W3C `traceparent` of the submitting request (checked by the gateway, stored with the
    /// task, carried into its attempts' spans and container agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// What started the task, when a trigger did (set by the platform's triggers only: it is
    /// never read from a serialized request, so an API caller cannot claim one).
    #[serde(skip)]
    trigger: Option<TriggerSource>,
}

impl TaskRequest {
    /// A request with priority 0, no idempotency key, due now.
    pub fn new(
        agent: impl Into<String>,
        task: impl Into<String>,
        input: Value,
        principal: Principal,
    ) -> Self {
        Self {
            agent: agent.into(),
            task: task.into(),
            input,
            principal,
            priority: 0,
            idempotency_key: None,
            run_at: None,
            traceparent: None,
            trigger: None,
        }
    }

    /// What started the task, when a trigger did (the `trigger` of its `queued` event).
    pub fn trigger(&self) -> Option<&TriggerSource> {
        self.trigger.as_ref()
    }

    /// Marks the request as started by `source` (the triggers' `fire`).
    pub(crate) fn triggered_by(mut self, source: TriggerSource) -> Self {
        self.trigger = Some(source);
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the W3C `traceparent` the task is submitted under.
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Delays the task until `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
}
