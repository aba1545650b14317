//! Decoding rows into the port's records, and binding arrays for multi-row inserts.

use std::net::IpAddr;
use std::time::Duration;

use capecontrol_core::events::{TaskEvent, TaskEventKind};
use capecontrol_core::store::{
    AgentRecord, AuditEvent, ClaimedCatalog, InstallationRecord, NewAuditEvent, TaskRecord,
    VersionRecord,
};
use capecontrol_core::{Error, Principal, Result, StepRecord};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::{corrupt, db};

fn get<'r, T>(row: &'r PgRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(col).map_err(db)
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| corrupt(what, e))
}

fn json<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| corrupt(what, e))
}

/// An unsigned count from a signed column (negative values cannot be stored by this crate).
pub(crate) fn unsigned(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// Milliseconds of a duration, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

pub(crate) fn agent(row: &PgRow) -> Result<AgentRecord> {
    let status: Option<String> = get(row, "status")?;
    Ok(AgentRecord {
        id: get(row, "id")?,
        name: get(row, "name")?,
        slug: get(row, "slug")?,
        description: get(row, "description")?,
        category: get(row, "category")?,
        capabilities: get(row, "capabilities")?,
        policy_scopes: get::<Option<Vec<String>>>(row, "policy_scopes")?.unwrap_or_default(),
        manifest: get(row, "manifest")?,
        status: parse("agent status", status.as_deref().unwrap_or("draft"))?,
        owner: get(row, "owner")?,
        created_at: get::<Option<DateTime<Utc>>>(row, "created_at")?.unwrap_or_else(epoch),
        updated_at: get::<Option<DateTime<Utc>>>(row, "updated_at")?.unwrap_or_else(epoch),
    })
}

/// The registry rows a claim read with its task (see the queue's `CLAIM`).
pub(crate) fn claimed_catalog(row: &PgRow) -> Result<ClaimedCatalog> {
    let status: Option<String> = get(row, "catalog_version_status")?;
    let installation: Option<Value> = get(row, "catalog_installation")?;
    Ok(ClaimedCatalog {
        version_status: status
            .as_deref()
            .map(|s| parse("version status", s))
            .transpose()?,
        installation: installation
            .map(serde_json::from_value::<InstallationRecord>)
            .transpose()
            // Not the decoder's message: it may quote a value, and settings hold secrets.
            .map_err(|_| corrupt("installation", "a claimed installation does not decode"))?
            .map(std::sync::Arc::new),
    })
}

pub(crate) fn version(row: &PgRow) -> Result<VersionRecord> {
    let status: Option<String> = get(row, "status")?;
    Ok(VersionRecord {
        id: get(row, "id")?,
        agent_id: get::<Option<String>>(row, "agent_id")?.unwrap_or_default(),
        version: get(row, "version")?,
        manifest: get(row, "manifest")?,
        status: parse("version status", status.as_deref().unwrap_or("draft"))?,
        changelog: get(row, "changelog")?,
        published_at: get(row, "published_at")?,
        created_at: get::<Option<DateTime<Utc>>>(row, "created_at")?.unwrap_or_else(epoch),
    })
}

pub(crate) fn installation(row: &PgRow) -> Result<InstallationRecord> {
    Ok(InstallationRecord {
        id: get(row, "id")?,
        agent_id: get(row, "agent_id")?,
        user_id: get(row, "user_id")?,
        version: get(row, "version")?,
        granted_scopes: get(row, "granted_scopes")?,
        settings: get(row, "settings")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

pub(crate) fn task(row: &PgRow) -> Result<TaskRecord> {
    let status: Option<String> = get(row, "status")?;
    let error: Option<Value> = get(row, "error")?;
    Ok(TaskRecord {
        id: get(row, "id")?,
        user_id: get(row, "user_id")?,
        agent_id: get::<Option<String>>(row, "agent_id")?.unwrap_or_default(),
        version: get(row, "version")?,
        task: get::<Option<String>>(row, "goal")?.unwrap_or_default(),
        input: get::<Option<Value>>(row, "input")?.unwrap_or(Value::Null),
        output: get(row, "output")?,
        status: parse("task status", status.as_deref().unwrap_or("queued"))?,
        principal: json::<Principal>("principal", get(row, "principal")?)?,
        priority: get(row, "priority")?,
        run_at: get(row, "run_at")?,
        attempts: unsigned(i64::from(get::<i32>(row, "attempts")?)),
        max_attempts: unsigned(get(row, "max_attempts")?),
        concurrency_limit: unsigned(get(row, "concurrency_limit")?),
        timeout: Duration::from_millis(u64::try_from(get::<i64>(row, "timeout_ms")?).unwrap_or(0)),
        idempotency_key: get(row, "idempotency_key")?,
        lease_owner: get(row, "lease_owner")?,
        lease_expires_at: get(row, "lease_expires_at")?,
        cancel_requested: get(row, "cancel_requested")?,
        error: error.map(|e| json::<Error>("task error", e)).transpose()?,
        error_message: get(row, "error_message")?,
        started_at: get(row, "started_at")?,
        completed_at: get(row, "completed_at")?,
        traceparent: get(row, "traceparent")?,
        parent_id: get(row, "parent_id")?,
        created_at: get::<Option<DateTime<Utc>>>(row, "created_at")?.unwrap_or_else(epoch),
    })
}

/// Steps from the JSON of `capecontrol_steps(task_id)`.
pub(crate) fn steps(v: Value) -> Result<Vec<StepRecord>> {
    json("steps", v)
}

pub(crate) fn event(row: &PgRow) -> Result<TaskEvent> {
    Ok(TaskEvent {
        task_id: get(row, "task_id")?,
        seq: u64::try_from(get::<i64>(row, "seq")?).map_err(|e| corrupt("event seq", e))?,
        at: get(row, "at")?,
        kind: json::<TaskEventKind>("event kind", get(row, "kind")?)?,
    })
}

pub(crate) fn audit(row: &PgRow) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: get(row, "id")?,
        task_id: get(row, "task_id")?,
        agent_id: get(row, "agent_id")?,
        user_id: get(row, "user_id")?,
        event_type: get(row, "event_type")?,
        payload: get::<Option<Value>>(row, "payload")?.unwrap_or(Value::Null),
        ip_address: get(row, "ip_address")?,
        user_agent: get(row, "user_agent")?,
        created_at: get::<Option<DateTime<Utc>>>(row, "created_at")?.unwrap_or_else(epoch),
        seq: get::<Option<i64>>(row, "seq")?
            .map(|s| u64::try_from(s).map_err(|e| corrupt("audit seq", e)))
            .transpose()?
            .unwrap_or(0),
        prev_hash: get::<Option<String>>(row, "prev_hash")?.unwrap_or_default(),
        hash: get::<Option<String>>(row, "hash")?.unwrap_or_default(),
    })
}

/// Serializes a value that cannot fail to serialize (records of plain data).
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::invalid_field("", e.to_string()))
}

/// Audit events as column arrays, for one `INSERT … SELECT … FROM unnest(…)`.
#[derive(Debug, Default)]
pub(crate) struct AuditColumns {
    pub(crate) task_id: Vec<Option<Uuid>>,
    pub(crate) agent_id: Vec<Option<String>>,
    pub(crate) user_id: Vec<Option<String>>,
    pub(crate) event_type: Vec<String>,
    pub(crate) payload: Vec<Value>,
    pub(crate) ip_address: Vec<Option<IpAddr>>,
    pub(crate) user_agent: Vec<Option<String>>,
}

impl AuditColumns {
    pub(crate) fn from_events<'a>(events: impl IntoIterator<Item = &'a NewAuditEvent>) -> Self {
        let mut c = Self::default();
        for e in events {
            c.push(e);
        }
        c
    }

    pub(crate) fn push(&mut self, e: &NewAuditEvent) {
        self.task_id.push(e.task_id);
        self.agent_id.push(e.agent_id.clone());
        self.user_id.push(e.user_id.clone());
        self.event_type.push(e.event_type.clone());
        self.payload.push(e.payload.clone());
        self.ip_address.push(e.ip_address);
        self.user_agent.push(e.user_agent.clone());
    }
}

/// Worker-numbered events as column arrays.
#[derive(Debug, Default)]
pub(crate) struct EventColumns {
    pub(crate) seq: Vec<i64>,
    pub(crate) at: Vec<DateTime<Utc>>,
    pub(crate) kind: Vec<Value>,
}

impl EventColumns {
    /// Checks that the events belong to `task_id` and are numbered consecutively.
    pub(crate) fn new(task_id: Uuid, events: &[TaskEvent]) -> Result<Self> {
        let mut c = Self::default();
        for (i, e) in events.iter().enumerate() {
            if e.task_id != task_id {
                return Err(Error::invalid_field(
                    format!("/events/{i}/task_id"),
                    format!("event of task {} in a write of task {task_id}", e.task_id),
                ));
            }
            let seq = i64::try_from(e.seq)
                .map_err(|_| Error::invalid_field(format!("/events/{i}/seq"), "too large"))?;
            if let Some(prev) = c.seq.last()
                && seq != prev + 1
            {
                return Err(Error::invalid_field(
                    format!("/events/{i}/seq"),
                    format!("events must be numbered without gaps: {seq} after {prev}"),
                ));
            }
            c.seq.push(seq);
            c.at.push(e.at);
            c.kind.push(to_json(&e.kind)?);
        }
        Ok(c)
    }
}
