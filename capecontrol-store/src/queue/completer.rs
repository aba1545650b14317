//! The batched completer: one writer per store for the journal writes and finishes of all its
//! attempts.
//!
//! `journal` and `finish` hand their write to the completer's queue and await its answer. The
//! completer takes every write queued (up to [`BATCH_MAX`], one per task) and writes them with
//! one commit: one statement per kind (`JOURNAL_MANY`, `FINISH_MANY`: the inputs as arrays,
//! unnested; the fenced task update first, every other insert joined to the rows it returned,
//! so a fenced-out task writes nothing), in one transaction when both kinds are present. There
//! is no timer: whatever queued while a batch was in flight goes out as soon as it returns,
//! after one `yield_now` that lets the attempts just answered queue their next writes first.
//! The queue holds [`QUEUE`] writes at most: past that, writers wait (back-pressure).
//!
//! Every statement that updates several task rows (these two, and `HEARTBEAT_MANY`) locks
//! them in id order first (`SELECT … ORDER BY id FOR NO KEY UPDATE`), so that a batch and a
//! node's heartbeat cannot deadlock (the loser would wait for `deadlock_timeout`, a lease could
//! expire meanwhile).
//!
//! Each caller learns its own result: its row (committed), no row (fenced out: the caller
//! tells an applied repeat from a lost lease, as the inline path does), a transient error (the
//! outcome of the whole batch is unknown: every caller's host repeats its write, recognised as
//! applied if it committed), or "write it alone": a batch that failed with a deterministic
//! error is split in halves and written again, down to single writes, which the callers then
//! make with the single-task statements, so one bad write fails alone.

use std::collections::{HashMap, HashSet, VecDeque};

use capecontrol_core::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{StepColumns, StepsColumns, bind_audit};
use crate::error::db;
use crate::rows::{AuditColumns, EventColumns};

/// Writes per batch at most.
pub(crate) const BATCH_MAX: usize = 256;

/// Writes queued at most (the high-water mark): past it, `journal` and `finish` wait.
pub(crate) const QUEUE: usize = 1024;

/// A journal write, as bind values.
pub(crate) struct JournalCols {
    pub(crate) task_id: Uuid,
    pub(crate) token: Uuid,
    pub(crate) ev: EventColumns,
    pub(crate) step: StepColumns,
    pub(crate) audit: AuditColumns,
}

/// The per-outcome values of a finish (status, output, error, retry time, own event and audit
/// row), as bind values.
pub(crate) struct FinishParams {
    pub(crate) status: &'static str,
    pub(crate) output: Option<Value>,
    pub(crate) error: Option<Value>,
    pub(crate) error_message: Option<String>,
    pub(crate) retry_at: Option<DateTime<Utc>>,
    pub(crate) kind: Value,
    pub(crate) audit_type: &'static str,
    pub(crate) audit_payload: Value,
}

/// A finish, as bind values.
pub(crate) struct FinishCols {
    pub(crate) task_id: Uuid,
    pub(crate) token: Uuid,
    pub(crate) ev: EventColumns,
    pub(crate) steps: StepsColumns,
    pub(crate) audit: AuditColumns,
    pub(crate) params: FinishParams,
}

/// A write handed to the completer.
pub(crate) enum Write {
    Journal(Box<JournalCols>),
    Finish(Box<FinishCols>),
}

impl Write {
    fn task_id(&self) -> Uuid {
        match self {
            Self::Journal(j) => j.task_id,
            Self::Finish(f) => f.task_id,
        }
    }
}

/// What became of a write.
pub(crate) enum Outcome {
    /// The batch committed: the row the write returned, or `None` (fenced out).
    Written(Option<PgRow>),
    /// The write is to be made alone, with the single-task statement (its batch failed with a
    /// deterministic error).
    Alone,
    /// The batch failed with a transient error: the write may or may not have committed.
    Failed(Error),
}

/// The completer's answer: the write back (for the caller's fence check or single write) and
/// what became of it.
pub(crate) struct Reply {
    pub(crate) write: Write,
    pub(crate) outcome: Outcome,
}

/// A queued write and where to answer.
pub(crate) struct Job {
    pub(crate) write: Write,
    pub(crate) reply: oneshot::Sender<Reply>,
}

impl Job {
    fn answer(self, outcome: Outcome) {
        // The caller may have gone (its attempt was dropped): nobody to tell.
        let _ = self.reply.send(Reply {
            write: self.write,
            outcome,
        });
    }
}

/// The completer task: runs until every sender is dropped.
pub(crate) async fn run(pool: PgPool, mut rx: mpsc::Receiver<Job>) {
    // Writes of a task already in the batch being built wait for the next one (a task's
    // writes are ordered; one statement updates a task row once).
    let mut carried: VecDeque<Job> = VecDeque::new();
    loop {
        let mut batch = Vec::new();
        let mut tasks = HashSet::new();
        let mut later = VecDeque::new();
        for job in carried.drain(..) {
            if batch.len() < BATCH_MAX && tasks.insert(job.write.task_id()) {
                batch.push(job);
            } else {
                later.push_back(job);
            }
        }
        carried = later;
        if batch.is_empty() {
            let Some(job) = rx.recv().await else { return };
            tasks.insert(job.write.task_id());
            batch.push(job);
        }
        while batch.len() < BATCH_MAX {
            let Ok(job) = rx.try_recv() else { break };
            if tasks.insert(job.write.task_id()) {
                batch.push(job);
            } else {
                carried.push_back(job);
            }
        }
        write_batch(&pool, batch).await;
        // The attempts just answered run before the next batch is taken: an attempt whose
        // step was written runs its next step and queues that write now, and it joins the
        // batch instead of leading the one after (without this, the writes of a drain of
        // multi-step tasks settled into groups that alternated between batches).
        tokio::task::yield_now().await;
    }
}

/// Writes `batch` with one commit and answers every write; a deterministic failure splits it.
async fn write_batch(pool: &PgPool, batch: Vec<Job>) {
    let mut todo = vec![batch];
    while let Some(mut jobs) = todo.pop() {
        match execute(pool, &jobs).await {
            Ok(mut rows) => {
                for job in jobs {
                    let row = rows.remove(&job.write.task_id());
                    job.answer(Outcome::Written(row));
                }
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(target: "capecontrol::store", writes = jobs.len(), error = %e,
                    "a batch of writes failed transiently; each is repeated by its attempt");
                for job in jobs {
                    job.answer(Outcome::Failed(e.clone()));
                }
            }
            Err(e) if jobs.len() == 1 => {
                tracing::debug!(target: "capecontrol::store", error = %e,
                    "a write failed in a batch; it is made alone");
                for job in jobs {
                    job.answer(Outcome::Alone);
                }
            }
            Err(e) => {
                tracing::debug!(target: "capecontrol::store", writes = jobs.len(), error = %e,
                    "a batch of writes failed; written again in halves");
                let right = jobs.split_off(jobs.len() / 2);
                // The first half first.
                todo.push(right);
                todo.push(jobs);
            }
        }
    }
}

/// One commit for `jobs`: the rows each write returned, by task.
async fn execute(pool: &PgPool, jobs: &[Job]) -> Result<HashMap<Uuid, PgRow>> {
    let mut journals = Vec::new();
    let mut finishes = Vec::new();
    for job in jobs {
        match &job.write {
            Write::Journal(j) => journals.push(&**j),
            Write::Finish(f) => finishes.push(&**f),
        }
    }
    // In id order, as the statements lock the task rows (see `HEARTBEAT_MANY`).
    journals.sort_by_key(|j| j.task_id);
    finishes.sort_by_key(|f| f.task_id);
    let mut rows = HashMap::with_capacity(jobs.len());
    if !journals.is_empty() && !finishes.is_empty() {
        let mut tx = pool.begin().await.map_err(db)?;
        // Two statements: their rows are locked in one id order first (see the module docs).
        let mut ids: Vec<Uuid> = jobs.iter().map(|j| j.write.task_id()).collect();
        ids.sort_unstable();
        let written = async {
            sqlx::query(LOCK)
                .bind(&ids)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            journal_many(&mut tx, &journals, &mut rows).await?;
            finish_many(&mut tx, &finishes, &mut rows).await
        }
        .await;
        if let Err(e) = written {
            // Rolled back before the batch is written again in halves: a dropped transaction
            // is rolled back only when the pool takes its connection back, and the halves'
            // locks would wait for its row locks until then.
            let _ = tx.rollback().await;
            return Err(e);
        }
        tx.commit().await.map_err(db)?;
    } else {
        let mut conn = pool.acquire().await.map_err(db)?;
        journal_many(&mut conn, &journals, &mut rows).await?;
        finish_many(&mut conn, &finishes, &mut rows).await?;
    }
    Ok(rows)
}

/// Audit rows of several writes, each keyed by its write's task.
#[derive(Default)]
struct KeyedAudit {
    key: Vec<Uuid>,
    cols: AuditColumns,
}

impl KeyedAudit {
    fn extend(&mut self, key: Uuid, a: &AuditColumns) {
        self.key
            .extend(std::iter::repeat_n(key, a.event_type.len()));
        self.cols.task_id.extend(a.task_id.iter().copied());
        self.cols.agent_id.extend(a.agent_id.iter().cloned());
        self.cols.user_id.extend(a.user_id.iter().cloned());
        self.cols.event_type.extend(a.event_type.iter().cloned());
        self.cols.payload.extend(a.payload.iter().cloned());
        self.cols.ip_address.extend(a.ip_address.iter().copied());
        self.cols.user_agent.extend(a.user_agent.iter().cloned());
    }
}

/// Events of several writes, each keyed by its task.
#[derive(Default)]
struct KeyedEvents {
    key: Vec<Uuid>,
    seq: Vec<i64>,
    at: Vec<DateTime<Utc>>,
    kind: Vec<Value>,
}

impl KeyedEvents {
    fn extend(&mut self, key: Uuid, e: &EventColumns) {
        self.key.extend(std::iter::repeat_n(key, e.seq.len()));
        self.seq.extend(e.seq.iter().copied());
        self.at.extend(e.at.iter().copied());
        self.kind.extend(e.kind.iter().cloned());
    }
}

/// Step rows of several writes, each keyed by its task.
#[derive(Default)]
struct KeyedSteps {
    key: Vec<Uuid>,
    cols: StepsColumns,
}

impl KeyedSteps {
    fn push(&mut self, key: Uuid, s: &StepColumns) {
        let Some(step) = s.step else { return };
        self.key.push(key);
        self.cols.step.push(step);
        self.cols.state.push(s.state.clone().unwrap_or(Value::Null));
        self.cols.status.push(s.status.unwrap_or("completed"));
        self.cols.started_at.push(s.started_at);
        self.cols.finished_at.push(s.finished_at);
        self.cols.error.push(s.error.clone());
    }

    fn extend(&mut self, key: Uuid, s: &StepsColumns) {
        self.key.extend(std::iter::repeat_n(key, s.step.len()));
        self.cols.step.extend(s.step.iter().copied());
        self.cols.state.extend(s.state.iter().cloned());
        self.cols.status.extend(s.status.iter().copied());
        self.cols.started_at.extend(s.started_at.iter().copied());
        self.cols.finished_at.extend(s.finished_at.iter().copied());
        self.cols.error.extend(s.error.iter().cloned());
    }
}

/// The first event number of a write (0: no events) and how many it has.
fn first_and_count(ev: &EventColumns) -> (i64, i32) {
    (
        ev.seq.first().copied().unwrap_or(0),
        i32::try_from(ev.seq.len()).unwrap_or(i32::MAX),
    )
}

/// Locks the rows of a batch's tasks in id order (before two statements in one transaction).
const LOCK: &str = "SELECT id FROM tasks WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE";

/// Journal writes of several tasks: what `JOURNAL` does for one, for each.
const JOURNAL_MANY: &str = r#"
WITH w AS (
  SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::int[])
    AS w(w_id, w_token, w_first, w_count)
), lk AS MATERIALIZED (
  SELECT id FROM tasks WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE
), t AS (
  UPDATE tasks SET last_seq = last_seq + w.w_count
  FROM w JOIN lk ON lk.id = w.w_id
  WHERE tasks.id = w.w_id AND tasks.lease_token = w.w_token AND tasks.status = 'running'
    AND (w.w_count = 0 OR w.w_first = tasks.last_seq + 1)
  RETURNING tasks.id, tasks.agent_id
), ev AS (
  INSERT INTO task_events (task_id, seq, at, kind)
  SELECT t.id, e.seq, e.at, e.kind
  FROM t JOIN unnest($5::uuid[], $6::bigint[], $7::timestamptz[], $8::jsonb[])
                AS e(w_id, seq, at, kind) ON e.w_id = t.id
), st AS (
  INSERT INTO runs (task_id, step, state, status, started_at, finished_at, error_details)
  SELECT t.id, r.step, r.state, r.status, r.started_at, r.finished_at, r.error
  FROM t JOIN unnest($9::uuid[], $10::int[], $11::jsonb[], $12::text[], $13::timestamptz[],
                     $14::timestamptz[], $15::jsonb[])
                AS r(w_id, step, state, status, started_at, finished_at, error) ON r.w_id = t.id
  ON CONFLICT (task_id, step) DO UPDATE SET state = EXCLUDED.state, status = EXCLUDED.status,
    started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
    error_details = EXCLUDED.error_details
), au AS (
  INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload, ip_address, user_agent)
  SELECT COALESCE(a.task_id, t.id), COALESCE(a.agent_id, t.agent_id), a.user_id,
         a.event_type, a.payload, a.ip, a.ua
  FROM t JOIN unnest($16::uuid[], $17::uuid[], $18::text[], $19::text[], $20::text[],
                     $21::jsonb[], $22::inet[], $23::text[])
                AS a(w_id, task_id, agent_id, user_id, event_type, payload, ip, ua)
              ON a.w_id = t.id
)
SELECT t.id FROM t
"#;

async fn journal_many(
    conn: &mut PgConnection,
    writes: &[&JournalCols],
    rows: &mut HashMap<Uuid, PgRow>,
) -> Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let (mut ids, mut tokens, mut firsts, mut counts) = (vec![], vec![], vec![], vec![]);
    let mut ev = KeyedEvents::default();
    let mut st = KeyedSteps::default();
    let mut au = KeyedAudit::default();
    for w in writes {
        let (first, count) = first_and_count(&w.ev);
        ids.push(w.task_id);
        tokens.push(w.token);
        firsts.push(first);
        counts.push(count);
        ev.extend(w.task_id, &w.ev);
        st.push(w.task_id, &w.step);
        au.extend(w.task_id, &w.audit);
    }
    let query = sqlx::query(JOURNAL_MANY)
        .bind(&ids)
        .bind(&tokens)
        .bind(&firsts)
        .bind(&counts)
        .bind(&ev.key)
        .bind(&ev.seq)
        .bind(&ev.at)
        .bind(&ev.kind)
        .bind(&st.key);
    let query = st.cols.bind(query).bind(&au.key);
    let got = bind_audit(query, &au.cols)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    for row in got {
        rows.insert(row.try_get("id").map_err(db)?, row);
    }
    Ok(())
}

/// Finishes of several tasks: what `FINISH` does for one, for each (the per-outcome values
/// are columns of `w`, returned with each updated task).
const FINISH_MANY: &str = concat!(
    r#"
WITH w AS (
  SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::int[], $5::text[], $6::jsonb[],
                       $7::jsonb[], $8::text[], $9::timestamptz[], $10::jsonb[], $11::text[],
                       $12::jsonb[])
    AS w(w_id, w_token, w_first, w_count, w_status, w_output, w_error, w_message, w_retry_at,
         w_kind, w_audit_type, w_audit_payload)
), lk AS MATERIALIZED (
  SELECT id FROM tasks WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE
), t AS (
  UPDATE tasks SET
    status = CASE WHEN cancel_requested AND w.w_status IN ('queued', 'failed') THEN 'cancelled'
                  ELSE w.w_status END,
    output = CASE WHEN w.w_status = 'completed' THEN w.w_output ELSE output END,
    error = COALESCE(w.w_error, error),
    error_message = COALESCE(w.w_message, error_message),
    run_at = CASE WHEN cancel_requested THEN run_at ELSE COALESCE(w.w_retry_at, run_at) END,
    completed_at = CASE WHEN w.w_status = 'queued' AND NOT cancel_requested THEN NULL
                        ELSE now() END,
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
    last_seq = last_seq + w.w_count + 1,
    finished_token = w.w_token
  FROM w JOIN lk ON lk.id = w.w_id
  WHERE tasks.id = w.w_id AND tasks.lease_token = w.w_token AND tasks.status = 'running'
    AND (w.w_count = 0 OR w.w_first = tasks.last_seq + 1)
  RETURNING tasks.*, w.w_retry_at, w.w_kind, w.w_audit_type, w.w_audit_payload
), ev AS (
  INSERT INTO task_events (task_id, seq, at, kind)
  SELECT t.id, e.seq, e.at, e.kind
  FROM t JOIN unnest($13::uuid[], $14::bigint[], $15::timestamptz[], $16::jsonb[])
                AS e(w_id, seq, at, kind) ON e.w_id = t.id
), own AS (
  INSERT INTO task_events (task_id, seq, at, kind)
  SELECT t.id, t.last_seq, now(),
         CASE WHEN t.status = 'cancelled' THEN '{"type": "cancelled"}'::jsonb
              WHEN t.status = 'queued'
              THEN t.w_kind || jsonb_build_object('attempt', t.attempts, 'delay_ms',
                     GREATEST(0, floor(extract(epoch FROM (t.w_retry_at - now())) * 1000))::bigint)
              ELSE t.w_kind END
  FROM t
  RETURNING task_id, seq, at, kind
), au AS (
  INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload, ip_address, user_agent)
  SELECT t.id, t.agent_id, t.user_id,
         CASE WHEN t.status = 'cancelled' THEN 'task.cancelled' ELSE t.w_audit_type END,
         t.w_audit_payload || jsonb_build_object('attempt', t.attempts)
           || CASE WHEN t.status = 'queued'
                   THEN jsonb_build_object('delay_ms', GREATEST(0, floor(extract(epoch FROM
                          (t.w_retry_at - now())) * 1000))::bigint)
                   ELSE '{}'::jsonb END,
         NULL::inet, NULL::text
  FROM t
  UNION ALL
  SELECT COALESCE(a.task_id, t.id), COALESCE(a.agent_id, t.agent_id), a.user_id, a.event_type,
         a.payload, a.ip, a.ua
  FROM t JOIN unnest($17::uuid[], $18::uuid[], $19::text[], $20::text[], $21::text[],
                     $22::jsonb[], $23::inet[], $24::text[])
                AS a(w_id, task_id, agent_id, user_id, event_type, payload, ip, ua)
              ON a.w_id = t.id
), st AS (
  INSERT INTO runs (task_id, step, state, status, started_at, finished_at, error_details)
  SELECT t.id, r.step, r.state, r.status, r.started_at, r.finished_at, r.error
  FROM t JOIN unnest($25::uuid[], $26::int[], $27::jsonb[], $28::text[], $29::timestamptz[],
                     $30::timestamptz[], $31::jsonb[])
                AS r(w_id, step, state, status, started_at, finished_at, error) ON r.w_id = t.id
  ON CONFLICT (task_id, step) DO UPDATE SET state = EXCLUDED.state, status = EXCLUDED.status,
    started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
    error_details = EXCLUDED.error_details
)
SELECT t.*, (SELECT to_jsonb(own) FROM own WHERE own.task_id = t.id) AS event,
"#,
    wake_hint!()
);

async fn finish_many(
    conn: &mut PgConnection,
    writes: &[&FinishCols],
    rows: &mut HashMap<Uuid, PgRow>,
) -> Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let n = writes.len();
    let mut ids = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut firsts = Vec::with_capacity(n);
    let mut counts = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut output = Vec::with_capacity(n);
    let mut error = Vec::with_capacity(n);
    let mut message = Vec::with_capacity(n);
    let mut retry_at = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut audit_type = Vec::with_capacity(n);
    let mut audit_payload = Vec::with_capacity(n);
    let mut ev = KeyedEvents::default();
    let mut st = KeyedSteps::default();
    let mut au = KeyedAudit::default();
    for w in writes {
        let (first, count) = first_and_count(&w.ev);
        let p = &w.params;
        ids.push(w.task_id);
        tokens.push(w.token);
        firsts.push(first);
        counts.push(count);
        status.push(p.status);
        output.push(p.output.clone());
        error.push(p.error.clone());
        message.push(p.error_message.clone());
        retry_at.push(p.retry_at);
        kind.push(p.kind.clone());
        audit_type.push(p.audit_type);
        audit_payload.push(p.audit_payload.clone());
        ev.extend(w.task_id, &w.ev);
        st.extend(w.task_id, &w.steps);
        au.extend(w.task_id, &w.audit);
    }
    let query = sqlx::query(FINISH_MANY)
        .bind(&ids)
        .bind(&tokens)
        .bind(&firsts)
        .bind(&counts)
        .bind(&status)
        .bind(&output)
        .bind(&error)
        .bind(&message)
        .bind(&retry_at)
        .bind(&kind)
        .bind(&audit_type)
        .bind(&audit_payload)
        .bind(&ev.key)
        .bind(&ev.seq)
        .bind(&ev.at)
        .bind(&ev.kind)
        .bind(&au.key);
    let query = bind_audit(query, &au.cols).bind(&st.key);
    let got = st
        .cols
        .bind(query)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    for row in got {
        rows.insert(row.try_get("id").map_err(db)?, row);
    }
    Ok(())
}
