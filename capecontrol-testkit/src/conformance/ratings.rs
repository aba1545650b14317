//! Rating cases: of completed tasks by their own user, one per task, audited, summarised.

use super::helpers::*;

/// Ratings: 1..=5 by the task's own user of a completed task, one per task (a second replaces
/// the first), each audited as `task.rated`; the summary is the mean over the agent version.
pub async fn ratings_of_completed_tasks(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let user = Principal::new("user-1").with_roles(["user"]);
    let mut done = Vec::new();
    for _ in 0..2 {
        let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
        let c = claim_one(&store, "w1", &agent).await;
        assert_eq!(c.task.id, id);
        store.finish(&c.lease, completed(json!(1))).await.unwrap();
        done.push(id);
    }
    let queued = store.enqueue(new_task(&agent)).await.unwrap().task.id;

    // Bad input first, in the order a caller learns it: the score, then the task.
    for bad in [0u8, 6, 255] {
        let e = store.rate(done[0], &user, bad).await.unwrap_err();
        assert_eq!(e.category(), ErrorCategory::Validation, "{bad}: {e}");
        assert_eq!(e.field_errors()[0].pointer, "/score", "{e}");
    }
    assert_category(
        store.rate(Uuid::new_v4(), &user, 3).await,
        ErrorCategory::NotFound,
    );
    assert_category(
        store.rate(done[0], &Principal::new("user-2"), 3).await,
        ErrorCategory::Permission,
    );
    assert_category(store.rate(queued, &user, 3).await, ErrorCategory::Conflict);
    let rated = |store: &Arc<dyn Store>, task: Uuid| {
        let store = Arc::clone(store);
        async move {
            store
                .list_audit(&AuditFilter {
                    task_id: Some(task),
                    event_type: Some("task.rated".into()),
                    ..AuditFilter::default()
                })
                .await
                .unwrap()
        }
    };
    assert!(
        rated(&store, done[0]).await.is_empty(),
        "a refused rating writes nothing"
    );

    let s = store.rate(done[0], &user, 5).await.unwrap();
    assert_eq!(
        (
            s.agent_id.as_str(),
            s.version.as_str(),
            s.score,
            s.previous,
            s.count
        ),
        (agent.as_str(), "1.0.0", 5, None, 1)
    );
    assert_eq!(s.mean, 5.0);
    let s = store.rate(done[1], &user, 2).await.unwrap();
    assert_eq!((s.count, s.mean), (2, 3.5));
    // Rating again replaces the score.
    let s = store.rate(done[1], &user, 4).await.unwrap();
    assert_eq!((s.previous, s.count, s.mean), (Some(2), 2, 4.5));

    let rows = rated(&store, done[1]).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].payload, json!({"score": 2, "version": "1.0.0"}));
    assert_eq!(
        rows[1].payload,
        json!({"score": 4, "version": "1.0.0", "previous": 2})
    );
    assert_eq!(rows[1].user_id.as_deref(), Some("user-1"));
    assert_eq!(rows[1].agent_id.as_deref(), Some(agent.as_str()));
}
