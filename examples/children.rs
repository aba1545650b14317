//! Child tasks: a task fans out to one child task per number and joins them, on the embedded
//! default (the in-memory store, in-process agents).
//!
//! `sum_of_squares` spawns `square` for each of 1..=upto with `cx.spawn` (each child a queued
//! task of its own, submitted as the parent's user), then `cx.join`s them: the parent waits
//! without a worker until every child has ended, and gets each child's output — or its typed
//! error (`square` refuses 13). Both are journal steps: a replay spawns nothing twice and does
//! not wait again.
//!
//! Run it with `cargo run --example children`.

use capecontrol::prelude::*;
use capecontrol::registry::InstallRequest;
use capecontrol::store::{TaskFilter, TaskRecord};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Squares numbers, one child task per number.
#[derive(Debug, Agent)]
#[agent(name = "Squares", version = "1.0.0")]
pub struct Squares;

/// A number.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Number {
    /// The number.
    pub n: u64,
}

/// How far to count.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Upto {
    /// The last number.
    pub upto: u64,
}

/// What `sum_of_squares` found.
#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// The sum of the squares the children computed.
    pub sum: u64,
    /// How many children ran.
    pub children: usize,
    /// The errors of the children that failed, as `category: message`.
    pub failed: Vec<String>,
}

#[agent_impl]
impl Squares {
    /// Squares a number (13 is refused, with a validation error at `/n`).
    #[task]
    async fn square(&self, _cx: &TaskContext, x: Number) -> Result<u64, Error> {
        if x.n == 13 {
            return Err(Error::invalid_field("/n", "13 is unlucky"));
        }
        Ok(x.n * x.n)
    }

    /// Sums the squares of 1..=upto, one child task per number.
    #[task]
    async fn sum_of_squares(&self, cx: &TaskContext, u: Upto) -> Result<Report, Error> {
        let mut children = Vec::new();
        for n in 1..=u.upto {
            children.push(cx.spawn("squares", "square", json!({ "n": n })).await?);
        }
        // Waits durably (the task is `waiting`, no worker held) until all have ended.
        let outcomes = cx.join(children).await?;
        let mut report = Report {
            sum: 0,
            children: outcomes.len(),
            failed: Vec::new(),
        };
        for outcome in outcomes {
            match outcome.into_result() {
                Ok(square) => report.sum += square.as_u64().unwrap_or(0),
                Err(e) => report.failed.push(format!("{:?}: {e}", e.category())),
            }
        }
        Ok(report)
    }
}

/// Runs `sum_of_squares` up to `upto` for alice: the parent task, finished, and its children.
pub async fn run(
    upto: u64,
) -> std::result::Result<(TaskRecord, Vec<TaskRecord>), Box<dyn std::error::Error>> {
    let platform = Platform::builder().agent(Squares).build().await?;
    let alice = Principal::new("alice").with_roles(["user"]);
    platform
        .registry()
        .install(&alice, InstallRequest::latest("squares"))
        .await?;
    let id = platform
        .submit(TaskRequest::new(
            "squares",
            "sum_of_squares",
            json!({ "upto": upto }),
            alice.clone(),
        ))
        .await?;
    let parent = platform.wait(id, &alice).await?;
    // The children are alice's tasks like any other, linked to their parent.
    let filter = TaskFilter {
        user_id: Some("alice".into()),
        parent_id: Some(id),
        ..TaskFilter::default()
    };
    let children = platform.tasks(&alice, filter).await?;
    platform.shutdown(std::time::Duration::from_secs(1)).await;
    Ok((parent, children))
}

/// Runs the example for 1..=20 and prints what the parent and its children did.
#[tokio::main]
pub async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let (parent, children) = run(20).await?;
    println!("parent {}: {}", parent.id, parent.status);
    let report: Report = serde_json::from_value(parent.output.unwrap_or_default())?;
    println!(
        "{} children, sum of their squares {}, failed: {:?}",
        report.children, report.sum, report.failed
    );
    for child in children.iter().take(3) {
        println!(
            "  child {} ({}): {:?}",
            child.id, child.status, child.output
        );
    }
    Ok(())
}
