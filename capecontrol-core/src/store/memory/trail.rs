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
use crate::audit::{ChainHead, GENESIS, push_hex};

/// Rows per chunk of the trail.
const CHUNK: usize = 4096;

/// A chained row: the event as appended (its `prev_hash` and `hash` left empty), its place
/// (`seq`) set, and its hash.
struct Row {
    event: AuditEvent,
    hash: [u8; 32],
}

/// The chained trail: rows in chunks. Rows are chained from position 1 without gaps, so the
/// end of the chain is the number of rows and the last row's hash.
#[derive(Default)]
pub(super) struct Trail {
    chunks: Vec<Vec<Row>>,
    /// Chained rows.
    sealed: usize,
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
    /// and keeps them.
    pub(super) fn seal(&mut self, rows: Vec<AuditEvent>) {
        let mut prev = self.prev_hash(self.sealed);
        // Every row's canonical form is written into this one buffer.
        let mut canonical = String::with_capacity(1024);
        for mut event in rows {
            event.seq = self.sealed as u64 + 1;
            crate::audit::canonical_linked_into(&event, &prev, &mut canonical);
            let hash: [u8; 32] = Sha256::digest(canonical.as_bytes()).into();
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

    /// The chained row `i`, with its hashes.
    fn event(&self, i: usize) -> AuditEvent {
        let row = self.row(i);
        let mut event = row.event.clone();
        event.prev_hash = self.prev_hash(i);
        event.hash = self.prev_hash(i + 1);
        event
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
        assert_eq!(trail.head(), expected_head);
        assert_eq!(Trail::default().head(), ChainHead::default());
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
}
