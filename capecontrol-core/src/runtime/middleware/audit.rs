//! `AuditLogging`: writes an audit event for every submission a later layer rejects. (The
//! store writes the lifecycle events of accepted tasks in the same transaction as each state
//! change, and the gateway audits its policy decisions.)

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::{Chains, Middleware, Rejection, Submission, SubmitNext, Submitted};
use crate::error::{Error, Result};
use crate::policy::Principal;
use crate::store::{Enqueued, MAX_TASK_NAME_BYTES, NewAuditEvent, Store};

/// Audits middleware rejections. Put it first in the chain so it sees every later rejection.
pub struct AuditLogging {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for AuditLogging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLogging").finish_non_exhaustive()
    }
}

impl AuditLogging {
    /// Audits into `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Middleware for AuditLogging {
    fn name(&self) -> &str {
        "audit_logging"
    }

    fn chains(&self) -> Chains {
        // Only its submit is its own: out of the other chain.
        Chains::Submit
    }

    async fn submit(&self, sub: Submission, next: SubmitNext<'_>) -> Result<Enqueued> {
        let rejection = next.rejection();
        // What the audit row names: the gateway's record of the submission (this layer comes
        // first: it saw the same), else a copy of its own, made before the submission moves on.
        let copied = match rejection.and_then(Rejection::submitted) {
            Some(_) => None,
            None => Some(Submitted {
                task_id: sub.task_id,
                principal: sub.request.principal.clone(),
                agent_id: sub.agent_id.clone(),
                task: sub.request.task.clone(),
            }),
        };
        let result = next.run(sub).await;
        if let Err(err) = &result
            && let Some(submitted) = copied
                .as_ref()
                .or_else(|| rejection.and_then(Rejection::submitted))
        {
            let Submitted {
                task_id,
                principal,
                agent_id,
                task,
            } = submitted;
            // Never an input value in the audit trail: a validation error is audited by its
            // pointers only (a schema's messages quote the value), an out-of-bounds task name
            // by its size, an out-of-bounds principal without its user agent.
            let error = match err {
                Error::Validation { message, errors } => json!({
                    "message": message,
                    "fields": errors.iter().map(|e| e.pointer.clone()).collect::<Vec<_>>(),
                }),
                other => json!(other.to_string()),
            };
            let task = if task.len() <= MAX_TASK_NAME_BYTES {
                json!(task)
            } else {
                json!({ "bytes": task.len() })
            };
            let bounded;
            let principal = if principal.check().is_ok() {
                principal
            } else {
                bounded = Principal {
                    user_id: principal.user_id.chars().take(64).collect(),
                    user_agent: None,
                    ..principal.clone()
                };
                &bounded
            };
            let event = NewAuditEvent::by(
                principal,
                "task.rejected",
                json!({
                    "task_id": task_id,
                    "task": task,
                    "category": err.category(),
                    "status": err.http_status(),
                    "error": error,
                    "rejected_by": rejection.and_then(|r| r.by()),
                }),
            )
            .agent(agent_id.clone());
            if let Err(audit_err) = self.store.append_audit(event).await {
                tracing::warn!(%audit_err, "could not write the audit event of a rejected task");
            }
        }
        result
    }
}
