//! Forms generated from JSON Schemas (an agent's settings schema, a task's input schema), the
//! values a posted form gives back as JSON, and scopes in plain words.

use capecontrol_core::{Error, FieldError};
use serde_json::{Map, Value};

/// How a schema property is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One line of text.
    Text,
    /// A secret (`"secret": true`): a password field, never filled in again.
    Secret,
    /// A number (`"type": "number"`).
    Number,
    /// An integer.
    Integer,
    /// A checkbox (`"type": "boolean"`).
    Checkbox,
    /// One of `enum`'s strings.
    Select,
    /// An array of strings, one per line.
    Lines,
    /// Anything else, as JSON.
    Json,
}

/// One field of a generated form.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field {
    /// The property's name (its pointer is `/<prefix>/<name>`).
    pub(crate) name: String,
    /// The form control's name: `<prefix>.<name>`.
    pub(crate) input: String,
    /// The label shown.
    pub(crate) label: String,
    /// The property's description, if any.
    pub(crate) help: String,
    /// How it is entered.
    pub(crate) kind: Kind,
    /// Whether the schema requires it.
    pub(crate) required: bool,
    /// The choices of a [`Kind::Select`].
    pub(crate) options: Vec<String>,
    /// The schema's default, as the control's initial value (never for secrets).
    pub(crate) value: String,
}

impl Field {
    /// The `type` attribute of an `<input>`.
    pub(crate) fn input_type(&self) -> &'static str {
        match self.kind {
            Kind::Secret => "password",
            Kind::Number | Kind::Integer => "number",
            Kind::Checkbox => "checkbox",
            _ => "text",
        }
    }
    /// Whether the control is an `<input>` (else a `<select>` or a `<textarea>`).
    pub(crate) fn is_input(&self) -> bool {
        !matches!(self.kind, Kind::Select | Kind::Lines | Kind::Json)
    }
    /// Whether the control is a `<select>`.
    pub(crate) fn is_select(&self) -> bool {
        self.kind == Kind::Select
    }
    /// Whether the control is a checkbox.
    pub(crate) fn is_checkbox(&self) -> bool {
        self.kind == Kind::Checkbox
    }
    /// Whether the control is a secret.
    pub(crate) fn is_secret(&self) -> bool {
        self.kind == Kind::Secret
    }
    /// The `step` of a number input.
    pub(crate) fn step(&self) -> &'static str {
        if self.kind == Kind::Integer {
            "1"
        } else {
            "any"
        }
    }
    /// What to enter, for a textarea.
    pub(crate) fn hint(&self) -> &'static str {
        match self.kind {
            Kind::Lines => "one per line",
            Kind::Json => "JSON",
            _ => "",
        }
    }
}

/// The schema's type: its `type` string, or the first non-null one of a `type` array.
fn type_of(schema: &Value) -> Option<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => Some(t),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    }
}

/// The fields of an object schema's properties, each named `<prefix>.<property>`; `None` when
/// the schema is not an object with properties (the form then asks for JSON).
pub(crate) fn fields(schema: Option<&Value>, prefix: &str) -> Option<Vec<Field>> {
    let schema = schema?;
    let props = schema.get("properties")?.as_object()?;
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (name, prop) in props {
        let secret = prop.get("secret").and_then(Value::as_bool) == Some(true);
        let options: Vec<String> = prop
            .get("enum")
            .and_then(Value::as_array)
            .map(|e| {
                e.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let kind = if secret {
            Kind::Secret
        } else if !options.is_empty() {
            Kind::Select
        } else {
            match type_of(prop) {
                Some("string") => Kind::Text,
                Some("number") => Kind::Number,
                Some("integer") => Kind::Integer,
                Some("boolean") => Kind::Checkbox,
                Some("array")
                    if prop
                        .get("items")
                        .and_then(type_of)
                        .is_some_and(|t| t == "string") =>
                {
                    Kind::Lines
                }
                _ => Kind::Json,
            }
        };
        let value = match (kind, prop.get("default")) {
            (Kind::Secret, _) | (_, None | Some(Value::Null)) => String::new(),
            (Kind::Checkbox, Some(d)) => {
                if d.as_bool() == Some(true) {
                    "on".into()
                } else {
                    String::new()
                }
            }
            (Kind::Lines, Some(Value::Array(items))) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n"),
            (_, Some(Value::String(s))) => s.clone(),
            (_, Some(d)) => d.to_string(),
        };
        let label = prop
            .get("title")
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| humanize(name));
        out.push(Field {
            name: name.clone(),
            input: format!("{prefix}.{name}"),
            label,
            help: prop
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            kind,
            required: required.contains(&name.as_str()),
            options,
            value,
        });
    }
    Some(out)
}

/// `api_key` → `Api key`.
fn humanize(name: &str) -> String {
    let spaced = name.replace(['_', '-'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The last value posted under `name`.
pub(crate) fn value<'f>(form: &'f [(String, String)], name: &str) -> Option<&'f str> {
    form.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Every value posted under `name`.
pub(crate) fn values<'f>(form: &'f [(String, String)], name: &str) -> Vec<&'f str> {
    form.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The JSON object a posted form gives for `fields`; empty fields are left out (a checkbox is
/// `false` when absent). A value of the wrong type is a validation error at
/// `/<prefix>/<name>`.
pub(crate) fn object(
    fields: &[Field],
    form: &[(String, String)],
    prefix: &str,
) -> Result<Map<String, Value>, Error> {
    let mut out = Map::new();
    let mut errors = Vec::new();
    for f in fields {
        let raw = value(form, &f.input).unwrap_or_default();
        let at = format!("/{prefix}/{}", f.name.replace('~', "~0").replace('/', "~1"));
        if f.kind == Kind::Checkbox {
            out.insert(f.name.clone(), Value::Bool(!raw.is_empty()));
            continue;
        }
        if raw.trim().is_empty() {
            continue;
        }
        let parsed = match f.kind {
            Kind::Text | Kind::Secret | Kind::Select => Ok(Value::String(raw.to_owned())),
            Kind::Integer => raw
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| "must be a whole number"),
            Kind::Number => raw
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or("must be a number"),
            Kind::Lines => Ok(Value::Array(
                raw.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| Value::String(l.to_owned()))
                    .collect(),
            )),
            Kind::Json => serde_json::from_str(raw).map_err(|_| "must be JSON"),
            Kind::Checkbox => unreachable!("handled above"),
        };
        match parsed {
            Ok(v) => {
                out.insert(f.name.clone(), v);
            }
            Err(why) => errors.push(FieldError::new(at, why)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(Error::validation(format!("invalid {prefix}"), errors))
    }
}

/// A scope in plain words: `profile:read` → "Read your profile".
pub(crate) fn scope_words(scope: &str) -> String {
    let (resource, action) = scope.split_once(':').unwrap_or((scope, ""));
    let resource = resource.replace(['_', '-', '.'], " ");
    match action {
        "read" => format!("Read your {resource}"),
        "write" => format!("Create and change your {resource}"),
        "manage" => format!("Manage your {resource}: create, change and delete"),
        "delete" => format!("Delete your {resource}"),
        "" => format!("Use your {resource}"),
        other => format!(
            "{} your {resource}",
            humanize(&other.replace(['_', '-', '.'], " "))
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["api_key", "steps"],
            "properties": {
                "api_key": {"type": "string", "secret": true, "default": "never-shown"},
                "steps": {"type": "integer", "default": 3, "description": "How many"},
                "ratio": {"type": ["number", "null"]},
                "loud": {"type": "boolean", "default": true},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "extra": {"type": "object"}
            }
        })
    }

    #[test]
    fn each_property_gets_its_control_and_secrets_no_value() {
        let fields = fields(Some(&schema()), "settings").unwrap();
        let kinds: Vec<_> = fields.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("api_key", Kind::Secret),
                ("steps", Kind::Integer),
                ("ratio", Kind::Number),
                ("loud", Kind::Checkbox),
                ("mode", Kind::Select),
                ("tags", Kind::Lines),
                ("extra", Kind::Json)
            ]
        );
        assert_eq!(fields[0].input_type(), "password");
        assert_eq!(fields[0].value, "", "a secret's default is never shown");
        assert!(fields[0].required);
        assert_eq!(fields[1].value, "3");
        assert_eq!(fields[1].help, "How many");
        assert_eq!(fields[0].input, "settings.api_key");
        assert_eq!(fields[0].label, "Api key");
        assert!(super::fields(Some(&json!({"type": "string"})), "input").is_none());
    }

    #[test]
    fn a_posted_form_becomes_typed_json_and_bad_values_name_their_field() {
        let fields = fields(Some(&schema()), "settings").unwrap();
        let form: Vec<(String, String)> = [
            ("settings.api_key", "s3cret"),
            ("settings.steps", "5"),
            ("settings.ratio", ""),
            ("settings.mode", "slow"),
            ("settings.tags", "a\n\n b \n"),
            ("settings.extra", "{\"x\": 1}"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let obj = object(&fields, &form, "settings").unwrap();
        assert_eq!(
            Value::Object(obj),
            json!({"api_key": "s3cret", "steps": 5, "loud": false, "mode": "slow",
                   "tags": ["a", "b"], "extra": {"x": 1}})
        );
        let bad: Vec<(String, String)> = vec![
            ("settings.steps".into(), "5.5".into()),
            ("settings.ratio".into(), "x".into()),
            ("settings.extra".into(), "{".into()),
        ];
        let e = object(&fields, &bad, "settings").unwrap_err();
        let at: Vec<_> = e
            .field_errors()
            .iter()
            .map(|f| f.pointer.as_str())
            .collect();
        assert_eq!(
            at,
            ["/settings/steps", "/settings/ratio", "/settings/extra"]
        );
    }

    #[test]
    fn scopes_read_as_plain_words() {
        assert_eq!(scope_words("profile:read"), "Read your profile");
        assert_eq!(
            scope_words("checklist:write"),
            "Create and change your checklist"
        );
        assert_eq!(
            scope_words("payments:manage"),
            "Manage your payments: create, change and delete"
        );
        assert_eq!(scope_words("meter_data:export"), "Export your meter data");
        assert_eq!(scope_words("calendar"), "Use your calendar");
    }
}
