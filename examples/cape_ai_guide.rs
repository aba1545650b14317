//! The example CapeAIGuide: contextual onboarding and feature discovery.
//!
//! Tools: `ask_user`, `generate_checklist`, `summarize_feedback`; scopes `profile:write`,
//! `checklist:write`. No language model is involved: questions and checklists come from a
//! fixed catalogue of features, and feedback is summarized by counting.
//!
//! The `user.onboard` event starts its first task, `onboard`, with the event's payload as input
//! (see `docs/writing-agents.md`, "Triggers").
//!
//! Run it with `cargo run --example cape_ai_guide`: an embedded platform installs it for a user,
//! submits `onboard` and follows its events, then emits `user.onboard` for another user.

use capecontrol::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Contextual onboarding and feature discovery: asks new users about their goals, builds an
/// onboarding checklist from them and summarizes what users say about it.
#[derive(Debug, Agent)]
#[agent(
    name = "CapeAIGuide",
    version = "0.3.1",
    category = "ai-assisted",
    placement = "chat",
    scopes("profile:write", "checklist:write"),
    roles("user"),
    data_access("user_data"),
    timeout = 30,
    triggers(events("user.onboard")),
    ui(
        icon = "🧭",
        color = "#3B82F6",
        description_short = "Onboarding and feature discovery"
    )
)]
pub struct CapeAiGuide {
    catalogue: Vec<Feature>,
}

/// A product feature the guide can point users to.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Feature {
    /// Stable identifier.
    pub id: String,
    /// What the user sees.
    pub title: String,
    /// Goals (lowercase keywords) the feature serves.
    pub goals: Vec<String>,
    /// Roles the feature is meant for (empty: everyone).
    pub roles: Vec<String>,
}

impl Default for CapeAiGuide {
    fn default() -> Self {
        let f = |id: &str, title: &str, goals: &[&str], roles: &[&str]| Feature {
            id: id.into(),
            title: title.into(),
            goals: goals.iter().map(|s| (*s).into()).collect(),
            roles: roles.iter().map(|s| (*s).into()).collect(),
        };
        Self {
            catalogue: vec![
                f("profile", "Complete your profile", &[], &[]),
                f("budget", "Set a monthly budget", &["save", "budget"], &[]),
                f("bank", "Connect your bank account", &["budget", "pay"], &[]),
                f("meter", "Pair your smart meter", &["energy"], &[]),
                f("alerts", "Turn on usage alerts", &["energy", "save"], &[]),
                f("team", "Invite your team", &["collaborate"], &["admin"]),
            ],
        }
    }
}

/// Input of `ask_user`: what to ask about.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AskRequest {
    /// The topic: `goals`, `experience` or `feedback`.
    pub topic: String,
    /// The user's first name, to address them.
    #[serde(default)]
    pub user_name: Option<String>,
}

/// A question for the host UI to put to the user.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Question {
    /// The question's id (the answer refers to it).
    pub id: String,
    /// The text to show.
    pub text: String,
    /// Choices; empty for a free-text answer.
    pub choices: Vec<String>,
    /// Whether several choices may be picked.
    pub multiple: bool,
}

/// Input of `generate_checklist`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChecklistRequest {
    /// The user's role (`user`, `admin`).
    pub role: String,
    /// The goals the user picked.
    pub goals: Vec<String>,
    /// Feature ids already done.
    #[serde(default)]
    pub completed: Vec<String>,
}

/// An onboarding checklist.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Checklist {
    /// The items, most relevant first.
    pub items: Vec<ChecklistItem>,
    /// Share of items done, 0–100.
    pub progress_percent: u8,
}

/// One checklist item.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChecklistItem {
    /// The feature's id.
    pub feature: String,
    /// What to do.
    pub title: String,
    /// Whether it is done.
    pub done: bool,
}

/// Input of `summarize_feedback`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FeedbackBatch {
    /// Users' answers.
    pub responses: Vec<Feedback>,
}

/// One user's feedback.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Feedback {
    /// 1 (bad) to 5 (great).
    pub rating: u8,
    /// Free text.
    #[serde(default)]
    pub comment: String,
}

/// What users said.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FeedbackSummary {
    /// How many responses.
    pub count: usize,
    /// Mean rating, one decimal.
    pub average_rating: f64,
    /// Responses rated 4 or 5.
    pub promoters: usize,
    /// Responses rated 1 or 2.
    pub detractors: usize,
    /// Words that come up most in comments (most frequent first, at most 3).
    pub top_words: Vec<String>,
}

/// Input of the `onboard` task.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct OnboardRequest {
    /// The user's first name.
    pub user_name: String,
    /// The user's role.
    pub role: String,
    /// The goals the user picked.
    pub goals: Vec<String>,
}

/// The result of onboarding a user.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Onboarding {
    /// The welcome question to show.
    pub welcome: Question,
    /// The user's checklist.
    pub checklist: Checklist,
}

#[agent_impl]
impl CapeAiGuide {
    /// Onboard a new user: a welcome question, then a checklist for their goals.
    #[task]
    pub async fn onboard(
        &self,
        cx: &TaskContext,
        req: OnboardRequest,
    ) -> Result<Onboarding, Error> {
        let tool = cx.tool();
        let ask = AskRequest {
            topic: "experience".into(),
            user_name: Some(req.user_name),
        };
        let welcome = cx.step("welcome", self.ask_user(&tool, ask)).await?;
        let list = ChecklistRequest {
            role: req.role,
            goals: req.goals,
            completed: vec![],
        };
        let checklist = cx
            .step("checklist", self.generate_checklist(&tool, list))
            .await?;
        Ok(Onboarding { welcome, checklist })
    }

    /// Prepare a question for the user about a topic (`goals`, `experience` or `feedback`).
    #[tool]
    pub async fn ask_user(&self, _cx: &ToolContext, req: AskRequest) -> Result<Question, Error> {
        let hello = req
            .user_name
            .map(|n| format!("Hi {n}! "))
            .unwrap_or_default();
        let (text, choices, multiple) = match req.topic.as_str() {
            "goals" => {
                let mut goals: Vec<String> = self
                    .catalogue
                    .iter()
                    .flat_map(|f| f.goals.clone())
                    .collect();
                goals.sort();
                goals.dedup();
                ("What would you like to do first?", goals, true)
            }
            "experience" => (
                "Have you used a tool like this before?",
                vec!["never".into(), "a little".into(), "daily".into()],
                false,
            ),
            "feedback" => ("How is onboarding going so far?", vec![], false),
            other => {
                return Err(Error::invalid_field(
                    "/topic",
                    format!("unknown topic `{other}`; expected goals, experience or feedback"),
                ));
            }
        };
        Ok(Question {
            id: format!("q-{}", req.topic),
            text: format!("{hello}{text}"),
            choices,
            multiple,
        })
    }

    /// Build an onboarding checklist for the user's role and goals.
    #[tool(scope = "checklist:write")]
    pub async fn generate_checklist(
        &self,
        _cx: &ToolContext,
        req: ChecklistRequest,
    ) -> Result<Checklist, Error> {
        let mut items: Vec<(usize, ChecklistItem)> = self
            .catalogue
            .iter()
            .filter(|f| f.roles.is_empty() || f.roles.contains(&req.role))
            .filter_map(|f| {
                let hits = f.goals.iter().filter(|g| req.goals.contains(g)).count();
                (f.goals.is_empty() || hits > 0).then(|| {
                    let item = ChecklistItem {
                        feature: f.id.clone(),
                        title: f.title.clone(),
                        done: req.completed.contains(&f.id),
                    };
                    (hits, item)
                })
            })
            .collect();
        // Undone first, then the features that serve the most goals; stable otherwise.
        items.sort_by_key(|(hits, item)| (item.done, std::cmp::Reverse(*hits)));
        let done = items.iter().filter(|(_, i)| i.done).count();
        let progress_percent = (done * 100).checked_div(items.len()).unwrap_or(0) as u8;
        Ok(Checklist {
            items: items.into_iter().map(|(_, item)| item).collect(),
            progress_percent,
        })
    }

    /// Summarize users' feedback on onboarding and keep the summary in their profile.
    #[tool(scope = "profile:write")]
    pub async fn summarize_feedback(
        &self,
        _cx: &ToolContext,
        batch: FeedbackBatch,
    ) -> Result<FeedbackSummary, Error> {
        if let Some(i) = batch
            .responses
            .iter()
            .position(|r| !(1..=5).contains(&r.rating))
        {
            return Err(Error::invalid_field(
                format!("/responses/{i}/rating"),
                "must be between 1 and 5",
            ));
        }
        let count = batch.responses.len();
        let sum: u32 = batch.responses.iter().map(|r| u32::from(r.rating)).sum();
        let average = if count == 0 {
            0.0
        } else {
            f64::from(sum) / count as f64
        };
        let mut words: std::collections::BTreeMap<String, usize> = Default::default();
        for r in &batch.responses {
            for w in r.comment.split(|c: char| !c.is_alphanumeric()) {
                if w.len() > 3 {
                    *words.entry(w.to_lowercase()).or_default() += 1;
                }
            }
        }
        let mut ranked: Vec<(String, usize)> = words.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(FeedbackSummary {
            count,
            average_rating: (average * 10.0).round() / 10.0,
            promoters: batch.responses.iter().filter(|r| r.rating >= 4).count(),
            detractors: batch.responses.iter().filter(|r| r.rating <= 2).count(),
            top_words: ranked.into_iter().take(3).map(|(w, _)| w).collect(),
        })
    }
}

/// What the example did.
#[derive(Debug)]
pub struct Outcome {
    /// The `onboard` task submitted by Bongani.
    pub submitted: capecontrol::store::TaskRecord,
    /// The names of its events, in order.
    pub events: Vec<&'static str>,
    /// The tools it called, in order, with whether each was allowed.
    pub tool_calls: Vec<(String, bool)>,
    /// The `onboard` task the `user.onboard` event started for Thandi's installation.
    pub triggered: capecontrol::store::TaskRecord,
}

/// Runs the guide through an embedded platform: install, submit, watch; then an event.
pub async fn run() -> Result<Outcome, Box<dyn std::error::Error>> {
    use capecontrol::events::TaskEventKind;
    use capecontrol::registry::InstallRequest;
    use capecontrol::runtime::Event;
    use tokio_stream::StreamExt;

    let platform = Platform::builder()
        .agent(CapeAiGuide::default())
        .build()
        .await?;
    let bongani = Principal::new("bongani").with_roles(["user"]);
    let install =
        || InstallRequest::latest("capeaiguide").grant(["profile:write", "checklist:write"]);
    platform.registry().install(&bongani, install()).await?;

    let input = json!({"user_name": "Bongani", "role": "user", "goals": ["budget"]});
    let id = platform
        .submit(TaskRequest::new(
            "capeaiguide",
            "onboard",
            input,
            bongani.clone(),
        ))
        .await?;
    let (mut events, mut tool_calls) = (Vec::new(), Vec::new());
    let mut stream = platform.watch(id, &bongani).await?;
    while let Some(event) = stream.next().await {
        let event = event?;
        println!("  #{:<2} {}", event.seq, event.kind.name());
        if let TaskEventKind::ToolCalled { tool, allowed } = &event.kind {
            tool_calls.push((tool.clone(), *allowed));
        }
        events.push(event.kind.name());
    }
    let submitted = platform.get(id, &bongani).await?;
    println!("onboard -> {}", serde_json::to_string(&submitted.output)?);

    // The host's sign-up code emits `user.onboard`: every installation subscribed to it runs
    // `onboard` (here Thandi's), with the payload as input, as the installation's user.
    let thandi = Principal::new("thandi").with_roles(["user"]);
    platform.registry().install(&thandi, install()).await?;
    platform
        .registry()
        .uninstall(&bongani, "capeaiguide")
        .await?;
    let host = Principal::new("signup-service").with_scopes(["events:emit"])?;
    let event = Event::new(
        "user.onboard",
        json!({"user_name": "Thandi", "role": "user", "goals": ["energy"]}),
    )
    .with_id("signup-thandi");
    let fired = platform.emit(event, &host).await?;
    let task = fired
        .first()
        .ok_or("the event started no task")?
        .task
        .clone()?;
    let triggered = platform.wait(task, &thandi).await?;
    println!(
        "user.onboard -> {}",
        serde_json::to_string(&triggered.output)?
    );
    platform.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(Outcome {
        submitted,
        events,
        tool_calls,
        triggered,
    })
}

/// Prints the manifest, then runs the guide through an embedded platform.
#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = serde_json::to_value(CapeAiGuide::default().manifest())?;
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    capecontrol::validate::check_manifest(&manifest)?;
    println!("manifest: valid\n");
    let outcome = run().await?;
    println!(
        "submitted: {}, triggered by user.onboard: {}",
        outcome.submitted.status, outcome.triggered.status
    );
    Ok(())
}
