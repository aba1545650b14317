//! `ui.settings_schema` (and the task/tool schemas): schemas inside a manifest must be valid
//! draft 2020-12 schemas that never reach outside the manifest; settings marked `"secret": true`
//! are redacted wherever they would be shown or logged.

use serde_json::{Map, Value};

use super::limits::{MAX_DEPTH, value_depth_exceeds};
use super::pointer::join_pointer;
use super::schema_errors;
use crate::error::FieldError;

/// What a secret setting's value is replaced with by [`redact_settings`] (in registry listings,
/// audit payloads, everywhere settings are shown).
pub const REDACTED: &str = "********";

/// The `$schema` of draft 2020-12, the only draft accepted for schemas inside a manifest.
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Checks that `schema` is a valid JSON Schema (draft 2020-12) whose references all stay inside
/// it, returning every problem with pointers relative to the schema (`""` is the schema itself).
///
/// The custom keyword `secret` is allowed and must be a boolean. Nothing is ever fetched: a
/// `$ref` to a remote or file URL is an error.
///
/// ```
/// use capecontrol_core::validate::validate_json_schema;
/// use serde_json::json;
/// assert!(validate_json_schema(&json!({"type": "object"})).is_empty());
/// let errors = validate_json_schema(&json!({"$ref": "https://example.com/s.json"}));
/// assert_eq!(errors[0].pointer, "/$ref");
/// ```
pub fn validate_json_schema(schema: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    if value_depth_exceeds(schema, MAX_DEPTH) {
        out.push(FieldError::new(
            "",
            format!("is nested deeper than {MAX_DEPTH} levels"),
        ));
        return out;
    }
    check_schema(schema, "", false, &mut out);
    out
}

/// Checks a schema found at `pointer` in a manifest; with `require_object`, its top level must
/// also say `"type": "object"`.
pub(super) fn check_schema(
    schema: &Value,
    pointer: &str,
    require_object: bool,
    out: &mut Vec<FieldError>,
) {
    let before = out.len();
    if let Value::Object(map) = schema {
        if let Some(s) = map.get("$schema")
            && s.as_str().map(|s| s.trim_end_matches('#')) != Some(DRAFT_2020_12)
        {
            out.push(FieldError::new(
                join_pointer(pointer, "$schema"),
                format!("must be \"{DRAFT_2020_12}\""),
            ));
        }
        if require_object {
            match map.get("type") {
                None => out.push(FieldError::new(
                    join_pointer(pointer, "type"),
                    "is required (and must be \"object\")",
                )),
                Some(Value::String(t)) if t == "object" => {}
                Some(_) => out.push(FieldError::new(
                    join_pointer(pointer, "type"),
                    "must be \"object\"",
                )),
            }
        }
    }
    walk(schema, pointer, out);
    let meta = jsonschema::draft202012::meta::validator();
    let mut meta_errors = Vec::new();
    schema_errors::collect_under(meta.iter_errors(schema), pointer, &mut meta_errors);
    for e in meta_errors {
        if !out[before..].iter().any(|o| o.pointer == e.pointer) {
            out.push(e);
        }
    }
    if out.len() > before {
        return;
    }
    // Valid against the meta-schema: it must also compile (local references resolve, patterns
    // are regular expressions). Nothing is fetched.
    if let Err(e) = jsonschema::draft202012::options().offline().build(schema) {
        out.push(FieldError::new(
            pointer,
            format!("is not a usable JSON Schema ({e})"),
        ));
    }
}

/// Keywords whose value is one subschema.
const ONE: &[&str] = &[
    "additionalProperties",
    "items",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
    "contentSchema",
];
/// Keywords whose value is an array of subschemas.
const MANY: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems", "items"];
/// Keywords whose value is an object of subschemas.
const NAMED: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// Walks the subschemas (iteratively) checking `$ref`s and `secret`.
fn walk(schema: &Value, pointer: &str, out: &mut Vec<FieldError>) {
    let mut stack: Vec<(&Value, String)> = vec![(schema, pointer.to_owned())];
    while let Some((node, ptr)) = stack.pop() {
        let Value::Object(map) = node else { continue };
        for key in ["$ref", "$dynamicRef"] {
            if let Some(Value::String(r)) = map.get(key)
                && !r.starts_with('#')
            {
                out.push(FieldError::new(
                        join_pointer(&ptr, key),
                        "must be a local reference starting with # (remote and file references are not resolved)",
                    ));
            }
        }
        if let Some(secret) = map.get("secret")
            && !secret.is_boolean()
        {
            out.push(FieldError::new(
                join_pointer(&ptr, "secret"),
                "must be a boolean",
            ));
        }
        for (key, value) in map {
            let key = key.as_str();
            if ONE.contains(&key) && (value.is_object() || value.is_boolean()) {
                stack.push((value, join_pointer(&ptr, key)));
            }
            if MANY.contains(&key)
                && let Value::Array(items) = value
            {
                let base = join_pointer(&ptr, key);
                for (i, item) in items.iter().enumerate() {
                    stack.push((item, join_pointer(&base, &i.to_string())));
                }
            }
            if NAMED.contains(&key)
                && let Value::Object(named) = value
            {
                let base = join_pointer(&ptr, key);
                for (name, item) in named {
                    stack.push((item, join_pointer(&base, name)));
                }
            }
        }
    }
}

fn is_secret(property_schema: &Value) -> bool {
    property_schema.get("secret") == Some(&Value::Bool(true))
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

/// The names of the top-level properties of a settings schema marked `"secret": true`, in
/// schema order.
///
/// ```
/// use capecontrol_core::validate::secret_settings;
/// use serde_json::json;
/// let schema = json!({"type": "object", "properties": {
///     "api_key": {"type": "string", "secret": true},
///     "threshold": {"type": "number"}}});
/// assert_eq!(secret_settings(&schema), ["api_key"]);
/// ```
pub fn secret_settings(schema: &Value) -> Vec<String> {
    properties(schema)
        .map(|props| {
            props
                .iter()
                .filter(|(_, p)| is_secret(p))
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// A copy of `settings` in which the value of every property that `schema` marks
/// `"secret": true` is replaced with [`REDACTED`]; nested objects are redacted by their nested
/// `properties` too. Use it before showing, logging or auditing settings.
///
/// ```
/// use capecontrol_core::validate::redact_settings;
/// use serde_json::json;
/// let schema = json!({"type": "object", "properties": {
///     "api_key": {"type": "string", "secret": true},
///     "threshold": {"type": "number"}}});
/// let shown = redact_settings(&schema, &json!({"api_key": "sk-123", "threshold": 0.8}));
/// assert_eq!(shown, json!({"api_key": "********", "threshold": 0.8}));
/// ```
pub fn redact_settings(schema: &Value, settings: &Value) -> Value {
    redact_settings_listing_secrets(schema, settings).0
}

/// [`redact_settings`], plus the JSON pointers (relative to `settings`, RFC 6901) of the
/// secrets that are set, i.e. of every value that was replaced, in schema order. The registry
/// reports these so that a listing can say which secrets an installation has without showing
/// them.
///
/// ```
/// use capecontrol_core::validate::redact_settings_listing_secrets;
/// use serde_json::json;
/// let schema = json!({"type": "object", "properties": {
///     "api_key": {"type": "string", "secret": true},
///     "db": {"type": "object", "properties": {"password": {"type": "string", "secret": true}}}}});
/// let (shown, set) = redact_settings_listing_secrets(&schema, &json!({"db": {"password": "pw"}}));
/// assert_eq!(shown, json!({"db": {"password": "********"}}));
/// assert_eq!(set, ["/db/password"]);
/// ```
pub fn redact_settings_listing_secrets(schema: &Value, settings: &Value) -> (Value, Vec<String>) {
    let mut shown = settings.clone();
    let mut set = Vec::new();
    redact_in_place(schema, &mut shown, "", 0, &mut set);
    (shown, set)
}

fn redact_in_place(
    schema: &Value,
    value: &mut Value,
    pointer: &str,
    depth: usize,
    set: &mut Vec<String>,
) {
    let Some(props) = properties(schema) else {
        return;
    };
    if !value.is_object() {
        return;
    }
    if depth >= MAX_DEPTH {
        // Deeper than any valid manifest allows: show nothing rather than risk a secret.
        *value = Value::String(REDACTED.into());
        set.push(pointer.to_owned());
        return;
    }
    let Value::Object(values) = value else {
        return;
    };
    for (name, property) in props {
        let Some(v) = values.get_mut(name) else {
            continue;
        };
        let at = join_pointer(pointer, name);
        if is_secret(property) {
            *v = Value::String(REDACTED.into());
            set.push(at);
        } else {
            redact_in_place(property, v, &at, depth + 1, set);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_schemas_pass() {
        for schema in [
            json!({"type": "object"}),
            json!(true),
            json!({"type": "object", "properties": {
                "api_key": {"type": "string", "secret": true},
                "threshold": {"type": "number", "default": 0.8},
                "nested": {"$ref": "#/$defs/n"}},
                "$defs": {"n": {"type": "object", "properties": {"secret": {"type": "string"}}}}}),
            json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}),
        ] {
            assert_eq!(validate_json_schema(&schema), vec![], "{schema}");
        }
    }

    #[test]
    fn invalid_schemas_are_reported_at_their_pointers() {
        let cases = [
            (json!({"type": "strin"}), "/type"),
            (json!({"properties": 5}), "/properties"),
            (json!({"minLength": -1}), "/minLength"),
            (json!({"$ref": "https://example.com/s.json"}), "/$ref"),
            (
                json!({"properties": {"a": {"$ref": "file:///etc/passwd"}}}),
                "/properties/a/$ref",
            ),
            (
                json!({"properties": {"a": {"$ref": "other.json"}}}),
                "/properties/a/$ref",
            ),
            (
                json!({"properties": {"a": {"secret": "yes"}}}),
                "/properties/a/secret",
            ),
            (
                json!({"$schema": "http://json-schema.org/draft-07/schema#"}),
                "/$schema",
            ),
            (json!({"$ref": "#/$defs/missing"}), ""),
            (json!({"pattern": "("}), ""),
        ];
        for (schema, pointer) in cases {
            let errors = validate_json_schema(&schema);
            assert!(
                errors.iter().any(|e| e.pointer == pointer),
                "{schema}: {errors:?}"
            );
        }
    }

    #[test]
    fn recursive_references_compile_without_looping() {
        for schema in [
            json!({"$ref": "#"}),
            json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
            json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                   "properties": {"x": {"$ref": "#/$defs/a"}}}),
            json!({"$dynamicAnchor": "n", "properties": {"c": {"$dynamicRef": "#n"}}}),
        ] {
            let _ = validate_json_schema(&schema);
        }
    }

    #[test]
    fn settings_schema_must_be_of_type_object() {
        let mut out = Vec::new();
        check_schema(
            &json!({"properties": {}}),
            "/ui/settings_schema",
            true,
            &mut out,
        );
        assert_eq!(
            out,
            [FieldError::new(
                "/ui/settings_schema/type",
                "is required (and must be \"object\")"
            )]
        );
        out.clear();
        check_schema(&json!({"type": "array"}), "/s", true, &mut out);
        assert_eq!(out, [FieldError::new("/s/type", "must be \"object\"")]);
    }

    #[test]
    fn secrets_are_listed_and_redacted() {
        let schema = json!({"type": "object", "properties": {
            "api_key": {"type": "string", "secret": true},
            "token": {"type": "string", "secret": false},
            "db": {"type": "object", "properties": {"password": {"secret": true}, "host": {}}}}});
        assert_eq!(secret_settings(&schema), ["api_key"]);
        assert_eq!(secret_settings(&json!(true)), Vec::<String>::new());
        let settings =
            json!({"api_key": "k", "token": "t", "db": {"password": "p", "host": "h"}, "extra": 1});
        assert_eq!(
            redact_settings(&schema, &settings),
            json!({"api_key": REDACTED, "token": "t", "db": {"password": REDACTED, "host": "h"}, "extra": 1})
        );
        assert_eq!(redact_settings(&schema, &json!("x")), json!("x"));
    }

    #[test]
    fn listing_reports_the_secrets_that_are_set_in_schema_order() {
        let schema = json!({"properties": {
            "a/b~c": {"secret": true},
            "db": {"properties": {"password": {"secret": true}, "user": {}}},
            "token": {"secret": true}}});
        let settings = json!({"token": null, "db": {"user": "u", "password": "p"}, "a/b~c": 1});
        let (shown, set) = redact_settings_listing_secrets(&schema, &settings);
        assert_eq!(
            shown,
            json!({"token": REDACTED, "db": {"user": "u", "password": REDACTED}, "a/b~c": REDACTED})
        );
        assert_eq!(set, ["/a~1b~0c", "/db/password", "/token"]);
        assert_eq!(shown, redact_settings(&schema, &settings));
        let (shown, set) = redact_settings_listing_secrets(&schema, &json!({"db": "x"}));
        assert_eq!(shown, json!({"db": "x"}));
        assert!(set.is_empty());
    }
}
