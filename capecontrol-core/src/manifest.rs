//! The agent manifest (its rules: `docs/contracts.md`), field for field, plus what the Rust platform adds:
//! `runtime` (native or container) and per-task / per-tool interface declarations.
//!
//! These types are the *wire format*. They derive serde and schemars; the JSON Schema generated
//! from them is checked in at `schemas/manifest.schema.json`. Deserializing a manifest does not
//! validate it: use [`crate::validate::validate_manifest`], which reports every problem at once.

mod builder;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use builder::ManifestBuilder;

/// The regular expressions (ECMA-262 and Rust `regex` compatible) that the published JSON Schema
/// puts on the manifest's string fields. [`crate::validate`] maps a failure of each to a readable
/// message.
pub mod patterns {
    /// At least one non-whitespace character.
    pub const NOT_BLANK: &str = r"\S";
    /// Strict SemVer 2.0.0 (the regular expression of semver.org).
    pub const SEMVER: &str = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?(\+([0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*))?$";
    /// Tool and task names.
    pub const IDENTIFIER: &str = r"^[a-z_][a-z0-9_]*$";
    /// Service names (`redis`, `postgresql`).
    pub const SERVICE: &str = r"^[a-z][a-z0-9_-]*$";
    /// Role and data-access names (`user`, `system_metrics`).
    pub const NAME: &str = r"^[A-Za-z_][A-Za-z0-9_-]*$";
    /// A policy scope `resource:action`, the action may be `*`.
    pub const SCOPE: &str = r"^[a-z][a-z0-9_-]*:(\*|[a-z][a-z0-9_-]*)$";
    /// A dotted lowercase event name (`payment.completed`): two or more segments, each a
    /// lowercase letter followed by lowercase letters, digits, `_` or `-`.
    pub const EVENT: &str = r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$";
    /// Five whitespace-separated cron fields (each is then parsed), optionally preceded by a
    /// `CRON_TZ=<IANA zone>` prefix.
    pub const CRON: &str = r"^\s*(CRON_TZ=\S*\s+)?\S+(\s+\S+){4}\s*$";
    /// An absolute URL path; `{id}` is the only placeholder.
    pub const WEBHOOK: &str = r"^(/([A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2}|\{id\})*)+$";
    /// `#RGB` or `#RRGGBB`.
    pub const COLOR: &str = r"^#([0-9A-Fa-f]{3}|[0-9A-Fa-f]{6})$";
    /// A number and a unit (`512MB`, `1.5GiB`).
    pub const MEMORY_LIMIT: &str = r"^[0-9]+(\.[0-9]+)?(B|KB|MB|GB|KiB|MiB|GiB)$";
    /// A decimal number of cores (`0.5`, `2`); must also be greater than 0.
    pub const CPU_LIMIT: &str = r"^[0-9]+(\.[0-9]+)?$";
    /// A version requirement on the language runtime: comma-separated comparators
    /// (`>=3.9`, `>=3.9,<4`) or a bare version (`3.11`).
    pub const PYTHON: &str = r"^\s*((==|!=|>=|<=|~=|>|<)?\s*[0-9]+(\.[0-9]+)*(\.\*)?)(\s*,\s*(==|!=|>=|<=|~=|>|<)\s*[0-9]+(\.[0-9]+)*(\.\*)?)*\s*$";
    /// A package name, optional extras and optional comma-separated comparators
    /// (`fastapi>=0.104.0`, `pydantic>=2,<3`, `uvicorn[standard]>=0.24`).
    pub const PACKAGE: &str = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(\[\s*[A-Za-z0-9._-]+(\s*,\s*[A-Za-z0-9._-]+)*\s*\])?(\s*(==|!=|>=|<=|~=|>|<)\s*[0-9]+(\.[0-9]+)*(\.\*|(a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?(\s*,\s*(==|!=|>=|<=|~=|>|<)\s*[0-9]+(\.[0-9]+)*(\.\*|(a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?)*)?\s*$";
}

/// An agent manifest (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "CapeControl agent manifest")]
pub struct Manifest {
    /// Display name, 1–64 characters, not blank.
    #[schemars(length(max = 64), pattern(patterns::NOT_BLANK))]
    pub name: String,
    /// Strict SemVer 2.0.0 (`1.2.3`, `1.0.0-rc.1+build.5`).
    #[schemars(pattern(patterns::SEMVER))]
    pub version: String,
    /// What the agent does; not blank.
    #[schemars(pattern(patterns::NOT_BLANK))]
    pub description: String,
    /// Where the agent appears in a host UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Marketplace category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// Names of the agent's tools (`^[a-z_][a-z0-9_]*$`, unique).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(patterns::IDENTIFIER)), extend("uniqueItems" = true))]
    pub tools: Vec<String>,
    /// What the agent needs from its host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Dependencies>,
    /// Execution limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Config>,
    /// Scopes, roles and data the agent needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
    /// Events, schedules and webhooks that start the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Triggers>,
    /// Presentation and the settings form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui: Option<Ui>,
    /// How the agent runs: in-process (`native`, the default) or in a container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// The agent's tasks with their input and output schemas (added by the Rust platform).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskDecl>,
    /// Details of the tools named in `tools` (added by the Rust platform).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_specs: Vec<ToolDecl>,
}

/// Where an agent is placed in a host UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Placement {
    /// A conversational surface.
    Chat,
    /// A dashboard widget.
    Dashboard,
    /// A step in a workflow.
    Workflow,
    /// Runs without a surface.
    Background,
}

/// Marketplace category of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Category {
    /// Contextual guidance, onboarding, conversational flows.
    AiAssisted,
    /// A business or IoT domain.
    DomainSpecific,
    /// Protects, logs or governs other agents.
    Middleware,
    /// Anything else.
    Utility,
}

/// `dependencies`: what an agent needs from its host environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dependencies {
    /// A version requirement on the language runtime (`>=3.9`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::PYTHON))]
    pub python: Option<String>,
    /// Package requirements (`fastapi>=0.104.0`, `pydantic>=2,<3`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(patterns::PACKAGE)))]
    pub packages: Vec<String>,
    /// Services the host must provide (`redis`, `postgresql`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(patterns::SERVICE)))]
    pub services: Vec<String>,
}

/// `config`: execution limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Wall-clock limit of one attempt, in seconds (1..=300, default 30).
    #[serde(
        default = "Config::default_timeout",
        deserialize_with = "crate::validate::integral"
    )]
    #[schemars(range(min = 1, max = 300))]
    pub timeout: u32,
    /// Retries after the first attempt (0..=10, default 3).
    #[serde(
        default = "Config::default_retries",
        deserialize_with = "crate::validate::integral"
    )]
    #[schemars(range(min = 0, max = 10))]
    pub retries: u32,
    /// Memory limit, a number and a unit (`512MB`, `1GiB`), at least 6 MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::MEMORY_LIMIT))]
    pub memory_limit: Option<String>,
    /// CPU limit in cores, a decimal string greater than 0 (`"0.5"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::CPU_LIMIT))]
    pub cpu_limit: Option<String>,
    /// Tasks of this agent that may run at once (≥ 1, default 5).
    #[serde(
        default = "Config::default_concurrent_tasks",
        deserialize_with = "crate::validate::integral"
    )]
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    pub concurrent_tasks: u32,
    /// How long a question asked with `ask_user` waits for its answer unless the question
    /// says otherwise, in seconds (1..=2,592,000, 30 days; default 86,400, one day). The
    /// wait holds no worker: this is wall-clock time, not part of `timeout`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::validate::integral_opt"
    )]
    #[schemars(range(min = 1, max = 2_592_000))]
    pub ask_timeout: Option<u32>,
}

impl Config {
    /// Default `timeout`: 30 seconds.
    pub const DEFAULT_TIMEOUT: u32 = capecontrol_rules::DEFAULT_TIMEOUT;
    /// Largest `timeout`: 300 seconds.
    pub const MAX_TIMEOUT: u32 = capecontrol_rules::MAX_TIMEOUT;
    /// Default `retries`.
    pub const DEFAULT_RETRIES: u32 = 3;
    /// Largest `retries`.
    pub const MAX_RETRIES: u32 = capecontrol_rules::MAX_RETRIES;
    /// Default `concurrent_tasks`.
    pub const DEFAULT_CONCURRENT_TASKS: u32 = 5;
    /// Largest `ask_timeout`: 30 days, in seconds.
    pub const MAX_ASK_TIMEOUT: u32 = capecontrol_rules::MAX_ASK_TIMEOUT;
    /// Smallest `memory_limit`, in bytes (6 MB).
    pub const MIN_MEMORY_BYTES: u64 = capecontrol_rules::MIN_MEMORY_BYTES;

    fn default_timeout() -> u32 {
        Self::DEFAULT_TIMEOUT
    }
    fn default_retries() -> u32 {
        Self::DEFAULT_RETRIES
    }
    fn default_concurrent_tasks() -> u32 {
        Self::DEFAULT_CONCURRENT_TASKS
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            timeout: Self::DEFAULT_TIMEOUT,
            retries: Self::DEFAULT_RETRIES,
            memory_limit: None,
            cpu_limit: None,
            concurrent_tasks: Self::DEFAULT_CONCURRENT_TASKS,
            ask_timeout: None,
        }
    }
}

/// `permissions`: what the agent may do and who may use it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// Policy scopes (`resource:action`, action may be `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(patterns::SCOPE)))]
    pub scopes: Vec<String>,
    /// Roles of which a principal must hold at least one to install or use the agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(patterns::NAME)))]
    pub required_roles: Vec<String>,
    /// Kinds of data the agent reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(patterns::NAME)))]
    pub data_access: Vec<String>,
}

/// `triggers`: what starts the agent besides a direct submit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    /// Dotted lowercase event names (`payment.completed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(patterns::EVENT)))]
    pub events: Vec<String>,
    /// 5-field cron expressions (`0 9 * * MON`); day and month names are allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(patterns::CRON)))]
    pub schedules: Vec<String>,
    /// Absolute webhook paths (`/api/agents/{id}/webhook`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(patterns::WEBHOOK)))]
    pub webhooks: Vec<String>,
}

/// `ui`: presentation and the installation settings form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ui {
    /// An icon (an emoji or a short name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// `#RGB` or `#RRGGBB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::COLOR))]
    pub color: Option<String>,
    /// One line about the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description_short: Option<String>,
    /// A JSON Schema (draft 2020-12, type object) of the installation settings; properties with
    /// `"secret": true` are secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("type" = ["object", "null"]))]
    pub settings_schema: Option<serde_json::Value>,
}

/// How an agent runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Runtime {
    /// Compiled into the host and run in-process.
    #[default]
    Native,
    /// Packaged as a container image and run isolated.
    Container {
        /// The image reference (`capecontrol/finance-agent:1.2.0`).
        #[schemars(pattern(patterns::NOT_BLANK))]
        image: String,
        /// The command to run (the image's entrypoint when empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        command: Vec<String>,
        /// Extra environment variables (never secrets: those come from settings).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
    },
}

/// One task of the agent, with its input and output schemas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDecl {
    /// The task's name (an identifier, like tools).
    #[schemars(pattern(patterns::IDENTIFIER))]
    pub name: String,
    /// What the task does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the task's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("type" = ["object", "boolean", "null"]))]
    pub input_schema: Option<serde_json::Value>,
    /// JSON Schema of the task's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("type" = ["object", "boolean", "null"]))]
    pub output_schema: Option<serde_json::Value>,
    /// A narrower timeout for this task, in seconds (1..=300, at most `config.timeout`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::validate::integral_opt"
    )]
    #[schemars(range(min = 1, max = 300))]
    pub timeout: Option<u32>,
}

/// Details of one tool named in `tools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolDecl {
    /// The tool's name; must be listed in `tools`.
    #[schemars(pattern(patterns::IDENTIFIER))]
    pub name: String,
    /// What the tool does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The scope a caller's installation must grant to call the tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::SCOPE))]
    pub scope: Option<String>,
    /// JSON Schema of the tool's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("type" = ["object", "boolean", "null"]))]
    pub input_schema: Option<serde_json::Value>,
    /// JSON Schema of the tool's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("type" = ["object", "boolean", "null"]))]
    pub output_schema: Option<serde_json::Value>,
}

impl Manifest {
    /// The effective execution limits (`config` or its defaults).
    pub fn config(&self) -> Config {
        self.config.clone().unwrap_or_default()
    }

    /// The effective permissions (`permissions` or none).
    pub fn permissions(&self) -> Permissions {
        self.permissions.clone().unwrap_or_default()
    }

    /// The effective runtime (`runtime` or native).
    pub fn runtime(&self) -> Runtime {
        self.runtime.clone().unwrap_or_default()
    }

    /// The declaration of task `name`, if any.
    pub fn task(&self, name: &str) -> Option<&TaskDecl> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// The declaration of tool `name`, if any.
    pub fn tool_spec(&self, name: &str) -> Option<&ToolDecl> {
        self.tool_specs.iter().find(|t| t.name == name)
    }
}
