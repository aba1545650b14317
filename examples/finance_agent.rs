//! The example FinanceAgent: budget tracking and payment processing.
//!
//! Tools: `ingest_transactions`, `generate_report`, `initiate_payment`; scopes `finance:read`,
//! `finance:write`, `payments:manage`. The bank is faked: transactions are generated
//! deterministically from the month, and payments are only recorded.
//!
//! Task `pay`: a payment over [`APPROVAL_THRESHOLD_CENTS`] asks the user for approval with
//! `cx.ask_user` and waits durably (no worker held) until the answer or a day has passed.
//!
//! Run it with `cargo run --example finance_agent`: it prints the manifest, then runs everything
//! through a `Platform` (install, submit, watch, answer): the `monthly_report` task, a small
//! payment, a large one approved and a large one rejected (after an answer of the wrong shape,
//! refused at its JSON pointer), and an installation refused because it does not grant
//! `payments:manage`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use capecontrol::agent::AskOutcome;
use capecontrol::events::TaskEventKind;
use capecontrol::prelude::*;
use capecontrol::registry::InstallRequest;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_stream::StreamExt;

/// Payments above this many cents (1,000.00) need the user's approval.
pub const APPROVAL_THRESHOLD_CENTS: u64 = 100_000;

/// Budget tracking and payment processing: ingests a month of transactions, reports spending
/// against the budget, and initiates payments.
#[derive(Debug, Agent, Default)]
#[agent(
    name = "FinanceAgent",
    version = "1.2.0",
    category = "domain-specific",
    placement = "dashboard",
    scopes("finance:read", "finance:write", "payments:manage"),
    roles("user", "premium"),
    data_access("user_data"),
    timeout = 60,
    retries = 3,
    memory_limit = "256MB",
    cpu_limit = "0.5",
    concurrent_tasks = 5,
    triggers(events("payment.completed"), webhooks("/payments")),
    ui(
        icon = "💰",
        color = "#10B981",
        description_short = "Budgets, reports and payments"
    )
)]
pub struct FinanceAgent {
    /// Payments initiated so far (a real agent would call its bank).
    payments: Mutex<Vec<PaymentReceipt>>,
}

/// A calendar month.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MonthRequest {
    /// The month, `YYYY-MM`.
    pub month: String,
}

/// One bank transaction.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Transaction {
    /// Booking date, `YYYY-MM-DD`.
    pub date: String,
    /// Spending category.
    pub category: String,
    /// Amount in cents: negative for spending, positive for income.
    pub amount_cents: i64,
}

/// Input of `generate_report`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReportRequest {
    /// The month, `YYYY-MM`.
    pub month: String,
    /// Monthly budget per category, in cents.
    #[serde(default)]
    pub budget_cents: BTreeMap<String, i64>,
}

/// A monthly report.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// The month, `YYYY-MM`.
    pub month: String,
    /// Income in cents.
    pub income_cents: i64,
    /// Spending per category, in cents (positive numbers).
    pub spending_cents: BTreeMap<String, i64>,
    /// Categories over budget, with the overrun in cents.
    pub over_budget: BTreeMap<String, i64>,
    /// Income minus spending, in cents.
    pub net_cents: i64,
}

/// Input of `initiate_payment`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PaymentRequest {
    /// Who is paid.
    pub payee: String,
    /// The amount in cents, 1 to 1,000,000.
    pub amount_cents: u64,
    /// A reference shown to the payee.
    #[serde(default)]
    pub reference: String,
}

/// A payment that was initiated.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PaymentReceipt {
    /// The payment's id.
    pub payment_id: String,
    /// Who is paid.
    pub payee: String,
    /// The amount in cents.
    pub amount_cents: u64,
    /// `pending` until the bank confirms.
    pub status: String,
}

/// What became of a payment task.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PaymentDecision {
    /// `paid`, `rejected` (the user said no) or `expired` (nobody answered in time).
    pub status: String,
    /// Who approved or rejected it (`None`: no approval was needed, or nobody answered).
    #[serde(default)]
    pub decided_by: Option<String>,
    /// The receipt, when paid.
    #[serde(default)]
    pub receipt: Option<PaymentReceipt>,
}

/// The JSON Schema of an approval answer: `{"approve": bool, "comment"?: string}`.
pub fn approval_schema() -> Value {
    json!({
        "type": "object",
        "required": ["approve"],
        "properties": {"approve": {"type": "boolean"}, "comment": {"type": "string"}},
        "additionalProperties": false
    })
}

/// Parses `YYYY-MM` into (year, month), or a validation error at `/month`.
fn parse_month(month: &str) -> Result<(u32, u32), Error> {
    let bad = || Error::invalid_field("/month", format!("`{month}` is not a month like 2026-03"));
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let (y, m): (u32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if y < 1970 || !(1..=12).contains(&m) || month.len() != 7 {
        return Err(bad());
    }
    Ok((y, m))
}

/// The fake bank: the same month always yields the same transactions.
fn fake_transactions(year: u32, month: u32) -> Vec<Transaction> {
    let mut seed = u64::from(year) * 100 + u64::from(month);
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut txs = vec![Transaction {
        date: format!("{year}-{month:02}-01"),
        category: "salary".into(),
        amount_cents: 420_000,
    }];
    for (category, base) in [
        ("rent", 150_000),
        ("groceries", 9_000),
        ("transport", 4_000),
    ] {
        let rent = category == "rent";
        let times = if rent { 1 } else { 3 + next(3) };
        for _ in 0..times {
            let cents = if rent {
                base
            } else {
                base + next(base as u64 / 4) as i64
            };
            let day = if rent { 1 } else { 1 + next(28) };
            txs.push(Transaction {
                date: format!("{year}-{month:02}-{day:02}"),
                category: category.into(),
                amount_cents: -cents,
            });
        }
    }
    txs.sort_by(|a, b| a.date.cmp(&b.date));
    txs
}

#[agent_impl]
impl FinanceAgent {
    /// Build the monthly report: ingest the month's transactions, then report on them. Each
    /// step is journaled, so a retried task does not fetch the transactions again.
    #[task(timeout = 30)]
    pub async fn monthly_report(
        &self,
        cx: &TaskContext,
        req: ReportRequest,
    ) -> Result<Report, Error> {
        let ReportRequest {
            month,
            budget_cents,
        } = req;
        let report_month = month.clone();
        Plan::new()
            .then("ingest", |month: String| async move {
                let tool = cx.tool();
                self.ingest_transactions(&tool, MonthRequest { month })
                    .await
            })
            .then("report", |txs: Vec<Transaction>| async move {
                Ok::<_, Error>(build_report(&report_month, &txs, &budget_cents))
            })
            .run(cx, month)
            .await
    }

    /// Pay someone: a payment over [`APPROVAL_THRESHOLD_CENTS`] first asks the user for
    /// approval and waits durably for the answer (a day at most); the payment itself is a
    /// journaled step, so it is made once.
    #[task(timeout = 30)]
    pub async fn pay(
        &self,
        cx: &TaskContext,
        req: PaymentRequest,
    ) -> Result<PaymentDecision, Error> {
        let mut decided_by = None;
        if req.amount_cents > APPROVAL_THRESHOLD_CENTS {
            let prompt = format!(
                "Approve a payment of {}.{:02} to {}?",
                req.amount_cents / 100,
                req.amount_cents % 100,
                req.payee
            );
            let outcome = cx
                .ask_user(prompt, approval_schema())
                .timeout(Duration::from_secs(24 * 60 * 60))
                .await?;
            match outcome {
                AskOutcome::Answered { answer, by } => {
                    if answer["approve"] != json!(true) {
                        return Ok(PaymentDecision {
                            status: "rejected".into(),
                            decided_by: Some(by),
                            receipt: None,
                        });
                    }
                    decided_by = Some(by);
                }
                AskOutcome::TimedOut => {
                    return Ok(PaymentDecision {
                        status: "expired".into(),
                        decided_by: None,
                        receipt: None,
                    });
                }
            }
        }
        let tool = cx.tool();
        let receipt = cx
            .step("initiate_payment", self.initiate_payment(&tool, req))
            .await?;
        Ok(PaymentDecision {
            status: "paid".into(),
            decided_by,
            receipt: Some(receipt),
        })
    }

    /// Fetch the month's transactions from the bank.
    #[tool(scope = "finance:read")]
    pub async fn ingest_transactions(
        &self,
        _cx: &ToolContext,
        req: MonthRequest,
    ) -> Result<Vec<Transaction>, Error> {
        let (year, month) = parse_month(&req.month)?;
        Ok(fake_transactions(year, month))
    }

    /// Report income, spending per category and categories over budget for a month.
    #[tool(scope = "finance:write")]
    pub async fn generate_report(
        &self,
        cx: &ToolContext,
        req: ReportRequest,
    ) -> Result<Report, Error> {
        let txs = self
            .ingest_transactions(
                cx,
                MonthRequest {
                    month: req.month.clone(),
                },
            )
            .await?;
        Ok(build_report(&req.month, &txs, &req.budget_cents))
    }

    /// Initiate a payment (recorded as pending; the bank confirms later).
    #[tool(scope = "payments:manage")]
    pub async fn initiate_payment(
        &self,
        cx: &ToolContext,
        req: PaymentRequest,
    ) -> Result<PaymentReceipt, Error> {
        if !(1..=1_000_000).contains(&req.amount_cents) {
            return Err(Error::invalid_field(
                "/amount_cents",
                "must be between 1 and 1000000 cents",
            ));
        }
        let mut payments = self.payments.lock().map_err(|_| Error::agent("poisoned"))?;
        let receipt = PaymentReceipt {
            payment_id: format!("pay-{}-{}", cx.principal().user_id, payments.len() + 1),
            payee: req.payee,
            amount_cents: req.amount_cents,
            status: "pending".into(),
        };
        payments.push(receipt.clone());
        Ok(receipt)
    }
}

fn build_report(month: &str, txs: &[Transaction], budget: &BTreeMap<String, i64>) -> Report {
    let mut spending: BTreeMap<String, i64> = BTreeMap::new();
    let mut income = 0;
    for tx in txs {
        if tx.amount_cents >= 0 {
            income += tx.amount_cents;
        } else {
            *spending.entry(tx.category.clone()).or_default() -= tx.amount_cents;
        }
    }
    let over_budget = spending
        .iter()
        .filter_map(|(c, spent)| {
            let limit = *budget.get(c)?;
            (*spent > limit).then(|| (c.clone(), spent - limit))
        })
        .collect();
    let spent: i64 = spending.values().sum();
    Report {
        month: month.to_owned(),
        income_cents: income,
        spending_cents: spending,
        over_budget,
        net_cents: income - spent,
    }
}

/// What the demo saw, for its test.
#[derive(Debug)]
pub struct Demo {
    /// The `monthly_report` task's output.
    pub report: Value,
    /// The small payment (no approval asked).
    pub small: PaymentDecision,
    /// The question the first large payment asked (its `waiting_for_input` prompt).
    pub question: String,
    /// The first large payment, approved.
    pub approved: PaymentDecision,
    /// The JSON pointers of the refused answer of the wrong shape.
    pub refused_at: Vec<String>,
    /// The second large payment, rejected.
    pub rejected: PaymentDecision,
    /// The refusal of an installation that does not grant `payments:manage`.
    pub denied: String,
}

/// Submits a task as `by` and returns its id.
async fn submit(
    platform: &Platform,
    by: &Principal,
    task: &str,
    input: Value,
) -> Result<uuid::Uuid, Error> {
    platform
        .submit(TaskRequest::new(AGENT_ID, task, input, by.clone()))
        .await
}

/// Watches task `id` until it asks its question; returns the prompt.
async fn question_of(platform: &Platform, id: uuid::Uuid, by: &Principal) -> Result<String, Error> {
    let mut events = platform.watch(id, by).await?;
    while let Some(event) = events.next().await {
        if let TaskEventKind::WaitingForInput { prompt, .. } = event?.kind {
            return Ok(prompt);
        }
    }
    Err(Error::agent("the task ended without asking"))
}

/// The output of finished task `id`, decoded.
async fn output_of<T: serde::de::DeserializeOwned>(
    platform: &Platform,
    id: uuid::Uuid,
    by: &Principal,
) -> Result<T, Box<dyn std::error::Error>> {
    let task = platform.wait(id, by).await?;
    let output = task
        .output
        .ok_or_else(|| format!("task {id} ended {} without an output", task.status))?;
    Ok(serde_json::from_value(output)?)
}

/// The agent's id (its slug).
const AGENT_ID: &str = "financeagent";

/// Runs the agent through a platform: install, submit, watch, answer (see the module docs).
pub async fn demo() -> Result<Demo, Box<dyn std::error::Error>> {
    let platform = Platform::builder()
        .agent(FinanceAgent::default())
        .build()
        .await?;
    let alice = Principal::new("alice").with_roles(["user"]);
    let grant = ["finance:read", "finance:write", "payments:manage"];
    platform
        .registry()
        .install(&alice, InstallRequest::latest(AGENT_ID).grant(grant))
        .await?;

    let id = submit(
        &platform,
        &alice,
        "monthly_report",
        json!({"month": "2026-04", "budget_cents": {"rent": 140000, "groceries": 40000}}),
    )
    .await?;
    let report: Value = output_of(&platform, id, &alice).await?;
    println!("monthly_report -> {}", shorten(&report.to_string()));

    let id = submit(
        &platform,
        &alice,
        "pay",
        json!({"payee": "City Power", "amount_cents": 8450, "reference": "March bill"}),
    )
    .await?;
    let small: PaymentDecision = output_of(&platform, id, &alice).await?;
    println!("pay 84.50 -> {} (no approval needed)", small.status);

    let id = submit(
        &platform,
        &alice,
        "pay",
        json!({"payee": "Landlord", "amount_cents": 250000, "reference": "Deposit"}),
    )
    .await?;
    let question = question_of(&platform, id, &alice).await?;
    println!("pay 2500.00 asks: {question}");
    let waiting = platform.get(id, &alice).await?;
    println!("  task is {} (no worker held)", waiting.status);
    platform
        .answer(id, &alice, json!({"approve": true, "comment": "expected"}))
        .await?;
    let approved: PaymentDecision = output_of(&platform, id, &alice).await?;
    println!(
        "  approved by {} -> {}",
        approved.decided_by.as_deref().unwrap_or("-"),
        approved.status
    );

    let id = submit(
        &platform,
        &alice,
        "pay",
        json!({"payee": "Unknown Ltd", "amount_cents": 990000}),
    )
    .await?;
    let question2 = question_of(&platform, id, &alice).await?;
    println!("pay 9900.00 asks: {question2}");
    let refused = platform
        .answer(id, &alice, json!({"approve": "maybe"}))
        .await
        .err()
        .ok_or("an answer of the wrong shape was accepted")?;
    let refused_at: Vec<String> = refused
        .field_errors()
        .iter()
        .map(|f| f.pointer.clone())
        .collect();
    println!(
        "  answer {{\"approve\": \"maybe\"}} refused ({}) at {refused_at:?}",
        refused.category()
    );
    platform
        .answer(id, &alice, json!({"approve": false}))
        .await?;
    let rejected: PaymentDecision = output_of(&platform, id, &alice).await?;
    println!(
        "  rejected by {} -> {}",
        rejected.decided_by.as_deref().unwrap_or("-"),
        rejected.status
    );

    // An installation must grant every scope the agent declares: one without
    // `payments:manage` is refused.
    let bob = Principal::new("bob").with_roles(["user"]);
    let denied = platform
        .registry()
        .install(
            &bob,
            InstallRequest::latest(AGENT_ID).grant(["finance:read"]),
        )
        .await
        .err()
        .ok_or("an installation without payments:manage was accepted")?
        .to_string();
    println!("\nwithout payments:manage: {denied}");

    platform.shutdown(Duration::from_secs(1)).await;
    Ok(Demo {
        report,
        small,
        question,
        approved,
        refused_at,
        rejected,
        denied,
    })
}

/// The first 160 characters of a long output.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Prints the manifest, then runs [`demo`].
#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = serde_json::to_value(FinanceAgent::default().manifest())?;
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    capecontrol::validate::check_manifest(&manifest)?;
    println!("manifest: valid\n");
    demo().await?;
    Ok(())
}
