//! A generic agent type, and a task without input (`()`, JSON `null`).
use std::sync::Arc;

use capecontrol::prelude::*;

#[derive(Agent)]
#[agent(name = "Counter", version = "1.0.0", description = "Reports a number.")]
struct Counter<T: Send + Sync + 'static> {
    value: T,
}

#[agent_impl]
impl<T: Copy + Into<u64> + Send + Sync + 'static> Counter<T> {
    /// The current value.
    #[task]
    async fn current(&self, _cx: &TaskContext, _: ()) -> Result<u64, Error> {
        Ok(self.value.into())
    }
}

#[tokio::main]
async fn main() {
    let agent = Counter { value: 7u8 };
    let cx = TaskContext::local().build(Arc::new(MemoryJournal::default()));
    let out = agent.run_task("current", serde_json::Value::Null, &cx).await.unwrap();
    assert_eq!(out, 7);
    assert_eq!(agent.manifest().tasks[0].input_schema.as_ref().unwrap()["type"], "null");
}
