use capecontrol::prelude::*;

/// A test agent.
#[derive(Agent)]
#[agent(name = "T", version = "1.0.0")]
struct T;

#[derive(serde::Deserialize)]
struct Input {
    n: u32,
}

#[agent_impl]
impl T {
    #[task]
    async fn run(&self, _cx: &TaskContext, input: Input) -> Result<u32, Error> {
        Ok(input.n)
    }
}

fn main() {}
