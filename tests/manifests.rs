//! The checked-in manifest schema and the bundled example manifests.

use std::path::{Path, PathBuf};

use capecontrol::validate::{manifest_schema_string, validate_manifest_bytes};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn checked_in_schema_matches_the_types() {
    let path = root().join("schemas/manifest.schema.json");
    let generated = manifest_schema_string();
    if std::env::var_os("UPDATE_SCHEMA").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write schemas/manifest.schema.json");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "schemas/manifest.schema.json is out of date with the manifest types; regenerate it with\n\
         \n    UPDATE_SCHEMA=1 cargo test -p capecontrol --test manifests\n\nand commit the result"
    );
}

fn example(name: &str) -> Vec<u8> {
    let path: &Path = &root().join("examples/manifests").join(name);
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_blueprint_manifests_validate() {
    for name in [
        "blueprint.json",
        "cape-ai-guide.json",
        "finance-agent.json",
        "energy-agent.json",
    ] {
        if let Err(errors) = validate_manifest_bytes(&example(name)) {
            panic!("{name}: {errors:?}");
        }
    }
}

#[test]
fn the_example_agents_say_what_the_blueprint_says() {
    let finance = validate_manifest_bytes(&example("finance-agent.json")).unwrap();
    assert_eq!(finance.name, "FinanceAgent");
    assert_eq!(
        finance.tools,
        ["ingest_transactions", "generate_report", "initiate_payment"]
    );
    assert_eq!(
        finance.permissions().scopes,
        ["finance:read", "finance:write", "payments:manage"]
    );
    let guide = validate_manifest_bytes(&example("cape-ai-guide.json")).unwrap();
    assert_eq!(
        guide.tools,
        ["ask_user", "generate_checklist", "summarize_feedback"]
    );
    assert_eq!(
        guide.permissions().scopes,
        ["profile:write", "checklist:write"]
    );
    let energy = validate_manifest_bytes(&example("energy-agent.json")).unwrap();
    assert_eq!(
        energy.tools,
        ["get_usage_data", "optimize_consumption", "alert_threshold"]
    );
    assert_eq!(energy.permissions().scopes, ["iot:read", "iot:optimize"]);
    assert_eq!(
        capecontrol::validate::parse_memory_limit(
            energy.config().memory_limit.as_deref().unwrap_or("")
        ),
        Some(128 << 20)
    );
    let blueprint = validate_manifest_bytes(&example("blueprint.json")).unwrap();
    let schema = blueprint
        .ui
        .and_then(|ui| ui.settings_schema)
        .unwrap_or_default();
    assert_eq!(capecontrol::validate::secret_settings(&schema), ["api_key"]);
}

#[test]
fn the_invalid_example_reports_every_typo() {
    let errors = validate_manifest_bytes(&example("invalid/typos.json")).unwrap_err();
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "/version: is not valid SemVer 2.0.0 (unexpected character 'v' while parsing major version number)",
            "/descripton: unknown field",
            r#"/category: must be one of "ai-assisted", "domain-specific", "middleware", "utility""#,
            "/tools/2: is a duplicate of /tools/0",
            "/config/timeout: must be at most 300",
            "/config/memory_limit: must be at least 6 MB",
            "/permisions: unknown field",
            "/triggers/schedules/0: must be a 5-field cron expression (minute hour day-of-month month day-of-week), not 6 fields",
            "/description: is required",
        ]
    );
}
