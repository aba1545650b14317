//! The second agent of `capecontrol serve --demo`: a slow counter, for trying (and testing) the
//! web console's live task view, cancellation and settings form. Not installed for the demo
//! user, so that installing it (scopes, settings with a secret) can be tried too.

use std::time::Duration;

use capecontrol::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Counts slowly, one durable step per number, so that a task can be watched live and
/// cancelled while it runs.
#[derive(Agent, Default)]
#[agent(
    name = "Slow Counter",
    version = "1.0.0",
    category = "utility",
    placement = "dashboard",
    scopes("counter:write"),
    roles("user"),
    timeout = 300,
    retries = 0,
    ui(description_short = "Counts slowly, step by step", settings = CounterSettings)
)]
pub(crate) struct SlowCounter;

/// The installation's settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct CounterSettings {
    /// A label for the counts.
    #[serde(default)]
    label: Option<String>,
    /// A token for a (pretend) webhook: a secret, never shown again.
    #[schemars(extend("secret" = true))]
    #[serde(default)]
    webhook_token: Option<String>,
}

/// What to count to.
#[derive(Debug, Deserialize, JsonSchema)]
struct CountRequest {
    /// Count from 1 to this (1 to 100).
    to: u32,
    /// Milliseconds per step (0 to 5000).
    #[serde(default = "default_delay")]
    delay_ms: u64,
}

fn default_delay() -> u64 {
    700
}

/// The count.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Counted {
    /// The last number counted.
    counted: u32,
}

/// The largest `to`.
const MAX_TO: u32 = 100;
/// The longest delay per step.
const MAX_DELAY_MS: u64 = 5_000;

#[agent_impl]
impl SlowCounter {
    /// Count from 1 to `to`, one durable step per number.
    #[task]
    async fn count(&self, cx: &TaskContext, req: CountRequest) -> Result<Counted, Error> {
        if !(1..=MAX_TO).contains(&req.to) {
            return Err(Error::invalid_field(
                "/to",
                format!("must be 1 to {MAX_TO}"),
            ));
        }
        if req.delay_ms > MAX_DELAY_MS {
            return Err(Error::invalid_field(
                "/delay_ms",
                format!("must be at most {MAX_DELAY_MS}"),
            ));
        }
        for n in 1..=req.to {
            cx.step(&format!("count-{n}"), async {
                tokio::time::sleep(Duration::from_millis(req.delay_ms)).await;
                Ok::<_, Error>(n)
            })
            .await?;
        }
        Ok(Counted { counted: req.to })
    }
}
