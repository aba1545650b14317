//! Manifest validation: JSON Schema plus semantic rules, every problem reported at once.
//!
//! A manifest goes through three layers, and every problem of every layer is reported, each as
//! a [`FieldError`] (a JSON pointer plus a short message):
//!
//! 1. **Limits** — a document larger than [`MAX_MANIFEST_BYTES`] or nested deeper than
//!    [`MAX_DEPTH`] is rejected first, with one error at pointer `""`. Depth is measured
//!    iteratively (no recursion), on the raw bytes before parsing and on a [`Value`] handed in
//!    directly, so hostile input cannot overflow the stack.
//! 2. **JSON Schema** — the schema generated from [`Manifest`] (see [`manifest_schema`],
//!    checked in at `schemas/manifest.schema.json`) is compiled once with `jsonschema`, with
//!    every external `$ref` resolution disabled. Its errors are rewritten into short messages:
//!    a missing field is reported where it would be (`/name: is required`), an unknown field at
//!    its own pointer (`/permisions: unknown field`), a duplicate tool at its own index
//!    (`/tools/1: is a duplicate of /tools/0`). Its `integer` counts `30.0`, and so does the
//!    typed manifest, which reads it as 30 ([`integral`]).
//! 3. **Semantic rules** — what a schema cannot say: SemVer through the `semver` crate, cron
//!    expressions through `croner`, the 6 MB memory floor, `cpu_limit > 0`, `ui.settings_schema`
//!    being itself a valid draft 2020-12 schema of type object with only local `$ref`s, task and
//!    tool declarations being consistent. A semantic problem at a pointer the schema layer
//!    already reported (or under it) is not reported twice.
//!
//! Errors are sorted by where they appear in the document (a missing field sorts after the
//! fields that are present, in manifest order).
//!
//! ```
//! use capecontrol_core::validate::validate_manifest_str;
//! let errors = validate_manifest_str(r#"{"name": "x", "version": "v1", "permisions": {}}"#)
//!     .unwrap_err();
//! let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
//! assert_eq!(lines, [
//!     "/version: is not valid SemVer 2.0.0 (unexpected character 'v' while parsing major version number)",
//!     "/permisions: unknown field",
//!     "/description: is required",
//! ]);
//! ```

mod integral;
mod limits;
mod messages;
mod order;
mod pointer;
mod rules;
mod schema_errors;
mod settings;
mod units;

use std::collections::HashSet;
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, FieldError};
use crate::manifest::Manifest;

pub use integral::{integral, integral_opt};
pub(crate) use limits::value_depth_exceeds;
pub use limits::{MAX_DEPTH, MAX_MANIFEST_BYTES, parse_json, too_large_error};
pub(crate) use pointer::{join_pointer, push_token};
pub use settings::{
    REDACTED, redact_settings, redact_settings_listing_secrets, secret_settings,
    validate_json_schema,
};
pub use units::{parse_cpu_limit, parse_memory_limit};

/// The JSON Schema (draft 2020-12) of a manifest, generated from the [`Manifest`] types.
///
/// The same document is checked in at `schemas/manifest.schema.json` (a test fails when the two
/// drift apart) and printed by `capecontrol manifest schema`.
pub fn manifest_schema() -> &'static Value {
    static SCHEMA: LazyLock<Value> =
        LazyLock::new(|| schemars::schema_for!(Manifest).as_value().clone());
    &SCHEMA
}

/// [`manifest_schema`] as pretty-printed JSON with a final newline, exactly as checked in.
pub fn manifest_schema_string() -> String {
    let mut s = serde_json::to_string_pretty(manifest_schema()).unwrap_or_default();
    s.push('\n');
    s
}

/// The compiled manifest schema, built once. External references are never fetched.
fn manifest_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
        jsonschema::draft202012::options()
            .offline()
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .build(manifest_schema())
            .expect("the generated manifest schema compiles (checked by the tests)")
    });
    &VALIDATOR
}

/// Validates a manifest given as JSON, returning the typed manifest or every problem found.
///
/// A value nested deeper than [`MAX_DEPTH`] or serializing to more than
/// [`MAX_MANIFEST_BYTES`] is rejected with a single error at pointer `""`.
pub fn validate_manifest(value: &Value) -> Result<Manifest, Vec<FieldError>> {
    if let Err(e) = limits::check_value(value) {
        return Err(vec![e]);
    }
    let mut errors = schema_errors::collect(manifest_validator(), value);
    let semantic = rules::check(value);
    // A semantic problem at a pointer the schema layer reported, or under one, is not repeated.
    let reported: HashSet<String> = errors.iter().map(|e| e.pointer.clone()).collect();
    for e in semantic {
        let covered = pointer::pointer_and_ancestors(&e.pointer).any(|p| reported.contains(p));
        if !covered {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        return Manifest::deserialize(value).map_err(|e| {
            vec![FieldError::new(
                "",
                format!("cannot be read as a manifest: {e}"),
            )]
        });
    }
    order::sort_errors(value, &mut errors);
    Err(errors)
}

/// [`validate_manifest`] as an [`Error::Validation`].
pub fn check_manifest(value: &Value) -> Result<Manifest, Error> {
    validate_manifest(value).map_err(|errors| Error::validation("invalid manifest", errors))
}

/// Validates a manifest given as JSON text. See [`validate_manifest_bytes`].
pub fn validate_manifest_str(text: &str) -> Result<Manifest, Vec<FieldError>> {
    validate_manifest_bytes(text.as_bytes())
}

/// Validates a manifest given as the bytes of a JSON document (a `manifest.json` file).
///
/// Before anything is parsed, a document larger than [`MAX_MANIFEST_BYTES`] or nested deeper
/// than [`MAX_DEPTH`] is rejected with one error at pointer `""`. A document that is not JSON
/// gives one error at `""` whose message names the line and column
/// (`is not valid JSON: expected value at line 1 column 1`).
pub fn validate_manifest_bytes(bytes: &[u8]) -> Result<Manifest, Vec<FieldError>> {
    let value = parse_json(bytes).map_err(|e| vec![e])?;
    validate_manifest(&value)
}

#[cfg(test)]
mod tests;
