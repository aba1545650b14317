//! [`RatingStore`](crate::store::RatingStore) on [`MemoryStore`]: ratings of completed tasks.

use super::*;

#[async_trait]
impl crate::store::RatingStore for MemoryStore {
    async fn rate(
        &self,
        task_id: Uuid,
        by: &Principal,
        score: u8,
    ) -> Result<crate::store::RatingSummary> {
        let now = self.now();
        let mut state = self.lock();
        let task = state.tasks.get(&task_id).map(|t| &*t.record);
        crate::store::check_rating(task, task_id, by, score)?;
        let (agent_id, version) = task
            .map(|t| (t.agent_id.clone(), t.version.clone()))
            .ok_or_else(|| Error::not_found("task", task_id.to_string()))?;
        let previous = state
            .ratings
            .insert(task_id, (score, agent_id.clone(), version.clone()))
            .map(|(s, _, _)| s);
        let (sum, count) = state
            .ratings
            .values()
            .filter(|(_, a, v)| *a == agent_id && *v == version)
            .fold((0u64, 0u64), |(sum, n), (s, _, _)| {
                (sum + u64::from(*s), n + 1)
            });
        let mut payload = json!({"score": score, "version": version});
        if let Some(p) = previous {
            payload["previous"] = json!(p);
        }
        let audit = NewAuditEvent::by(by, "task.rated", payload)
            .task(task_id)
            .agent(agent_id.clone());
        state.append_audit(audit, now);
        Ok(crate::store::RatingSummary {
            task_id,
            agent_id,
            version,
            score,
            previous,
            mean: sum as f64 / count as f64,
            count,
        })
    }
}
