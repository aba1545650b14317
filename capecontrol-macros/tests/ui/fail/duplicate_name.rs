use capecontrol::prelude::*;

/// A test agent.
#[derive(Agent)]
#[agent(name = "T", version = "1.0.0")]
struct T;

#[agent_impl]
impl T {
    #[tool]
    async fn lookup(&self, _cx: &ToolContext, n: u32) -> Result<u32, Error> {
        Ok(n)
    }

    #[tool(name = "lookup")]
    async fn lookup_again(&self, _cx: &ToolContext, n: u32) -> Result<u32, Error> {
        Ok(n)
    }
}

fn main() {}
