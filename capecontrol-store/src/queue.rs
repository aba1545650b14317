//! [`QueueStore`] on PostgreSQL: the queue, the step journal and task events.
//!
//! Round trips (each one statement, so one implicit transaction and one commit):
//! enqueue 1 (2 when an idempotency key matched an existing task), claim 1 (a PL/pgSQL
//! function, `capecontrol_claim`, for up to `limit` tasks), heartbeat 1 (`heartbeat_many`: 1 for
//! all the leases of a node), journal 1, finish 1 and release 1 (with any
//! number of step rows), reclaim 1 per
//! 500 expired leases, cancel 1, publish 0; with batched writes (the default, see the
//! `completer` module), journal writes and finishes of many tasks share one statement per kind
//! and one commit. A fenced write that matches no lease takes one more
//! read to tell a lost lease from misnumbered events. Each write returns the events it inserted,
//! which the store then announces (see the `notify` module).

use std::sync::Arc;

use async_trait::async_trait;
use capecontrol_core::events::{TaskEvent, TaskEventKind};
use capecontrol_core::store::{
    ClaimRequest, Claimed, Enqueued, Finish, Heartbeat, JournalWrite, Lease, NewAuditEvent,
    NewTask, Outcome, QueueStore, TaskFilter, TaskRecord, lease_lost,
};
use capecontrol_core::{Error, Principal, Result, StepRecord};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use tokio::sync::{broadcast, oneshot};
use uuid::Uuid;

use crate::error::{db, db_agent};
use crate::notify::CHANNEL;
use crate::rows::{self, AuditColumns, EventColumns, millis, to_json};
use crate::store::PostgresStore;

/// The end of a finish statement (`FINISH`, the completer's `FINISH_MANY`), over its finished
/// rows `t`: `wake`, whether a dispatcher should claim again — the task went back to the queue,
/// or its agent has another queued task, read from the newest end of the agent's queue (the
/// claimed, not yet vacuumed index entries gather at the oldest end, and an `EXISTS` would walk
/// them all: its `ORDER BY` is dropped, a scalar subquery keeps it).
macro_rules! wake_hint {
    () => {
        r#"       (t.status = 'queued'
        OR (SELECT 1 FROM tasks q WHERE q.agent_id = t.agent_id AND q.status = 'queued'
            ORDER BY q.run_at DESC LIMIT 1) IS NOT NULL)
         AS wake
FROM t
"#
    };
}

pub(crate) mod completer;
mod wait;

use completer::{FinishCols, FinishParams, Job, JournalCols, Write};

/// Expired leases reclaimed per statement.
const RECLAIM_BATCH: i64 = 500;

/// The enqueue; with a worker (`$25`), also the claim of the new task by that worker when a
/// claim would take it now (`capecontrol_may_start`): then the task is inserted `running` under
/// a new lease, with its `started` event and `task.started` audit row after the `queued` ones,
/// and the registry rows its attempt checks are read as a claim reads them.
const ENQUEUE: &str = r#"
WITH go AS MATERIALIZED (
  SELECT CASE WHEN $25::text IS NULL THEN false
              ELSE capecontrol_may_start($3, $11, $8, $9::timestamptz, $27::text[]) END AS ok
), ins AS (
  INSERT INTO tasks (id, user_id, agent_id, version, goal, input, principal, priority, run_at,
                     max_attempts, concurrency_limit, timeout_ms, idempotency_key, status,
                     last_seq, created_at, traceparent, parent_id, attempts, lease_owner,
                     lease_token, lease_expires_at, started_at)
  SELECT $1, $2, $3, $4, $5, $6, $7, $8, COALESCE($9::timestamptz, now()), $10, $11, $12, $13,
         CASE WHEN go.ok THEN 'running' ELSE 'queued' END, CASE WHEN go.ok THEN 2 ELSE 1 END,
         clock_timestamp(), $23, $24, CASE WHEN go.ok THEN 1 ELSE 0 END,
         CASE WHEN go.ok THEN $25::text END, CASE WHEN go.ok THEN gen_random_uuid() END,
         CASE WHEN go.ok THEN now() + $26::bigint * interval '1 millisecond' END,
         CASE WHEN go.ok THEN now() END
  FROM go
  ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING *
), ev AS (
  INSERT INTO task_events (task_id, seq, at, kind)
  SELECT ins.id, 1, now(), $14::jsonb FROM ins
  UNION ALL
  SELECT ins.id, 2, now(), jsonb_build_object('type', 'started', 'attempt', 1, 'worker', $25::text)
  FROM ins WHERE ins.status = 'running'
  RETURNING task_id, seq, at, kind
), au AS (
  INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload, ip_address, user_agent)
  SELECT COALESCE(a.task_id, ins.id), COALESCE(a.agent_id, ins.agent_id), a.user_id,
         a.event_type, a.payload, a.ip, a.ua
  FROM ins, unnest($15::uuid[], $16::text[], $17::text[], $18::text[], $19::jsonb[], $20::inet[],
                   $21::text[]) AS a(task_id, agent_id, user_id, event_type, payload, ip, ua)
  UNION ALL
  SELECT ins.id, ins.agent_id, ins.user_id, 'task.started',
         jsonb_build_object('attempt', 1, 'worker', $25::text), NULL::inet, NULL::text
  FROM ins WHERE ins.status = 'running'
), nt AS (
  -- Inside a caller's transaction only: delivered to every node at that commit.
  SELECT pg_notify($22::text, jsonb_build_object('node', '', 'wake', true,
                                                 'events', jsonb_build_array(to_jsonb(ev)))::text)
  FROM ev WHERE $22::text IS NOT NULL
)
SELECT ins.*, (SELECT to_jsonb(ev) FROM ev WHERE ev.seq = 1) AS event,
       (SELECT count(*) FROM nt) AS notified, '[]'::jsonb AS steps,
       CASE WHEN v.agent_id IS NOT NULL THEN COALESCE(v.status, 'draft') END
         AS catalog_version_status,
       to_jsonb(i) AS catalog_installation
FROM ins
LEFT JOIN agent_versions v
  ON ins.status = 'running' AND v.agent_id = ins.agent_id AND v.version = ins.version
LEFT JOIN installations i
  ON ins.status = 'running' AND i.agent_id = ins.agent_id AND i.user_id = ins.user_id
"#;

/// The claim, with the registry rows each attempt checks (its version's status, its
/// installation) read in the same statement: no reads of its own per attempt.
///
/// Its commit does not wait for the WAL flush (`synchronous_commit = off` for this transaction
/// only, set when a task was claimed): a claim lost in a server crash leaves its tasks queued,
/// as if never claimed, and the attempt's first write, which does wait for the flush (and so
/// flushes the claim before it), is then fenced out (409); what ran meanwhile runs again, as
/// after any lost lease. A claim is thus one flush fewer on the way from submit to start.
const CLAIM: &str = r#"
SELECT (c.task).*, c.steps, set_config('synchronous_commit', 'off', true) AS async_commit,
       CASE WHEN v.agent_id IS NOT NULL THEN COALESCE(v.status, 'draft') END
         AS catalog_version_status,
       to_jsonb(i) AS catalog_installation
FROM capecontrol_claim($1, $2, $3, $4) WITH ORDINALITY AS c(task, steps, n)
LEFT JOIN agent_versions v ON v.agent_id = (c.task).agent_id AND v.version = (c.task).version
LEFT JOIN installations i ON i.agent_id = (c.task).agent_id AND i.user_id = (c.task).user_id
ORDER BY c.n
"#;

const HEARTBEAT: &str = r#"
UPDATE tasks SET lease_expires_at = now() + $3 * interval '1 millisecond'
WHERE id = $1 AND lease_token = $2 AND status = 'running'
RETURNING lease_expires_at, cancel_requested
"#;

/// Every lease of a node in one statement: the live ones renewed, each reporting a requested
/// cancel; a lease missing from the result is lost. The rows are locked in id order first, as
/// the batched completer's statements lock theirs, so that two statements updating several
/// tasks each cannot deadlock.
const HEARTBEAT_MANY: &str = r#"
WITH lk AS MATERIALIZED (
  SELECT id FROM tasks WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE
)
UPDATE tasks t SET lease_expires_at = now() + $3 * interval '1 millisecond'
FROM lk JOIN unnest($1::uuid[], $2::uuid[]) AS l(id, token) ON l.id = lk.id
WHERE t.id = lk.id AND t.lease_token = l.token AND t.status = 'running'
RETURNING t.id, t.lease_expires_at, t.cancel_requested
"#;

const JOURNAL: &str = r#"
WITH t AS (
  UPDATE tasks SET last_seq = last_seq + cardinality($3::bigint[])
  WHERE id = $1 AND lease_token = $2 AND status = 'running'
    AND (cardinality($3::bigint[]) = 0 OR ($3::bigint[])[1] = last_seq + 1)
  RETURNING id, agent_id
), ev AS (
  INSERT INTO task_events (task_id, seq, at, kind)
  SELECT t.id, e.seq, e.at, e.kind
  FROM t, unnest($3::bigint[], $4::timestamptz[], $5::jsonb[]) AS e(seq, at, kind)
), st AS (
  INSERT INTO runs (task_id, step, state, status, started_at, finished_at, error_details)
  SELECT t.id, $6::int, $7::jsonb, $8::text, $9::timestamptz, $10::timestamptz, $11::jsonb
  FROM t WHERE $6::int IS NOT NULL
  ON CONFLICT (task_id, step) DO UPDATE SET state = EXCLUDED.state, status = EXCLUDED.status,
    started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
    error_details = EXCLUDED.error_details
), au AS (
  INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload, ip_address, user_agent)
  SELECT COALESCE(a.task_id, t.id), COALESCE(a.agent_id, t.agent_id), a.user_id,
         a.event_type, a.payload, a.ip, a.ua
  FROM t, unnest($12::uuid[], $13::text[], $14::text[], $15::text[], $16::jsonb[], $17::inet[],
                 $18::text[]) AS a(task_id, agent_id, user_id, event_type, payload, ip, ua)
)
SELECT count(*) FROM t
"#;

/// The end of an attempt. A cancel requested while the task ran turns a retry or a failure
/// into `cancelled` (status, event and audit row alike); a completion stays a completion.
const FINISH: &str = concat!(
    r#"
WITH t AS (
  UPDATE tasks SET
    status = CASE WHEN cancel_requested AND $6::text IN ('queued', 'failed') THEN 'cancelled'
                  ELSE $6::text END,
    output = CASE WHEN $6::text = 'completed' THEN $7::jsonb ELSE output END,
    error = COALESCE($8::jsonb, error),
    error_message = COALESCE($9::text, error_message),
    run_at = CASE WHEN cancel_requested THEN run_at ELSE COALESCE($10::timestamptz, run_at) END,
    completed_at = CASE WHEN $6::text = 'queued' AND NOT cancel_requested THEN NULL ELSE now() END,
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
    last_seq = last_seq + cardinality($3::bigint[]) + 1,
    finished_token = $2
  WHERE id = $1 AND lease_token = $2 AND status = 'running'
    AND (cardinality($3::bigint[]) = 0 OR ($3::bigint[])[1] = last_seq + 1)
  RETURNING *
), ev AS (
  INSERT INTO task_events (task_id, seq, at, kind)
  SELECT t.id, e.seq, e.at, e.kind
  FROM t, unnest($3::bigint[], $4::timestamptz[], $5::jsonb[]) AS e(seq, at, kind)
), own AS (
  INSERT INTO task_events (task_id, seq, at, kind)
  SELECT t.id, t.last_seq, now(),
         CASE WHEN t.status = 'cancelled' THEN '{"type": "cancelled"}'::jsonb
              WHEN t.status = 'queued'
              THEN $11::jsonb || jsonb_build_object('attempt', t.attempts, 'delay_ms',
                     GREATEST(0, floor(extract(epoch FROM ($10::timestamptz - now())) * 1000))::bigint)
              ELSE $11::jsonb END
  FROM t
  RETURNING task_id, seq, at, kind
), au AS (
  INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload, ip_address, user_agent)
  SELECT t.id, t.agent_id, t.user_id,
         CASE WHEN t.status = 'cancelled' THEN 'task.cancelled' ELSE $12::text END,
         $13::jsonb || jsonb_build_object('attempt', t.attempts)
           || CASE WHEN t.status = 'queued'
                   THEN jsonb_build_object('delay_ms', GREATEST(0, floor(extract(epoch FROM
                          ($10::timestamptz - now())) * 1000))::bigint)
                   ELSE '{}'::jsonb END,
         NULL::inet, NULL::text
  FROM t
  UNION ALL
  SELECT COALESCE(a.task_id, t.id), COALESCE(a.agent_id, t.agent_id), a.user_id, a.event_type,
         a.payload, a.ip, a.ua
  FROM t, unnest($14::uuid[], $15::text[], $16::text[], $17::text[], $18::jsonb[], $19::inet[],
                 $20::text[]) AS a(task_id, agent_id, user_id, event_type, payload, ip, ua)
), st AS (
  INSERT INTO runs (task_id, step, state, status, started_at, finished_at, error_details)
  SELECT t.id, r.step, r.state, r.status, r.started_at, r.finished_at, r.error
  FROM t, unnest($21::int[], $22::jsonb[], $23::text[], $24::timestamptz[],
                 $25::timestamptz[], $26::jsonb[])
            AS r(step, state, status, started_at, finished_at, error)
  ON CONFLICT (task_id, step) DO UPDATE SET state = EXCLUDED.state, status = EXCLUDED.status,
    started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
    error_details = EXCLUDED.error_details
)
SELECT t.*, (SELECT to_jsonb(own) FROM own) AS event,
"#,
    wake_hint!()
);

const RELEASE: &str = r#"
WITH t AS (
  UPDATE tasks SET
    status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
    attempts = CASE WHEN cancel_requested THEN attempts ELSE GREATEST(attempts - 1, 0) END,
    completed_at = CASE WHEN cancel_requested THEN now() ELSE completed_at END,
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
    last_seq = last_seq + cardinality($3::bigint[]) + 1,
    finished_token = $2
  WHERE id = $1 AND lease_token = $2 AND status = 'running'
    AND (cardinality($3::bigint[]) = 0 OR ($3::bigint[])[1] = last_seq + 1)
  RETURNING id, agent_id, user_id, status, last_seq
), ev AS (
  INSERT INTO task_events (task_id, seq, at, kind)
  SELECT t.id, e.seq, e.at, e.kind
  FROM t, unnest($3::bigint[], $4::timestamptz[], $5::jsonb[]) AS e(seq, at, kind)
), own AS (
  INSERT INTO task_events (task_id, seq, at, kind)
  SELECT t.id, t.last_seq, now(),
         CASE WHEN t.status = 'cancelled' THEN '{"type": "cancelled"}'::jsonb ELSE $6::jsonb END
  FROM t
  RETURNING task_id, seq, at, kind
), au AS (
  INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload)
  SELECT t.id, t.agent_id, t.user_id,
         CASE WHEN t.status = 'cancelled' THEN 'task.cancelled' ELSE 'task.released' END, $7::jsonb
  FROM t
), st AS (
  INSERT INTO runs (task_id, step, state, status, started_at, finished_at, error_details)
  SELECT t.id, r.step, r.state, r.status, r.started_at, r.finished_at, r.error
  FROM t, unnest($8::int[], $9::jsonb[], $10::text[], $11::timestamptz[],
                 $12::timestamptz[], $13::jsonb[])
            AS r(step, state, status, started_at, finished_at, error)
  ON CONFLICT (task_id, step) DO UPDATE SET state = EXCLUDED.state, status = EXCLUDED.status,
    started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
    error_details = EXCLUDED.error_details
)
SELECT (SELECT to_jsonb(own) FROM own) AS event FROM t
"#;

/// Expired leases: a task whose cancellation was requested is cancelled; else it is requeued
/// (`failed → queued`) while attempts remain, or failed for good. The error names the attempt
/// and the worker, as `MemoryStore`'s does.
const RECLAIM: &str = r#"
WITH exp AS (
  SELECT id, lease_owner,
         format('the lease of attempt %s expired (worker %s)', attempts,
                COALESCE(lease_owner, 'unknown')) AS msg
  FROM tasks
  WHERE status = 'running' AND lease_expires_at <= now()
  ORDER BY lease_expires_at
  LIMIT $1
  FOR UPDATE SKIP LOCKED
), t AS (
  UPDATE tasks SET
    status = CASE WHEN tasks.cancel_requested THEN 'cancelled'
                  WHEN tasks.attempts < tasks.max_attempts THEN 'queued' ELSE 'failed' END,
    run_at = CASE WHEN NOT tasks.cancel_requested AND tasks.attempts < tasks.max_attempts
                  THEN now() ELSE tasks.run_at END,
    completed_at = CASE WHEN NOT tasks.cancel_requested AND tasks.attempts < tasks.max_attempts
                        THEN NULL ELSE now() END,
    error = CASE WHEN tasks.cancel_requested THEN tasks.error
                 ELSE jsonb_build_object('category', 'resource', 'message', exp.msg) END,
    error_message = CASE WHEN tasks.cancel_requested THEN tasks.error_message
                         ELSE 'resource error: ' || exp.msg END,
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
    last_seq = tasks.last_seq + 1
  FROM exp WHERE tasks.id = exp.id
  RETURNING tasks.id, tasks.agent_id, tasks.user_id, tasks.status, tasks.attempts, tasks.last_seq,
            tasks.error, exp.lease_owner AS old_owner
), ev AS (
  INSERT INTO task_events (task_id, seq, at, kind)
  SELECT t.id, t.last_seq, now(),
         CASE t.status
           WHEN 'queued' THEN jsonb_build_object('type', 'retrying', 'attempt', t.attempts,
                                                 'delay_ms', 0, 'error', t.error)
           WHEN 'failed' THEN jsonb_build_object('type', 'failed', 'error', t.error)
           ELSE '{"type": "cancelled"}'::jsonb END
  FROM t
  RETURNING task_id, seq, at, kind
), au AS (
  INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload)
  SELECT t.id, t.agent_id, t.user_id,
         CASE t.status WHEN 'queued' THEN 'task.retrying' WHEN 'failed' THEN 'task.failed'
                       ELSE 'task.cancelled' END,
         jsonb_build_object('attempt', t.attempts, 'reason', 'lease_expired',
                            'worker', t.old_owner)
  FROM t
)
SELECT t.id, t.status, (SELECT to_jsonb(e) FROM ev e WHERE e.task_id = t.id) AS event FROM t
"#;

/// Cancels `$1` (queued or waiting: at once; running: flagged) and, when it was not final, its
/// descendants that are not final the same way (`tree` walks `parent_id`), each with its event
/// and audit row (`cascade_from` naming `$1` for a descendant). Returns every row it changed.
const CANCEL: &str = r#"
WITH RECURSIVE tree(id) AS (
  SELECT id FROM tasks WHERE id = $1 AND status IN ('queued', 'running', 'waiting')
  UNION
  SELECT c.id FROM tasks c JOIN tree ON c.parent_id = tree.id
), t AS (
  UPDATE tasks SET
    status = CASE WHEN status IN ('queued', 'waiting') THEN 'cancelled' ELSE status END,
    completed_at = CASE WHEN status IN ('queued', 'waiting') THEN now() ELSE completed_at END,
    cancel_requested = CASE WHEN status = 'running' THEN true ELSE cancel_requested END,
    last_seq = CASE WHEN status IN ('queued', 'waiting') THEN last_seq + 1 ELSE last_seq END
  FROM tree
  WHERE tasks.id = tree.id AND tasks.status IN ('queued', 'running', 'waiting')
  RETURNING tasks.*
), ev AS (
  INSERT INTO task_events (task_id, seq, at, kind)
  SELECT t.id, t.last_seq, now(), $2::jsonb FROM t WHERE t.status = 'cancelled'
  RETURNING task_id, seq, at, kind
), au AS (
  INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload, ip_address, user_agent)
  SELECT t.id, t.agent_id, $3::text,
         CASE WHEN t.status = 'cancelled' THEN 'task.cancelled' ELSE 'task.cancel_requested' END,
         CASE WHEN t.id = $1 THEN '{}'::jsonb ELSE jsonb_build_object('cascade_from', $1::uuid) END,
         $4::inet, $5::text
  FROM t ORDER BY (t.id <> $1), t.created_at, t.id
)
SELECT t.*, (SELECT to_jsonb(e) FROM ev e WHERE e.task_id = t.id) AS event FROM t
"#;

impl PostgresStore {
    /// Enqueues `task` on `conn`, typically inside the caller's own transaction
    /// (`&mut *tx`): the task, its `queued` event and its audit rows commit or roll back with
    /// the caller's other writes, and the wake-up and event notifications are sent at that
    /// commit. With an idempotency key already used by the same user, returns that task
    /// (`created = false`). Under READ COMMITTED (the default) a concurrent enqueue with the
    /// same key waits for the other transaction and then returns its task.
    pub async fn enqueue_in(&self, conn: &mut PgConnection, task: NewTask) -> Result<Enqueued> {
        Ok(enqueue_on(conn, task, true, None).await?.0)
    }
}

/// Enqueues on `conn`; with `in_tx`, notifies inside the statement (delivered at the caller's
/// commit), else returns the `queued` event for the caller to announce after this commit. With
/// `start` (never inside a caller's transaction), claims the task for that worker when a claim
/// would take it now, and returns it claimed.
async fn enqueue_on(
    conn: &mut PgConnection,
    task: NewTask,
    in_tx: bool,
    start: Option<&ClaimRequest>,
) -> Result<(Enqueued, Option<TaskEvent>, Option<Claimed>)> {
    task.check()?;
    // The policy decision that let the task in first, then the caller's audit, as in
    // `MemoryStore`.
    let mut audit: Vec<NewAuditEvent> = Vec::with_capacity(task.audit.len() + 2);
    if task.policy_allowed {
        audit.push(
            NewAuditEvent::by(
                &task.principal,
                "policy.allowed",
                json!({ "task": task.task, "version": task.version }),
            )
            .agent(task.agent_id.clone())
            .task(task.id),
        );
    }
    audit.extend(task.audit.iter().cloned());
    audit.push(
        NewAuditEvent::by(
            &task.principal,
            "task.queued",
            json!({ "task": task.task, "version": task.version, "priority": task.priority }),
        )
        .agent(task.agent_id.clone())
        .task(task.id),
    );
    let a = AuditColumns::from_events(&audit);
    let query = sqlx::query(ENQUEUE)
        .bind(task.id)
        .bind(&task.principal.user_id)
        .bind(&task.agent_id)
        .bind(&task.version)
        .bind(&task.task)
        .bind(&task.input)
        .bind(to_json(&task.principal)?)
        .bind(task.priority)
        .bind(task.run_at)
        .bind(i64::from(task.max_attempts))
        .bind(i64::from(task.concurrency_limit))
        .bind(millis(task.timeout))
        .bind(&task.idempotency_key)
        .bind(to_json(&TaskEventKind::Queued {
            trigger: task.trigger.clone(),
        })?);
    let row = bind_audit(query, &a)
        .bind(in_tx.then_some(CHANNEL))
        .bind(&task.traceparent)
        .bind(task.parent_id)
        .bind(start.map(|s| &s.worker))
        .bind(start.map(|s| millis(s.lease)))
        .bind(start.and_then(|s| s.agents.as_ref()))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_agent(&task.agent_id))?;
    if let Some(row) = row {
        let event = if in_tx { None } else { event_column(&row)? };
        let claimed = if start.is_some()
            && row
                .try_get::<Option<Uuid>, _>("lease_token")
                .map_err(db)?
                .is_some()
        {
            Some(claimed(&row)?)
        } else {
            None
        };
        let enqueued = Enqueued {
            task: claimed.as_ref().map_or_else(
                || rows::task(&row).map(Arc::new),
                |c| Ok(Arc::clone(&c.task)),
            )?,
            created: true,
        };
        return Ok((enqueued, event, claimed));
    }
    // The key was taken: the conflicting insert has committed (ON CONFLICT waited for it), so
    // this statement's fresh snapshot sees it.
    let row = sqlx::query("SELECT * FROM tasks WHERE user_id = $1 AND idempotency_key = $2")
        .bind(&task.principal.user_id)
        .bind(&task.idempotency_key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?
        .ok_or_else(|| {
            Error::conflict("idempotency key is being used by a transaction that rolled back")
        })?;
    let enqueued = Enqueued {
        task: Arc::new(rows::task(&row)?),
        created: false,
    };
    Ok((enqueued, None, None))
}

/// The event a write returned in its `event` column (`to_jsonb` of a `task_events` row).
fn event_column(row: &PgRow) -> Result<Option<TaskEvent>> {
    let v: Option<Value> = row.try_get("event").map_err(db)?;
    v.map(|v| serde_json::from_value(v).map_err(|e| crate::error::corrupt("event", e)))
        .transpose()
}

/// The `started` event a claim wrote.
fn started_event(c: &Claimed) -> TaskEvent {
    TaskEvent {
        task_id: c.task.id,
        seq: c.last_seq,
        at: c.task.started_at.unwrap_or_else(Utc::now),
        kind: TaskEventKind::Started {
            attempt: c.task.attempts,
            worker: c.lease.owner.clone(),
        },
    }
}

fn claimed(row: &PgRow) -> Result<Claimed> {
    let task = rows::task(row)?;
    let token: Option<Uuid> = row.try_get("lease_token").map_err(db)?;
    let last_seq: i64 = row.try_get("last_seq").map_err(db)?;
    let steps: Value = row.try_get("steps").map_err(db)?;
    let (Some(token), Some(expires_at), Some(owner)) =
        (token, task.lease_expires_at, task.lease_owner.clone())
    else {
        return Err(crate::error::corrupt(
            "claim",
            "a claimed task without a lease",
        ));
    };
    Ok(Claimed {
        lease: Lease {
            task_id: task.id,
            owner,
            token,
            expires_at,
        },
        steps: rows::steps(steps)?,
        last_seq: u64::try_from(last_seq).unwrap_or(0),
        catalog: Some(rows::claimed_catalog(row)?),
        task: Arc::new(task),
    })
}

/// A step record as bind values (`runs.state` holds its name and output).
pub(crate) struct StepColumns {
    step: Option<i32>,
    state: Option<Value>,
    status: Option<&'static str>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    error: Option<Value>,
}

impl StepColumns {
    fn new(step: Option<&StepRecord>) -> Result<Self> {
        let Some(s) = step else {
            return Ok(Self {
                step: None,
                state: None,
                status: None,
                started_at: None,
                finished_at: None,
                error: None,
            });
        };
        Ok(Self {
            step: Some(
                i32::try_from(s.step)
                    .map_err(|_| Error::invalid_field("/step/step", "step number too large"))?,
            ),
            state: Some(json!({ "name": s.name, "output": s.output })),
            status: Some(s.status.as_str()),
            started_at: s.started_at,
            finished_at: s.finished_at,
            error: s.error.as_ref().map(to_json).transpose()?,
        })
    }
}

/// Step records as array bind values, for `unnest` (one per step number: the last wins).
#[derive(Default)]
pub(crate) struct StepsColumns {
    step: Vec<i32>,
    state: Vec<Value>,
    status: Vec<&'static str>,
    started_at: Vec<Option<DateTime<Utc>>>,
    finished_at: Vec<Option<DateTime<Utc>>>,
    error: Vec<Option<Value>>,
}

impl StepsColumns {
    fn new(steps: &[StepRecord]) -> Result<Self> {
        let mut c = Self::default();
        for (i, s) in steps.iter().enumerate() {
            if steps[i + 1..].iter().any(|later| later.step == s.step) {
                continue;
            }
            let one = StepColumns::new(Some(s))?;
            c.step.extend(one.step);
            c.state.extend(one.state);
            c.status.extend(one.status);
            c.started_at.push(one.started_at);
            c.finished_at.push(one.finished_at);
            c.error.push(one.error);
        }
        Ok(c)
    }

    /// Binds the six step columns, in the order the FINISH and RELEASE statements take them.
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.step)
            .bind(&self.state)
            .bind(&self.status)
            .bind(&self.started_at)
            .bind(&self.finished_at)
            .bind(&self.error)
    }
}

/// A runtime query on PostgreSQL.
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the seven audit columns (task, agent, user, type, payload, IP, user agent), in the
/// order every statement that inserts audit rows from arrays takes them.
pub(crate) fn bind_audit<'q>(query: PgQuery<'q>, a: &'q AuditColumns) -> PgQuery<'q> {
    query
        .bind(&a.task_id)
        .bind(&a.agent_id)
        .bind(&a.user_id)
        .bind(&a.event_type)
        .bind(&a.payload)
        .bind(&a.ip_address)
        .bind(&a.user_agent)
}

/// Why a fenced write matched nothing.
enum Fenced {
    /// The same write committed before (its first try's outcome was unknown to the caller).
    Applied,
    /// The lease is gone, the events are misnumbered, or the check itself failed.
    Failed(Error),
}

/// What a fenced write is, for telling a repeated write that already committed.
#[derive(Clone, Copy, PartialEq)]
enum WriteKind<'a> {
    /// A journal write: applied if the lease still holds and its events are stored.
    Journal,
    /// A finish: applied if it ended the lease (`finished_token`) with the same outcome.
    Finish(&'a Outcome),
    /// A release: applied if it ended the lease.
    Release,
}

/// Whether the stored task shows `outcome` (of the finish that ended the lease).
fn shows(row: &PgRow, outcome: &Outcome) -> bool {
    let status: Option<String> = row.try_get("status").unwrap_or(None);
    let output: Option<Value> = row.try_get("output").unwrap_or(None);
    let error: Option<Value> = row.try_get("error").unwrap_or(None);
    let same_error = |e: &Error| to_json(e).ok() == error;
    match outcome {
        Outcome::Completed { output: o } => {
            status.as_deref() == Some("completed") && output.as_ref() == Some(o)
        }
        // A retry may have been claimed again since: only its error is compared.
        Outcome::Failed {
            error: e,
            retry_at: Some(_),
        } => same_error(e),
        Outcome::Failed {
            error: e,
            retry_at: None,
        } => status.as_deref() == Some("failed") && same_error(e),
        Outcome::Cancelled => status.as_deref() == Some("cancelled"),
    }
}

const FENCE_CHECK: &str = r#"
SELECT status, output, error, lease_token, finished_token, last_seq,
       (SELECT kind FROM task_events WHERE task_id = $1 AND seq = $2) AS first_kind
FROM tasks WHERE id = $1
"#;

/// A write as the completer left it: written in a batch (with the row it returned, `None`
/// when fenced out), or to be written alone with the single-task statement (no completer, or
/// its batch failed deterministically).
enum Sent {
    Written(Write, Option<PgRow>),
    Alone(Write),
}

/// The completer answered with another kind of write than it was given (a bug).
fn mixed_up() -> Error {
    crate::error::corrupt("completer reply", "a write came back as another kind")
}

/// The per-outcome values of a finish.
fn finish_params(outcome: &Outcome) -> Result<FinishParams> {
    let failed =
        |error: &Error| json!({ "error": error.to_string(), "category": error.category() });
    let (status, output, error, retry_at, kind, audit_type, audit_payload) = match outcome {
        Outcome::Completed { output } => (
            "completed",
            Some(output.clone()),
            None,
            None,
            TaskEventKind::Completed {
                output: output.clone(),
            },
            "task.completed",
            json!({}),
        ),
        Outcome::Failed {
            error,
            retry_at: Some(at),
        } => (
            "queued",
            None,
            Some(error),
            Some(*at),
            TaskEventKind::Retrying {
                attempt: 0,
                delay_ms: 0,
                error: error.clone(),
            },
            "task.retrying",
            failed(error),
        ),
        Outcome::Failed {
            error,
            retry_at: None,
        } => (
            "failed",
            None,
            Some(error),
            None,
            TaskEventKind::Failed {
                error: error.clone(),
            },
            "task.failed",
            failed(error),
        ),
        Outcome::Cancelled => (
            "cancelled",
            None,
            None,
            None,
            TaskEventKind::Cancelled,
            "task.cancelled",
            json!({}),
        ),
    };
    Ok(FinishParams {
        status,
        output,
        error: error.map(to_json).transpose()?,
        error_message: error.map(|e| e.to_string()),
        retry_at,
        kind: to_json(&kind)?,
        audit_type,
        audit_payload,
    })
}

impl PostgresStore {
    /// Remembers that a fenced write under `lease` has an unknown outcome.
    fn mark_uncertain(&self, lease: &Lease) {
        if let Ok(mut u) = self.inner.uncertain.lock() {
            u.insert(lease.token);
        }
    }

    /// Hands `write` to the completer and waits for its answer; without a completer, gives it
    /// back to be written alone. A transient failure of its batch is the caller's error (the
    /// write may have committed: a repeat is checked for having been applied).
    async fn send(&self, lease: &Lease, write: Write) -> Result<Sent> {
        let Some(completer) = &self.inner.completer else {
            return Ok(Sent::Alone(write));
        };
        let (reply, answer) = oneshot::channel();
        completer
            .send(Job { write, reply })
            .await
            .map_err(|_| Error::resource("the store's completer has stopped (store closed)"))?;
        let Ok(reply) = answer.await else {
            self.mark_uncertain(lease);
            return Err(Error::transient(
                "the store's completer stopped during a write",
            ));
        };
        match reply.outcome {
            completer::Outcome::Written(row) => Ok(Sent::Written(reply.write, row)),
            completer::Outcome::Alone => Ok(Sent::Alone(reply.write)),
            completer::Outcome::Failed(e) => {
                self.mark_uncertain(lease);
                Err(e)
            }
        }
    }

    /// A journal write with the single-task statement: whether it matched the lease.
    async fn journal_alone(&self, lease: &Lease, c: &JournalCols) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(JOURNAL)
            .bind(c.task_id)
            .bind(c.token)
            .bind(&c.ev.seq)
            .bind(&c.ev.at)
            .bind(&c.ev.kind)
            .bind(c.step.step)
            .bind(&c.step.state)
            .bind(c.step.status)
            .bind(c.step.started_at)
            .bind(c.step.finished_at)
            .bind(&c.step.error)
            .bind(&c.audit.task_id)
            .bind(&c.audit.agent_id)
            .bind(&c.audit.user_id)
            .bind(&c.audit.event_type)
            .bind(&c.audit.payload)
            .bind(&c.audit.ip_address)
            .bind(&c.audit.user_agent)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(self.write_failed(lease))?;
        Ok(n > 0)
    }

    /// A finish with the single-task statement: the task row, or `None` when fenced out.
    async fn finish_alone(&self, lease: &Lease, c: &FinishCols) -> Result<Option<PgRow>> {
        let p = &c.params;
        let query = sqlx::query(FINISH)
            .bind(c.task_id)
            .bind(c.token)
            .bind(&c.ev.seq)
            .bind(&c.ev.at)
            .bind(&c.ev.kind)
            .bind(p.status)
            .bind(&p.output)
            .bind(&p.error)
            .bind(&p.error_message)
            .bind(p.retry_at)
            .bind(&p.kind)
            .bind(p.audit_type)
            .bind(&p.audit_payload);
        c.steps
            .bind(bind_audit(query, &c.audit))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(self.write_failed(lease))
    }
    /// Maps a fenced write's database error, remembering the lease when its outcome is unknown.
    fn write_failed<'a>(&'a self, lease: &'a Lease) -> impl Fn(sqlx::Error) -> Error + 'a {
        move |e| {
            let e = db(e);
            if e.is_transient() {
                self.mark_uncertain(lease);
            }
            e
        }
    }

    /// Whether a write under `lease` failed with an unknown outcome before; `forget` drops the
    /// lease from the set (its lease-ending write has now resolved).
    fn was_uncertain(&self, lease: &Lease, forget: bool) -> bool {
        self.inner.uncertain.lock().is_ok_and(|mut u| {
            if forget {
                u.remove(&lease.token)
            } else {
                u.contains(&lease.token)
            }
        })
    }

    /// Why a fenced write matched nothing: it was applied already (a repeated write whose
    /// first try's commit was interrupted), its events are misnumbered, or the lease is gone.
    async fn fence_failed(
        &self,
        lease: &Lease,
        events: &EventColumns,
        kind: WriteKind<'_>,
    ) -> Fenced {
        let row = sqlx::query(FENCE_CHECK)
            .bind(lease.task_id)
            .bind(events.seq.first().copied().unwrap_or(0))
            .fetch_optional(&self.inner.pool)
            .await;
        let row = match row {
            Ok(Some(row)) => row,
            Ok(None) => return Fenced::Failed(lease_lost(lease.task_id)),
            // The check itself failed (transiently, most likely): the caller may repeat it.
            Err(e) => return Fenced::Failed(db(e)),
        };
        let status: Option<String> = row.try_get("status").unwrap_or(None);
        let token: Option<Uuid> = row.try_get("lease_token").unwrap_or(None);
        let finished: Option<Uuid> = row.try_get("finished_token").unwrap_or(None);
        let last: i64 = row.try_get("last_seq").unwrap_or(0);
        let first_kind: Option<Value> = row.try_get("first_kind").unwrap_or(None);
        let holds = status.as_deref() == Some("running") && token == Some(lease.token);
        // Only a lease whose earlier write had an unknown outcome: a write repeated after a
        // known outcome is fenced as before.
        let ends = !matches!(kind, WriteKind::Journal);
        if self.was_uncertain(lease, ends) {
            let applied = match kind {
                WriteKind::Finish(outcome) => finished == Some(lease.token) && shows(&row, outcome),
                WriteKind::Release => finished == Some(lease.token),
                WriteKind::Journal => {
                    holds
                        && events.seq.last().is_some_and(|&l| l <= last)
                        && first_kind.is_some()
                        && first_kind.as_ref() == events.kind.first()
                }
            };
            if applied {
                return Fenced::Applied;
            }
        }
        if holds && let Some(first) = events.seq.first() {
            return Fenced::Failed(Error::conflict(format!(
                "events of task {} must continue at seq {}, not {first}",
                lease.task_id,
                last + 1
            )));
        }
        Fenced::Failed(lease_lost(lease.task_id))
    }
}

#[async_trait]
impl QueueStore for PostgresStore {
    async fn enqueue(&self, task: NewTask) -> Result<Enqueued> {
        let mut conn = self.inner.pool.acquire().await.map_err(db)?;
        let (enqueued, event, _) = enqueue_on(&mut conn, task, false, None).await?;
        drop(conn);
        if let Some(e) = event {
            self.announce(vec![e], true, true);
        }
        Ok(enqueued)
    }

    async fn enqueue_claimed(
        &self,
        task: NewTask,
        request: &ClaimRequest,
    ) -> Result<(Enqueued, Option<Claimed>)> {
        let mut conn = self.inner.pool.acquire().await.map_err(db)?;
        let (enqueued, event, claimed) = enqueue_on(&mut conn, task, false, Some(request)).await?;
        drop(conn);
        match (&claimed, event) {
            // Started here: its events are news, but not work for a claim.
            (Some(c), Some(e)) => self.announce(vec![e, started_event(c)], false, true),
            (None, Some(e)) => self.announce(vec![e], true, true),
            (_, None) => {}
        }
        Ok((enqueued, claimed))
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i32::try_from(request.limit.min(10_000)).unwrap_or(10_000);
        let claimed = sqlx::query(CLAIM)
            .bind(&request.worker)
            .bind(limit)
            .bind(millis(request.lease))
            .bind(&request.agents)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db)?
            .iter()
            .map(claimed)
            .collect::<Result<Vec<_>>>()?;
        self.announce(claimed.iter().map(started_event).collect(), false, true);
        Ok(claimed)
    }

    async fn heartbeat(&self, lease: &Lease, extend: std::time::Duration) -> Result<Heartbeat> {
        let row = sqlx::query(HEARTBEAT)
            .bind(lease.task_id)
            .bind(lease.token)
            .bind(millis(extend))
            .fetch_optional(&self.inner.heartbeat)
            .await
            .map_err(db)?
            .ok_or_else(|| lease_lost(lease.task_id))?;
        Ok(Heartbeat {
            expires_at: row.try_get("lease_expires_at").map_err(db)?,
            cancel_requested: row.try_get("cancel_requested").map_err(db)?,
        })
    }

    async fn journal(&self, lease: &Lease, write: JournalWrite) -> Result<()> {
        write.check()?;
        let cols = Box::new(JournalCols {
            task_id: lease.task_id,
            token: lease.token,
            ev: EventColumns::new(lease.task_id, &write.events)?,
            step: StepColumns::new(write.step.as_ref())?,
            audit: AuditColumns::from_events(&write.audit),
        });
        let (cols, matched) = match self.send(lease, Write::Journal(cols)).await? {
            Sent::Written(Write::Journal(cols), row) => (cols, row.is_some()),
            Sent::Alone(Write::Journal(cols)) => {
                let matched = self.journal_alone(lease, &cols).await?;
                (cols, matched)
            }
            _ => return Err(mixed_up()),
        };
        if !matched {
            if let Fenced::Failed(e) = self.fence_failed(lease, &cols.ev, WriteKind::Journal).await
            {
                return Err(e);
            }
            tracing::info!(task_id = %lease.task_id, "a repeated journal write had committed already");
        }
        self.announce(write.events, false, true);
        Ok(())
    }

    async fn finish(&self, lease: &Lease, finish: Finish) -> Result<Arc<TaskRecord>> {
        finish.check()?;
        let cols = Box::new(FinishCols {
            task_id: lease.task_id,
            token: lease.token,
            ev: EventColumns::new(lease.task_id, &finish.events)?,
            steps: StepsColumns::new(&finish.steps)?,
            audit: AuditColumns::from_events(&finish.audit),
            params: finish_params(&finish.outcome)?,
        });
        let (cols, row) = match self.send(lease, Write::Finish(cols)).await? {
            Sent::Written(Write::Finish(cols), row) => (cols, row),
            Sent::Alone(Write::Finish(cols)) => {
                let row = self.finish_alone(lease, &cols).await?;
                (cols, row)
            }
            _ => return Err(mixed_up()),
        };
        let Some(row) = row else {
            return match self
                .fence_failed(lease, &cols.ev, WriteKind::Finish(&finish.outcome))
                .await
            {
                Fenced::Applied => {
                    tracing::info!(task_id = %lease.task_id, "a repeated finish had committed already");
                    self.announce(finish.events, true, true);
                    self.get_task(lease.task_id).await.map(Arc::new)
                }
                Fenced::Failed(e) => Err(e),
            };
        };
        // The lease ended with a known outcome.
        self.was_uncertain(lease, true);
        let task = rows::task(&row)?;
        let wake: bool = row.try_get("wake").map_err(db)?;
        let mut events = finish.events;
        events.extend(event_column(&row)?);
        self.announce(events, wake, true);
        Ok(Arc::new(task))
    }

    async fn release(
        &self,
        lease: &Lease,
        events: Vec<TaskEvent>,
        steps: Vec<StepRecord>,
    ) -> Result<()> {
        capecontrol_core::store::check_steps(&steps)?;
        let ev = EventColumns::new(lease.task_id, &events)?;
        let st = StepsColumns::new(&steps)?;
        let query = sqlx::query(RELEASE)
            .bind(lease.task_id)
            .bind(lease.token)
            .bind(&ev.seq)
            .bind(&ev.at)
            .bind(&ev.kind)
            .bind(to_json(&TaskEventKind::Queued { trigger: None })?)
            .bind(json!({ "worker": lease.owner }));
        let row = st
            .bind(query)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(self.write_failed(lease))?;
        let Some(row) = row else {
            return match self.fence_failed(lease, &ev, WriteKind::Release).await {
                Fenced::Applied => {
                    tracing::info!(task_id = %lease.task_id, "a repeated release had committed already");
                    self.announce(events, true, true);
                    Ok(())
                }
                Fenced::Failed(e) => Err(e),
            };
        };
        self.was_uncertain(lease, true);
        let mut all = events;
        all.extend(event_column(&row)?);
        self.announce(all, true, true);
        Ok(())
    }

    async fn reclaim_expired(&self) -> Result<Vec<Uuid>> {
        let mut all = Vec::new();
        loop {
            let rows = sqlx::query(RECLAIM)
                .bind(RECLAIM_BATCH)
                .fetch_all(&self.inner.pool)
                .await
                .map_err(db)?;
            let done = i64::try_from(rows.len()).unwrap_or(0) < RECLAIM_BATCH;
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                all.push(row.try_get::<Uuid, _>("id").map_err(db)?);
                events.extend(event_column(row)?);
            }
            // Requeued tasks are work; failed or cancelled ones freed concurrency slots.
            let wake = !rows.is_empty();
            self.announce(events, wake, true);
            if done {
                return Ok(all);
            }
        }
    }

    async fn cancel(&self, task_id: Uuid, by: &Principal) -> Result<TaskRecord> {
        let rows = sqlx::query(CANCEL)
            .bind(task_id)
            .bind(to_json(&TaskEventKind::Cancelled)?)
            .bind(&by.user_id)
            .bind(by.ip_address)
            .bind(&by.user_agent)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db)?;
        let mut root = None;
        let mut events = Vec::new();
        for row in &rows {
            let task = rows::task(row)?;
            events.extend(event_column(row)?);
            if task.id == task_id {
                root = Some(task);
            }
        }
        match root {
            Some(task) => {
                self.announce(events, false, true);
                Ok(task)
            }
            None => {
                let task = self.get_task(task_id).await?;
                Err(Error::conflict(format!(
                    "task {task_id} is {}: it cannot be cancelled",
                    task.status
                )))
            }
        }
    }

    async fn get_task(&self, task_id: Uuid) -> Result<TaskRecord> {
        let row = sqlx::query("SELECT * FROM tasks WHERE id = $1")
            .bind(task_id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| Error::not_found("task", task_id.to_string()))?;
        rows::task(&row)
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>> {
        let limit = i64::try_from(filter.page_size()).unwrap_or(i64::MAX);
        sqlx::query(
            "SELECT * FROM tasks WHERE ($1::text IS NULL OR user_id = $1) \
             AND ($2::text IS NULL OR agent_id = $2) AND ($3::text IS NULL OR status = $3) \
             AND ($5::uuid IS NULL OR parent_id = $5) \
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(&filter.user_id)
        .bind(&filter.agent_id)
        .bind(filter.status.map(|s| s.as_str()))
        .bind(limit)
        .bind(filter.parent_id)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db)?
        .iter()
        .map(rows::task)
        .collect()
    }

    async fn steps(&self, task_id: Uuid) -> Result<Vec<StepRecord>> {
        let v: Value = sqlx::query_scalar("SELECT capecontrol_steps($1)")
            .bind(task_id)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db)?;
        rows::steps(v)
    }

    async fn events(&self, task_id: Uuid, after: u64) -> Result<Vec<TaskEvent>> {
        sqlx::query(
            "SELECT task_id, seq, at, kind FROM task_events \
             WHERE task_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(task_id)
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db)?
        .iter()
        .map(rows::event)
        .collect()
    }

    async fn publish(&self, event: TaskEvent) -> Result<()> {
        // Live only: no statement at all (the notifier sends it to the other nodes).
        self.announce(vec![event], false, false);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.inner.events.subscribe()
    }

    fn wakeups(&self) -> broadcast::Receiver<()> {
        self.inner.wakeups.subscribe()
    }

    async fn heartbeat_many(
        &self,
        leases: &[Lease],
        extend: std::time::Duration,
    ) -> Result<Vec<Result<Heartbeat>>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = leases.iter().map(|l| l.task_id).collect();
        let tokens: Vec<Uuid> = leases.iter().map(|l| l.token).collect();
        let rows = sqlx::query(HEARTBEAT_MANY)
            .bind(&ids)
            .bind(&tokens)
            .bind(millis(extend))
            .fetch_all(&self.inner.heartbeat)
            .await
            .map_err(db)?;
        let mut renewed = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let id: Uuid = row.try_get("id").map_err(db)?;
            renewed.insert(
                id,
                Heartbeat {
                    expires_at: row.try_get("lease_expires_at").map_err(db)?,
                    cancel_requested: row.try_get("cancel_requested").map_err(db)?,
                },
            );
        }
        Ok(leases
            .iter()
            .map(|l| {
                renewed
                    .remove(&l.task_id)
                    .ok_or_else(|| lease_lost(l.task_id))
            })
            .collect())
    }

    async fn queue_depth(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = 'queued'")
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
