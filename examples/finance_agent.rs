//! The example FinanceAgent: budget tracking and payment processing.
//!
//! Tools: `ingest_transactions`, `generate_report`, `initiate_payment`; scopes `finance:read`,
//! `finance:write`, `payments:manage`. The bank is faked: transactions are generated
//! deterministically from the month, and payments are only recorded.
//!
//! Run it with `cargo run --example finance_agent`: it prints the manifest, calls each tool by
//! name with JSON (as an LLM tool call would), runs the `monthly_report` task, and shows a
//! payment denied to an installation that was not granted `payments:manage`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use capecontrol::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

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
    triggers(events("payment.completed"), schedules("0 9 1 * *")),
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

/// The first 160 characters of a long output.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn context(
    granted: &[&str],
) -> Result<(Arc<MemoryJournal>, TaskContext), Box<dyn std::error::Error>> {
    let journal = Arc::new(MemoryJournal::default());
    let scopes = granted
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<Scope>, _>>()?;
    let cx = TaskContext::local()
        .principal(Principal::new("alice"))
        .granted(scopes)
        .build(journal.clone());
    Ok((journal, cx))
}

/// Prints the manifest, calls the tools and the `monthly_report` task by name with JSON, and
/// shows a payment denied without `payments:manage`.
#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let agent = FinanceAgent::default();
    let manifest = serde_json::to_value(agent.manifest())?;
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    capecontrol::validate::check_manifest(&manifest)?;
    println!("manifest: valid\n");

    let (journal, cx) = context(&["finance:read", "finance:write", "payments:manage"])?;
    let calls = [
        ("ingest_transactions", json!({"month": "2026-03"})),
        (
            "generate_report",
            json!({"month": "2026-03", "budget_cents": {"groceries": 30000, "transport": 10000}}),
        ),
        (
            "initiate_payment",
            json!({"payee": "City Power", "amount_cents": 8450, "reference": "March bill"}),
        ),
        (
            "initiate_payment",
            json!({"payee": "Nobody", "amount_cents": "lots"}),
        ),
        ("transfer_everything", json!({})),
    ];
    for (tool, input) in calls {
        match agent.call_tool(tool, input, &cx.tool()).await {
            Ok(out) => println!("{tool} -> {}", shorten(&out.to_string())),
            Err(e) => println!("{tool} -> error ({}): {e}", e.category()),
        }
    }

    let report = agent
        .run_task(
            "monthly_report",
            json!({"month": "2026-04", "budget_cents": {"rent": 140000, "groceries": 40000}}),
            &cx,
        )
        .await?;
    println!("\nmonthly_report -> {report}");
    for step in journal.steps() {
        println!("  step {} {} {}", step.step, step.name, step.status);
    }

    let (_, limited) = context(&["finance:read"])?;
    let denied = agent
        .call_tool(
            "initiate_payment",
            json!({"payee": "x", "amount_cents": 1}),
            &limited.tool(),
        )
        .await;
    if let Err(e) = denied {
        println!("\nwithout payments:manage: {e}");
    }
    Ok(())
}
