//! The three example agents (`examples/`), run end to end: each `main` prints its
//! manifest, checks it with the manifest validator, and calls its tools and tasks by name with
//! JSON; any error fails the test.

#[allow(dead_code)]
#[path = "../examples/cape_ai_guide.rs"]
pub mod cape_ai_guide;
#[allow(dead_code)]
#[path = "../examples/energy_agent.rs"]
pub mod energy_agent;
#[allow(dead_code)]
#[path = "../examples/finance_agent.rs"]
pub mod finance_agent;

use capecontrol::agent::AgentBase;

#[test]
fn cape_ai_guide_runs() {
    cape_ai_guide::main().unwrap();
}

#[test]
fn energy_agent_runs() {
    energy_agent::main().unwrap();
}

#[test]
fn finance_agent_runs() {
    finance_agent::main().unwrap();
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
