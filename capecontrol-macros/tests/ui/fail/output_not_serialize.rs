use capecontrol::prelude::*;

/// A test agent.
#[derive(Agent)]
#[agent(name = "T", version = "1.0.0")]
struct T;

#[derive(schemars::JsonSchema)]
struct Output {
    n: u32,
}

#[agent_impl]
impl T {
    #[task]
    async fn run(&self, _cx: &TaskContext, n: u32) -> Result<Output, Error> {
        Ok(Output { n })
    }
}

fn main() {}
