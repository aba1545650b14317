//! An agent written against the facade renamed to `cape` in `Cargo.toml`: the macros find the
//! facade under that name (no `crate = ".."` needed).

use cape::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Echoes its input.
#[derive(Debug, Agent)]
#[agent(name = "Echo", version = "0.1.0", scopes("echo:read"))]
pub struct Echo;

/// What to echo.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Text {
    /// The text.
    pub text: String,
}

#[agent_impl]
impl Echo {
    /// Echo the text back.
    #[task]
    pub async fn echo(&self, _cx: &TaskContext, input: Text) -> Result<Text, Error> {
        Ok(input)
    }

    /// Shout the text.
    #[tool(scope = "echo:read")]
    pub async fn shout(&self, _cx: &ToolContext, input: Text) -> Result<String, Error> {
        Ok(input.text.to_uppercase())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn the_renamed_facade_works() {
        let m = Echo.manifest();
        assert_eq!(m.tools, ["shout"]);
        assert!(cape::validate::validate_manifest(&serde_json::to_value(&m).unwrap()).is_ok());
        let cx = TaskContext::local()
            .granted(vec!["echo:read".parse().unwrap()])
            .build(Arc::new(MemoryJournal::default()));
        let out = Echo
            .call_tool("shout", serde_json::json!({"text": "hi"}), &cx.tool())
            .await
            .unwrap();
        assert_eq!(out, "HI");
    }
}
