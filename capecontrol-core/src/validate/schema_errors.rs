//! Turns `jsonschema` errors into [`FieldError`]s with short, human messages.

use std::collections::HashMap;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{JsonType, ValidationError, Validator};
use serde_json::Value;

use super::messages;
use super::pointer::join_pointer;
use crate::error::FieldError;
use crate::manifest::patterns;

/// Every error of `validator` on `instance`, mapped.
pub(super) fn collect(validator: &Validator, instance: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    for error in validator.iter_errors(instance) {
        map_error(&error, "", &mut out);
    }
    out
}

/// Maps the errors of an iterator, with each pointer put under `prefix`.
pub(super) fn collect_under<'a>(
    errors: impl Iterator<Item = ValidationError<'a>>,
    prefix: &str,
    out: &mut Vec<FieldError>,
) {
    for error in errors {
        map_error(&error, prefix, out);
    }
}

fn map_error(error: &ValidationError<'_>, prefix: &str, out: &mut Vec<FieldError>) {
    let path = format!("{prefix}{}", error.instance_path().as_str());
    let instance: &Value = error.instance();
    let mut push = |pointer: String, message: String| out.push(FieldError::new(pointer, message));
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for name in unexpected {
                push(join_pointer(&path, name), "unknown field".into());
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            push(join_pointer(&path, &name), "is required".into());
        }
        ValidationErrorKind::Type { kind } => push(path, type_message(kind)),
        ValidationErrorKind::Minimum { limit } => push(path, format!("must be at least {limit}")),
        ValidationErrorKind::Maximum { limit } => push(path, format!("must be at most {limit}")),
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            push(path, format!("must be greater than {limit}"));
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            push(path, format!("must be less than {limit}"));
        }
        ValidationErrorKind::MinLength { limit } => push(
            path,
            if *limit == 1 {
                "must not be empty".into()
            } else {
                format!("must be at least {limit} characters")
            },
        ),
        ValidationErrorKind::MaxLength { limit } => {
            push(path, format!("must be at most {limit} characters"));
        }
        ValidationErrorKind::MinItems { limit } => {
            push(
                path,
                format!("must have at least {limit} {}", items(*limit)),
            );
        }
        ValidationErrorKind::MaxItems { limit } => {
            push(path, format!("must have at most {limit} {}", items(*limit)));
        }
        ValidationErrorKind::MinProperties { limit } => {
            push(path, format!("must have at least {limit} properties"));
        }
        ValidationErrorKind::MaxProperties { limit } => {
            push(path, format!("must have at most {limit} properties"));
        }
        ValidationErrorKind::Pattern { pattern } => push(path, pattern_message(pattern, instance)),
        ValidationErrorKind::Enum { options } => {
            let options = match &**options {
                Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            push(path, one_of_message(&options));
        }
        ValidationErrorKind::Constant { expected_value } => {
            push(path, format!("must be {expected_value}"));
        }
        ValidationErrorKind::UniqueItems => {
            if let Value::Array(items) = instance {
                // Keyed by the serialized item (object keys in document order, as the
                // manifest's unique arrays hold strings): linear, even for huge arrays.
                let mut first: HashMap<String, usize> = HashMap::new();
                for (j, item) in items.iter().enumerate() {
                    let i = *first.entry(item.to_string()).or_insert(j);
                    if i != j {
                        push(
                            join_pointer(&path, &j.to_string()),
                            format!("is a duplicate of {}", join_pointer(&path, &i.to_string())),
                        );
                    }
                }
            } else {
                push(path, "must not contain duplicates".into());
            }
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            alternatives(&path, prefix, context, out);
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            push(path, "matches more than one of the allowed forms".into());
        }
        ValidationErrorKind::FalseSchema => push(path, "is not allowed".into()),
        ValidationErrorKind::Format { format } => push(path, format!("must be a valid {format}")),
        ValidationErrorKind::PropertyNames { error } => {
            push(path, format!("has an invalid property name ({error})"));
        }
        _ => push(path, error.to_string()),
    }
}

fn items(n: u64) -> &'static str {
    if n == 1 { "item" } else { "items" }
}

/// The message of a failed `pattern`: readable for the manifest's own patterns.
fn pattern_message(pattern: &str, instance: &Value) -> String {
    let Some(s) = instance.as_str() else {
        return format!("must match {pattern}");
    };
    if s.trim().is_empty() {
        return "must not be blank".into();
    }
    match pattern {
        p if p == patterns::SEMVER => messages::semver_message(s),
        p if p == patterns::CRON => messages::cron_message(s),
        p if p == patterns::IDENTIFIER => format!("must be an identifier matching {pattern}"),
        p if p == patterns::SERVICE => format!("must be a lowercase identifier matching {pattern}"),
        p if p == patterns::NAME => format!("must be an identifier matching {pattern}"),
        p if p == patterns::SCOPE => messages::scope_message(s),
        p if p == patterns::EVENT => {
            "must be a dotted lowercase event name (like payment.completed)".into()
        }
        p if p == patterns::WEBHOOK => {
            "must be an absolute path starting with / ({id} is the only placeholder allowed)".into()
        }
        p if p == patterns::COLOR => "must be a color #RGB or #RRGGBB".into(),
        p if p == patterns::MEMORY_LIMIT => {
            "must be a number and a unit (B, KB, MB, GB, KiB, MiB or GiB), like 512MB".into()
        }
        p if p == patterns::CPU_LIMIT => {
            "must be a decimal number of cores greater than 0, like \"0.5\"".into()
        }
        p if p == patterns::PYTHON => "must be a version requirement, like >=3.9".into(),
        p if p == patterns::PACKAGE => {
            "must be a package name with optional comparators, like fastapi>=0.104.0".into()
        }
        _ => format!("must match {pattern}"),
    }
}

fn article(t: JsonType) -> &'static str {
    match t {
        JsonType::Array => "an array",
        JsonType::Boolean => "a boolean",
        JsonType::Integer => "an integer",
        JsonType::Null => "null",
        JsonType::Number => "a number",
        JsonType::Object => "an object",
        JsonType::String => "a string",
    }
}

fn type_names(kind: &TypeKind) -> Vec<&'static str> {
    match kind {
        TypeKind::Single(t) => vec![article(*t)],
        TypeKind::Multiple(set) => set.iter().map(article).collect(),
    }
}

fn type_message(kind: &TypeKind) -> String {
    let mut names = type_names(kind);
    // Put null last: "must be a string or null".
    names.sort_by_key(|n| *n == "null");
    format!("must be {}", names.join(" or "))
}

fn one_of_message(options: &[Value]) -> String {
    let list: Vec<String> = options.iter().map(Value::to_string).collect();
    if list.len() == 1 {
        format!("must be {}", list[0])
    } else {
        format!("must be one of {}", list.join(", "))
    }
}

/// Maps a failed `anyOf` / `oneOf` by choosing the alternative the author most likely meant:
/// one whose type fits, then one whose tag (`const`) fits, then the one with fewest problems.
fn alternatives(
    path: &str,
    prefix: &str,
    context: &[Vec<ValidationError<'static>>],
    out: &mut Vec<FieldError>,
) {
    let at_path =
        |e: &ValidationError<'_>| format!("{prefix}{}", e.instance_path().as_str()) == path;
    let is_tag = |e: &ValidationError<'_>| {
        matches!(
            e.kind(),
            ValidationErrorKind::Constant { .. } | ValidationErrorKind::Enum { .. }
        )
    };
    let wrong_type = |branch: &Vec<ValidationError<'static>>| {
        branch
            .iter()
            .any(|e| at_path(e) && matches!(e.kind(), ValidationErrorKind::Type { .. }))
    };
    let candidates: Vec<&Vec<ValidationError<'static>>> =
        context.iter().filter(|b| !wrong_type(b)).collect();

    // The allowed values, when the alternatives are tags (`const`) or enumerations.
    let tags = |branches: &mut dyn Iterator<Item = &Vec<ValidationError<'static>>>| {
        let mut pointer: Option<String> = None;
        let mut values: Vec<Value> = Vec::new();
        for e in branches.flatten().filter(|e| is_tag(e)) {
            let p = format!("{prefix}{}", e.instance_path().as_str());
            if pointer.get_or_insert_with(|| p.clone()) != &p {
                return None;
            }
            match e.kind() {
                ValidationErrorKind::Constant { expected_value } => {
                    values.push((**expected_value).clone());
                }
                ValidationErrorKind::Enum { options } => match &**options {
                    Value::Array(items) => values.extend(items.iter().cloned()),
                    other => values.push(other.clone()),
                },
                _ => {}
            }
        }
        let mut unique: Vec<Value> = Vec::new();
        for v in values {
            if !unique.contains(&v) {
                unique.push(v);
            }
        }
        pointer.map(|p| (p, unique))
    };

    if candidates.is_empty() {
        // No alternative has the right type: name the allowed values or the allowed types.
        if let Some((pointer, values)) = tags(&mut context.iter())
            && pointer == path
        {
            out.push(FieldError::new(pointer, one_of_message(&values)));
            return;
        }
        let mut names: Vec<&'static str> = Vec::new();
        for e in context.iter().flatten().filter(|e| at_path(e)) {
            if let ValidationErrorKind::Type { kind } = e.kind() {
                for n in type_names(kind) {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
        }
        names.sort_by_key(|n| *n == "null");
        let message = if names.is_empty() {
            "does not match any of the allowed forms".to_owned()
        } else {
            format!("must be {}", names.join(" or "))
        };
        out.push(FieldError::new(path, message));
        return;
    }

    let untagged: Vec<&Vec<ValidationError<'static>>> = candidates
        .iter()
        .copied()
        .filter(|b| !b.iter().any(&is_tag))
        .collect();
    if untagged.is_empty()
        && let Some((pointer, values)) = tags(&mut candidates.iter().copied())
    {
        out.push(FieldError::new(pointer, one_of_message(&values)));
        return;
    }
    let pool = if untagged.is_empty() {
        candidates
    } else {
        untagged
    };
    let best = pool
        .into_iter()
        .map(|branch| {
            let mut mapped = Vec::new();
            for e in branch {
                map_error(e, prefix, &mut mapped);
            }
            mapped
        })
        .min_by_key(Vec::len)
        .unwrap_or_default();
    if best.is_empty() {
        out.push(FieldError::new(
            path,
            "does not match any of the allowed forms",
        ));
    }
    out.extend(best);
}
