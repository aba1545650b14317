//! Behaviour of macro-generated agents: manifests, schemas, dispatch, input errors, scope
//! checks and durable-step replay.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use capecontrol::prelude::*;
use capecontrol::validate::validate_manifest;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Budget tracking and payment processing.
///
/// A test double of the example FinanceAgent.
#[derive(Agent, Default)]
#[agent(
    name = "FinanceAgent",
    version = "1.2.0",
    category = "domain-specific",
    placement = "dashboard",
    scopes("finance:read", "finance:write", "payments:manage"),
    roles("user", "premium"),
    data_access("user_data"),
    timeout = 120,
    retries = 2,
    memory_limit = "256MB",
    cpu_limit = "0.5",
    concurrent_tasks = 3,
    triggers(events("payment.completed"), schedules("0 9 * * MON"), webhooks("/api/agents/{id}/webhook")),
    ui(icon = "💰", color = "#10B981", description_short = "Budgets and payments", settings = Settings)
)]
struct Finance {
    ingested: AtomicUsize,
}

/// Installation settings.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Settings {
    /// The bank's API key.
    #[schemars(extend("secret" = true))]
    api_key: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
struct Month {
    /// `YYYY-MM`.
    month: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
struct Tx {
    amount_cents: i64,
    category: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
struct Report {
    month: String,
    total_cents: i64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Payment {
    to: String,
    amount_cents: u64,
}

/// The agent's own error type.
#[derive(Debug)]
enum FinanceError {
    UnknownMonth(String),
}

impl From<FinanceError> for Error {
    fn from(e: FinanceError) -> Self {
        match e {
            FinanceError::UnknownMonth(m) => {
                Error::invalid_field("/month", format!("no data for {m}"))
            }
        }
    }
}

#[agent_impl]
impl Finance {
    /// Generate a monthly report.
    #[task(timeout = 60)]
    async fn monthly_report(&self, cx: &TaskContext, req: Month) -> Result<Report, Error> {
        let txs = cx
            .step(
                "ingest",
                self.ingest_transactions(&cx.tool(), req.month.clone()),
            )
            .await?;
        cx.step("report", async {
            Ok::<_, Error>(Report {
                month: req.month.clone(),
                total_cents: txs.iter().map(|t| t.amount_cents).sum(),
            })
        })
        .await
    }

    /// Ingest the month's transactions.
    #[tool(scope = "finance:read")]
    async fn ingest_transactions(
        &self,
        _cx: &ToolContext,
        month: String,
    ) -> Result<Vec<Tx>, FinanceError> {
        self.ingested.fetch_add(1, Ordering::SeqCst);
        if !month.starts_with("2026-") {
            return Err(FinanceError::UnknownMonth(month));
        }
        Ok(vec![
            Tx {
                amount_cents: -1250,
                category: "food".into(),
            },
            Tx {
                amount_cents: 300000,
                category: "salary".into(),
            },
        ])
    }

    /// Pay someone.
    #[tool(scope = "payments:manage", name = "initiate_payment")]
    async fn pay(&self, _cx: &ToolContext, p: Payment) -> Result<String> {
        // A `_cx` that is used after all still names the context.
        let user = &_cx.principal().user_id;
        Ok(format!(
            "paid {} cents to {} for {user}",
            p.amount_cents, p.to
        ))
    }

    /// A helper that is neither a task nor a tool.
    fn helper(&self) -> usize {
        self.ingested.load(Ordering::SeqCst)
    }
}

fn context(granted: &[&str]) -> (Arc<MemoryJournal>, TaskContext) {
    let journal = Arc::new(MemoryJournal::default());
    let cx = TaskContext::local()
        .principal(Principal::new("user-1"))
        .granted(granted.iter().map(|s| s.parse().unwrap()).collect())
        .build(journal.clone());
    (journal, cx)
}

const ALL: &[&str] = &["finance:*", "payments:manage"];

#[test]
fn manifest_carries_metadata_tools_and_schemas() {
    let m = Finance::default().manifest();
    assert_eq!(m.name, "FinanceAgent");
    assert_eq!(m.version, "1.2.0");
    assert_eq!(
        m.description,
        "Budget tracking and payment processing.\n\nA test double of the example FinanceAgent."
    );
    assert_eq!(m.tools, ["ingest_transactions", "initiate_payment"]);
    let config = m.config();
    assert_eq!(
        (config.timeout, config.retries, config.concurrent_tasks),
        (120, 2, 3)
    );
    assert_eq!(config.memory_limit.as_deref(), Some("256MB"));
    assert_eq!(
        m.permissions().scopes,
        ["finance:read", "finance:write", "payments:manage"]
    );

    let task = m.task("monthly_report").unwrap();
    assert_eq!(
        task.description.as_deref(),
        Some("Generate a monthly report.")
    );
    assert_eq!(task.timeout, Some(60));
    let input = task.input_schema.as_ref().unwrap();
    assert_eq!(
        input["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(input["properties"]["month"]["type"], "string");
    assert_eq!(input["properties"]["month"]["description"], "`YYYY-MM`.");
    assert_eq!(input["required"], json!(["month"]));
    let output = task.output_schema.as_ref().unwrap();
    assert_eq!(output["properties"]["total_cents"]["type"], "integer");

    let tool = m.tool_spec("initiate_payment").unwrap();
    assert_eq!(tool.scope.as_deref(), Some("payments:manage"));
    assert_eq!(tool.description.as_deref(), Some("Pay someone."));
    assert_eq!(tool.output_schema.as_ref().unwrap()["type"], "string");
    let ingest = m.tool_spec("ingest_transactions").unwrap();
    assert_eq!(ingest.input_schema.as_ref().unwrap()["type"], "string");
    assert_eq!(ingest.output_schema.as_ref().unwrap()["type"], "array");

    let settings = m.ui.as_ref().unwrap().settings_schema.as_ref().unwrap();
    assert_eq!(settings["properties"]["api_key"]["secret"], true);
    assert_eq!(Finance::default().task_specs(), m.tasks);
    assert_eq!(Finance::default().tool_specs(), m.tool_specs);
}

#[test]
fn generated_manifest_passes_the_validator() {
    let m = Finance::default().manifest();
    let json = serde_json::to_value(&m).unwrap();
    let back = validate_manifest(&json).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(back, m);
}

#[tokio::test]
async fn tasks_and_tools_dispatch_by_name_on_json() {
    let agent = Finance::default();
    let (journal, cx) = context(ALL);
    let out = agent
        .run_task("monthly_report", json!({"month": "2026-03"}), &cx)
        .await
        .unwrap();
    assert_eq!(out, json!({"month": "2026-03", "total_cents": 298750}));
    let names: Vec<_> = journal.steps().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["ingest", "report"]);

    let paid = agent
        .call_tool(
            "initiate_payment",
            json!({"to": "ACME", "amount_cents": 500}),
            &cx.tool(),
        )
        .await
        .unwrap();
    assert_eq!(paid, json!("paid 500 cents to ACME for user-1"));
    let calls = journal.tool_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].tool, "ingest_transactions");
    assert!(calls.iter().all(|c| c.allowed));
    assert_eq!(agent.helper(), 1);
}

#[tokio::test]
async fn bad_input_is_a_validation_error_with_the_field_pointer() {
    let agent = Finance::default();
    let (_, cx) = context(ALL);
    let err = agent
        .run_task("monthly_report", json!({"month": 3}), &cx)
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Validation);
    assert_eq!(err.field_errors()[0].pointer, "/month");
    let err = agent
        .run_task("monthly_report", json!({}), &cx)
        .await
        .unwrap_err();
    assert_eq!(err.field_errors()[0].pointer, "/month");
    let err = agent
        .call_tool(
            "initiate_payment",
            json!({"to": "x", "amount_cents": -1}),
            &cx.tool(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.field_errors()[0].pointer, "/amount_cents");
    assert!(
        err.to_string()
            .contains("invalid input to tool `initiate_payment`"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_names_are_not_found() {
    let agent = Finance::default();
    let (_, cx) = context(ALL);
    let err = agent.run_task("nope", json!({}), &cx).await.unwrap_err();
    assert_eq!(err, Error::not_found("task", "nope"));
    let err = agent
        .call_tool("monthly_report", json!({}), &cx.tool())
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::NotFound);
}

#[tokio::test]
async fn agent_errors_convert_into_capecontrol_errors() {
    let agent = Finance::default();
    let (_, cx) = context(ALL);
    let err = agent
        .run_task("monthly_report", json!({"month": "1999-01"}), &cx)
        .await
        .unwrap_err();
    assert_eq!(err.field_errors()[0].message, "no data for 1999-01");
}

#[tokio::test]
async fn tools_need_their_scope_even_when_called_from_a_task() {
    let agent = Finance::default();
    let (journal, cx) = context(&["finance:read"]);
    let err = agent
        .call_tool(
            "initiate_payment",
            json!({"to": "x", "amount_cents": 1}),
            &cx.tool(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.missing_scopes(), ["payments:manage"]);

    let (journal2, cx2) = context(&["payments:manage"]);
    let err = agent
        .run_task("monthly_report", json!({"month": "2026-03"}), &cx2)
        .await
        .unwrap_err();
    assert_eq!(err.missing_scopes(), ["finance:read"]);
    assert_eq!(agent.helper(), 0, "the tool body never ran");
    let calls = journal2.tool_calls();
    assert_eq!(calls.len(), 1);
    assert!(!calls[0].allowed);
    assert!(!journal.tool_calls()[0].allowed);

    // A direct Rust call is checked too.
    let err = agent
        .ingest_transactions(&cx2.tool(), "2026-01".into())
        .await
        .unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Permission);
}

#[tokio::test]
async fn a_replay_skips_completed_steps() {
    let agent = Finance::default();
    let (journal, cx) = context(ALL);
    agent
        .run_task("monthly_report", json!({"month": "2026-03"}), &cx)
        .await
        .unwrap();
    assert_eq!(agent.helper(), 1);
    // The task runs again (say its worker died after the steps): the journal answers.
    let replay = TaskContext::builder(cx.task_id())
        .attempt(2)
        .granted(ALL.iter().map(|s| s.parse().unwrap()).collect())
        .completed_steps(journal.completed_steps())
        .build(journal.clone());
    let out = agent
        .run_task("monthly_report", json!({"month": "2026-03"}), &replay)
        .await
        .unwrap();
    assert_eq!(out["total_cents"], 298750);
    assert_eq!(agent.helper(), 1, "ingest_transactions did not run again");
    assert_eq!(journal.tool_calls().len(), 1, "nor was it called again");
}
