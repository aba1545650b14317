//! The blueprint's three agents started by their triggers, on the embedded default (the
//! in-memory store, in-process agents):
//!
//! - CapeAIGuide by the `user.onboard` event the host emits,
//! - EnergyAgent by its six-hour schedule (fired at a chosen instant: a fake clock),
//! - FinanceAgent by a signed delivery to its `/payments` webhook.
//!
//! Run it with `cargo run --example triggers`.

#[allow(dead_code)]
#[path = "cape_ai_guide.rs"]
pub mod cape_ai_guide;
#[allow(dead_code)]
#[path = "energy_agent.rs"]
pub mod energy_agent;
#[allow(dead_code)]
#[path = "finance_agent.rs"]
pub mod finance_agent;

use capecontrol::prelude::*;
use capecontrol::registry::InstallRequest;
use capecontrol::runtime::webhooks::{WebhookDelivery, sign};
use capecontrol::runtime::{Event, Fired};
use capecontrol::store::TaskRecord;
use chrono::{Duration, DurationRound, Utc};
use serde_json::json;

/// The three triggered tasks, finished: the guide's, the meter's, the ledger's.
pub async fn run() -> std::result::Result<[TaskRecord; 3], Box<dyn std::error::Error>> {
    let mut config = capecontrol::PlatformConfig::default();
    // The scheduler's own tick is off: the example fires the schedule at an instant it picks.
    config.triggers.schedule_tick = None;
    let platform = Platform::builder()
        .agent(cape_ai_guide::CapeAiGuide::default())
        .agent(energy_agent::EnergyAgent)
        .agent(finance_agent::FinanceAgent::default())
        .config(config)
        .build()
        .await?;
    let amara = Principal::new("amara").with_roles(["user"]);
    let registry = platform.registry();
    registry
        .install(
            &amara,
            InstallRequest::latest("capeaiguide").grant(["profile:write", "checklist:write"]),
        )
        .await?;
    registry
        .install(
            &amara,
            InstallRequest::latest("energyagent")
                .grant(["iot:read", "iot:optimize"])
                .settings(json!({"api_key": "not-a-real-key", "device_id": "amara-meter"})),
        )
        .await?;
    registry
        .install(
            &amara,
            InstallRequest::latest("financeagent").grant([
                "finance:read",
                "finance:write",
                "payments:manage",
            ]),
        )
        .await?;

    // 1. An event: the host's sign-up code emits `user.onboard`.
    let host = Principal::new("signup-service").with_scopes(["events:emit"])?;
    let payload = json!({"user_name": "Amara", "role": "user", "goals": ["energy", "save"]});
    let fired = platform
        .emit(Event::new("user.onboard", payload), &host)
        .await?;
    let guide = finished(&platform, &fired).await?;

    // 2. A schedule: `0 */6 * * *` at its first instant after the install.
    let now = Utc::now();
    let instant = now.duration_trunc(Duration::hours(6))? + Duration::hours(6);
    let fired = platform.run_schedules(instant).await?;
    let meter = finished(&platform, &fired).await?;

    // 3. A webhook: the bank signs its delivery with the installation's secret (shown once).
    let secret = platform
        .rotate_webhook_secret("financeagent", &amara)
        .await?;
    let body = br#"{"month": "2026-10", "budget_cents": {"groceries": 40000}}"#.to_vec();
    let (timestamp, delivery_id) = (Utc::now().timestamp(), "bank-delivery-1");
    let delivery = WebhookDelivery {
        installation_id: secret.installation_id,
        path: "/payments".into(),
        delivery_id: delivery_id.into(),
        timestamp,
        signature: sign(&secret.secret, timestamp, delivery_id, &body),
        body,
    };
    let fired = platform.deliver_webhook(delivery).await?;
    let ledger = finished(&platform, std::slice::from_ref(&fired)).await?;

    for task in [&guide, &meter, &ledger] {
        let source = platform
            .trusted()
            .audit(task.id)
            .await?
            .into_iter()
            .find(|a| a.event_type == "task.triggered")
            .map(|a| a.payload);
        println!(
            "{:<13} {:<17} {} started by {}\n  -> {}",
            task.agent_id,
            task.task,
            task.status,
            serde_json::to_string(&source)?,
            serde_json::to_string(&task.output)?
        );
    }
    platform.shutdown(std::time::Duration::from_secs(1)).await;
    Ok([guide, meter, ledger])
}

/// The one task `fired` started, once it finished.
async fn finished(
    platform: &Platform,
    fired: &[Fired],
) -> std::result::Result<TaskRecord, Box<dyn std::error::Error>> {
    let [one] = fired else {
        return Err(format!("expected one task, the trigger started {}", fired.len()).into());
    };
    let id = one.task.clone()?;
    Ok(platform.trusted().wait(id).await?)
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    run().await?;
    Ok(())
}
