//! The chained audit trail of a [`MemoryStore`](super::MemoryStore).
//!
//! Rows are appended as [`Pending`] rows and wait, unchained, until the store's sealer hands
//! them to [`Trail::seal`] in order (see [`super::State::append_audit`] for when): as the
//! [`AuditEvent`]s callers give, or as [`TaskRow`]s, the rows the store writes itself of each
//! task's lifecycle, whose payloads of a few fields are written straight into the row's
//! canonical form when it is chained (no JSON value is built for them, and no text kept). A chained
//! row is kept compact, as a [`Row`]: its hash as its 32 bytes, not as the two hex strings of an
//! `AuditEvent` (the previous row's hash is the row before it); its id and position implied by
//! its place; its agent, user and event type shared with the other rows that name the same
//! (one string each, not one per row); its payload as compact JSON text, or a task row's as
//! its fields (shared names and integers), rebuilt as a value when read.
//! Rows sit in chunks that never move once allocated (one vector of rows copied the whole trail
//! at every doubling). A read rebuilds the rows it returns, hashes and payloads included.
//!
//! The payload's text reads back as the same value: it keeps the keys' order, which serde_json
//! keeps when it reads (`preserve_order`), and each float's shortest text, which serde_json
//! reads back to the same bits (`float_roundtrip`); so a row read back hashes as the row chained
//! (the tests check both).

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{AuditEvent, AuditFilter};
use crate::FastSet;
use crate::audit::{ChainHead, Field, GENESIS, PayloadRef, RowRef, push_hex};

/// Rows per chunk of the trail.
const CHUNK: usize = 4096;

/// A chained row, compact (160 bytes, and its payload's text unless it is one of the store's
/// task rows, where the `AuditEvent` it was kept as took about a kilobyte with its strings and
/// payload map).
struct Row {
    task_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    agent_id: Option<Arc<str>>,
    user_id: Option<Arc<str>>,
    event_type: Arc<str>,
    payload: Payload,
    client: Client,
    hash: [u8; 32],
}

/// A row's client: its address and user agent, boxed (only rows of HTTP requests have them).
pub(super) type Client = Option<Box<(Option<IpAddr>, Option<String>)>>;

/// The [`Client`] of `ip_address` and `user_agent` (`None` when neither is there).
pub(super) fn client(ip_address: Option<IpAddr>, user_agent: Option<String>) -> Client {
    (ip_address.is_some() || user_agent.is_some()).then(|| Box::new((ip_address, user_agent)))
}

/// A row's payload.
enum Payload {
    Null,
    /// The fields of one of the store's own task rows, kept as they are (shared names and
    /// integers): written as text for its hash when the row is chained, and rebuilt as a value
    /// when it is read, never kept as text.
    Task(TaskRowKind),
    /// Its JSON text ([`crate::audit::write_compact`]).
    Text(Box<str>),
    /// Kept as it was: nested too deep for serde_json to read its text back (the stores take no
    /// payload nested deeper than [`crate::store::MAX_VALUE_DEPTH`], so only in principle).
    Value(Box<Value>),
}

/// How deep serde_json reads a text (its recursion limit, 128), with a margin.
const READABLE_DEPTH: usize = 120;

impl Payload {
    /// `value`, written with `buffer`'s room (its text is copied out of it, at its length).
    fn new(value: Value, buffer: &mut String) -> Self {
        if value.is_null() {
            return Self::Null;
        }
        buffer.clear();
        if crate::audit::write_compact(&value, buffer) > READABLE_DEPTH {
            return Self::Value(Box::new(value));
        }
        Self::Text(Box::from(buffer.as_str()))
    }

    fn value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Text(text) => serde_json::from_str(text).unwrap_or_else(|e| {
                // Valid JSON, nested no deeper than serde_json reads: never taken.
                tracing::error!(error = %e, "an audit payload's text did not read back");
                Value::String(text.to_string())
            }),
            Self::Value(value) => Value::clone(value),
            Self::Task(kind) => kind.payload(),
        }
    }
}

/// One shared string per distinct value (agent ids, user ids, event types; task names,
/// versions and workers of the store's task rows).
#[derive(Default)]
pub(super) struct Names(FastSet<Arc<str>>);

impl Names {
    /// The shared string equal to `name`, allocated only the first time.
    pub(super) fn get_str(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(name);
        self.0.insert(Arc::clone(&shared));
        shared
    }
}

/// An audit row appended and not chained yet.
pub(super) enum Pending {
    /// A row as it was appended (its `seq` and hashes are set when it is chained). Boxed: the
    /// store's own task rows, most rows, are a third of its size, and every row is moved into
    /// its batch and out again.
    Event(Box<AuditEvent>),
    /// A row of a task's lifecycle that the store writes itself.
    Task(TaskRow),
}

/// A row the store writes of a task's lifecycle (`task.queued`, `task.started`, an end without
/// an error): its names shared, its payload's fields kept as they are and written as text only
/// when the row is chained, with no JSON value built and freed for it.
pub(super) struct TaskRow {
    pub(super) id: i64,
    pub(super) task_id: Uuid,
    pub(super) agent_id: Arc<str>,
    pub(super) user_id: Arc<str>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) kind: TaskRowKind,
    /// The submitter's address and user agent (a submission over HTTP has them).
    pub(super) client: Client,
}

/// What a [`TaskRow`] records, and its payload's fields.
pub(super) enum TaskRowKind {
    /// `policy.allowed`: `{"task", "version"}` ([`crate::store::NewTask::policy_allowed`]).
    Allowed { task: Arc<str>, version: Arc<str> },
    /// `task.queued`: `{"task", "version", "priority"}`.
    Queued {
        task: Arc<str>,
        version: Arc<str>,
        priority: i32,
    },
    /// `task.started`: `{"attempt", "worker"}`.
    Started { attempt: u32, worker: Arc<str> },
    /// `event_type` (`task.completed`, or `task.cancelled` without an error): `{"attempt"}`.
    Ended {
        event_type: &'static str,
        attempt: u32,
    },
}

impl TaskRowKind {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Allowed { .. } => "policy.allowed",
            Self::Queued { .. } => "task.queued",
            Self::Started { .. } => "task.started",
            Self::Ended { event_type, .. } => event_type,
        }
    }

    /// The payload's fields, in the order the `json!` object of the other rows has them.
    fn fields(&self) -> ([(&str, Field<'_>); 3], usize) {
        let none = ("", Field::Int(0));
        match self {
            Self::Allowed { task, version } => (
                [
                    ("task", Field::Str(task)),
                    ("version", Field::Str(version)),
                    none,
                ],
                2,
            ),
            Self::Queued {
                task,
                version,
                priority,
            } => (
                [
                    ("task", Field::Str(task)),
                    ("version", Field::Str(version)),
                    ("priority", Field::Int(i64::from(*priority))),
                ],
                3,
            ),
            Self::Started { attempt, worker } => (
                [
                    ("attempt", Field::Int(i64::from(*attempt))),
                    ("worker", Field::Str(worker)),
                    none,
                ],
                2,
            ),
            Self::Ended { attempt, .. } => (
                [("attempt", Field::Int(i64::from(*attempt))), none, none],
                1,
            ),
        }
    }

    /// The payload as a JSON value (what the other rows carry, and what a read gives).
    pub(super) fn payload(&self) -> Value {
        let (fields, n) = self.fields();
        crate::audit::fields_value(&fields[..n])
    }
}

/// The chained trail: rows in chunks. Rows are chained from position 1 without gaps, so the
/// end of the chain is the number of rows and the last row's hash.
#[derive(Default)]
pub(super) struct Trail {
    chunks: Vec<Vec<Row>>,
    /// Chained rows.
    sealed: usize,
    names: Names,
}

impl Trail {
    /// Chained rows.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.sealed
    }

    /// The end of the chain.
    pub(super) fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.sealed as u64,
            hash: self.prev_hash(self.sealed),
        }
    }

    /// Chains `rows` (appended in this order after the chained ones, their ids following on)
    /// and keeps them; leaves `rows` empty, its capacity kept.
    pub(super) fn seal(&mut self, rows: &mut Vec<Pending>) {
        let mut prev = self.prev_hash(self.sealed);
        // Every row's canonical form is written into this one buffer.
        let mut canonical = String::with_capacity(1024);
        // And every payload's text into this one.
        let mut text = String::with_capacity(256);
        for pending in rows.drain(..) {
            let seq = self.sealed as u64 + 1;
            let row = match pending {
                Pending::Event(event) => {
                    let mut event = *event;
                    event.seq = seq;
                    // A row's id is its position: the read rebuilds it from there.
                    debug_assert_eq!(u64::try_from(event.id).ok(), Some(event.seq));
                    crate::audit::canonical_linked_into(&event, &prev, &mut canonical);
                    Row {
                        task_id: event.task_id,
                        created_at: event.created_at,
                        agent_id: event.agent_id.map(|a| self.names.get_str(&a)),
                        user_id: event.user_id.map(|u| self.names.get_str(&u)),
                        event_type: self.names.get_str(&event.event_type),
                        payload: Payload::new(event.payload, &mut text),
                        client: client(event.ip_address, event.user_agent),
                        hash: [0; 32],
                    }
                }
                Pending::Task(row) => {
                    debug_assert_eq!(u64::try_from(row.id).ok(), Some(seq));
                    let (fields, n) = row.kind.fields();
                    let payload = PayloadRef::Fields(&fields[..n]);
                    let (ip_address, user_agent) = match row.client.as_deref() {
                        Some((ip, ua)) => (*ip, ua.as_deref()),
                        None => (None, None),
                    };
                    RowRef {
                        seq,
                        id: row.id,
                        created_at: row.created_at,
                        task_id: Some(row.task_id),
                        agent_id: Some(&row.agent_id),
                        user_id: Some(&row.user_id),
                        event_type: row.kind.event_type(),
                        payload,
                        ip_address,
                        user_agent,
                    }
                    .canonical_into(&prev, &mut canonical);
                    Row {
                        task_id: Some(row.task_id),
                        created_at: row.created_at,
                        event_type: self.names.get_str(row.kind.event_type()),
                        payload: Payload::Task(row.kind),
                        agent_id: Some(row.agent_id),
                        user_id: Some(row.user_id),
                        client: row.client,
                        hash: [0; 32],
                    }
                }
            };
            let hash: [u8; 32] = Sha256::digest(canonical.as_bytes()).into();
            // The next row's link, written over this one's (no allocation per row).
            prev.clear();
            push_hex(&hash, &mut prev);
            let row = Row { hash, ..row };
            match self.chunks.last_mut() {
                Some(chunk) if chunk.len() < CHUNK => chunk.push(row),
                _ => {
                    let mut chunk = Vec::with_capacity(CHUNK);
                    chunk.push(row);
                    self.chunks.push(chunk);
                }
            }
            self.sealed += 1;
        }
    }

    /// The chained row of id `id`, rebuilt (ids are 1, 2, … in the order of the rows).
    pub(super) fn by_id(&self, id: i64) -> Option<AuditEvent> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        (i < self.sealed).then(|| self.event(i))
    }

    /// The chained rows that `filter` keeps, in order, rebuilt, at most `limit` of them.
    pub(super) fn select(&self, filter: &AuditFilter, limit: usize) -> Vec<AuditEvent> {
        if filter.unchained {
            // Every row of this trail is chained before it is read.
            return Vec::new();
        }
        let keep = |e: &Row| {
            filter.task_id.is_none_or(|t| e.task_id == Some(t))
                && filter
                    .agent_id
                    .as_deref()
                    .is_none_or(|a| e.agent_id.as_deref() == Some(a))
                && filter
                    .user_id
                    .as_deref()
                    .is_none_or(|u| e.user_id.as_deref() == Some(u))
                && filter
                    .event_type
                    .as_deref()
                    .is_none_or(|t| &*e.event_type == t)
        };
        // The rows after `after` start at index `after` (positions are 1, 2, … in order).
        let from = filter.after.map_or(0, |a| {
            usize::try_from(a).unwrap_or(usize::MAX).min(self.sealed)
        });
        (from..self.sealed)
            .filter(|&i| keep(self.row(i)))
            .take(limit)
            .map(|i| self.event(i))
            .collect()
    }

    fn row(&self, i: usize) -> &Row {
        &self.chunks[i / CHUNK][i % CHUNK]
    }

    /// The hash the row at index `i` links to: the row before it's, or [`GENESIS`].
    fn prev_hash(&self, i: usize) -> String {
        match i.checked_sub(1) {
            Some(p) => {
                let mut hex = String::with_capacity(64);
                push_hex(&self.row(p).hash, &mut hex);
                hex
            }
            None => GENESIS.to_owned(),
        }
    }

    /// The chained row `i`, rebuilt with its hashes.
    fn event(&self, i: usize) -> AuditEvent {
        let row = self.row(i);
        let (ip_address, user_agent) = row.client.as_deref().cloned().unwrap_or_default();
        let position = i as u64 + 1;
        AuditEvent {
            id: i64::try_from(position).unwrap_or(i64::MAX),
            task_id: row.task_id,
            agent_id: row.agent_id.as_deref().map(str::to_owned),
            user_id: row.user_id.as_deref().map(str::to_owned),
            event_type: row.event_type.to_string(),
            payload: row.payload.value(),
            ip_address,
            user_agent,
            created_at: row.created_at,
            seq: position,
            prev_hash: self.prev_hash(i),
            hash: self.prev_hash(i + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::{Value, json};
    use uuid::Uuid;

    use super::*;

    fn event(id: i64, payload: Value) -> AuditEvent {
        AuditEvent {
            id,
            task_id: Some(Uuid::now_v7()),
            agent_id: (id % 5 != 0).then(|| "agent".into()),
            user_id: Some(format!("user-{}", id % 3)),
            event_type: "task.queued".into(),
            payload,
            ip_address: (id % 7 != 0).then(|| "10.0.0.1".parse().unwrap()),
            user_agent: (id % 2 == 0).then(|| "curl/8".into()),
            created_at: Utc::now(),
            seq: 0,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// A row read back is the row appended, chained exactly as `audit::seal` chains it, across
    /// batches and chunks, whether it was appended as an event or as one of the store's own
    /// task rows; filters and `after` select as on the rows themselves.
    #[test]
    fn rows_read_back_equal_the_rows_chained_by_seal() {
        // Kept as text, every payload must read back as the same value, keys in their order
        // and floats to the bit, or the row would no longer match its hash.
        let payloads = [
            json!({"task": "add", "version": "1.0.0", "priority": 0}),
            json!({"x": 0.1, "s": "quote \" backslash \\ é \u{1F600}", "n": u64::MAX}),
            json!(null),
            json!({"zeta": 1, "alpha": {"b": [1.5e300, -0.0, 1e-7], "a": i64::MIN}, "mid": true}),
            json!([
                0.30000000000000004,
                123456789.12345679,
                5e-324,
                2.2250738585072014e-308
            ]),
            json!("a plain string"),
            json!({}),
            // Deeper than serde_json reads text back: kept as a value.
            (0..130).fold(json!("bottom"), |v, _| json!({ "n": v })),
            (0..crate::store::MAX_VALUE_DEPTH).fold(json!(["bottom"]), |v, _| json!([v])),
        ];
        let mut trail = Trail::default();
        let mut batch = Vec::new();
        let mut expected_head = ChainHead::default();
        let mut expected = Vec::new();
        let n = CHUNK + 10;
        let mut names = Names::default();
        for i in 0..n {
            let id = i as i64 + 1;
            let e = event(id, payloads[i % payloads.len()].clone());
            // Every third row one of the store's own task rows, which must chain and read back
            // as the row of the same fields and payload appended as an event.
            let row = match i % 9 {
                2 | 5 | 8 => {
                    let kind = match i % 9 {
                        2 if i % 2 == 0 => TaskRowKind::Allowed {
                            task: names.get_str("add \"quoted\""),
                            version: names.get_str("1.0.0-rc.1"),
                        },
                        2 => TaskRowKind::Queued {
                            task: names.get_str("add \"quoted\""),
                            version: names.get_str("1.0.0-rc.1"),
                            priority: -3 + (i % 7) as i32,
                        },
                        5 => TaskRowKind::Started {
                            attempt: i as u32,
                            worker: names.get_str("node-1/worker"),
                        },
                        _ => TaskRowKind::Ended {
                            event_type: "task.completed",
                            attempt: u32::MAX,
                        },
                    };
                    let e = AuditEvent {
                        task_id: Some(Uuid::now_v7()),
                        agent_id: Some("agent".into()),
                        user_id: Some(format!("user-{}", id % 3)),
                        event_type: kind.event_type().into(),
                        payload: kind.payload(),
                        ..e
                    };
                    let row = Pending::Task(TaskRow {
                        id,
                        task_id: e.task_id.unwrap(),
                        agent_id: names.get_str("agent"),
                        user_id: names.get_str(e.user_id.as_deref().unwrap()),
                        created_at: e.created_at,
                        kind,
                        client: client(e.ip_address, e.user_agent.clone()),
                    });
                    (e, row)
                }
                _ => (e.clone(), Pending::Event(Box::new(e))),
            };
            let (e, row) = row;
            let mut chained = e;
            expected_head = crate::audit::seal(&mut chained, &expected_head);
            expected.push(chained);
            batch.push(row);
            if i % 300 == 7 {
                trail.seal(&mut batch);
            }
        }
        trail.seal(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(trail.head(), expected_head);
        assert_eq!(Trail::default().head(), ChainHead::default());
        assert_eq!(trail.len(), n);
        let all = trail.select(&AuditFilter::default(), usize::MAX);
        assert_eq!(all, expected);
        for (read, chained) in all.iter().zip(&expected) {
            // Equal as values and in the keys' order, and hashing to the row's hash.
            assert_eq!(
                serde_json::to_string(&read.payload).unwrap(),
                serde_json::to_string(&chained.payload).unwrap()
            );
            assert_eq!(crate::audit::row_hash(read), read.hash);
        }
        assert_eq!(trail.by_id(n as i64).as_ref(), expected.last());
        assert_eq!(trail.by_id(1).as_ref(), expected.first());
        assert_eq!(trail.by_id(0), None);
        assert_eq!(trail.by_id(n as i64 + 1), None);
        let after = trail.select(
            &AuditFilter {
                after: Some(CHUNK as u64 - 1),
                user_id: Some("user-1".into()),
                ..AuditFilter::default()
            },
            usize::MAX,
        );
        let want: Vec<_> = expected
            .iter()
            .filter(|e| e.seq > CHUNK as u64 - 1 && e.user_id.as_deref() == Some("user-1"))
            .cloned()
            .collect();
        assert!(!want.is_empty());
        assert_eq!(after, want);
        assert_eq!(trail.select(&AuditFilter::default(), 3), expected[..3]);
    }
}
