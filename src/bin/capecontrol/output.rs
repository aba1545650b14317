//! Human-readable printing of the server's answers (and `--json`, one JSON document per line).
//!
//! Every printer reads the fields it shows by name and tolerates a missing one (printed as `-`),
//! so that an older or newer server never makes the CLI fail after a successful request.

use serde_json::Value;

/// Prints `value` as one line of JSON.
pub(crate) fn json(value: &Value) {
    println!("{value}");
}

/// The string (or number, or bool) at `pointer`, or `-`.
fn s(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// The items of a list answer: a bare array or `{"items": [...]}`.
fn items(v: &Value) -> &[Value] {
    v.as_array()
        .or_else(|| v.get("items").and_then(Value::as_array))
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `N of TOTAL` under a paged list, when the answer has a total.
fn footer(v: &Value) {
    if let Some(total) = v.get("total").and_then(Value::as_u64) {
        println!("({} of {total})", items(v).len());
    }
}

/// The task id of a submit's answer (`{"id": …}`, `{"task_id": …}` or `{"task": {"id": …}}`).
pub(crate) fn task_id(v: &Value) -> Option<String> {
    ["/task_id", "/id", "/task/id"]
        .iter()
        .find_map(|p| v.pointer(p).and_then(Value::as_str))
        .map(str::to_string)
}

/// An agent.
pub(crate) fn agent(v: &Value) {
    println!("{} ({})", s(v, "/name"), s(v, "/slug"));
    println!("  id:          {}", s(v, "/id"));
    println!("  status:      {}", s(v, "/status"));
    println!("  category:    {}", s(v, "/category"));
    println!("  description: {}", s(v, "/description"));
}

/// A list of agents.
pub(crate) fn agents(v: &Value) {
    for a in items(v) {
        println!(
            "{:<28} {:<10} {:<16} {}",
            s(a, "/slug"),
            s(a, "/status"),
            s(a, "/category"),
            s(a, "/name")
        );
    }
    footer(v);
}

/// A manifest's validation.
pub(crate) fn validation(v: &Value) {
    if v.get("valid").and_then(Value::as_bool) == Some(true) {
        println!("valid");
        return;
    }
    for e in v
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!("{}: {}", s(e, "/pointer"), s(e, "/message"));
    }
}

/// A version.
pub(crate) fn version(v: &Value) {
    println!(
        "{} {} ({})",
        s(v, "/agent_id"),
        s(v, "/version"),
        s(v, "/status")
    );
    if let Some(c) = v.get("changelog").and_then(Value::as_str) {
        println!("  {c}");
    }
}

/// A list of versions.
pub(crate) fn versions(v: &Value) {
    for x in items(v) {
        println!(
            "{:<12} {:<10} {}",
            s(x, "/version"),
            s(x, "/status"),
            s(x, "/changelog")
        );
    }
}

/// A suggested version.
pub(crate) fn suggested(v: &Value) {
    println!("{}", s(v, "/version"));
}

/// A catalog page.
pub(crate) fn catalog(v: &Value) {
    for e in items(v) {
        println!(
            "{:<28} {:<10} {:<16} {}",
            s(e, "/agent/slug"),
            s(e, "/version/version"),
            s(e, "/agent/category"),
            s(e, "/agent/description")
        );
    }
    footer(v);
}

/// The categories with their counts.
pub(crate) fn categories(v: &Value) {
    match v {
        Value::Object(map) if !map.contains_key("items") => {
            for (name, count) in map {
                println!("{name:<20} {count}");
            }
        }
        _ => {
            for c in items(v) {
                println!("{:<20} {}", s(c, "/category"), s(c, "/count"));
            }
        }
    }
}

/// A marketplace detail.
pub(crate) fn detail(v: &Value) {
    let agent = v.get("agent").unwrap_or(v);
    println!("{} ({})", s(agent, "/name"), s(agent, "/slug"));
    println!("  {}", s(agent, "/description"));
    if let Some(m) = v.get("manifest").or_else(|| v.get("excerpt")) {
        println!("  manifest: {m}");
    }
    for x in v
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!(
            "  {:<12} {:<10} {}",
            s(x, "/version"),
            s(x, "/status"),
            s(x, "/changelog")
        );
    }
}

/// An installation.
pub(crate) fn installation(v: &Value) {
    println!(
        "{} {} for {}",
        s(v, "/agent_id"),
        s(v, "/version"),
        s(v, "/user_id")
    );
    println!("  granted:  {}", list(v.get("granted_scopes")));
    println!("  settings: {}", v.get("settings").unwrap_or(&Value::Null));
}

/// A list of installations.
pub(crate) fn installations(v: &Value) {
    for i in items(v) {
        println!(
            "{:<28} {:<10} {}",
            s(i, "/agent_id"),
            s(i, "/version"),
            list(i.get("granted_scopes"))
        );
    }
}

fn list(v: Option<&Value>) -> String {
    let words: Vec<String> = v
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| x.to_string())
        })
        .collect();
    if words.is_empty() {
        "-".into()
    } else {
        words.join(", ")
    }
}

/// A submit's answer: the task id (alone on its line, for scripts).
pub(crate) fn submitted(v: &Value) {
    println!("{}", task_id(v).unwrap_or_else(|| v.to_string()));
}

/// A task.
pub(crate) fn task(v: &Value) {
    let t = v.get("task").filter(|t| t.is_object()).unwrap_or(v);
    println!("task {}", s(t, "/id"));
    println!(
        "  agent:    {} {} / {}",
        s(t, "/agent_id"),
        s(t, "/version"),
        s(t, "/task")
    );
    println!("  status:   {}", s(t, "/status"));
    println!(
        "  attempts: {} of {}",
        s(t, "/attempts"),
        s(t, "/max_attempts")
    );
    if let Some(out) = t.get("output").filter(|o| !o.is_null()) {
        println!("  output:   {out}");
    }
    if let Some(e) = t.get("error").filter(|e| !e.is_null()) {
        println!("  error:    {}", error_text(e));
    }
    let steps = v
        .get("steps")
        .or_else(|| t.get("steps"))
        .and_then(Value::as_array);
    for step in steps.into_iter().flatten() {
        println!(
            "  step {:<3} {:<20} {}",
            s(step, "/step"),
            s(step, "/name"),
            s(step, "/status")
        );
    }
}

/// A list of tasks.
pub(crate) fn tasks(v: &Value) {
    for t in items(v) {
        println!(
            "{} {:<10} {:<24} {}",
            s(t, "/id"),
            s(t, "/status"),
            s(t, "/agent_id"),
            s(t, "/task")
        );
    }
    footer(v);
}

/// An error object (`{"category": …, "message": …}`) as one line.
fn error_text(e: &Value) -> String {
    match (
        e.get("category").and_then(Value::as_str),
        e.get("message").and_then(Value::as_str),
    ) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        _ => e.to_string(),
    }
}

/// One task event, as the quickstart prints it.
pub(crate) fn event(v: &Value) {
    let kind = v.get("kind").unwrap_or(&Value::Null);
    let name = s(kind, "/type");
    let what = match name.as_str() {
        "started" => format!("attempt {} on {}", s(kind, "/attempt"), s(kind, "/worker")),
        "step_started" | "step_completed" => {
            format!("step {} `{}`", s(kind, "/step"), s(kind, "/name"))
        }
        "step_failed" => format!(
            "step {} `{}`: {}",
            s(kind, "/step"),
            s(kind, "/name"),
            kind.get("error").map(error_text).unwrap_or_default()
        ),
        "tool_called" => format!(
            "`{}` {}",
            s(kind, "/tool"),
            if kind.get("allowed").and_then(Value::as_bool) == Some(true) {
                "allowed"
            } else {
                "denied"
            }
        ),
        "retrying" => format!(
            "attempt {} failed, again in {} ms: {}",
            s(kind, "/attempt"),
            s(kind, "/delay_ms"),
            kind.get("error").map(error_text).unwrap_or_default()
        ),
        "completed" => format!("output: {}", kind.get("output").unwrap_or(&Value::Null)),
        "failed" => kind.get("error").map(error_text).unwrap_or_default(),
        _ => String::new(),
    };
    println!("  #{:<2} {:<15} {}", s(v, "/seq"), name, what);
}

/// The audit trail.
pub(crate) fn audit(v: &Value) {
    for a in items(v) {
        println!(
            "{} {:<28} by {:<10} from {:<15} task {}",
            s(a, "/created_at"),
            s(a, "/event_type"),
            s(a, "/user_id"),
            s(a, "/ip_address"),
            s(a, "/task_id"),
        );
    }
    if let Some(c) = v.get("next_cursor").filter(|c| !c.is_null()) {
        println!(
            "(more: --cursor {})",
            c.as_str().map_or(c.to_string(), str::to_string)
        );
    }
}

/// A new API key: shown once.
pub(crate) fn key(v: &Value) {
    println!("id:  {}", s(v, "/id"));
    println!("key: {}", s(v, "/key"));
    eprintln!("(the key is shown only now: keep it)");
}
