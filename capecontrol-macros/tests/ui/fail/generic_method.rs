use capecontrol::prelude::*;

/// A test agent.
#[derive(Agent)]
#[agent(name = "T", version = "1.0.0")]
struct T;

#[agent_impl]
impl T {
    #[task]
    async fn run<N: Send>(&self, _cx: &TaskContext, n: N) -> Result<u32, Error> {
        drop(n);
        Ok(1)
    }
}

fn main() {}
