use capecontrol::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Agent)]
#[agent(
    name = "Everything",
    version = "1.0.0-rc.1+build.5",
    description = "Uses every key of #[agent(...)].",
    category = "utility",
    placement = "background",
    scopes("files:read", "files:*"),
    roles("admin"),
    data_access("system_metrics"),
    timeout = 300,
    retries = 0,
    memory_limit = "1GiB",
    cpu_limit = "2",
    concurrent_tasks = 1,
    ask_timeout = 3600,
    triggers(events("file.created"), schedules("*/15 8-18 * JAN-MAR MON-FRI"), webhooks("/hooks/{id}")),
    ui(icon = "📁", color = "#abc", description_short = "Files", settings = Settings),
    container(image = "example/everything:1.0.0", command("/bin/agent", "--serve")),
    crate = ::capecontrol
)]
struct Everything;

/// Settings.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Settings {
    root: String,
}

#[derive(Serialize, Deserialize, JsonSchema)]
struct Path {
    path: String,
}

#[agent_impl(crate = "::capecontrol")]
impl Everything {
    /// Read a file.
    #[tool(scope = "files:read", name = "read_file", description = "Reads one file.")]
    async fn read(&self, _: &ToolContext, p: Path) -> capecontrol::Result<String> {
        Ok(p.path)
    }

    #[task(name = "scan", timeout = 1)]
    async fn r#scan_all(&self, cx: &TaskContext, p: Path) -> Result<Vec<String>, Error> {
        let one = self.read(&cx.tool(), p).await?;
        Ok(vec![one])
    }
}

fn main() {
    let m = Everything.manifest();
    assert_eq!(m.tools, ["read_file"]);
    assert_eq!(m.tool_specs[0].description.as_deref(), Some("Reads one file."));
    assert_eq!(m.tasks[0].name, "scan");
    assert_eq!(m.tasks[0].description, None);
    assert!(capecontrol::validate::validate_manifest(&serde_json::to_value(&m).unwrap()).is_ok());
}
