//! The node's side of durable waits: the sweeper loop, which wakes waits whose deadline passed
//! (timers and question timeouts) and joins whose children all ended every `poll_interval` and
//! sets the `task_waiting` gauge (reading the waits only while some task waits), and the check
//! of an answer against its question's schema.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use super::node::Node;
use crate::agent::ChildOutcome;
use crate::error::{Error, ErrorCategory, FieldError, Result};
use crate::store::{MAX_LIST_TASKS, Store, TaskFilter, TaskRecord, WaitFor, Wake};
use crate::validate::join_pointer;

/// The largest answer, serialized, in bytes.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The sweeper loop: a [`sweep`] every `poll_interval` (at least 10 ms) until the node stops.
///
/// While no task waits, it counts them only when an attempt of this node suspended its task
/// since the last count, and otherwise once per [`QUIET_SWEEP`] (a wait begun on another node
/// is that node's to notice; this count finds it, should that node be gone). On PostgreSQL the
/// count is a transaction: at a 10 ms `poll_interval`, a hundred commits a second of a node
/// that has nothing waiting.
pub(crate) async fn sweeper(node: Arc<Node>) {
    let every = node.config.poll_interval.max(Duration::from_millis(10));
    // When a count last found no task waiting (`None`: some did, or none was made yet).
    let mut none_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = node.stop.cancelled() => return,
        }
        let touched = node.take_waits_touched();
        if !touched && none_since.is_some_and(|at| at.elapsed() < QUIET_SWEEP) {
            continue;
        }
        none_since = sweep(&node).await.then(tokio::time::Instant::now);
    }
}

/// How long the sweeper goes without counting the waiting tasks while none waited at its last
/// count and no attempt of its node suspended a task since.
pub(crate) const QUIET_SWEEP: Duration = Duration::from_secs(1);

/// Parents a sweep wakes at most.
const JOIN_BATCH: usize = 500;

/// Wakes the waits whose deadline passed and the joins whose children ended, and sets the
/// `task_waiting` gauge. Returns whether it counted no waiting task.
///
/// It counts the waiting tasks first: with none, nothing is due and no join is ready, so the
/// two reads of the waits are skipped (on PostgreSQL, one statement per sweep instead of three
/// while no task waits, which is most of the time; a task that starts waiting just after the
/// count is found by the next sweep, as one that came due just after the read always was).
pub(crate) async fn sweep(node: &Node) -> bool {
    if let Ok(0) = node.store.waiting_count().await {
        metrics::gauge!("task_waiting").set(0.0);
        return true;
    }
    match node.store.wake_due().await {
        Ok(ids) if !ids.is_empty() => {
            tracing::info!(count = ids.len(), "woke waiting tasks whose time came");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "the wait sweep failed"),
    }
    join_ready(node, None).await;
    if let Ok(n) = node.store.waiting_count().await {
        metrics::gauge!("task_waiting").set(n as f64);
    }
    false
}

/// Wakes the parents waiting on children that have all ended (only `parent`, when given) with
/// the children's outcomes, in the order of the wait. A parent woken meanwhile by another node
/// (a conflict) is skipped; errors are logged (the next sweep tries again).
pub(crate) async fn join_ready(node: &Node, parent: Option<Uuid>) {
    let ready = match node.store.joinable(parent, JOIN_BATCH).await {
        Ok(ready) => ready,
        Err(e) => {
            tracing::warn!(error = %e, "the join sweep failed");
            return;
        }
    };
    for (task_id, wait) in ready {
        let WaitFor::Children { ids } = &wait.waiting_for else {
            continue;
        };
        let outcomes = match outcomes(node.store.as_ref(), task_id, ids).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(%task_id, error = %e, "could not read the children of a join");
                continue;
            }
        };
        let wake = Wake {
            task_id,
            step: wait.step,
            output: json!(outcomes),
            by: None,
            audit: Vec::new(),
        };
        match node.store.wake(wake).await {
            Ok(_) => tracing::debug!(%task_id, children = ids.len(), "joined"),
            Err(e) if e.category() == ErrorCategory::Conflict => {}
            Err(e) => tracing::warn!(%task_id, error = %e, "could not wake a joined task"),
        }
    }
}

/// The outcomes of `ids`, children of `parent`: read in one listing where it holds them all,
/// one by one otherwise.
async fn outcomes(store: &dyn Store, parent: Uuid, ids: &[Uuid]) -> Result<Vec<ChildOutcome>> {
    let listed = store
        .list_tasks(&TaskFilter {
            parent_id: Some(parent),
            limit: Some(MAX_LIST_TASKS),
            ..TaskFilter::default()
        })
        .await?;
    let by_id: HashMap<Uuid, TaskRecord> = listed.into_iter().map(|t| (t.id, t)).collect();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let outcome = match by_id.get(id) {
            Some(t) => ChildOutcome::of(t),
            None => match store.get_task(*id).await {
                Ok(t) => ChildOutcome::of(&t),
                Err(e) if e.category() == ErrorCategory::NotFound => {
                    Some(ChildOutcome::missing(*id))
                }
                Err(e) => return Err(e),
            },
        };
        out.push(
            outcome.ok_or_else(|| Error::conflict(format!("child task {id} is not final yet")))?,
        );
    }
    Ok(out)
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
