//! The order errors are reported in: by where their pointers are in the document, a missing
//! field after the present ones, in manifest field order.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::error::FieldError;

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
pub(super) fn sort_errors(root: &Value, errors: &mut Vec<FieldError>) {
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
