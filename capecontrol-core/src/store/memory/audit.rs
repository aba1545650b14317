//! [`AuditStore`] on [`MemoryStore`]: the hash-chained audit trail.

use super::*;

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append_audit(&self, event: NewAuditEvent) -> Result<AuditEvent> {
        event.check()?;
        let now = self.now();
        let id = {
            let mut state = self.lock();
            state.check_audit_refs(&event, None)?;
            state.append_audit(event, now);
            state.audit_len
        };
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        self.sealed_trail()
            .by_id(id)
            .ok_or_else(|| Error::resource("the audit row just appended is missing"))
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        Ok(self.sealed_trail().select(filter, filter.page_size()))
    }

    async fn audit_head(&self) -> Result<crate::audit::ChainHead> {
        Ok(self.sealed_trail().head())
    }
}
