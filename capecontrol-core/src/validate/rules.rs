//! The semantic rules: what the JSON Schema cannot say. They look at the raw JSON, only where
//! it has the expected shape (a wrong shape is the schema layer's to report).

use std::collections::{HashMap, HashSet};

use capecontrol_rules::{CpuLimitError, MemoryLimitError, NameError};
use serde_json::{Map, Value};

use super::integral::whole;
use super::messages::{cron_problem, semver_message};
use super::pointer::join_pointer;
use super::settings;
use crate::error::FieldError;
use crate::manifest::Config;
use crate::policy::Scope;

/// Every semantic problem of a manifest given as JSON.
pub(super) fn check(root: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let Some(m) = root.as_object() else {
        return out;
    };
    let mut err = |pointer: String, message: String| out.push(FieldError::new(pointer, message));

    if let Some(s) = str_at(m, "name") {
        match capecontrol_rules::name(s) {
            Ok(()) => {}
            Err(NameError::Blank) => err("/name".into(), "must not be blank".into()),
            Err(NameError::TooLong(_)) => {
                err("/name".into(), "must be at most 64 characters".into());
            }
        }
    }
    if let Some(s) = str_at(m, "description")
        && !capecontrol_rules::not_blank(s)
    {
        err("/description".into(), "must not be blank".into());
    }
    if let Some(s) = str_at(m, "version")
        && capecontrol_rules::version(s).is_err()
    {
        err("/version".into(), semver_message(s));
    }

    if let Some(config) = obj_at(m, "config") {
        if let Some(s) = str_at(config, "memory_limit") {
            match capecontrol_rules::memory_limit(s) {
                Err(MemoryLimitError::BelowMinimum) => {
                    err("/config/memory_limit".into(), "must be at least 6 MB".into());
                }
                Ok(_) => {}
                Err(MemoryLimitError::Malformed) => err(
                    "/config/memory_limit".into(),
                    "must be a number and a unit (B, KB, MB, GB, KiB, MiB or GiB) of at most 2^64 bytes, like 512MB".into(),
                ),
            }
        }
        if let Some(s) = str_at(config, "cpu_limit") {
            let message = match capecontrol_rules::cpu_limit(s) {
                Ok(_) => None,
                Err(CpuLimitError::Zero) => Some("must be greater than 0"),
                Err(CpuLimitError::OutOfRange) => Some("is out of range"),
                Err(CpuLimitError::Malformed) => {
                    Some("must be a decimal number of cores greater than 0, like \"0.5\"")
                }
            };
            if let Some(message) = message {
                err("/config/cpu_limit".into(), message.into());
            }
        }
    }

    if let Some(triggers) = obj_at(m, "triggers")
        && let Some(schedules) = triggers.get("schedules").and_then(Value::as_array)
    {
        for (i, s) in schedules.iter().enumerate() {
            if let Some(s) = s.as_str()
                && let Some(message) = cron_problem(s)
            {
                err(format!("/triggers/schedules/{i}"), message);
            }
        }
    }

    if let Some(ui) = obj_at(m, "ui")
        && let Some(schema) = ui.get("settings_schema")
        && schema.is_object()
    {
        settings::check_schema(schema, "/ui/settings_schema", true, &mut out);
    }

    check_declarations(m, &mut out);
    out
}

/// `tasks` and `tool_specs`: unique names, tool specs for listed tools with declared scopes,
/// valid schemas, whole-second task timeouts no longer than the agent's.
fn check_declarations(m: &Map<String, Value>, out: &mut Vec<FieldError>) {
    if let Some(tasks) = m.get("tasks").and_then(Value::as_array) {
        duplicates(tasks, "/tasks", out);
        // A task's timeout narrows the agent's (`config.timeout`, default 30 s).
        let agent_timeout = m
            .get("config")
            .and_then(|c| c.get("timeout"))
            .and_then(whole)
            .filter(|t| (1..=i128::from(Config::MAX_TIMEOUT)).contains(t))
            .unwrap_or(i128::from(Config::DEFAULT_TIMEOUT));
        for (i, task) in tasks.iter().enumerate() {
            let Some(task) = task.as_object() else {
                continue;
            };
            let base = format!("/tasks/{i}");
            // Read as the typed manifest reads it: 30.0 is 30 (a fraction is the schema
            // layer's to report).
            if let Some(t) = task.get("timeout").and_then(whole)
                && (1..=i128::from(Config::MAX_TIMEOUT)).contains(&t)
                && t > agent_timeout
            {
                out.push(FieldError::new(
                    format!("{base}/timeout"),
                    format!("must be at most config.timeout ({agent_timeout})"),
                ));
            }
            schemas(task, &base, out);
        }
    }
    if let Some(specs) = m.get("tool_specs").and_then(Value::as_array) {
        duplicates(specs, "/tool_specs", out);
        let tools: HashSet<&str> = m
            .get("tools")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let declared: HashSet<Scope> = m
            .get("permissions")
            .and_then(|p| p.get("scopes"))
            .and_then(Value::as_array)
            .map(|s| {
                s.iter()
                    .filter_map(|s| s.as_str()?.parse::<Scope>().ok())
                    .collect()
            })
            .unwrap_or_default();
        for (i, spec) in specs.iter().enumerate() {
            let Some(spec) = spec.as_object() else {
                continue;
            };
            let base = format!("/tool_specs/{i}");
            if let Some(name) = str_at(spec, "name")
                && !tools.contains(name)
            {
                out.push(FieldError::new(
                    format!("{base}/name"),
                    "is not listed in /tools",
                ));
            }
            if let Some(scope) = str_at(spec, "scope").and_then(|s| s.parse::<Scope>().ok()) {
                let wildcard = format!("{}:*", scope.resource()).parse::<Scope>().ok();
                let covered =
                    declared.contains(&scope) || wildcard.is_some_and(|w| declared.contains(&w));
                if !covered {
                    out.push(FieldError::new(
                        format!("{base}/scope"),
                        "is not covered by /permissions/scopes",
                    ));
                }
            }
            schemas(spec, &base, out);
        }
    }
}

/// Reports a declaration whose `name` repeats an earlier one, at the repeat's own index.
fn duplicates(decls: &[Value], pointer: &str, out: &mut Vec<FieldError>) {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (j, decl) in decls.iter().enumerate() {
        let Some(name) = decl.get("name").and_then(Value::as_str) else {
            continue;
        };
        let i = *first.entry(name).or_insert(j);
        if i != j {
            out.push(FieldError::new(
                format!("{pointer}/{j}/name"),
                format!("is a duplicate of {pointer}/{i}/name"),
            ));
        }
    }
}

fn schemas(decl: &Map<String, Value>, base: &str, out: &mut Vec<FieldError>) {
    for key in ["input_schema", "output_schema"] {
        if let Some(schema) = decl.get(key)
            && (schema.is_object() || schema.is_boolean())
        {
            settings::check_schema(schema, &join_pointer(base, key), false, out);
        }
    }
}

fn str_at<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

fn obj_at<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    m.get(key).and_then(Value::as_object)
}
