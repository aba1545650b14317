//! Tests of manifest validation: every rule, valid and invalid, at its edges.

use serde_json::{Value, json};

use super::*;

/// A minimal valid manifest.
fn base() -> Value {
    json!({"name": "Finance Agent", "version": "1.2.0", "description": "Budgets and payments"})
}

/// `base()` with `pointer` set to `value` (creating parent objects).
fn with(pointer: &str, value: Value) -> Value {
    let mut m = base();
    let tokens: Vec<&str> = pointer.split('/').skip(1).collect();
    let mut node = &mut m;
    for (i, t) in tokens.iter().enumerate() {
        if i + 1 == tokens.len() {
            node[*t] = value;
            break;
        }
        if node.get(*t).is_none() {
            node[*t] = json!({});
        }
        node = &mut node[*t];
    }
    m
}

fn errors(v: &Value) -> Vec<String> {
    match validate_manifest(v) {
        Ok(_) => Vec::new(),
        Err(es) => es.iter().map(ToString::to_string).collect(),
    }
}

#[track_caller]
fn ok(pointer: &str, value: &Value) {
    let m = with(pointer, value.clone());
    assert_eq!(errors(&m), Vec::<String>::new(), "{pointer} = {value}");
}

#[track_caller]
fn bad(pointer: &str, value: &Value, expected: &str) {
    let m = with(pointer, value.clone());
    assert_eq!(errors(&m), vec![expected.to_owned()], "{pointer} = {value}");
}

#[test]
fn the_minimal_manifest_is_valid_and_gets_defaults() {
    let m = validate_manifest(&base()).unwrap();
    assert_eq!(m.name, "Finance Agent");
    assert_eq!(m.config().timeout, 30);
    assert_eq!(m.config().retries, 3);
    assert_eq!(m.config().concurrent_tasks, 5);
    assert_eq!(m.runtime(), crate::manifest::Runtime::Native);
}

#[test]
fn required_fields_are_reported_where_they_would_be() {
    assert_eq!(
        errors(&json!({})),
        [
            "/name: is required",
            "/version: is required",
            "/description: is required"
        ]
    );
    assert_eq!(errors(&json!([])), [": must be an object"]);
    assert_eq!(errors(&json!(null)), [": must be an object"]);
}

#[test]
fn name() {
    ok("/name", &json!("a"));
    ok("/name", &json!("x".repeat(64)));
    ok("/name", &json!("é".repeat(64)));
    ok("/name", &json!("Cape AI Guide 🤖"));
    bad(
        "/name",
        &json!("x".repeat(65)),
        "/name: must be at most 64 characters",
    );
    bad("/name", &json!(""), "/name: must not be blank");
    bad("/name", &json!("   "), "/name: must not be blank");
    bad("/name", &json!("\t\n"), "/name: must not be blank");
    bad("/name", &json!(5), "/name: must be a string");
    bad("/name", &json!(null), "/name: must be a string");
}

#[test]
fn description() {
    ok("/description", &json!("x"));
    bad(
        "/description",
        &json!(""),
        "/description: must not be blank",
    );
    bad(
        "/description",
        &json!(" \u{3000} "),
        "/description: must not be blank",
    );
}

#[test]
fn version_is_strict_semver() {
    for v in [
        "0.0.0",
        "1.2.3",
        "10.20.30",
        "1.2.3-rc.1+b.5",
        "1.0.0-alpha",
        "1.0.0-0.3.7",
        "1.0.0-x.7.z.92",
        "1.0.0+20130313144700",
        "1.0.0-beta+exp.sha.5114f85",
    ] {
        ok("/version", &json!(v));
    }
    bad(
        "/version",
        &json!("v1.2.3"),
        "/version: is not valid SemVer 2.0.0 (unexpected character 'v' while parsing major version number)",
    );
    bad(
        "/version",
        &json!("1.2"),
        "/version: is not valid SemVer 2.0.0 (unexpected end of input while parsing minor version number)",
    );
    for v in [
        "1", "1.2.3.4", "01.2.3", "1.2.3-", "1.2.3-01", "1.2.3+", " 1.2.3", "1.2.3 ", "latest",
    ] {
        let e = errors(&with("/version", json!(v)));
        assert_eq!(e.len(), 1, "{v}: {e:?}");
        assert!(
            e[0].starts_with("/version: is not valid SemVer 2.0.0"),
            "{v}: {e:?}"
        );
    }
    bad("/version", &json!(""), "/version: must not be blank");
    bad("/version", &json!(1.2), "/version: must be a string");
}

#[test]
fn placement_and_category() {
    for p in ["chat", "dashboard", "workflow", "background"] {
        ok("/placement", &json!(p));
    }
    for c in ["ai-assisted", "domain-specific", "middleware", "utility"] {
        ok("/category", &json!(c));
    }
    ok("/placement", &json!(null));
    bad(
        "/placement",
        &json!("sidebar"),
        r#"/placement: must be one of "chat", "dashboard", "workflow", "background""#,
    );
    bad(
        "/placement",
        &json!("Chat"),
        r#"/placement: must be one of "chat", "dashboard", "workflow", "background""#,
    );
    bad(
        "/category",
        &json!(3),
        r#"/category: must be one of "ai-assisted", "domain-specific", "middleware", "utility""#,
    );
}

#[test]
fn tools() {
    ok("/tools", &json!([]));
    ok("/tools", &json!(["ask_user", "_private", "step2"]));
    bad(
        "/tools",
        &json!(["ask_user", "AskUser"]),
        "/tools/1: must be an identifier matching ^[a-z_][a-z0-9_]*$",
    );
    bad(
        "/tools",
        &json!(["2fa"]),
        "/tools/0: must be an identifier matching ^[a-z_][a-z0-9_]*$",
    );
    bad(
        "/tools",
        &json!(["ask-user"]),
        "/tools/0: must be an identifier matching ^[a-z_][a-z0-9_]*$",
    );
    bad(
        "/tools",
        &json!(["a", "a"]),
        "/tools/1: is a duplicate of /tools/0",
    );
    bad("/tools", &json!("a"), "/tools: must be an array");
    let m = with("/tools", json!(["a", "b", "a", "b", "a"]));
    assert_eq!(
        errors(&m),
        [
            "/tools/2: is a duplicate of /tools/0",
            "/tools/3: is a duplicate of /tools/1",
            "/tools/4: is a duplicate of /tools/0",
        ]
    );
}

#[test]
fn dependencies() {
    for p in [
        ">=3.9",
        "3.11",
        "==3.11.*",
        ">=3.9,<4",
        ">= 3.9, < 4.0",
        "~=3.10",
    ] {
        ok("/dependencies/python", &json!(p));
    }
    for p in ["python3", ">=", "3.9+", "latest", ">=3.9 <4", "=>3.9"] {
        bad(
            "/dependencies/python",
            &json!(p),
            "/dependencies/python: must be a version requirement, like >=3.9",
        );
    }
    bad(
        "/dependencies/python",
        &json!(" "),
        "/dependencies/python: must not be blank",
    );
    for p in [
        "fastapi>=0.104.0",
        "pydantic>=2.0.0",
        "pydantic>=2,<3",
        "requests",
        "numpy==1.26.*",
        "Django~=4.2",
        "a!=1.0, <2",
        "pkg>=1.0rc1",
        "zope.interface>5",
        "uvicorn[standard]>=0.24",
        "requests[socks, security]",
    ] {
        ok("/dependencies/packages", &json!([p]));
    }
    for p in [
        "fastapi >=",
        "bad pkg",
        ">=1.0",
        "fastapi>=x",
        "fastapi=>1",
        "pkg>=1,",
        "pkg[]",
        "pkg[a",
    ] {
        bad(
            "/dependencies/packages",
            &json!([p]),
            "/dependencies/packages/0: must be a package name with optional comparators, like fastapi>=0.104.0",
        );
    }
    ok(
        "/dependencies/services",
        &json!(["redis", "postgresql", "object-store", "s3_compat"]),
    );
    for s in ["Redis", "1redis", "re dis", "redis!"] {
        bad(
            "/dependencies/services",
            &json!([s]),
            "/dependencies/services/0: must be a lowercase identifier matching ^[a-z][a-z0-9_-]*$",
        );
    }
    bad(
        "/dependencies/pip",
        &json!([]),
        "/dependencies/pip: unknown field",
    );
}

#[test]
fn config_timeout_retries_concurrency() {
    ok("/config/timeout", &json!(1));
    ok("/config/timeout", &json!(300));
    bad(
        "/config/timeout",
        &json!(0),
        "/config/timeout: must be at least 1",
    );
    bad(
        "/config/timeout",
        &json!(301),
        "/config/timeout: must be at most 300",
    );
    bad(
        "/config/timeout",
        &json!(-5),
        "/config/timeout: must be at least 1",
    );
    bad(
        "/config/timeout",
        &json!(30.5),
        "/config/timeout: must be an integer",
    );
    bad(
        "/config/timeout",
        &json!("30"),
        "/config/timeout: must be an integer",
    );
    ok("/config/retries", &json!(0));
    ok("/config/retries", &json!(10));
    bad(
        "/config/retries",
        &json!(11),
        "/config/retries: must be at most 10",
    );
    bad(
        "/config/retries",
        &json!(-1),
        "/config/retries: must be at least 0",
    );
    ok("/config/concurrent_tasks", &json!(1));
    ok("/config/concurrent_tasks", &json!(1000));
    bad(
        "/config/concurrent_tasks",
        &json!(0),
        "/config/concurrent_tasks: must be at least 1",
    );
    bad(
        "/config/concurrent_tasks",
        &json!(4_294_967_296u64),
        "/config/concurrent_tasks: must be at most 4294967295",
    );
    let m = validate_manifest(&with("/config", json!({"timeout": 300}))).unwrap();
    assert_eq!((m.config().timeout, m.config().retries), (300, 3));
}

#[test]
fn config_ask_timeout() {
    ok("/config/ask_timeout", &json!(1));
    ok("/config/ask_timeout", &json!(2_592_000));
    bad(
        "/config/ask_timeout",
        &json!(0),
        "/config/ask_timeout: must be at least 1",
    );
    bad(
        "/config/ask_timeout",
        &json!(2_592_001),
        "/config/ask_timeout: must be at most 2592000",
    );
    bad(
        "/config/ask_timeout",
        &json!("1h"),
        "/config/ask_timeout: must be an integer or null",
    );
    let m = validate_manifest(&with("/config", json!({"ask_timeout": 3600}))).unwrap();
    assert_eq!(m.config().ask_timeout, Some(3600));
    assert_eq!(crate::manifest::Config::MAX_ASK_TIMEOUT, 2_592_000);
}

#[test]
fn config_memory_and_cpu() {
    for ok_mem in [
        "6MB", "512MB", "1GB", "6MiB", "6000KB", "6000000B", "1.5GB", "0.5GiB",
    ] {
        ok("/config/memory_limit", &json!(ok_mem));
    }
    for small in ["5MB", "5MiB", "5999999B", "5.999999MB", "0MB", "5999KB"] {
        bad(
            "/config/memory_limit",
            &json!(small),
            "/config/memory_limit: must be at least 6 MB",
        );
    }
    for malformed in [
        "512", "512 MB", "512mb", "512TB", "MB", "-6MB", "1e9B", ".5GB",
    ] {
        bad(
            "/config/memory_limit",
            &json!(malformed),
            "/config/memory_limit: must be a number and a unit (B, KB, MB, GB, KiB, MiB or GiB), like 512MB",
        );
    }
    bad(
        "/config/memory_limit",
        &json!("99999999999999999999999GB"),
        "/config/memory_limit: must be a number and a unit (B, KB, MB, GB, KiB, MiB or GiB) of at most 2^64 bytes, like 512MB",
    );
    bad(
        "/config/memory_limit",
        &json!(512),
        "/config/memory_limit: must be a string or null",
    );
    for cpu in ["0.5", "1", "2.25", "0.001"] {
        ok("/config/cpu_limit", &json!(cpu));
    }
    bad(
        "/config/cpu_limit",
        &json!("0"),
        "/config/cpu_limit: must be greater than 0",
    );
    bad(
        "/config/cpu_limit",
        &json!("0.0"),
        "/config/cpu_limit: must be greater than 0",
    );
    for malformed in ["-1", ".5", "1.", "half", "1e2", "1,5"] {
        bad(
            "/config/cpu_limit",
            &json!(malformed),
            "/config/cpu_limit: must be a decimal number of cores greater than 0, like \"0.5\"",
        );
    }
    bad(
        "/config/cpu_limit",
        &json!(0.5),
        "/config/cpu_limit: must be a string or null",
    );
    bad("/config/cpus", &json!(1), "/config/cpus: unknown field");
}

#[test]
fn permissions() {
    ok(
        "/permissions",
        &json!({"scopes": ["profile:read", "finance:write", "payments:*", "iot:optimize", "a-b:c_d"],
               "required_roles": ["user", "premium", "Org_Admin"],
               "data_access": ["user_data", "system_metrics"]}),
    );
    bad(
        "/permissions/scopes",
        &json!(["finance"]),
        "/permissions/scopes/0: must be a scope resource:action (expected `resource:action`)",
    );
    bad(
        "/permissions/scopes",
        &json!(["Finance:read"]),
        "/permissions/scopes/0: must be a scope resource:action (the resource must match [a-z][a-z0-9_-]*)",
    );
    for s in [
        "finance:Read",
        "finance:",
        "finance:**",
        "finance:read:all",
        "*:read",
        "finance :read",
    ] {
        let e = errors(&with("/permissions/scopes", json!([s])));
        assert_eq!(e.len(), 1, "{s}: {e:?}");
        assert!(
            e[0].starts_with("/permissions/scopes/0: must be a scope resource:action"),
            "{s}: {e:?}"
        );
    }
    bad(
        "/permissions/required_roles",
        &json!(["  "]),
        "/permissions/required_roles/0: must not be blank",
    );
    bad(
        "/permissions/data_access",
        &json!([""]),
        "/permissions/data_access/0: must not be blank",
    );
    bad(
        "/permissions/data_access",
        &json!(["user data"]),
        "/permissions/data_access/0: must be an identifier matching ^[A-Za-z_][A-Za-z0-9_-]*$",
    );
}

#[test]
fn triggers() {
    ok(
        "/triggers",
        &json!({"events": ["user.onboard", "payment.completed", "iot.meter_1.reading", "user.sign-up"],
               "schedules": ["0 9 * * MON", "0 */6 * * *", "30 8 1 JAN,JUL *", "0 0 * * mon-fri", "0 9 * * 0", "0 9 * * 7", "*/5 * * * *", "0 9 * * 1-5"],
               "webhooks": ["/api/agents/{id}/webhook", "/hooks/tuya", "/"]}),
    );
    for e in [
        "payment",
        "Payment.completed",
        "payment..completed",
        ".payment",
        "payment.",
        "payment completed",
        "payment.Done",
        "payment.1st",
        "payment-completed",
    ] {
        bad(
            "/triggers/events",
            &json!([e]),
            "/triggers/events/0: must be a dotted lowercase event name (like payment.completed)",
        );
    }
    bad(
        "/triggers/schedules",
        &json!(["0 0 9 * * MON"]),
        "/triggers/schedules/0: must be a 5-field cron expression (minute hour day-of-month month day-of-week), not 6 fields",
    );
    bad(
        "/triggers/schedules",
        &json!(["0 0 9 * * MON 2030"]),
        "/triggers/schedules/0: must be a 5-field cron expression (minute hour day-of-month month day-of-week), not 7 fields",
    );
    bad(
        "/triggers/schedules",
        &json!(["@daily"]),
        "/triggers/schedules/0: must be a 5-field cron expression (minute hour day-of-month month day-of-week), not 1 field",
    );
    for c in [
        "60 * * * *",
        "* 25 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "* * * * MOO",
        "x * * * *",
    ] {
        let e = errors(&with("/triggers/schedules", json!([c])));
        assert_eq!(e.len(), 1, "{c}: {e:?}");
        assert!(
            e[0].starts_with("/triggers/schedules/0: is not a valid cron expression"),
            "{c}: {e:?}"
        );
    }
    ok(
        "/triggers/schedules",
        &json!([
            "CRON_TZ=Europe/Paris 30 2 * * *",
            "  CRON_TZ=UTC 0 9 * * MON"
        ]),
    );
    bad(
        "/triggers/schedules",
        &json!(["0 9 * * *", "CRON_TZ=Europe/Pariss 0 9 * * *"]),
        "/triggers/schedules/1: CRON_TZ=Europe/Pariss names no IANA time zone (like Europe/Paris)",
    );
    bad(
        "/triggers/schedules",
        &json!(["CRON_TZ=Europe/Paris 0 0 9 * * *"]),
        "/triggers/schedules/0: must be a 5-field cron expression (minute hour day-of-month month day-of-week), not 6 fields",
    );
    for w in [
        "api/webhook",
        "https://x.io/hook",
        "/a/{name}",
        "/a b",
        "/a?x=1",
        "/a#b",
        "",
    ] {
        let e = errors(&with("/triggers/webhooks", json!([w])));
        assert_eq!(e.len(), 1, "{w}: {e:?}");
        assert!(e[0].starts_with("/triggers/webhooks/0: must"), "{w}: {e:?}");
    }
}

#[test]
fn ui() {
    for c in ["#3B82F6", "#fff", "#000000", "#AbC"] {
        ok("/ui/color", &json!(c));
    }
    for c in ["3B82F6", "#12345", "#1234567", "#ggg", "blue", "#12"] {
        bad(
            "/ui/color",
            &json!(c),
            "/ui/color: must be a color #RGB or #RRGGBB",
        );
    }
    ok("/ui/icon", &json!("🤖"));
    ok("/ui/description_short", &json!("Brief agent purpose"));
    bad("/ui/theme", &json!("dark"), "/ui/theme: unknown field");
}

#[test]
fn settings_schema() {
    ok(
        "/ui/settings_schema",
        &json!({"type": "object", "properties": {
            "api_key": {"type": "string", "secret": true},
            "threshold": {"type": "number", "default": 0.8}}}),
    );
    ok("/ui/settings_schema", &json!({"type": "object"}));
    bad(
        "/ui/settings_schema",
        &json!({"properties": {}}),
        "/ui/settings_schema/type: is required (and must be \"object\")",
    );
    bad(
        "/ui/settings_schema",
        &json!({"type": "string"}),
        "/ui/settings_schema/type: must be \"object\"",
    );
    bad(
        "/ui/settings_schema",
        &json!(true),
        "/ui/settings_schema: must be an object or null",
    );
    bad(
        "/ui/settings_schema",
        &json!({"type": "object", "properties": {"x": {"type": "strin"}}}),
        r#"/ui/settings_schema/properties/x/type: must be one of "array", "boolean", "integer", "null", "number", "object", "string""#,
    );
    bad(
        "/ui/settings_schema",
        &json!({"type": "object", "properties": {"x": {"minLength": "3"}}}),
        "/ui/settings_schema/properties/x/minLength: must be an integer",
    );
    bad(
        "/ui/settings_schema",
        &json!({"type": "object", "$ref": "https://example.com/schema.json"}),
        "/ui/settings_schema/$ref: must be a local reference starting with # (remote and file references are not resolved)",
    );
    bad(
        "/ui/settings_schema",
        &json!({"type": "object", "properties": {"k": {"$ref": "file:///etc/passwd"}}}),
        "/ui/settings_schema/properties/k/$ref: must be a local reference starting with # (remote and file references are not resolved)",
    );
    bad(
        "/ui/settings_schema",
        &json!({"type": "object", "properties": {"k": {"type": "string", "secret": "yes"}}}),
        "/ui/settings_schema/properties/k/secret: must be a boolean",
    );
    let e = errors(&with(
        "/ui/settings_schema",
        json!({"type": "object", "properties": {"k": {"$ref": "#/$defs/missing"}}}),
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("/ui/settings_schema: is not a usable JSON Schema"),
        "{e:?}"
    );
}

#[test]
fn runtime() {
    ok("/runtime", &json!({"kind": "native"}));
    ok(
        "/runtime",
        &json!({"kind": "container", "image": "capecontrol/finance-agent:1.2.0",
               "command": ["/agent", "--serve"], "env": {"RUST_LOG": "info"}}),
    );
    bad(
        "/runtime",
        &json!({"kind": "container"}),
        "/runtime/image: is required",
    );
    bad(
        "/runtime",
        &json!({"kind": "container", "image": " "}),
        "/runtime/image: must not be blank",
    );
    bad(
        "/runtime",
        &json!({"kind": "docker", "image": "x"}),
        r#"/runtime/kind: must be one of "native", "container""#,
    );
    bad("/runtime", &json!({}), "/runtime/kind: is required");
    bad("/runtime", &json!("native"), "/runtime: must be an object");
    bad(
        "/runtime",
        &json!({"kind": "native", "image": "x"}),
        "/runtime/image: unknown field",
    );
    bad(
        "/runtime",
        &json!({"kind": "container", "image": "x", "env": {"A": 1}}),
        "/runtime/env/A: must be a string",
    );
}

#[test]
fn task_and_tool_declarations() {
    let mut m = base();
    m["tools"] = json!(["ingest", "report"]);
    m["permissions"] = json!({"scopes": ["finance:*"]});
    m["tasks"] = json!([
        {"name": "monthly_report", "input_schema": {"type": "object"}, "output_schema": true, "timeout": 20},
        {"name": "monthly_report"},
        {"name": "Bad", "input_schema": {"type": "nope"}, "timeout": 0}
    ]);
    m["tool_specs"] = json!([
        {"name": "ingest", "scope": "finance:read"},
        {"name": "missing", "scope": "payments:manage"},
        {"name": "report", "scope": "finance"}
    ]);
    assert_eq!(
        errors(&m),
        [
            "/tasks/1/name: is a duplicate of /tasks/0/name",
            "/tasks/2/name: must be an identifier matching ^[a-z_][a-z0-9_]*$",
            r#"/tasks/2/input_schema/type: must be one of "array", "boolean", "integer", "null", "number", "object", "string""#,
            "/tasks/2/timeout: must be at least 1",
            "/tool_specs/1/name: is not listed in /tools",
            "/tool_specs/1/scope: is not covered by /permissions/scopes",
            "/tool_specs/2/scope: must be a scope resource:action (expected `resource:action`)",
        ]
    );
    bad(
        "/tasks",
        &json!([{"description": "x"}]),
        "/tasks/0/name: is required",
    );
    ok("/tasks", &json!([{"name": "t", "timeout": 30}]));
    bad(
        "/tasks",
        &json!([{"name": "t", "timeout": 31}]),
        "/tasks/0/timeout: must be at most config.timeout (30)",
    );
    let mut m = with("/config/timeout", json!(120));
    m["tasks"] = json!([{"name": "t", "timeout": 120}, {"name": "u", "timeout": 121}]);
    assert_eq!(
        errors(&m),
        ["/tasks/1/timeout: must be at most config.timeout (120)"]
    );
}

/// JSON does not tell 30 from 30.0, and JSON Schema's `integer` (which the published manifest
/// schema gives these fields) counts both: the validator accepts a whole float wherever it
/// accepts the integer, reads it as that integer, and applies the same rules to it.
#[test]
fn whole_floats_are_integers() {
    for (pointer, value) in [
        ("/config/timeout", json!(300.0)),
        ("/config/retries", json!(0.0)),
        ("/config/concurrent_tasks", json!(1000.0)),
        ("/config/ask_timeout", json!(3600.0)),
        ("/tasks", json!([{"name": "t", "timeout": 30.0}])),
    ] {
        ok(pointer, &value);
    }
    let mut m = with(
        "/config",
        json!({"timeout": 120.0, "retries": 2.0, "concurrent_tasks": 7.0, "ask_timeout": 60.0}),
    );
    m["tasks"] = json!([{"name": "t", "timeout": 120.0}, {"name": "u", "timeout": 121.0}]);
    // The task's limit is read from the float `config.timeout` as from the integer.
    assert_eq!(
        errors(&m),
        ["/tasks/1/timeout: must be at most config.timeout (120)"]
    );
    m["tasks"] = json!([{"name": "t", "timeout": 90.0}]);
    let manifest = validate_manifest(&m).unwrap();
    let config = manifest.config();
    assert_eq!(
        (
            config.timeout,
            config.retries,
            config.concurrent_tasks,
            config.ask_timeout
        ),
        (120, 2, 7, Some(60))
    );
    assert_eq!(manifest.tasks[0].timeout, Some(90));
    // The same bounds as for integers.
    bad(
        "/config/timeout",
        &json!(301.0),
        "/config/timeout: must be at most 300",
    );
    bad(
        "/config/retries",
        &json!(-1.0),
        "/config/retries: must be at least 0",
    );
    bad(
        "/tasks",
        &json!([{"name": "t", "timeout": 31.0}]),
        "/tasks/0/timeout: must be at most config.timeout (30)",
    );
    // A fraction is still not an integer.
    bad(
        "/config/retries",
        &json!(2.5),
        "/config/retries: must be an integer",
    );
    bad(
        "/tasks",
        &json!([{"name": "t", "timeout": 20.5}]),
        "/tasks/0/timeout: must be an integer or null",
    );
}

#[test]
fn unknown_fields_are_reported_at_their_own_pointer() {
    bad(
        "/permisions",
        &json!({"scopes": []}),
        "/permisions: unknown field",
    );
    bad(
        "/config/timout",
        &json!(30),
        "/config/timout: unknown field",
    );
    bad(
        "/triggers/cron",
        &json!([]),
        "/triggers/cron: unknown field",
    );
    bad("/a~b", &json!(1), "/a~0b: unknown field");
    let mut m = base();
    m["a/b"] = json!(1);
    assert_eq!(errors(&m), ["/a~1b: unknown field"]);
}

#[test]
fn every_problem_is_reported_at_once_in_document_order() {
    let m = json!({
        "name": "",
        "version": "v1.2.3",
        "placement": "sidebar",
        "tools": ["ok", "Bad", "ok"],
        "config": {"timeout": 301, "retries": 11, "memory_limit": "5MB", "cpu_limit": "0", "concurrent_tasks": 0},
        "permisions": {"scopes": ["x"]},
        "permissions": {"scopes": ["finance"]},
        "triggers": {"events": ["Payment"], "schedules": ["* * * *"], "webhooks": ["hook"]},
        "ui": {"color": "blue", "settings_schema": {"type": "array"}}
    });
    assert_eq!(
        errors(&m),
        [
            "/name: must not be blank",
            "/version: is not valid SemVer 2.0.0 (unexpected character 'v' while parsing major version number)",
            r#"/placement: must be one of "chat", "dashboard", "workflow", "background""#,
            "/tools/1: must be an identifier matching ^[a-z_][a-z0-9_]*$",
            "/tools/2: is a duplicate of /tools/0",
            "/config/timeout: must be at most 300",
            "/config/retries: must be at most 10",
            "/config/memory_limit: must be at least 6 MB",
            "/config/cpu_limit: must be greater than 0",
            "/config/concurrent_tasks: must be at least 1",
            "/permisions: unknown field",
            "/permissions/scopes/0: must be a scope resource:action (expected `resource:action`)",
            "/triggers/events/0: must be a dotted lowercase event name (like payment.completed)",
            "/triggers/schedules/0: must be a 5-field cron expression (minute hour day-of-month month day-of-week), not 4 fields",
            "/triggers/webhooks/0: must be an absolute path starting with / ({id} is the only placeholder allowed)",
            "/ui/color: must be a color #RGB or #RRGGBB",
            "/ui/settings_schema/type: must be \"object\"",
            "/description: is required",
        ]
    );
    let e = check_manifest(&m).unwrap_err();
    assert_eq!(e.http_status(), 400);
    assert_eq!(e.field_errors().len(), 18);
}

#[test]
fn depth_limit_edges() {
    fn nested(levels: usize) -> String {
        // The manifest object is level 1; `ui` 2, `settings_schema` 3, `default` starts at 4.
        let inner = levels - 3;
        format!(
            r#"{{"name": "n", "version": "1.0.0", "description": "d", "ui": {{"settings_schema": {{"type": "object", "default": {}{}}}}}}}"#,
            "[".repeat(inner),
            "]".repeat(inner)
        )
    }
    assert!(validate_manifest_str(&nested(128)).is_ok());
    let e = validate_manifest_str(&nested(129)).unwrap_err();
    assert_eq!(e, [FieldError::new("", "is nested deeper than 128 levels")]);
    let huge = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(
        validate_manifest_str(&huge).unwrap_err(),
        [FieldError::new("", "is nested deeper than 128 levels")]
    );
    // A value built directly is measured too.
    let v = parse_json(nested(128).as_bytes()).unwrap();
    assert!(validate_manifest(&v).is_ok());
    let mut deep = json!([]);
    for _ in 0..128 {
        deep = json!([deep]);
    }
    assert_eq!(
        validate_manifest(&deep).unwrap_err(),
        [FieldError::new("", "is nested deeper than 128 levels")]
    );
}

#[test]
fn size_limit_edges() {
    // Compact, so that the size of the text and of the serialized value are the same.
    let head = r#"{"name":"n","version":"1.0.0","description":""#;
    let tail = r#""}"#;
    let exactly = |total: usize| {
        format!(
            "{head}{}{tail}",
            "d".repeat(total - head.len() - tail.len())
        )
    };
    let at = exactly(MAX_MANIFEST_BYTES);
    assert_eq!(at.len(), 1_048_576);
    assert!(validate_manifest_str(&at).is_ok());
    assert!(validate_manifest(&parse_json(at.as_bytes()).unwrap()).is_ok());
    let over = exactly(MAX_MANIFEST_BYTES + 1);
    assert_eq!(
        validate_manifest_str(&over).unwrap_err(),
        [FieldError::new(
            "",
            "is larger than 1 MiB (1048577 bytes; at most 1048576 are accepted)"
        )]
    );
    let v: Value = serde_json::from_str(&over).unwrap();
    let e = validate_manifest(&v).err().unwrap_or_default();
    assert_eq!(e.len(), 1);
    assert!(e[0].message.starts_with("is larger than 1 MiB"));
}

#[test]
fn text_that_is_not_json_names_line_and_column() {
    assert_eq!(
        validate_manifest_str("{\n  \"name\": \"x\",\n}").unwrap_err(),
        [FieldError::new(
            "",
            "is not valid JSON: trailing comma at line 3 column 1"
        )]
    );
    assert_eq!(
        validate_manifest_str("").unwrap_err(),
        [FieldError::new(
            "",
            "is not valid JSON: EOF while parsing a value at line 1 column 0"
        )]
    );
    assert_eq!(
        validate_manifest_bytes(b"{} {}").unwrap_err(),
        [FieldError::new(
            "",
            "is not valid JSON: trailing characters at line 1 column 4"
        )]
    );
    assert!(validate_manifest_bytes(&[0xff, 0xfe]).is_err());
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend_from_slice(base().to_string().as_bytes());
    assert!(validate_manifest_bytes(&with_bom).is_ok());
}

#[test]
fn the_manifest_schema_compiles_and_accepts_a_full_manifest() {
    assert_eq!(
        manifest_schema()["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(manifest_validator().is_valid(&base()));
    assert!(manifest_schema_string().ends_with("}\n"));
}

#[test]
fn large_documents_with_many_problems_are_handled_in_reasonable_time() {
    use std::time::{Duration, Instant};
    // Each document is close to 1 MiB and has a problem per element; with quadratic
    // bookkeeping these took minutes.
    let many = |item: &dyn Fn(usize) -> String, n: usize| -> String {
        (0..n).map(item).collect::<Vec<_>>().join(",")
    };
    let documents = [
        // ~100,000 distinct invalid tools, then a duplicate.
        format!(
            r#"{{"name":"n","version":"1.0.0","description":"d","tools":[{},"x0"]}}"#,
            many(&|i| format!("\"x{i}\""), 100_000)
        ),
        // ~100,000 unknown fields.
        format!(
            r#"{{"name":"n","version":"1.0.0","description":"d",{}}}"#,
            many(&|i| format!("\"u{i}\":0"), 90_000)
        ),
        // ~70,000 bad schedules (schema and semantic layers both look at them).
        format!(
            r#"{{"name":"n","version":"1.0.0","description":"d","triggers":{{"schedules":[{}]}}}}"#,
            many(&|i| format!("\"{} * * *\"", i % 60), 70_000)
        ),
    ];
    for doc in documents {
        assert!(doc.len() <= MAX_MANIFEST_BYTES, "{}", doc.len());
        let start = Instant::now();
        let errors = validate_manifest_str(&doc).err().unwrap_or_default();
        assert!(!errors.is_empty());
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} errors took {:?}",
            errors.len(),
            start.elapsed()
        );
    }
}

mod properties {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::super::*;
    use super::base;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("1.2.3"),
                Just("v1"),
                Just("0 9 * * MON"),
                Just("5MB"),
                Just("native"),
                Just("container"),
                Just("#fff"),
                Just("a:b"),
                Just("object"),
                Just("#/$defs/x"),
                Just("http://x"),
                Just(""),
                Just(" ")
            ]
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        let keys = prop_oneof![
            Just("name"),
            Just("version"),
            Just("description"),
            Just("placement"),
            Just("tools"),
            Just("config"),
            Just("timeout"),
            Just("memory_limit"),
            Just("cpu_limit"),
            Just("permissions"),
            Just("scopes"),
            Just("triggers"),
            Just("schedules"),
            Just("ui"),
            Just("settings_schema"),
            Just("type"),
            Just("properties"),
            Just("$ref"),
            Just("secret"),
            Just("runtime"),
            Just("kind"),
            Just("image"),
            Just("tasks"),
            Just("tool_specs"),
            Just("input_schema"),
            Just("items"),
            Just("x"),
            Just("~/")
        ]
        .prop_map(str::to_owned);
        leaf.prop_recursive(6, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((keys.clone(), inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_json_never_panics(v in arb_json()) {
            let result = validate_manifest(&v);
            if let Err(errors) = &result {
                prop_assert!(!errors.is_empty());
                for e in errors {
                    prop_assert!(e.pointer.is_empty() || e.pointer.starts_with('/'));
                    prop_assert!(!e.message.is_empty());
                }
            }
            let text = v.to_string();
            prop_assert_eq!(validate_manifest_str(&text).is_ok(), result.is_ok());
        }

        #[test]
        fn arbitrary_manifest_fields_never_panic(
            field in prop_oneof![
                Just("/config/memory_limit"), Just("/config/cpu_limit"),
                Just("/triggers/schedules/0"), Just("/version"), Just("/permissions/scopes/0"),
                Just("/dependencies/packages/0"), Just("/triggers/webhooks/0")
            ],
            s in "\\PC{0,40}",
        ) {
            let mut m = base();
            let tokens: Vec<&str> = field.split('/').skip(1).collect();
            let value = if tokens.last() == Some(&"0") { json!([s]) } else { json!(s) };
            let path = if tokens.last() == Some(&"0") { &field[..field.len() - 2] } else { field };
            let parts: Vec<&str> = path.split('/').skip(1).collect();
            if parts.len() == 2 {
                m[parts[0]] = json!({ parts[1]: value });
            } else {
                m[parts[0]] = value;
            }
            let _ = validate_manifest(&m);
        }

        #[test]
        fn arbitrary_settings_schemas_never_panic(
            keywords in prop::collection::vec(
                (
                    prop_oneof![
                        Just("type"), Just("properties"), Just("items"), Just("pattern"),
                        Just("minimum"), Just("multipleOf"), Just("enum"), Just("const"),
                        Just("$ref"), Just("$defs"), Just("$id"), Just("$schema"),
                        Just("anyOf"), Just("allOf"), Just("not"), Just("format"),
                        Just("required"), Just("additionalProperties"), Just("secret"),
                        Just("$dynamicRef"), Just("$anchor"), Just("maxLength"),
                        Just("patternProperties"), Just("dependentRequired"), Just("if")
                    ],
                    arb_json(),
                ),
                0..6,
            ),
        ) {
            let mut schema = Map::new();
            schema.insert("type".into(), json!("object"));
            for (k, v) in keywords {
                schema.insert(k.to_owned(), v);
            }
            let schema = Value::Object(schema);
            let _ = validate_json_schema(&schema);
            let mut m = base();
            m["ui"] = json!({"settings_schema": schema});
            let _ = validate_manifest(&m);
            let _ = secret_settings(&schema);
            let _ = redact_settings(&schema, &json!({"a": 1}));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = validate_manifest_bytes(&bytes);
        }

        #[test]
        fn cron_like_strings_never_panic(fields in prop::collection::vec("[0-9A-Za-z*/,#?LW+-]{1,6}", 5)) {
            let _ = messages::cron_problem(&fields.join(" "));
        }
    }
}
