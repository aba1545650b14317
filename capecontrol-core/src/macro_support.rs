//! Support for the code that `capecontrol-macros` generates. Not a public API: the macros reach
//! everything they need through `<facade>::__private::…` (absolute paths), so generated code
//! compiles whatever the user's crate imports, and keeps compiling when the facade is renamed
//! in `Cargo.toml`.

pub use ::async_trait::async_trait;
pub use ::schemars;
pub use ::serde;
pub use ::serde_json;
pub use ::tracing::Instrument;

pub use crate::agent::{AgentBase, AgentMetadata, TaskContext, ToolContext};
pub use crate::error::{Error, FieldError, Result};
pub use crate::manifest::{
    Category, Config, Manifest, Permissions, Placement, Runtime, TaskDecl, ToolDecl, Triggers, Ui,
};

pub use ::core::option::Option::{self, None, Some};
pub use ::core::result::Result::{Err, Ok};
pub use ::std::string::String;
pub use ::std::vec::Vec;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::validate::push_token;

/// A manifest with the three required fields and nothing else; the derive fills in the rest.
pub fn manifest(name: &str, version: &str, description: &str) -> Manifest {
    Manifest {
        name: name.to_owned(),
        version: version.to_owned(),
        description: description.to_owned(),
        placement: None,
        category: None,
        tools: Vec::new(),
        dependencies: None,
        config: None,
        permissions: None,
        triggers: None,
        ui: None,
        runtime: None,
        tasks: Vec::new(),
        tool_specs: Vec::new(),
    }
}

/// The `config` section from the limits given (defaults for the others).
pub fn config(
    timeout: Option<u32>,
    retries: Option<u32>,
    memory_limit: Option<&str>,
    cpu_limit: Option<&str>,
    concurrent_tasks: Option<u32>,
    ask_timeout: Option<u32>,
) -> Config {
    let defaults = Config::default();
    Config {
        timeout: timeout.unwrap_or(defaults.timeout),
        retries: retries.unwrap_or(defaults.retries),
        memory_limit: memory_limit.map(str::to_owned),
        cpu_limit: cpu_limit.map(str::to_owned),
        concurrent_tasks: concurrent_tasks.unwrap_or(defaults.concurrent_tasks),
        ask_timeout,
    }
}

/// The `permissions` section.
pub fn permissions(scopes: &[&str], required_roles: &[&str], data_access: &[&str]) -> Permissions {
    Permissions {
        scopes: strings(scopes),
        required_roles: strings(required_roles),
        data_access: strings(data_access),
    }
}

/// The `triggers` section.
pub fn triggers(events: &[&str], schedules: &[&str], webhooks: &[&str]) -> Triggers {
    Triggers {
        events: strings(events),
        schedules: strings(schedules),
        webhooks: strings(webhooks),
    }
}

/// The `ui` section.
pub fn ui(
    icon: Option<&str>,
    color: Option<&str>,
    description_short: Option<&str>,
    settings_schema: Option<Value>,
) -> Ui {
    Ui {
        icon: icon.map(str::to_owned),
        color: color.map(str::to_owned),
        description_short: description_short.map(str::to_owned),
        settings_schema,
    }
}

/// A container runtime.
pub fn container(image: &str, command: &[&str]) -> Runtime {
    Runtime::Container {
        image: image.to_owned(),
        command: strings(command),
        env: Default::default(),
    }
}

/// A list of owned strings from string literals.
pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The JSON Schema (draft 2020-12) of `T`.
pub fn schema_of<T: JsonSchema>() -> Value {
    schemars::SchemaGenerator::default()
        .into_root_schema_for::<T>()
        .to_value()
}

/// The declaration of a task with the given input and output schemas.
pub fn task_decl(
    name: &str,
    description: Option<&str>,
    timeout: Option<u32>,
    input_schema: Value,
    output_schema: Value,
) -> TaskDecl {
    TaskDecl {
        name: name.to_owned(),
        description: description.map(str::to_owned),
        input_schema: Some(input_schema),
        output_schema: Some(output_schema),
        timeout,
    }
}

/// The declaration of a tool with the given input and output schemas.
pub fn tool_decl(
    name: &str,
    description: Option<&str>,
    scope: Option<&str>,
    input_schema: Value,
    output_schema: Value,
) -> ToolDecl {
    ToolDecl {
        name: name.to_owned(),
        description: description.map(str::to_owned),
        scope: scope.map(str::to_owned),
        input_schema: Some(input_schema),
        output_schema: Some(output_schema),
    }
}

/// Decodes the JSON input of task or tool `name` (`kind` is `"task"` or `"tool"`).
///
/// A bad input is an [`Error::Validation`] whose one field error points (RFC 6901) at the bad
/// field: `/month` for a wrong or missing `month`, `/items/2/amount` deeper down.
pub fn decode_input<T: DeserializeOwned>(kind: &str, name: &str, input: Value) -> Result<T> {
    serde_path_to_error::deserialize::<_, T>(input).map_err(|e| {
        let mut pointer = String::new();
        for segment in e.path().iter() {
            use serde_path_to_error::Segment;
            match segment {
                Segment::Seq { index } => {
                    pointer.push('/');
                    pointer.push_str(&index.to_string());
                }
                Segment::Map { key } => push_token(&mut pointer, key),
                Segment::Enum { variant } => push_token(&mut pointer, variant),
                Segment::Unknown => {}
            }
        }
        let message = e.inner().to_string();
        // serde reports a missing field at the enclosing object; point where the field would be.
        if let Some(rest) = message.strip_prefix("missing field `")
            && let Some((field, _)) = rest.split_once('`')
        {
            push_token(&mut pointer, field);
        }
        Error::validation(
            format!("invalid input to {kind} `{name}`"),
            vec![FieldError::new(pointer, message)],
        )
    })
}

/// Encodes the output of task or tool `name` as JSON.
pub fn encode_output<T: Serialize>(kind: &str, name: &str, output: &T) -> Result<Value> {
    serde_json::to_value(output).map_err(|e| {
        Error::agent(format!(
            "the output of {kind} `{name}` does not serialize: {e}"
        ))
    })
}

/// Converts an agent's error into CapeControl's [`Error`].
pub fn into_error<E: Into<Error>>(error: E) -> Error {
    error.into()
}

/// The error for a task or tool name the agent does not have.
pub fn not_found(kind: &str, name: &str) -> Error {
    Error::not_found(kind, name)
}

/// Whether `scope` is covered by one of `declared` (`None`: nothing declared, not checked).
/// A `const fn`, for `#[agent_impl]`'s compile-time check of tool scopes.
pub const fn scope_declared(declared: Option<&[&str]>, scope: &str) -> bool {
    let Some(declared) = declared else {
        return true;
    };
    let mut i = 0;
    while i < declared.len() {
        if scope_covers(declared[i].as_bytes(), scope.as_bytes()) {
            return true;
        }
        i += 1;
    }
    false
}

/// Whether a task's `timeout` fits the agent's (`None`: not known, not checked).
pub const fn timeout_fits(declared: Option<u32>, timeout: u32) -> bool {
    match declared {
        Some(limit) => timeout <= limit,
        None => true,
    }
}

/// `resource:action` covers itself, and `resource:*` covers every action on the resource.
const fn scope_covers(granted: &[u8], required: &[u8]) -> bool {
    let mut i = 0;
    while i < granted.len() && i < required.len() && granted[i] == required[i] {
        if granted[i] == b':' {
            // Same resource: the rest must be equal, or the grant's action is `*`.
            return (granted.len() == i + 2 && granted[i + 1] == b'*')
                || bytes_eq(granted, required);
        }
        i += 1;
    }
    bytes_eq(granted, required)
}

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Placeholder body of the impls the macros emit after a compile error (never runs: the
/// crate does not compile).
pub fn unreachable_after_compile_error() -> ! {
    unreachable!("emitted only next to a compile error")
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Line {
        amount: f64,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        month: String,
        lines: Vec<Line>,
    }

    fn pointer(v: Value) -> String {
        let e = decode_input::<Req>("task", "t", v).unwrap_err();
        assert_eq!(e.category(), crate::ErrorCategory::Validation);
        e.field_errors()[0].pointer.clone()
    }

    #[test]
    fn bad_inputs_point_at_the_field() {
        assert_eq!(pointer(json!({"month": 3, "lines": []})), "/month");
        assert_eq!(pointer(json!({"lines": []})), "/month");
        assert_eq!(
            pointer(json!({"month": "x", "lines": [{"amount": 1}, {"amount": "a"}]})),
            "/lines/1/amount"
        );
        assert_eq!(
            pointer(json!({"month": "x", "lines": [], "a/b": 1})),
            "/a~1b"
        );
        assert_eq!(pointer(json!("not an object")), "");
    }

    #[test]
    fn declared_scopes_cover_tool_scopes() {
        let declared: Option<&[&str]> = Some(&["finance:read", "payments:*"]);
        assert!(scope_declared(declared, "finance:read"));
        assert!(scope_declared(declared, "payments:manage"));
        assert!(!scope_declared(declared, "finance:write"));
        assert!(!scope_declared(declared, "finance:rea"));
        assert!(!scope_declared(declared, "pay:manage"));
        assert!(!scope_declared(Some(&[]), "a:b"));
        assert!(scope_declared(None, "a:b"));
    }

    #[test]
    fn schemas_are_draft_2020_12() {
        let s = schema_of::<String>();
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert_eq!(s["type"], "string");
    }
}
