use capecontrol::prelude::*;

/// A test agent.
#[derive(Agent)]
#[agent(name = "T", version = "1.0.0", scopes("finance:read"))]
struct T;

#[agent_impl]
impl T {
    #[tool(scope = "payments:manage")]
    async fn pay(&self, _cx: &ToolContext, cents: u64) -> Result<u64, Error> {
        Ok(cents)
    }
}

fn main() {}
