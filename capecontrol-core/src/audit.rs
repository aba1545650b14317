//! The tamper-evident audit trail: every audit row carries its position in the store's chain
//! (`seq`, from 1, without gaps), the hash of the previous row (`prev_hash`, [`GENESIS`] for the
//! first) and its own hash: SHA-256, in lowercase hex, over the row's [`canonical`] form, which
//! covers every field of the row and `prev_hash`. [`verify_chain`] walks the chain and names the
//! first row that was edited, deleted or inserted out of band.
//!
//! The canonical form is the text of a JSON array as PostgreSQL renders a `jsonb` value (keys
//! sorted by length then bytes, `", "` and `": "` separators, numbers in plain decimal), so that
//! the PostgreSQL store can compute the same hash in SQL, whatever statement inserted the row:
//!
//! ```text
//! [seq, prev_hash, id, created_at (µs since the epoch), task_id, agent_id, user_id, event_type,
//!  payload, ip_address, user_agent]
//! ```
//!
//! The chain is keyless: it proves that the trail was not changed *without recomputing every
//! later hash*; keep the [`ChainHead`] (or a later row's hash) somewhere else to pin it.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::store::{AuditEvent, AuditFilter, AuditStore, MAX_AUDIT_PAGE};

/// The `prev_hash` of the first row of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The end of a store's chain: the last row's position and hash (`0` and [`GENESIS`] when the
/// trail is empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The last row's `seq`.
    pub seq: u64,
    /// The last row's hash.
    pub hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }
}

/// What is wrong with a row of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ChainFault {
    /// The row's content does not match its hash: it was edited.
    Edited,
    /// Rows before this one are missing (`expected` is the `seq` that should have come).
    Missing {
        /// The position expected here.
        expected: u64,
    },
    /// The row does not link to the row before it (`prev_hash` differs): a row before it was
    /// deleted and the chain renumbered, or it was inserted out of band.
    Unlinked,
    /// The row is not in the chain (no `seq`), or repeats a position: inserted out of band.
    OutOfBand,
    /// The chain ends before its recorded head: its last rows were deleted.
    Truncated {
        /// The head's position.
        head_seq: u64,
    },
}

/// The first bad row of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRow {
    /// The row's id (`None` for a truncated chain: the rows are gone).
    pub id: Option<i64>,
    /// The row's position in the chain (for a truncated chain, the last position found).
    pub seq: u64,
    /// What is wrong.
    pub fault: ChainFault,
}

/// The result of [`verify_chain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    /// Rows checked.
    pub rows: u64,
    /// The last good row's position and hash.
    pub last: ChainHead,
    /// The first bad row; `None` when the chain is intact.
    pub first_bad: Option<BadRow>,
}

impl ChainReport {
    /// Whether the chain is intact.
    pub fn is_intact(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// The canonical form of a row (see the module docs).
///
/// Written field by field straight into the text (no intermediate JSON value, so that no field
/// or payload is copied): the same text as rendering the `json!` array of the module docs.
pub fn canonical(event: &AuditEvent) -> String {
    canonical_linked(event, &event.prev_hash)
}

/// The canonical form of `event` linked to the row hashed `prev_hash` (whatever its own
/// `prev_hash` field holds).
pub(crate) fn canonical_linked(event: &AuditEvent, prev_hash: &str) -> String {
    let mut out = String::with_capacity(256);
    canonical_linked_into(event, prev_hash, &mut out);
    out
}

/// [`canonical_linked`] written into `out`, cleared first: a sealer chaining many rows reuses
/// one buffer (a fresh `String` per row was allocated, then grown twice or three times).
pub(crate) fn canonical_linked_into(event: &AuditEvent, prev_hash: &str, out: &mut String) {
    let row = RowRef {
        seq: event.seq,
        id: event.id,
        created_at: event.created_at,
        task_id: event.task_id,
        agent_id: event.agent_id.as_deref(),
        user_id: event.user_id.as_deref(),
        event_type: &event.event_type,
        payload: PayloadRef::Value(&event.payload),
        ip_address: event.ip_address,
        user_agent: event.user_agent.as_deref(),
    };
    row.canonical_into(prev_hash, out);
}

/// The fields of a row, borrowed, for writing its canonical form: an [`AuditEvent`]'s, or a
/// row a store keeps in a form of its own (the in-memory store's task rows, whose payload is a
/// few [`Field`]s, written without building a JSON value).
pub(crate) struct RowRef<'a> {
    pub seq: u64,
    pub id: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub task_id: Option<uuid::Uuid>,
    pub agent_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub event_type: &'a str,
    pub payload: PayloadRef<'a>,
    pub ip_address: Option<std::net::IpAddr>,
    pub user_agent: Option<&'a str>,
}

/// A row's payload, borrowed.
#[derive(Clone, Copy)]
pub(crate) enum PayloadRef<'a> {
    /// A JSON value.
    Value(&'a Value),
    /// An object of these fields, in this order: the same text as the `json!` object of them.
    Fields(&'a [(&'a str, Field<'a>)]),
}

/// A scalar field of a [`PayloadRef::Fields`] payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field<'a> {
    Str(&'a str),
    Int(i64),
}

impl PayloadRef<'_> {
    /// Writes the payload as [`write_compact`] writes the same value; returns how deep it
    /// nests. (For the tests: `MemoryStore` keeps a task row's fields, not their text.)
    #[cfg(test)]
    pub(crate) fn write_compact(self, out: &mut String) -> usize {
        match self {
            Self::Value(v) => write_compact(v, out),
            Self::Fields(fields) => write_fields(fields.iter().copied(), Form::Compact, out),
        }
    }

    fn write_jsonb(self, out: &mut String) {
        match self {
            Self::Value(v) => write_jsonb(v, out),
            Self::Fields(fields) => {
                in_jsonb_order(fields.iter().copied(), Field::Int(0), |sorted| {
                    write_fields(sorted.iter().copied(), Form::Jsonb, out)
                });
            }
        }
    }
}

/// The JSON object of `fields`, in their order (what a [`PayloadRef::Fields`] payload writes
/// as, read back).
pub(crate) fn fields_value(fields: &[(&str, Field<'_>)]) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Field::Str(s) => Value::from(*s),
                    Field::Int(i) => Value::from(*i),
                };
                ((*k).to_owned(), v)
            })
            .collect(),
    )
}

/// Writes an object of scalar `fields`, in their order, in `form` (integers print the same in
/// both forms); returns its depth (1).
fn write_fields<'a>(
    fields: impl Iterator<Item = (&'a str, Field<'a>)>,
    form: Form,
    out: &mut String,
) -> usize {
    write_object(fields, form, out, |v, out| {
        match v {
            Field::Str(s) => write_string(s, out),
            Field::Int(n) => push_i64(out, n),
        }
        0
    })
}

impl RowRef<'_> {
    /// The row's canonical form linked to the row hashed `prev_hash`, written into `out`,
    /// cleared first.
    pub(crate) fn canonical_into(&self, prev_hash: &str, out: &mut String) {
        out.clear();
        // Writing into a `String` cannot fail.
        out.push('[');
        push_u64(out, self.seq);
        out.push_str(", ");
        write_string(prev_hash, out);
        out.push_str(", ");
        push_i64(out, self.id);
        out.push_str(", ");
        push_i64(out, self.created_at.timestamp_micros());
        out.push_str(", ");
        match self.task_id {
            Some(t) => {
                out.push('"');
                out.push_str(
                    t.hyphenated()
                        .encode_lower(&mut uuid::Uuid::encode_buffer()),
                );
                out.push('"');
            }
            None => out.push_str("null"),
        }
        out.push_str(", ");
        write_opt_string(self.agent_id, out);
        out.push_str(", ");
        write_opt_string(self.user_id, out);
        out.push_str(", ");
        write_string(self.event_type, out);
        out.push_str(", ");
        self.payload.write_jsonb(out);
        out.push_str(", ");
        match self.ip_address {
            Some(ip) => {
                // An address's text needs no escaping.
                let _ = write!(out, "\"{ip}\"");
            }
            None => out.push_str("null"),
        }
        out.push_str(", ");
        write_opt_string(self.user_agent, out);
        out.push(']');
    }
}

/// A string, or `null`.
fn write_opt_string(s: Option<&str>, out: &mut String) {
    match s {
        Some(s) => write_string(s, out),
        None => out.push_str("null"),
    }
}

/// The hash of a row: SHA-256 of its [`canonical`] form, in lowercase hex.
pub fn row_hash(event: &AuditEvent) -> String {
    let mut hex = String::with_capacity(64);
    push_hex(&Sha256::digest(canonical(event).as_bytes()), &mut hex);
    hex
}

/// Appends `bytes` in lowercase hex (the form of a row's hash).
pub(crate) fn push_hex(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// Sets a new row's place in the chain after `head` and its hash; returns the new head.
pub fn seal(event: &mut AuditEvent, head: &ChainHead) -> ChainHead {
    event.seq = head.seq + 1;
    event.prev_hash = head.hash.clone();
    event.hash = row_hash(event);
    ChainHead {
        seq: event.seq,
        hash: event.hash.clone(),
    }
}

/// Walks the store's chain up to its head as read at the start, in pages of
/// [`MAX_AUDIT_PAGE`] rows, and names the first row that was edited, deleted or inserted out of
/// band (see [`ChainFault`]). Rows appended while it runs are left for the next walk. An error
/// of the store is returned as is.
pub async fn verify_chain(store: &dyn AuditStore) -> Result<ChainReport> {
    let head = store.audit_head().await?;
    let mut last = ChainHead::default();
    let mut rows = 0u64;
    let report = |rows, last, id, seq, fault| ChainReport {
        rows,
        last,
        first_bad: Some(BadRow { id, seq, fault }),
    };
    'walk: while last.seq < head.seq {
        let page = store
            .list_audit(&AuditFilter {
                after: Some(last.seq),
                limit: Some(MAX_AUDIT_PAGE),
                ..AuditFilter::default()
            })
            .await?;
        if page.is_empty() {
            break;
        }
        for row in page {
            if row.seq > head.seq {
                break 'walk;
            }
            rows += 1;
            let fault = if row.seq <= last.seq {
                Some(ChainFault::OutOfBand)
            } else if row.seq != last.seq + 1 {
                Some(ChainFault::Missing {
                    expected: last.seq + 1,
                })
            } else if row.hash != row_hash(&row) {
                Some(ChainFault::Edited)
            } else if row.prev_hash != last.hash {
                Some(ChainFault::Unlinked)
            } else {
                None
            };
            if let Some(fault) = fault {
                return Ok(report(rows, last, Some(row.id), row.seq, fault));
            }
            last = ChainHead {
                seq: row.seq,
                hash: row.hash,
            };
        }
    }
    if last.seq < head.seq {
        let seq = last.seq;
        return Ok(report(
            rows,
            last,
            None,
            seq,
            ChainFault::Truncated { head_seq: head.seq },
        ));
    }
    if last.hash != head.hash {
        let seq = last.seq;
        return Ok(report(rows, last, None, seq, ChainFault::Unlinked));
    }
    // Rows past the head that the head, read again, does not cover: an appender moves the row
    // and the head in one transaction, so these were inserted out of band.
    let beyond = store
        .list_audit(&AuditFilter {
            after: Some(head.seq),
            limit: Some(MAX_AUDIT_PAGE),
            ..AuditFilter::default()
        })
        .await?;
    let now = store.audit_head().await?;
    if let Some(row) = beyond.into_iter().find(|r| r.seq > now.seq) {
        return Ok(report(
            rows + 1,
            last,
            Some(row.id),
            row.seq,
            ChainFault::OutOfBand,
        ));
    }
    // Rows outside the chain (no position): inserted past the store's chaining.
    let strays = store
        .list_audit(&AuditFilter {
            unchained: true,
            limit: Some(1),
            ..AuditFilter::default()
        })
        .await?;
    if let Some(row) = strays.into_iter().next() {
        return Ok(report(
            rows + 1,
            last,
            Some(row.id),
            0,
            ChainFault::OutOfBand,
        ));
    }
    Ok(ChainReport {
        rows,
        last,
        first_bad: None,
    })
}

/// Writes `value` as PostgreSQL's `jsonb` output renders it.
fn write_jsonb(value: &Value, out: &mut String) {
    write_json(value, Form::Jsonb, out);
}

/// Writes `value` as compact JSON text that serde_json reads back as the same value: the keys
/// in their order, numbers as serde_json writes them (a float's shortest text that reads back
/// to its bits), strings escaped as [`write_string`] does (valid JSON escapes). Returns how
/// deep the value nests (a scalar is 0), since serde_json reads no deeper than 128 levels. The
/// in-memory trail keeps payloads so; faster than `serde_json::to_string`, whose escaping goes
/// character by character.
pub(crate) fn write_compact(value: &Value, out: &mut String) -> usize {
    write_json(value, Form::Compact, out)
}

/// The JSON texts [`write_json`] writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// PostgreSQL's `jsonb` output: keys sorted by length then bytes, `", "` and `": "`
    /// separators, numbers in plain decimal.
    Jsonb,
    /// Keys in their order, no spaces, numbers as serde_json writes them.
    Compact,
}

/// Writes `value` in `form`; returns how deep it nests (a scalar is 0).
fn write_json(value: &Value, form: Form, out: &mut String) -> usize {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, form, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            let mut depth = 0;
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(separators(form).0);
                }
                depth = depth.max(write_json(item, form, out));
            }
            out.push(']');
            return depth + 1;
        }
        Value::Object(map) if form == Form::Compact => {
            return write_object(
                map.iter().map(|(k, v)| (k.as_str(), v)),
                form,
                out,
                |v, out| write_json(v, form, out),
            );
        }
        Value::Object(map) => {
            static NULL: Value = Value::Null;
            let entries = map.iter().map(|(k, v)| (k.as_str(), v));
            return in_jsonb_order(entries, &NULL, |sorted| {
                write_object(sorted.iter().copied(), form, out, |v, out| {
                    write_json(v, form, out)
                })
            });
        }
    }
    0
}

/// Calls `then` with `entries` in jsonb's key order (shorter keys first, then by bytes),
/// sorted where they are (no lookup per key): on the stack for up to 8, `fill` filling the
/// unused slots.
fn in_jsonb_order<'a, V: Copy, R>(
    entries: impl ExactSizeIterator<Item = (&'a str, V)>,
    fill: V,
    then: impl FnOnce(&[(&'a str, V)]) -> R,
) -> R {
    let mut small = [("", fill); 8];
    let mut large = Vec::new();
    let n = entries.len();
    let sorted: &mut [(&str, V)] = if n <= small.len() {
        for (slot, e) in small.iter_mut().zip(entries) {
            *slot = e;
        }
        &mut small[..n]
    } else {
        large.extend(entries);
        &mut large
    };
    sorted.sort_unstable_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    then(sorted)
}

/// Writes an object of `entries`, in their order, in `form`, each value by `value` (which
/// returns how deep it nests); returns how deep the object nests.
fn write_object<'a, V>(
    entries: impl Iterator<Item = (&'a str, V)>,
    form: Form,
    out: &mut String,
    mut value: impl FnMut(V, &mut String) -> usize,
) -> usize {
    let (comma, colon) = separators(form);
    let mut depth = 0;
    out.push('{');
    for (i, (key, v)) in entries.enumerate() {
        if i > 0 {
            out.push_str(comma);
        }
        write_string(key, out);
        out.push_str(colon);
        depth = depth.max(value(v, out));
    }
    out.push('}');
    depth + 1
}

/// The separators of `form`: between items, between a key and its value.
fn separators(form: Form) -> (&'static str, &'static str) {
    match form {
        Form::Jsonb => (", ", ": "),
        Form::Compact => (",", ":"),
    }
}

/// PostgreSQL's `escape_json`: copies runs of characters that need no escape at once.
fn write_string(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Most strings (ids, names, hashes) need no escape: one pass without branches over them
    // (the compiler vectorizes it), then a copy.
    if !s.as_bytes().iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    }) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        // Every byte of a multi-byte character is >= 0x80: never escaped, never split.
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            b if b < 0x20 => {
                out.push_str(&s[run..i]);
                let _ = write!(out, "\\u{:04x}", b);
                run = i + 1;
                continue;
            }
            _ => continue,
        };
        out.push_str(&s[run..i]);
        out.push_str(escaped);
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// A number: integers as they are; floats as serde_json writes them ([`Form::Compact`]), or
/// as PostgreSQL's `numeric` prints that text ([`Form::Jsonb`]): in plain decimal (`1e-7` →
/// `0.0000001`, `1e20` → `100000000000000000000`) with the scale the text had (`100.0` stays
/// `100.0`).
fn write_number(n: &Number, form: Form, out: &mut String) {
    if let Some(u) = n.as_u64() {
        push_u64(out, u);
    } else if let Some(i) = n.as_i64() {
        push_i64(out, i);
    } else if form == Form::Jsonb {
        out.push_str(&plain_decimal(&n.to_string()));
    } else {
        // Writing into a `String` cannot fail.
        let _ = write!(out, "{n}");
    }
}

/// Appends `v` in decimal (what `{}` prints, without the formatting machinery).
fn push_u64(out: &mut String, v: u64) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Appends `v` in decimal, with its sign.
fn push_i64(out: &mut String, v: i64) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// `text` (a JSON number) in plain decimal notation, keeping its scale as `numeric` does:
/// scale = max(0, fraction digits − exponent).
fn plain_decimal(text: &str) -> String {
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i64>().unwrap_or(0)),
        None => return text.to_string(),
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let frac_len = i64::try_from(frac.len()).unwrap_or(0);
    let scale = (frac_len - exp).max(0);
    // The value is digits × 10^(exp − frac_len); its point sits `point` digits from the left.
    let point = i64::try_from(int.len()).unwrap_or(0) + exp;
    let mut whole = String::new();
    let mut fraction = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i64::try_from(i).unwrap_or(i64::MAX) < point {
            whole.push(d);
        } else {
            fraction.push(d);
        }
    }
    if point > i64::try_from(digits.len()).unwrap_or(0) {
        for _ in 0..(point - i64::try_from(digits.len()).unwrap_or(0)) {
            whole.push('0');
        }
    }
    if point < 0 {
        let zeros = "0".repeat(usize::try_from(-point).unwrap_or(0));
        fraction = format!("{zeros}{fraction}");
    }
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let scale = usize::try_from(scale).unwrap_or(0);
    while fraction.len() < scale {
        fraction.push('0');
    }
    fraction.truncate(scale);
    let sign = if negative { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A payload of fields writes the text of the JSON object of the same fields in both forms
    /// (compact in their order, `jsonb` sorted), for few fields and for more than fit on the
    /// stack, with keys and values that need escapes.
    #[test]
    fn fields_write_as_the_object_of_the_same_fields() {
        let few = [
            ("task", Field::Str("add \"x\"\n")),
            ("version", Field::Str("1.0.0")),
            ("priority", Field::Int(-7)),
        ];
        let many: Vec<(&str, Field<'_>)> = [
            "zeta", "a", "mid", "b\\", "é", "ab", "version", "attempt", "x", "worker",
        ]
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            let v = if i % 2 == 0 {
                Field::Int(i64::MIN + i as i64)
            } else {
                Field::Str(k)
            };
            (k, v)
        })
        .collect();
        for fields in [&few[..], &many[..], &[]] {
            let value = fields_value(fields);
            let (mut compact, mut jsonb) = (String::new(), String::new());
            assert_eq!(PayloadRef::Fields(fields).write_compact(&mut compact), 1);
            assert_eq!(compact, serde_json::to_string(&value).unwrap());
            PayloadRef::Fields(fields).write_jsonb(&mut jsonb);
            let mut want = String::new();
            write_jsonb(&value, &mut want);
            assert_eq!(jsonb, want);
        }
    }

    #[test]
    fn numbers_print_as_postgresql_numeric_does() {
        assert_eq!(plain_decimal("1e-7"), "0.0000001");
        assert_eq!(plain_decimal("1.5e-7"), "0.00000015");
        assert_eq!(plain_decimal("1e20"), "100000000000000000000");
        assert_eq!(plain_decimal("1.5e20"), "150000000000000000000");
        assert_eq!(plain_decimal("-2.25e1"), "-22.5");
        assert_eq!(plain_decimal("100.0"), "100.0");
    }

    /// The canonical form as first written: the `json!` array of the module docs, rendered.
    fn canonical_via_value(event: &AuditEvent) -> String {
        let array = json!([
            event.seq,
            event.prev_hash,
            event.id,
            event.created_at.timestamp_micros(),
            event.task_id.map(|t| t.to_string()),
            event.agent_id,
            event.user_id,
            event.event_type,
            event.payload,
            event.ip_address.map(|ip| ip.to_string()),
            event.user_agent,
        ]);
        let mut out = String::new();
        write_jsonb(&array, &mut out);
        out
    }

    #[test]
    fn the_canonical_form_is_the_rendered_json_array() {
        let full = AuditEvent {
            id: 42,
            task_id: Some(uuid::Uuid::now_v7()),
            agent_id: Some("agent-\"q\"\\".into()),
            user_id: Some("ünïcode\u{1}\u{1f}\u{7f}/é".into()),
            event_type: "task.queued".into(),
            payload: json!({"zz": [1, -2, 1.5e-7, "a\tb\r\n\u{8}\u{c}"], "a": null, "bb": {"y": true}}),
            ip_address: Some("2001:db8::1".parse().unwrap()),
            user_agent: Some("curl/8 \"x\"".into()),
            created_at: chrono::Utc::now(),
            seq: u64::MAX,
            prev_hash: GENESIS.into(),
            hash: String::new(),
        };
        assert_eq!(canonical(&full), canonical_via_value(&full));
        let sparse = AuditEvent {
            id: -1,
            task_id: None,
            agent_id: None,
            user_id: None,
            event_type: String::new(),
            payload: json!("just a string"),
            ip_address: Some("10.0.0.1".parse().unwrap()),
            user_agent: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
            seq: 1,
            prev_hash: String::new(),
            hash: String::new(),
        };
        assert_eq!(canonical(&sparse), canonical_via_value(&sparse));
    }

    #[test]
    fn integers_print_as_display_does() {
        for v in [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            i64::MAX,
            i64::MIN,
            -1,
            -10,
            -12_345,
        ] {
            let mut out = String::new();
            push_i64(&mut out, v);
            assert_eq!(out, v.to_string());
        }
        for v in [0, 7, 10, u64::MAX, u64::MAX / 10] {
            let mut out = String::new();
            push_u64(&mut out, v);
            assert_eq!(out, v.to_string());
        }
    }

    /// Objects of more keys than the stack's room sort as the small ones do; keys of one
    /// length sort by bytes.
    #[test]
    fn large_objects_sort_as_small_ones_do() {
        let mut map = serde_json::Map::new();
        for k in [
            "kk", "b", "ab", "a", "zzz", "é", "aa", "c", "ba", "bb", "", "x1",
        ] {
            map.insert(k.to_owned(), json!(k.len()));
        }
        let mut out = String::new();
        write_jsonb(&Value::Object(map), &mut out);
        assert_eq!(
            out,
            r#"{"": 0, "a": 1, "b": 1, "c": 1, "aa": 2, "ab": 2, "ba": 2, "bb": 2, "kk": 2, "x1": 2, "é": 2, "zzz": 3}"#
        );
    }

    #[test]
    fn objects_print_as_postgresql_jsonb_does() {
        let mut out = String::new();
        write_jsonb(
            &json!({"bb": 1, "a": [true, null, "x\"\n\u{1}é"], "c": {"zz": 1.5, "y": -3}}),
            &mut out,
        );
        assert_eq!(
            out,
            r#"{"a": [true, null, "x\"\n\u0001é"], "c": {"y": -3, "zz": 1.5}, "bb": 1}"#
        );
    }
}
