//! `ContentModeration`: checks task outputs against pluggable rules. A blocked output fails
//! the task for good with a validation error (category `validation`, not retried: the same
//! input would produce the same output) naming the rule and the field.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{Chains, ExecuteNext, Execution, Middleware};
use crate::error::{Error, FieldError, Result};
use crate::validate::join_pointer;

/// Why a rule blocked an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer to the offending field of the output.
    pub pointer: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A moderation rule.
pub trait ModerationRule: Send + Sync + 'static {
    /// The rule's name (in errors and audit).
    fn name(&self) -> &str;
    /// The violations in `output` (empty: allowed).
    fn check(&self, output: &Value) -> Vec<Violation>;
}

/// Blocks outputs whose strings contain any of a list of terms (case-insensitive).
#[derive(Debug, Clone)]
pub struct BlockedTerms {
    terms: Vec<String>,
}

impl BlockedTerms {
    /// Blocks `terms`.
    pub fn new<I, S>(terms: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            terms: terms.into_iter().map(|t| t.into().to_lowercase()).collect(),
        }
    }
}

impl ModerationRule for BlockedTerms {
    fn name(&self) -> &str {
        "blocked_terms"
    }

    fn check(&self, output: &Value) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut stack: Vec<(String, &Value)> = vec![(String::new(), output)];
        while let Some((pointer, value)) = stack.pop() {
            match value {
                Value::String(s) => {
                    let lower = s.to_lowercase();
                    if let Some(term) = self.terms.iter().find(|t| lower.contains(t.as_str())) {
                        out.push(Violation {
                            pointer,
                            reason: format!("contains the blocked term `{term}`"),
                        });
                    }
                }
                Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        stack.push((format!("{pointer}/{i}"), v));
                    }
                }
                Value::Object(map) => {
                    for (k, v) in map {
                        stack.push((join_pointer(&pointer, k), v));
                    }
                }
                _ => {}
            }
        }
        out.sort_by(|a, b| a.pointer.cmp(&b.pointer));
        out
    }
}

/// Checks outputs against its rules.
#[derive(Default, Clone)]
pub struct ContentModeration {
    rules: Vec<Arc<dyn ModerationRule>>,
}

impl std::fmt::Debug for ContentModeration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.rules.iter().map(|r| r.name()).collect();
        f.debug_struct("ContentModeration")
            .field("rules", &names)
            .finish()
    }
}

impl ContentModeration {
    /// Moderation with no rules (everything passes).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule.
    pub fn rule(mut self, rule: impl ModerationRule) -> Self {
        self.rules.push(Arc::new(rule));
        self
    }

    /// Checks an output: the first rule with violations blocks it.
    pub fn check(&self, output: &Value) -> Result<()> {
        for rule in &self.rules {
            let violations = rule.check(output);
            if !violations.is_empty() {
                return Err(Error::validation(
                    format!(
                        "output blocked by content moderation (rule `{}`)",
                        rule.name()
                    ),
                    violations
                        .into_iter()
                        .map(|v| FieldError::new(v.pointer, v.reason))
                        .collect(),
                ));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Middleware for ContentModeration {
    fn name(&self) -> &str {
        "content_moderation"
    }

    fn chains(&self) -> Chains {
        // Only its execute is its own: out of the other chain.
        Chains::Execute
    }

    async fn execute(&self, exec: Execution, next: ExecuteNext<'_>) -> Result<Value> {
        let output = next.run(exec).await?;
        self.check(&output)?;
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn blocked_terms_point_at_the_field() {
        let m = ContentModeration::new().rule(BlockedTerms::new(["secret plan"]));
        assert!(m.check(&json!({"text": "all good"})).is_ok());
        let err = m
            .check(&json!({"items": ["fine", "the SECRET PLAN is"]}))
            .unwrap_err();
        assert_eq!(err.http_status(), 400);
        assert!(!err.is_retryable());
        assert_eq!(err.field_errors()[0].pointer, "/items/1");
    }
}
