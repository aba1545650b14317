//! `#[agent_impl]` on a type whose metadata is written by hand, and a generic agent.
use capecontrol::prelude::*;
use capecontrol::manifest::Manifest;

struct Computed<T> {
    greeting: T,
}

impl<T> AgentMetadata for Computed<T> {
    fn metadata() -> Manifest {
        serde_json::from_value(serde_json::json!({
            "name": "Computed", "version": "2.0.0", "description": "Metadata computed at run time."
        }))
        .unwrap()
    }
}

#[agent_impl]
impl<T: AsRef<str> + Send + Sync + 'static> Computed<T> {
    #[tool]
    async fn greet(&self, _cx: &ToolContext, name: String) -> Result<String, Error> {
        Ok(format!("{}, {name}", self.greeting.as_ref()))
    }
}

fn main() {
    let agent = Computed { greeting: "hello" };
    assert_eq!(agent.manifest().tools, ["greet"]);
    let _: &dyn AgentBase = &agent;
}
