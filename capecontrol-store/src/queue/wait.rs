//! [`WaitStore`] on PostgreSQL: waits are rows of `task_waits` (migration
//! `20261130000015_waiting.sql`). Each operation is one transaction of a few statements: the
//! task row is locked (`FOR UPDATE`) first, so a suspend, an answer, a deadline sweep and a
//! cancellation of the same task serialize, and exactly one wake of a wait succeeds.

use async_trait::async_trait;
use capecontrol_core::events::{TaskEvent, TaskEventKind};
use capecontrol_core::store::{
    Lease, NewAuditEvent, QueueStore, Suspend, TaskRecord, Wait, WaitStore, Wake, lease_lost,
};
use capecontrol_core::{Error, Result};
use serde_json::{Value, json};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{StepsColumns, bind_audit};
use crate::error::db;
use crate::rows::{self, AuditColumns, EventColumns, to_json};
use crate::store::PostgresStore;

/// Waits woken per sweep statement.
const WAKE_BATCH: i64 = 500;

const INSERT_EVENTS: &str = r#"
INSERT INTO task_events (task_id, seq, at, kind)
SELECT $1, e.seq, e.at, e.kind FROM unnest($2::bigint[], $3::timestamptz[], $4::jsonb[]) AS e(seq, at, kind)
"#;

const INSERT_STEPS: &str = r#"
INSERT INTO runs (task_id, step, state, status, started_at, finished_at, error_details)
SELECT $1, r.step, r.state, r.status, r.started_at, r.finished_at, r.error
FROM unnest($2::int[], $3::jsonb[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::jsonb[])
     AS r(step, state, status, started_at, finished_at, error)
ON CONFLICT (task_id, step) DO UPDATE SET state = EXCLUDED.state, status = EXCLUDED.status,
  started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
  error_details = EXCLUDED.error_details
"#;

const INSERT_AUDIT: &str = r#"
INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload, ip_address, user_agent)
SELECT COALESCE(a.task_id, $1), COALESCE(a.agent_id, $2), a.user_id, a.event_type, a.payload, a.ip, a.ua
FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::inet[], $9::text[])
     AS a(task_id, agent_id, user_id, event_type, payload, ip, ua)
"#;

const OWN_EVENT: &str = r#"
INSERT INTO task_events (task_id, seq, at, kind) VALUES ($1, $2, now(), $3)
RETURNING task_id, seq, at, kind
"#;

/// Inserts audit rows about task `task_id` of `agent_id` (their defaults).
async fn insert_audit(
    conn: &mut PgConnection,
    task_id: Uuid,
    agent_id: Option<&str>,
    audit: &[NewAuditEvent],
) -> Result<()> {
    if audit.is_empty() {
        return Ok(());
    }
    let a = AuditColumns::from_events(audit);
    bind_audit(sqlx::query(INSERT_AUDIT).bind(task_id).bind(agent_id), &a)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// Inserts the task's own lifecycle event numbered `seq`; returns it as stored.
async fn own_event(
    conn: &mut PgConnection,
    task_id: Uuid,
    seq: i64,
    kind: &TaskEventKind,
) -> Result<TaskEvent> {
    let row = sqlx::query(OWN_EVENT)
        .bind(task_id)
        .bind(seq)
        .bind(to_json(kind)?)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    rows::event(&row)
}

/// Wakes the task `task_id` if it waits (on `step`, when given) inside the caller's
/// transaction: the step completed with `output` (`None`: the wait's `on_timeout`), queued,
/// `resumed` event, `task.resumed` audit row and `audit`. `step: None` is the deadline sweep:
/// only a wait whose deadline passed is woken. `Ok(None)`: not waiting (on it).
async fn wake_in(
    conn: &mut PgConnection,
    task_id: Uuid,
    step: Option<u32>,
    output: Option<Value>,
    by: Option<String>,
    audit: &[NewAuditEvent],
) -> Result<Option<(TaskRecord, TaskEvent)>> {
    let row = sqlx::query(
        "SELECT t.status, t.agent_id, w.wait, (w.until IS NOT NULL AND w.until <= now()) AS due \
         FROM tasks t LEFT JOIN task_waits w ON w.task_id = t.id WHERE t.id = $1 FOR UPDATE OF t",
    )
    .bind(task_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?
    .ok_or_else(|| Error::not_found("task", task_id.to_string()))?;
    let status: Option<String> = row.try_get("status").map_err(db)?;
    let agent_id: Option<String> = row.try_get("agent_id").map_err(db)?;
    let wait: Option<Value> = row.try_get("wait").map_err(db)?;
    let due: Option<bool> = row.try_get("due").map_err(db)?;
    let wait: Option<Wait> = wait
        .map(|w| serde_json::from_value(w).map_err(|e| crate::error::corrupt("wait", e)))
        .transpose()?;
    let Some(wait) = wait.filter(|w| {
        status.as_deref() == Some("waiting")
            && match step {
                Some(s) => s == w.step,
                // A deadline sweep: only a wait whose deadline passed (not a newer one).
                None => due == Some(true),
            }
    }) else {
        return Ok(None);
    };
    let output = output.unwrap_or_else(|| wait.on_timeout.clone());
    sqlx::query(
        "INSERT INTO runs (task_id, step, state, status, finished_at) \
         VALUES ($1, $2, $3, 'completed', now()) \
         ON CONFLICT (task_id, step) DO UPDATE SET state = EXCLUDED.state, \
           status = EXCLUDED.status, finished_at = EXCLUDED.finished_at, error_details = NULL",
    )
    .bind(task_id)
    .bind(i32::try_from(wait.step).unwrap_or(i32::MAX))
    .bind(json!({ "name": wait.name, "output": output }))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    let task_row = sqlx::query(
        "UPDATE tasks SET status = 'queued', run_at = now(), last_seq = last_seq + 1 \
         WHERE id = $1 RETURNING *",
    )
    .bind(task_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    let task = rows::task(&task_row)?;
    let seq: i64 = task_row.try_get("last_seq").map_err(db)?;
    let event = own_event(
        conn,
        task_id,
        seq,
        &TaskEventKind::Resumed {
            step: wait.step,
            by: by.clone(),
        },
    )
    .await?;
    sqlx::query("DELETE FROM task_waits WHERE task_id = $1")
        .bind(task_id)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let reason = wait.wake_reason(by.is_some());
    let mut all = vec![NewAuditEvent {
        user_id: Some(by.unwrap_or_else(|| task.user_id.clone())),
        event_type: "task.resumed".into(),
        payload: json!({ "step": wait.step, "kind": wait.kind(), "reason": reason }),
        ..Default::default()
    }];
    all.extend_from_slice(audit);
    insert_audit(conn, task_id, agent_id.as_deref(), &all).await?;
    Ok(Some((task, event)))
}

#[async_trait]
impl WaitStore for PostgresStore {
    async fn suspend(&self, lease: &Lease, suspend: Suspend) -> Result<TaskRecord> {
        suspend.check()?;
        let ev = EventColumns::new(lease.task_id, &suspend.events)?;
        let st = StepsColumns::new(&suspend.steps)?;
        let mut tx = self.inner.pool.begin().await.map_err(db)?;
        let row = sqlx::query(
            "SELECT status, lease_token, finished_token, cancel_requested, last_seq, agent_id, user_id \
             FROM tasks WHERE id = $1 FOR UPDATE",
        )
        .bind(lease.task_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| lease_lost(lease.task_id))?;
        let status: Option<String> = row.try_get("status").map_err(db)?;
        let token: Option<Uuid> = row.try_get("lease_token").map_err(db)?;
        let finished: Option<Uuid> = row.try_get("finished_token").map_err(db)?;
        let cancel_requested: bool = row.try_get("cancel_requested").map_err(db)?;
        let last_seq: i64 = row.try_get("last_seq").map_err(db)?;
        let agent_id: Option<String> = row.try_get("agent_id").map_err(db)?;
        let user_id: String = row.try_get("user_id").map_err(db)?;
        if status.as_deref() != Some("running") || token != Some(lease.token) {
            // Rolled back here, not by dropping `tx`: sqlx would send that rollback only when
            // the pool takes the connection back, and until then the row stays locked (a
            // claim, which skips locked rows, would pass the task over).
            tx.rollback().await.map_err(db)?;
            if finished == Some(lease.token) {
                // This suspend committed before (a repeated write after an unknown outcome).
                return self.get_task(lease.task_id).await;
            }
            return Err(lease_lost(lease.task_id));
        }
        if let Some(first) = ev.seq.first()
            && *first != last_seq + 1
        {
            return Err(Error::conflict(format!(
                "events of task {} must continue at seq {}, not {first}",
                lease.task_id,
                last_seq + 1
            )));
        }
        sqlx::query(INSERT_EVENTS)
            .bind(lease.task_id)
            .bind(&ev.seq)
            .bind(&ev.at)
            .bind(&ev.kind)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        st.bind(sqlx::query(INSERT_STEPS).bind(lease.task_id))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let wait = &suspend.wait;
        let own_seq = last_seq + i64::try_from(ev.seq.len()).unwrap_or(0) + 1;
        let (kind, audit_type) = if cancel_requested {
            (TaskEventKind::Cancelled, "task.cancelled")
        } else {
            (wait.event_kind(), "task.waiting")
        };
        let task_row = sqlx::query(
            "UPDATE tasks SET \
               status = CASE WHEN $3 THEN 'cancelled' ELSE 'waiting' END, \
               attempts = CASE WHEN $3 THEN attempts ELSE GREATEST(attempts - 1, 0) END, \
               completed_at = CASE WHEN $3 THEN now() ELSE completed_at END, \
               run_at = CASE WHEN $3 THEN run_at ELSE COALESCE($4::timestamptz, run_at) END, \
               lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, \
               last_seq = $5, finished_token = $2 \
             WHERE id = $1 RETURNING *",
        )
        .bind(lease.task_id)
        .bind(lease.token)
        .bind(cancel_requested)
        .bind(wait.until)
        .bind(own_seq)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let event = own_event(&mut tx, lease.task_id, own_seq, &kind).await?;
        let mut audit = suspend.audit.clone();
        audit.push(NewAuditEvent {
            user_id: Some(user_id),
            event_type: audit_type.into(),
            payload: json!({ "step": wait.step, "kind": wait.kind(), "until": wait.until, "worker": lease.owner }),
            ..Default::default()
        });
        insert_audit(&mut tx, lease.task_id, agent_id.as_deref(), &audit).await?;
        if !cancel_requested {
            sqlx::query(
                "INSERT INTO task_waits (task_id, step, until, wait) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (task_id) DO UPDATE SET step = EXCLUDED.step, until = EXCLUDED.until, \
                   wait = EXCLUDED.wait",
            )
            .bind(lease.task_id)
            .bind(i32::try_from(wait.step).unwrap_or(i32::MAX))
            .bind(wait.until)
            .bind(to_json(wait)?)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        let task = rows::task(&task_row)?;
        let mut events = suspend.events;
        events.push(event);
        // A cancellation frees a concurrency slot: a wake-up.
        self.announce(events, cancel_requested, true);
        Ok(task)
    }

    async fn current_wait(&self, task_id: Uuid) -> Result<Option<Wait>> {
        let row = sqlx::query(
            "SELECT t.status, w.wait FROM tasks t LEFT JOIN task_waits w ON w.task_id = t.id \
             WHERE t.id = $1",
        )
        .bind(task_id)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| Error::not_found("task", task_id.to_string()))?;
        let status: Option<String> = row.try_get("status").map_err(db)?;
        let wait: Option<Value> = row.try_get("wait").map_err(db)?;
        if status.as_deref() != Some("waiting") {
            return Ok(None);
        }
        wait.map(|w| serde_json::from_value(w).map_err(|e| crate::error::corrupt("wait", e)))
            .transpose()
    }

    async fn wake(&self, wake: Wake) -> Result<TaskRecord> {
        wake.check()?;
        let mut tx = self.inner.pool.begin().await.map_err(db)?;
        let woke = wake_in(
            &mut tx,
            wake.task_id,
            Some(wake.step),
            Some(wake.output),
            wake.by,
            &wake.audit,
        )
        .await?;
        let Some((task, event)) = woke else {
            // Rolled back before answering, so the task's row is free when the caller hears
            // of the conflict (see `suspend`).
            tx.rollback().await.map_err(db)?;
            let task = self.get_task(wake.task_id).await?;
            return Err(Error::conflict(format!(
                "task {} is {}, not waiting on step {}",
                wake.task_id, task.status, wake.step
            )));
        };
        tx.commit().await.map_err(db)?;
        self.announce(vec![event], true, true);
        Ok(task)
    }

    async fn wake_due(&self) -> Result<Vec<Uuid>> {
        let due: Vec<Uuid> = sqlx::query_scalar(
            "SELECT w.task_id FROM task_waits w JOIN tasks t ON t.id = w.task_id \
             WHERE t.status = 'waiting' AND w.until <= now() ORDER BY w.until LIMIT $1",
        )
        .bind(WAKE_BATCH)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db)?;
        let mut woken = Vec::new();
        for id in due {
            let mut tx = self.inner.pool.begin().await.map_err(db)?;
            // Answered or cancelled meanwhile: nothing to do.
            if let Some((_, event)) = wake_in(&mut tx, id, None, None, None, &[]).await? {
                tx.commit().await.map_err(db)?;
                self.announce(vec![event], true, true);
                woken.push(id);
            } else {
                tx.rollback().await.map_err(db)?;
            }
        }
        Ok(woken)
    }

    async fn waiting_count(&self) -> Result<u64> {
        // PostgreSQL's simple protocol: one message, one round trip, one transaction. A
        // prepared statement's first use on a connection is two transactions (sqlx's Parse and
        // Describe, then its Bind and Execute), each taking the table's lock on its own: a
        // count could be seen to get the lock, end, and wait for it again, and cost a second
        // round trip. Planned at each call, which the sweeper's pace (once a second while no
        // task waits) makes cheap.
        let row = sqlx::raw_sql("SELECT count(*) FROM tasks WHERE status = 'waiting'")
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db)?;
        let n: i64 = row.try_get(0).map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn joinable(&self, task_id: Option<Uuid>, limit: usize) -> Result<Vec<(Uuid, Wait)>> {
        let rows = sqlx::query(
            "SELECT w.task_id, w.wait FROM task_waits w JOIN tasks t ON t.id = w.task_id \
             WHERE (w.wait->'waiting_for'->>'kind') = 'children' AND t.status = 'waiting' \
               AND ($1::uuid IS NULL OR w.task_id = $1) \
               AND NOT EXISTS ( \
                 SELECT 1 FROM jsonb_array_elements_text(w.wait->'waiting_for'->'ids') AS c(id) \
                 JOIN tasks ch ON ch.id = c.id::uuid \
                 WHERE ch.status NOT IN ('completed', 'failed', 'cancelled')) \
             LIMIT $2",
        )
        .bind(task_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let id: Uuid = row.try_get("task_id").map_err(db)?;
                let wait: Value = row.try_get("wait").map_err(db)?;
                let wait: Wait =
                    serde_json::from_value(wait).map_err(|e| crate::error::corrupt("wait", e))?;
                Ok((id, wait))
            })
            .collect()
    }
}
