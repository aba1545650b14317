use capecontrol::prelude::*;

/// A test agent.
#[derive(Agent)]
#[agent(name = "T", version = "1.0.0")]
struct T;

#[agent_impl]
impl T {
    #[task]
    async fn run(_cx: &TaskContext, n: u32) -> Result<u32, Error> {
        Ok(n)
    }
}

fn main() {}
