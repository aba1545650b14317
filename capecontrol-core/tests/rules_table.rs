//! The manifest validator against the shared table of rule cases (`capecontrol_rules::cases`):
//! a value is valid in a manifest exactly when the table says so, and a rejected value is
//! reported at its own field. The macros are tested against the same table
//! (`capecontrol-macros`' `valid` tests), so the two paths cannot disagree.

use capecontrol_core::validate::validate_manifest;
use capecontrol_rules::cases::{CASES, Field};
use serde_json::{Value, json};

/// A minimal valid manifest with `value` placed at `field`, and the pointer of that place.
fn manifest_with(field: Field, value: &str) -> (Value, &'static str) {
    let mut m = json!({"name": "T", "version": "1.0.0", "description": "A test agent."});
    let (pointer, patch) = match field {
        Field::Name => ("/name", json!({"name": value})),
        Field::Version => ("/version", json!({"version": value})),
        Field::Scope => (
            "/permissions/scopes/0",
            json!({"permissions": {"scopes": [value]}}),
        ),
        Field::Role => (
            "/permissions/required_roles/0",
            json!({"permissions": {"required_roles": [value]}}),
        ),
        Field::Identifier => ("/tools/0", json!({"tools": [value]})),
        Field::MemoryLimit => (
            "/config/memory_limit",
            json!({"config": {"memory_limit": value}}),
        ),
        Field::CpuLimit => ("/config/cpu_limit", json!({"config": {"cpu_limit": value}})),
        Field::Schedule => (
            "/triggers/schedules/0",
            json!({"triggers": {"schedules": [value]}}),
        ),
        Field::Event => (
            "/triggers/events/0",
            json!({"triggers": {"events": [value]}}),
        ),
        Field::Webhook => (
            "/triggers/webhooks/0",
            json!({"triggers": {"webhooks": [value]}}),
        ),
        Field::Color => ("/ui/color", json!({"ui": {"color": value}})),
    };
    for (k, v) in patch.as_object().into_iter().flatten() {
        m[k] = v.clone();
    }
    (m, pointer)
}

#[test]
fn the_validator_agrees_with_the_table() {
    for case in CASES {
        let (manifest, pointer) = manifest_with(case.field, case.value);
        match validate_manifest(&manifest) {
            Ok(_) => assert!(case.valid, "accepted but the table rejects it: {case:?}"),
            Err(errors) => {
                assert!(
                    !case.valid,
                    "rejected ({errors:?}) but the table accepts it: {case:?}"
                );
                assert!(
                    errors.iter().all(|e| e.pointer == pointer),
                    "{case:?}: reported elsewhere than {pointer}: {errors:?}"
                );
            }
        }
        // And the rules crate itself, so that the table is not only a list of strings.
        assert_eq!(
            capecontrol_rules::cases::accepts(case.field, case.value),
            case.valid,
            "{case:?}"
        );
    }
}
