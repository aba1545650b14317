//! The chained audit trail of a [`MemoryStore`](super::MemoryStore).
//!
//! Rows are appended as [`AuditEvent`]s and wait, unchained, until the store's sealer hands
//! them to [`Trail::seal`] in order (see [`super::State::append_audit`] for when). A chained
//! row keeps its hash as its 32 bytes, not as the two hex strings of an `AuditEvent` (the
//! previous row's hash is the row before it), in chunks that never move once allocated (one
//! vector of rows copied the whole trail at every doubling). A read rebuilds the rows it returns
//! with their hex hashes.

use sha2::{Digest, Sha256};

use super::{AuditEvent, AuditFilter};
use crate::audit::{ChainHead, GENESIS};

/// Rows per chunk of the trail.
const CHUNK: usize = 4096;

/// A chained row: the event as appended (its `prev_hash` and `hash` left empty), its place
/// (`seq`) set, and its hash.
struct Row {
    event: AuditEvent,
    hash: [u8; 32],
}

/// The chained trail: rows in chunks, and the end of the chain.
#[derive(Default)]
pub(super) struct Trail {
    chunks: Vec<Vec<Row>>,
    /// Chained rows.
    sealed: usize,
    /// The end of the chain.
    head: ChainHead,
}

impl Trail {
    /// Chained rows.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.sealed
    }

    /// The end of the chain.
    pub(super) fn head(&self) -> &ChainHead {
        &self.head
    }

    /// Chains `rows` (appended in this order after the chained ones, their ids following on)
    /// and keeps them.
    pub(super) fn seal(&mut self, rows: Vec<AuditEvent>) {
        if rows.is_empty() {
            return;
        }
        let mut prev = hex(&match self.last_hash() {
            Some(h) => h,
            None => decode(&self.head.hash).unwrap_or([0; 32]),
        });
        let mut seq = self.head.seq;
        let mut hash = [0u8; 32];
        for mut event in rows {
            seq += 1;
            event.seq = seq;
            hash = Sha256::digest(crate::audit::canonical_linked(&event, &prev).as_bytes()).into();
            // The next row's link, written over this one's (no allocation per row).
            prev.clear();
            push_hex(&hash, &mut prev);
            let row = Row { event, hash };
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
        debug_assert_eq!(prev, hex(&hash));
        self.head = ChainHead { seq, hash: prev };
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
        let keep = |e: &AuditEvent| {
            filter.task_id.is_none_or(|t| e.task_id == Some(t))
                && filter
                    .agent_id
                    .as_ref()
                    .is_none_or(|a| e.agent_id.as_ref() == Some(a))
                && filter
                    .user_id
                    .as_ref()
                    .is_none_or(|u| e.user_id.as_ref() == Some(u))
                && filter
                    .event_type
                    .as_ref()
                    .is_none_or(|t| &e.event_type == t)
                && filter.after.is_none_or(|after| e.seq > after)
        };
        // The rows after `after` start at index `after` (positions are 1, 2, … in order).
        let from = filter.after.map_or(0, |a| {
            usize::try_from(a).unwrap_or(usize::MAX).min(self.sealed)
        });
        (from..self.sealed)
            .filter(|&i| keep(&self.row(i).event))
            .take(limit)
            .map(|i| self.event(i))
            .collect()
    }

    fn row(&self, i: usize) -> &Row {
        &self.chunks[i / CHUNK][i % CHUNK]
    }

    fn last_hash(&self) -> Option<[u8; 32]> {
        self.sealed.checked_sub(1).map(|i| self.row(i).hash)
    }

    /// The chained row `i`, with its hashes.
    fn event(&self, i: usize) -> AuditEvent {
        let row = self.row(i);
        let mut event = row.event.clone();
        event.prev_hash = match i.checked_sub(1) {
            Some(p) => hex(&self.row(p).hash),
            None => GENESIS.to_owned(),
        };
        event.hash = hex(&row.hash);
        event
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(bytes: &[u8; 32], out: &mut String) {
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    let mut out = String::with_capacity(64);
    push_hex(bytes, &mut out);
    out
}

/// The bytes of a lowercase hex hash.
fn decode(hex: &str) -> Option<[u8; 32]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (digit(bytes[2 * i])? << 4) | digit(bytes[2 * i + 1])?;
    }
    Some(out)
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
            agent_id: Some("agent".into()),
            user_id: Some(format!("user-{}", id % 3)),
            event_type: "task.queued".into(),
            payload,
            ip_address: Some("10.0.0.1".parse().unwrap()),
            user_agent: (id % 2 == 0).then(|| "curl/8".into()),
            created_at: Utc::now(),
            seq: 0,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// A row read back is the row appended, chained exactly as `audit::seal` chains it, across
    /// batches and chunks; filters and `after` select as on the rows themselves.
    #[test]
    fn rows_read_back_equal_the_rows_chained_by_seal() {
        let payloads = [
            json!({"task": "add", "version": "1.0.0", "priority": 0}),
            json!({"x": 0.1, "s": "quote \" backslash \\ é \u{1F600}", "n": u64::MAX}),
            json!(null),
        ];
        let mut trail = Trail::default();
        let mut batch = Vec::new();
        let mut expected_head = ChainHead::default();
        let mut expected = Vec::new();
        let n = CHUNK + 10;
        for i in 0..n {
            let e = event(i as i64 + 1, payloads[i % payloads.len()].clone());
            let mut chained = e.clone();
            expected_head = crate::audit::seal(&mut chained, &expected_head);
            expected.push(chained);
            batch.push(e);
            if i % 300 == 7 {
                trail.seal(std::mem::take(&mut batch));
            }
        }
        trail.seal(batch);
        assert_eq!(trail.head(), &expected_head);
        assert_eq!(trail.len(), n);
        let all = trail.select(&AuditFilter::default(), usize::MAX);
        assert_eq!(all, expected);
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

    #[test]
    fn hex_decodes_what_it_encodes() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(decode(&hex(&bytes)), Some(bytes));
        assert_eq!(decode(GENESIS), Some([0; 32]));
        assert_eq!(decode("zz"), None);
    }
}
