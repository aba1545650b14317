//! The three example agents (`examples/`), run end to end: CapeAIGuide and EnergyAgent through
//! an embedded `Platform` (install, submit, watch, and their triggers), FinanceAgent by its
//! `main`, and the `triggers` example starting all three by an event, a schedule and a webhook;
//! the tests check what they produce.

// `examples/triggers.rs` includes the three agents' files as its modules.
#[allow(dead_code)]
#[path = "../examples/triggers.rs"]
pub mod triggers_example;
pub use triggers_example::{cape_ai_guide, energy_agent, finance_agent};

use capecontrol::{AgentBase, TaskStatus};
use serde_json::{Value, json};

#[test]
fn cape_ai_guide_runs() {
    cape_ai_guide::main().unwrap();
}

#[tokio::test]
async fn cape_ai_guide_onboards_through_the_platform_and_on_user_onboard() {
    let out = cape_ai_guide::run().await.unwrap();
    assert_eq!(out.submitted.status, TaskStatus::Completed);
    assert_eq!(
        out.events,
        [
            "queued",
            "started",
            "step_started",
            "tool_called",
            "step_completed",
            "step_started",
            "tool_called",
            "step_completed",
            "completed"
        ]
    );
    assert_eq!(
        out.tool_calls,
        [
            ("ask_user".to_owned(), true),
            ("generate_checklist".to_owned(), true)
        ]
    );
    let output = out.submitted.output.unwrap();
    assert_eq!(
        output["welcome"]["text"],
        "Hi Bongani! Have you used a tool like this before?"
    );
    let features = |o: &Value| -> Vec<String> {
        o["checklist"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["feature"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(!features(&output).is_empty());
    // The event ran the same task for Thandi with the event's payload.
    assert_eq!(out.triggered.status, TaskStatus::Completed);
    assert_eq!(out.triggered.user_id, "thandi");
    assert_eq!(out.triggered.task, "onboard");
    assert_eq!(out.triggered.input["goals"], json!(["energy"]));
    let t = out.triggered.output.unwrap();
    assert_eq!(
        t["welcome"]["text"],
        "Hi Thandi! Have you used a tool like this before?"
    );
    assert_ne!(
        features(&t),
        features(&output),
        "a checklist for other goals"
    );
}

#[test]
fn energy_agent_runs() {
    energy_agent::main().unwrap();
}

#[tokio::test]
async fn energy_agent_reports_through_the_platform_and_on_its_schedule() {
    let out = energy_agent::run().await.unwrap();
    assert_eq!(out.submitted.status, TaskStatus::Completed);
    assert_eq!(out.events.first(), Some(&"queued"));
    assert_eq!(out.events.last(), Some(&"completed"));
    assert_eq!(
        out.events
            .iter()
            .filter(|e| **e == "step_completed")
            .count(),
        3
    );
    let report = out.submitted.output.unwrap();
    // The installation's setting (0.98 kWh), not the default threshold.
    assert_eq!(report["alerts"]["threshold_kwh"], json!(0.98));
    let total = report["total_kwh"].as_f64().unwrap();
    assert!(total > 5.0 && total < 20.0, "{total}");
    let opt = &report["optimization"];
    assert!(opt["optimized_cost_cents"].as_f64() < opt["cost_cents"].as_f64());

    assert_eq!(out.scheduled.status, TaskStatus::Completed);
    assert_eq!(out.scheduled.task, "scheduled_report");
    assert_eq!(out.scheduled.input["schedule"], "0 */6 * * *");
    assert_eq!(out.scheduled.input["missed"], 0);
    let instant = out.scheduled.input["instant"].as_str().unwrap();
    assert!(
        ["T00:00:00Z", "T06:00:00Z", "T12:00:00Z", "T18:00:00Z"]
            .iter()
            .any(|h| instant.ends_with(h)),
        "{instant}"
    );
    let scheduled = out.scheduled.output.unwrap();
    assert_eq!(scheduled["alerts"]["threshold_kwh"], json!(0.98));
}

#[tokio::test]
async fn the_three_agents_fire_on_an_event_a_schedule_and_a_webhook() {
    let [guide, meter, ledger] = triggers_example::run().await.unwrap();
    for (task, agent, name) in [
        (&guide, "capeaiguide", "onboard"),
        (&meter, "energyagent", "scheduled_report"),
        (&ledger, "financeagent", "monthly_report"),
    ] {
        assert_eq!(
            task.status,
            TaskStatus::Completed,
            "{agent}: {:?}",
            task.error
        );
        assert_eq!((task.agent_id.as_str(), task.task.as_str()), (agent, name));
        assert_eq!(task.user_id, "amara");
    }
    assert_eq!(
        guide.output.as_ref().unwrap()["welcome"]["text"],
        "Hi Amara! Have you used a tool like this before?"
    );
    assert_eq!(
        guide
            .idempotency_key
            .as_deref()
            .map(|k| k.starts_with("event:")),
        Some(true)
    );
    assert!(
        meter.output.as_ref().unwrap()["total_kwh"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(ledger.output.as_ref().unwrap()["month"], "2026-10");
    let key = ledger.idempotency_key.as_deref().unwrap();
    assert!(
        key.starts_with("webhook:") && key.ends_with(":bank-delivery-1"),
        "{key}"
    );
    assert_eq!(ledger.input["budget_cents"]["groceries"], 40000);
}

#[test]
fn finance_agent_runs() {
    finance_agent::main().unwrap();
    let demo = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(finance_agent::demo())
        .unwrap();
    assert_eq!(demo.report["month"], "2026-04");
    assert_eq!(demo.report["over_budget"]["rent"], 10000);
    assert_eq!(demo.small.status, "paid");
    assert_eq!(
        demo.small.decided_by, None,
        "no approval under the threshold"
    );
    assert_eq!(demo.small.receipt.as_ref().unwrap().amount_cents, 8450);
    assert_eq!(demo.question, "Approve a payment of 2500.00 to Landlord?");
    assert_eq!(demo.approved.status, "paid");
    assert_eq!(demo.approved.decided_by.as_deref(), Some("alice"));
    assert_eq!(demo.approved.receipt.as_ref().unwrap().payee, "Landlord");
    assert_eq!(demo.refused_at, ["/answer/approve"]);
    assert_eq!(demo.rejected.status, "rejected");
    assert_eq!(demo.rejected.decided_by.as_deref(), Some("alice"));
    assert!(demo.rejected.receipt.is_none());
    assert!(demo.denied.contains("payments:manage"), "{}", demo.denied);
}

#[test]
fn manifests_name_the_blueprint_tools_and_scopes() {
    type Case = (
        Box<dyn AgentBase>,
        &'static [&'static str],
        &'static [&'static str],
    );
    let cases: [Case; 3] = [
        (
            Box::new(cape_ai_guide::CapeAiGuide::default()),
            &["ask_user", "generate_checklist", "summarize_feedback"],
            &["profile:write", "checklist:write"],
        ),
        (
            Box::new(finance_agent::FinanceAgent::default()),
            &["ingest_transactions", "generate_report", "initiate_payment"],
            &["finance:read", "finance:write", "payments:manage"],
        ),
        (
            Box::new(energy_agent::EnergyAgent),
            &["get_usage_data", "optimize_consumption", "alert_threshold"],
            &["iot:read", "iot:optimize"],
        ),
    ];
    for (agent, tools, scopes) in cases {
        let m = agent.manifest();
        assert_eq!(m.tools, tools, "{}", m.name);
        assert_eq!(m.permissions().scopes, scopes, "{}", m.name);
        let json = serde_json::to_value(&m).unwrap();
        let back = capecontrol::validate::validate_manifest(&json)
            .unwrap_or_else(|e| panic!("{}: {e:?}", m.name));
        assert_eq!(back, m);
        for spec in agent.tool_specs() {
            if let Some(scope) = spec.scope.as_deref() {
                assert!(scopes.contains(&scope), "{}: {scope}", spec.name);
            }
        }
    }
}
