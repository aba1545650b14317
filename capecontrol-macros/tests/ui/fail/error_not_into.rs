use capecontrol::prelude::*;

/// A test agent.
#[derive(Agent)]
#[agent(name = "T", version = "1.0.0")]
struct T;

#[derive(Debug)]
struct MyError;

#[agent_impl]
impl T {
    #[task]
    async fn run(&self, _cx: &TaskContext, n: u32) -> Result<u32, MyError> {
        Ok(n)
    }
}

fn main() {}
