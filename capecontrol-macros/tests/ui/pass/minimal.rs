use capecontrol::prelude::*;

/// The smallest agent: a doc comment is its description.
#[derive(Agent)]
#[agent(name = "Minimal", version = "0.1.0")]
struct Minimal;

#[agent_impl]
impl Minimal {
    /// Add one.
    #[task]
    async fn inc(&self, _cx: &TaskContext, n: u64) -> Result<u64, Error> {
        Ok(n + 1)
    }
}

fn main() {
    let m = Minimal.manifest();
    assert_eq!(m.description, "The smallest agent: a doc comment is its description.");
    assert_eq!(m.tasks[0].name, "inc");
    assert!(m.tools.is_empty());
}
