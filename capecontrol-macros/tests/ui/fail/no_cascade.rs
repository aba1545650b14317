//! Two mistakes, two errors: the derive's bad version and a task that is not async. Neither
//! is followed by errors about the impls the macros could not write.
use capecontrol::prelude::*;

/// A test agent.
#[derive(Agent)]
#[agent(name = "T", version = "one", scopes("finance:read"))]
struct T;

#[agent_impl]
impl T {
    #[task]
    fn run(&self, _cx: &TaskContext, n: u32) -> Result<u32, Error> {
        Ok(n)
    }

    #[tool(scope = "finance:read")]
    async fn read(&self, _cx: &ToolContext, n: u32) -> Result<u32, Error> {
        Ok(n)
    }
}

fn main() {
    let _ = T.manifest();
}
