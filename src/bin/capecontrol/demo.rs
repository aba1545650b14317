//! The quickstart's onboarding guide (a task of three durable steps and a tool), defined once:
//! `examples/quickstart.rs` runs it, `capecontrol serve --demo` registers it so that a new user
//! can try the API at once, and `examples/http_server.rs` serves it.

use std::time::Duration;

use capecontrol::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Onboards a new user: looks up their profile, builds a checklist of the features they have
/// not tried, and writes a short welcome.
#[derive(Agent, Default)]
#[agent(
    name = "Onboarding Guide",
    version = "1.0.0",
    category = "ai-assisted",
    placement = "chat",
    scopes("profile:read", "checklist:write"),
    roles("user"),
    timeout = 30,
    retries = 2
)]
pub(crate) struct OnboardingGuide;

/// Who to onboard.
#[derive(Debug, Deserialize, JsonSchema)]
struct OnboardRequest {
    /// The user's display name.
    name: String,
    /// Features the user has already used.
    #[serde(default)]
    used: Vec<String>,
}

/// A user's profile.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Profile {
    /// Display name.
    name: String,
    /// Plan.
    plan: String,
}

/// The onboarding result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Onboarding {
    /// The welcome text.
    welcome: String,
    /// Features to try next.
    checklist: Vec<String>,
}

const FEATURES: [&str; 5] = ["dashboard", "budgets", "reports", "alerts", "integrations"];

#[agent_impl]
impl OnboardingGuide {
    /// Onboard a user in three durable steps.
    #[task]
    async fn onboard(&self, cx: &TaskContext, req: OnboardRequest) -> Result<Onboarding, Error> {
        let profile: Profile = cx
            .step("profile", async {
                self.lookup_profile(&cx.tool(), req.name.clone()).await
            })
            .await?;
        let checklist: Vec<String> = cx
            .step("checklist", async {
                tokio::time::sleep(Duration::from_millis(150)).await; // some real work
                Ok::<_, Error>(
                    FEATURES
                        .iter()
                        .filter(|f| !req.used.iter().any(|u| u == *f))
                        .map(|f| f.to_string())
                        .collect(),
                )
            })
            .await?;
        let welcome: String = cx
            .step("welcome", async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok::<_, Error>(format!(
                    "Welcome, {} ({} plan)! {} features are waiting for you.",
                    profile.name,
                    profile.plan,
                    checklist.len()
                ))
            })
            .await?;
        Ok(Onboarding { welcome, checklist })
    }

    /// Look up a user's profile.
    #[tool(scope = "profile:read")]
    async fn lookup_profile(&self, _cx: &ToolContext, name: String) -> Result<Profile, Error> {
        Ok(Profile {
            name,
            plan: "premium".into(),
        })
    }
}
