//! The node's side of durable waits: the sweeper loop, which wakes waits whose deadline passed
//! (timers and question timeouts) every `poll_interval` and sets the `task_waiting` gauge, and
//! the check of an answer against its question's schema.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::node::Node;
use crate::error::{Error, FieldError, Result};
use crate::validate::join_pointer;

/// The largest answer, serialized, in bytes.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The sweeper loop: a [`sweep`] every `poll_interval` (at least 10 ms) until the node stops.
pub(crate) async fn sweeper(node: Arc<Node>) {
    let every = node.config.poll_interval.max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = node.stop.cancelled() => return,
        }
        sweep(&node).await;
    }
}

/// Wakes the waits whose deadline passed and sets the `task_waiting` gauge.
pub(crate) async fn sweep(node: &Node) {
    match node.store.wake_due().await {
        Ok(ids) if !ids.is_empty() => {
            tracing::info!(count = ids.len(), "woke waiting tasks whose time came");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "the wait sweep failed"),
    }
    if let Ok(n) = node.store.waiting_count().await {
        metrics::gauge!("task_waiting").set(n as f64);
    }
}

/// Checks `answer` against the question's `schema`: a validation error naming each field at
/// its JSON pointer under `/answer`.
pub(crate) fn check_answer(schema: &Value, answer: &Value) -> Result<()> {
    let size = serde_json::to_vec(answer).map_or(usize::MAX, |v| v.len());
    if size > MAX_ANSWER_BYTES {
        return Err(Error::invalid_field(
            "/answer",
            format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
        ));
    }
    let validator = jsonschema::validator_for(schema).map_err(|e| {
        Error::agent(format!(
            "the question's answer schema is invalid: {}",
            e.masked()
        ))
    })?;
    let errors: Vec<FieldError> = validator
        .iter_errors(answer)
        .map(|e| {
            let pointer = format!("/answer{}", e.instance_path().as_str());
            if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind()
                && let Some(name) = property.as_str()
            {
                return FieldError::new(join_pointer(&pointer, name), "is required");
            }
            FieldError::new(pointer, e.masked().to_string())
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::validation(
            "the answer does not match the question's schema",
            errors,
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_answer_is_checked_at_its_pointer_and_its_size_edge() {
        let schema = json!({"type": "object", "required": ["ok"],
                            "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer"}}});
        check_answer(&schema, &json!({"ok": true})).unwrap();
        let err = check_answer(&schema, &json!({"ok": 1, "n": "x"})).unwrap_err();
        let mut pointers: Vec<&str> = err
            .field_errors()
            .iter()
            .map(|f| f.pointer.as_str())
            .collect();
        pointers.sort_unstable();
        assert_eq!(pointers, ["/answer/n", "/answer/ok"]);
        let err = check_answer(&schema, &json!({})).unwrap_err();
        assert_eq!(err.field_errors()[0].pointer, "/answer/ok");

        // A JSON string of n characters serializes to n + 2 bytes.
        let any = json!({});
        let at_limit = Value::String("a".repeat(MAX_ANSWER_BYTES - 2));
        check_answer(&any, &at_limit).unwrap();
        let over = Value::String("a".repeat(MAX_ANSWER_BYTES - 1));
        let err = check_answer(&any, &over).unwrap_err();
        assert_eq!(err.field_errors()[0].pointer, "/answer");
        assert_eq!(err.http_status(), 400);
    }
}
