//! [`AuditStore`] on [`MemoryStore`]: the hash-chained audit trail.

use super::*;

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append_audit(&self, event: NewAuditEvent) -> Result<AuditEvent> {
        let now = self.now();
        let mut state = self.lock();
        state.check_audit_refs(&event, None)?;
        state.append_audit(event, now);
        state.seal_audit();
        Ok(state.audit[state.audit.len() - 1].clone())
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        let mut state = self.lock();
        state.seal_audit();
        Ok(state
            .audit
            .iter()
            .filter(|e| filter.task_id.is_none_or(|t| e.task_id == Some(t)))
            .filter(|e| {
                filter
                    .agent_id
                    .as_ref()
                    .is_none_or(|a| e.agent_id.as_ref() == Some(a))
            })
            .filter(|e| {
                filter
                    .user_id
                    .as_ref()
                    .is_none_or(|u| e.user_id.as_ref() == Some(u))
            })
            .filter(|e| {
                filter
                    .event_type
                    .as_ref()
                    .is_none_or(|t| &e.event_type == t)
            })
            .filter(|e| filter.after.is_none_or(|after| e.seq > after))
            .filter(|e| !filter.unchained || e.seq == 0)
            .take(filter.page_size())
            .cloned()
            .collect())
    }

    async fn audit_head(&self) -> Result<crate::audit::ChainHead> {
        let mut state = self.lock();
        state.seal_audit();
        Ok(state.audit_head.clone())
    }
}
