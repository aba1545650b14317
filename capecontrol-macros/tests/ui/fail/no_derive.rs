use capecontrol::prelude::*;

struct T;

#[agent_impl]
impl T {
    #[task]
    async fn run(&self, _cx: &TaskContext, n: u32) -> Result<u32, Error> {
        Ok(n)
    }
}

fn main() {}
