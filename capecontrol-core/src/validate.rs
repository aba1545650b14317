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
//!    (`/tools/1: is a duplicate of /tools/0`).
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

mod limits;
mod rules;
mod schema_errors;
mod settings;
mod units;

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, FieldError};
use crate::manifest::Manifest;

pub use limits::{MAX_DEPTH, MAX_MANIFEST_BYTES, too_large_error};
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
        let covered = pointer_and_ancestors(&e.pointer).any(|p| reported.contains(p));
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
    sort_errors(value, &mut errors);
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

/// Parses a JSON document within the limits: at most [`MAX_MANIFEST_BYTES`] bytes and
/// [`MAX_DEPTH`] levels of nesting, both checked before parsing. The error is at pointer `""`.
///
/// A leading UTF-8 byte order mark (which some editors write) is ignored, as RFC 8259 allows.
pub fn parse_json(bytes: &[u8]) -> Result<Value, FieldError> {
    limits::check_bytes(bytes)?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // The depth was checked above, so serde_json's own (lower, 127-level) limit is not needed.
    de.disable_recursion_limit();
    let value = Value::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| FieldError::new("", format!("is not valid JSON: {e}")))?;
    Ok(value)
}

/// `pointer`, then each of its ancestors up to the root `""`.
fn pointer_and_ancestors(pointer: &str) -> impl Iterator<Item = &str> {
    let cuts = pointer.rmatch_indices('/').map(|(i, _)| i);
    std::iter::once(pointer).chain(cuts.map(move |i| &pointer[..i]))
}

/// Joins a token to a JSON pointer, escaping `~` and `/` (RFC 6901).
pub(crate) fn join_pointer(pointer: &str, token: &str) -> String {
    let mut s = String::with_capacity(pointer.len() + token.len() + 1);
    s.push_str(pointer);
    push_token(&mut s, token);
    s
}

/// Appends `/token` to a JSON pointer, escaping `~` and `/` (RFC 6901).
pub(crate) fn push_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    for c in token.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// The field names of the manifest types, in declaration order: missing fields sort by it.
const FIELD_ORDER: &[&str] = &[
    "name",
    "version",
    "description",
    "placement",
    "category",
    "tools",
    "dependencies",
    "python",
    "packages",
    "services",
    "config",
    "timeout",
    "retries",
    "memory_limit",
    "cpu_limit",
    "concurrent_tasks",
    "permissions",
    "scopes",
    "required_roles",
    "data_access",
    "triggers",
    "events",
    "schedules",
    "webhooks",
    "ui",
    "icon",
    "color",
    "description_short",
    "settings_schema",
    "runtime",
    "kind",
    "image",
    "command",
    "env",
    "tasks",
    "tool_specs",
    "input_schema",
    "output_schema",
    "scope",
];

/// Sorts errors by where their pointers are in the document (stable: errors at one pointer
/// keep their order), then drops exact duplicates.
fn sort_errors(root: &Value, errors: &mut Vec<FieldError>) {
    let mut positions = Positions::default();
    let mut keyed: Vec<(PositionKey, FieldError)> = errors
        .drain(..)
        .map(|e| (positions.key(root, &e.pointer), e))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut seen = HashSet::new();
    for (_, e) in keyed {
        if seen.insert((e.pointer.clone(), e.message.clone())) {
            errors.push(e);
        }
    }
}

/// Where a pointer is: per token, `(0, index, "")` for a present member or item, and
/// `(1, manifest field rank, token)` for a missing one.
type PositionKey = Vec<(u8, usize, String)>;

/// The positions of the members of each object met, computed once per object (a document
/// may have many thousands of members and as many errors).
#[derive(Default)]
struct Positions<'a> {
    /// Keyed by the object's address, which is stable while the document is borrowed.
    objects: HashMap<usize, HashMap<&'a str, usize>>,
}

impl<'a> Positions<'a> {
    fn key(&mut self, root: &'a Value, pointer: &str) -> PositionKey {
        let mut key = Vec::new();
        let mut node = Some(root);
        if pointer.is_empty() {
            return key;
        }
        for raw in pointer.split('/').skip(1) {
            let token = raw.replace("~1", "/").replace("~0", "~");
            let found = match node {
                Some(Value::Object(map)) => {
                    let index = self
                        .objects
                        .entry(std::ptr::from_ref(map) as usize)
                        .or_insert_with(|| {
                            map.keys()
                                .enumerate()
                                .map(|(i, k)| (k.as_str(), i))
                                .collect()
                        });
                    index.get(token.as_str()).map(|i| (*i, map.get(&token)))
                }
                Some(Value::Array(items)) => token
                    .parse::<usize>()
                    .ok()
                    .filter(|i| *i < items.len())
                    .map(|i| (i, items.get(i))),
                _ => None,
            };
            match found {
                Some((i, child)) => {
                    key.push((0, i, String::new()));
                    node = child;
                }
                None => {
                    let rank = FIELD_ORDER
                        .iter()
                        .position(|f| *f == token)
                        .unwrap_or(usize::MAX);
                    key.push((1, rank, token));
                    node = None;
                }
            }
        }
        key
    }
}

#[cfg(test)]
mod tests;
