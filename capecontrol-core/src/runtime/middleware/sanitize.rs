//! `InputSanitization`: payload size and depth limits, control characters, and the task's
//! input JSON Schema; every problem is a 400 [`Error::Validation`] with field pointers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;

use super::{Chains, Middleware, Submission, SubmitNext};
use crate::error::{Error, FieldError, Result};
use crate::store::Enqueued;
use crate::validate::join_pointer;

/// Settings of [`InputSanitization`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SanitizeConfig {
    /// Largest input, in bytes of compact JSON.
    pub max_payload_bytes: usize,
    /// Deepest nesting of arrays and objects in the input.
    pub max_depth: usize,
    /// Reject control characters (other than tab, newline and carriage return) in strings and
    /// keys.
    pub reject_control_chars: bool,
}

impl Default for SanitizeConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
            max_depth: 64,
            reject_control_chars: true,
        }
    }
}

/// Checks task inputs before they are queued.
pub struct InputSanitization {
    config: SanitizeConfig,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl std::fmt::Debug for InputSanitization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputSanitization")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Counts the bytes of compact JSON without allocating them.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn is_bad_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

impl InputSanitization {
    /// Sanitization with `config`.
    pub fn new(config: SanitizeConfig) -> Self {
        Self {
            config,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `input` against the size, depth and control-character rules, then `schema`.
    /// Returns every problem found.
    pub fn check(&self, input: &Value, schema: Option<(&str, &Value)>) -> Result<()> {
        let mut counter = Counter(0);
        if serde_json::to_writer(&mut counter, input).is_ok()
            && counter.0 > self.config.max_payload_bytes
        {
            return Err(Error::invalid_field(
                "",
                format!(
                    "input is {} bytes, more than the limit of {} bytes",
                    counter.0, self.config.max_payload_bytes
                ),
            ));
        }
        if self.has_problem(input) {
            return Err(self.problems(input));
        }
        if let Some((key, schema)) = schema {
            self.check_schema(input, key, schema)?;
        }
        Ok(())
    }

    /// Whether `input` breaks the depth or control-character rules: a walk that allocates no
    /// pointers, so that valid input (the common case) costs no more than one stack.
    fn has_problem(&self, input: &Value) -> bool {
        let bad_text = |s: &str| self.config.reject_control_chars && s.chars().any(is_bad_control);
        // Iterative walk: no recursion, so no stack overflow on deep input.
        let mut stack: Vec<(&Value, usize)> = vec![(input, 1)];
        while let Some((value, depth)) = stack.pop() {
            match value {
                Value::Array(_) | Value::Object(_) if depth > self.config.max_depth => return true,
                Value::Array(items) => stack.extend(items.iter().map(|item| (item, depth + 1))),
                Value::Object(map) => {
                    for (key, item) in map {
                        if bad_text(key) {
                            return true;
                        }
                        stack.push((item, depth + 1));
                    }
                }
                Value::String(s) if bad_text(s) => return true,
                _ => {}
            }
        }
        false
    }

    /// Every depth and control-character problem of `input`, each at its field's pointer
    /// (called once [`has_problem`](Self::has_problem) found one).
    fn problems(&self, input: &Value) -> Error {
        let mut errors = Vec::new();
        // Iterative walk: no recursion, so no stack overflow on deep input.
        let mut stack: Vec<(String, &Value, usize)> = vec![(String::new(), input, 1)];
        while let Some((pointer, value, depth)) = stack.pop() {
            match value {
                Value::Array(_) | Value::Object(_) if depth > self.config.max_depth => {
                    errors.push(FieldError::new(
                        pointer,
                        format!("nested deeper than {} levels", self.config.max_depth),
                    ));
                    continue;
                }
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate().rev() {
                        stack.push((format!("{pointer}/{i}"), item, depth + 1));
                    }
                }
                Value::Object(map) => {
                    let mut children: Vec<_> = map.iter().collect();
                    children.reverse();
                    for (key, item) in children {
                        let child = join_pointer(&pointer, key);
                        if self.config.reject_control_chars && key.chars().any(is_bad_control) {
                            errors.push(FieldError::new(
                                child.clone(),
                                "key contains a control character",
                            ));
                        }
                        stack.push((child, item, depth + 1));
                    }
                }
                Value::String(s)
                    if self.config.reject_control_chars && s.chars().any(is_bad_control) =>
                {
                    errors.push(FieldError::new(pointer, "contains a control character"));
                }
                _ => {}
            }
        }
        errors.sort();
        Error::validation("invalid input", errors)
    }

    /// Checks `input` against the task's `schema` (compiled once per `key`).
    fn check_schema(&self, input: &Value, key: &str, schema: &Value) -> Result<()> {
        let validator = self.validator(key, schema)?;
        let errors: Vec<FieldError> = validator
            .iter_errors(input)
            .map(|e| {
                let mut pointer = e.instance_path().to_string();
                if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
                    if let Some(name) = property.as_str() {
                        pointer = join_pointer(&pointer, name);
                    }
                    return FieldError::new(pointer, "is required");
                }
                FieldError::new(pointer, e.to_string())
            })
            .collect();
        if !errors.is_empty() {
            return Err(Error::validation(
                "input does not match the task's schema",
                errors,
            ));
        }
        Ok(())
    }

    fn validator(&self, key: &str, schema: &Value) -> Result<Arc<jsonschema::Validator>> {
        if let Ok(cache) = self.validators.lock()
            && let Some(v) = cache.get(key)
        {
            return Ok(Arc::clone(v));
        }
        let validator = jsonschema::options()
            .build(schema)
            .map(Arc::new)
            .map_err(|e| Error::agent(format!("the task's input schema is invalid: {e}")))?;
        if let Ok(mut cache) = self.validators.lock() {
            cache.insert(key.to_owned(), Arc::clone(&validator));
        }
        Ok(validator)
    }
}

#[async_trait]
impl Middleware for InputSanitization {
    fn name(&self) -> &str {
        "input_sanitization"
    }

    fn chains(&self) -> Chains {
        // Only its submit is its own: out of the other chain.
        Chains::Submit
    }

    async fn submit(&self, sub: Submission, next: SubmitNext<'_>) -> Result<Enqueued> {
        // The validator's cache key is built only for a task that has a schema.
        match sub.task.as_ref().and_then(|t| t.input_schema.as_ref()) {
            Some(schema) => {
                let key = format!("{}@{}#{}", sub.agent_id, sub.version, sub.request.task);
                self.check(&sub.request.input, Some((key.as_str(), schema)))?;
            }
            None => self.check(&sub.request.input, None)?,
        }
        next.run(sub).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pointers(e: &Error) -> Vec<&str> {
        e.field_errors()
            .iter()
            .map(|f| f.pointer.as_str())
            .collect()
    }

    #[test]
    fn size_limit_at_its_edge() {
        let s = InputSanitization::new(SanitizeConfig {
            max_payload_bytes: 10,
            ..SanitizeConfig::default()
        });
        assert!(
            s.check(&json!("12345678"), None).is_ok(),
            "10 bytes with quotes"
        );
        let err = s.check(&json!("123456789"), None).unwrap_err();
        assert_eq!(err.http_status(), 400);
    }

    #[test]
    fn depth_limit_at_its_edge() {
        let s = InputSanitization::new(SanitizeConfig {
            max_depth: 3,
            ..SanitizeConfig::default()
        });
        assert!(s.check(&json!([[[1]]]), None).is_ok());
        let err = s.check(&json!({"a": [[[1]]]}), None).unwrap_err();
        assert_eq!(pointers(&err), ["/a/0/0"]);
    }

    #[test]
    fn control_characters_are_reported_at_their_field() {
        let s = InputSanitization::new(SanitizeConfig::default());
        assert!(s.check(&json!({"note": "tab\tand\nnewline"}), None).is_ok());
        let err = s
            .check(&json!({"a": ["ok", "bell\u{7}"], "b\u{0}": 1}), None)
            .unwrap_err();
        assert_eq!(pointers(&err), ["/a/1", "/b\u{0}"]);
    }

    #[test]
    fn schema_errors_carry_field_pointers() {
        let s = InputSanitization::new(SanitizeConfig::default());
        let schema = json!({
            "type": "object",
            "properties": {"month": {"type": "string"}, "limit": {"type": "integer", "maximum": 10}},
            "required": ["month"]
        });
        let err = s
            .check(&json!({"limit": 11}), Some(("k", &schema)))
            .unwrap_err();
        let mut p = pointers(&err);
        p.sort_unstable();
        assert_eq!(p, ["/limit", "/month"]);
        assert!(
            s.check(&json!({"month": "2026-01"}), Some(("k", &schema)))
                .is_ok()
        );
    }
}
