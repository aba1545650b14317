//! Events and wake-ups across nodes, by LISTEN/NOTIFY on one channel.
//!
//! Writes do not NOTIFY inside their own transactions: PostgreSQL serializes the commits of all
//! notifying transactions behind one lock held through the commit's WAL flush, which would
//! forbid group commit and cap the whole cluster at about one write per fsync. Instead, once a
//! write has committed, the store broadcasts its events to local subscribers at once and hands
//! them to its *notifier*, a task that sends them to the other nodes in batches from a
//! connection of its own with `synchronous_commit = off` (a NOTIFY-only transaction that holds
//! the lock only briefly; the events themselves are already durable). The one exception is
//! [`PostgresStore::enqueue_in`](crate::PostgresStore::enqueue_in): its events commit with the
//! caller's transaction, so that statement notifies inside it, and every node (this one too)
//! learns of them at that commit.
//!
//! A payload is a [`Note`]: the sending node (whose own listener skips it), whether workers
//! should wake up, whole events, and references `(task_id, seq)` to events too big for a NOTIFY
//! payload (under 8000 bytes), which listeners read back from `task_events`. Live delivery is
//! best-effort and, across nodes, not ordered: a watcher deduplicates by `seq` and reads the rows
//! when it sees a gap.

use std::time::Duration;

use capecontrol_core::events::TaskEvent;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgNotification, PgPool};
use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

use crate::error::db;
use crate::rows;

/// The channel of events and wake-ups.
pub const CHANNEL: &str = "capecontrol";

/// Payloads are kept under this many bytes (PostgreSQL's limit is 8000).
const MAX_PAYLOAD: usize = 7800;
/// A single event bigger than this travels as a reference.
const MAX_INLINE_EVENT: usize = 7000;
/// Announcements queued for the notifier at most (beyond, live delivery to other nodes drops).
pub(crate) const QUEUE: usize = 65_536;

/// One NOTIFY payload.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Note {
    /// The sending node; empty when sent inside a caller's transaction (for every node).
    #[serde(default)]
    pub(crate) node: String,
    /// Whether workers should look for work.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) wake: bool,
    /// Whole events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) events: Vec<TaskEvent>,
    /// Events to read from `task_events`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) refs: Vec<(Uuid, i64)>,
}

/// What a committed write announces.
#[derive(Debug)]
pub(crate) enum Message {
    /// Events (persisted unless `live`) and whether to wake workers.
    Announce {
        events: Vec<TaskEvent>,
        wake: bool,
        persisted: bool,
    },
    /// Send what is queued, then answer.
    Flush(oneshot::Sender<()>),
}

/// Packs announcements into payloads.
fn payloads(node: &str, batch: Vec<(Vec<TaskEvent>, bool, bool)>) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = Note {
        node: node.to_owned(),
        ..Note::default()
    };
    let mut size = 64 + node.len();
    let mut wake = false;
    for (events, w, persisted) in batch {
        wake |= w;
        for e in events {
            let Ok(json) = serde_json::to_string(&e) else {
                continue;
            };
            let (len, inline) = if json.len() <= MAX_INLINE_EVENT {
                (json.len() + 1, true)
            } else if persisted {
                (60, false)
            } else {
                // Live-only and too big: it reaches the other nodes' watchers once persisted.
                continue;
            };
            if size + len > MAX_PAYLOAD && !(note.events.is_empty() && note.refs.is_empty()) {
                if let Ok(p) = serde_json::to_string(&note) {
                    out.push(p);
                }
                note.events.clear();
                note.refs.clear();
                size = 64 + node.len();
            }
            size += len;
            if inline {
                note.events.push(e);
            } else {
                note.refs
                    .push((e.task_id, i64::try_from(e.seq).unwrap_or(i64::MAX)));
            }
        }
    }
    note.wake = wake;
    if (wake || !note.events.is_empty() || !note.refs.is_empty())
        && let Ok(p) = serde_json::to_string(&note)
    {
        out.push(p);
    }
    out
}

/// Sends announcements to the other nodes, batching whatever queued up meanwhile.
pub(crate) async fn notifier(
    node: String,
    pool: PgPool,
    mut rx: mpsc::Receiver<Message>,
    window: Duration,
) {
    while let Some(first) = rx.recv().await {
        if !window.is_zero() {
            // Let the announcements of concurrent writes join this batch.
            tokio::time::sleep(window).await;
        }
        let mut batch = Vec::new();
        let mut flushed = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next {
            match m {
                Message::Announce {
                    events,
                    wake,
                    persisted,
                } => batch.push((events, wake, persisted)),
                Message::Flush(done) => flushed.push(done),
            }
            next = if batch.len() < 4096 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let payloads = payloads(&node, batch);
        if !payloads.is_empty() {
            let sent = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
                .bind(CHANNEL)
                .bind(&payloads)
                .execute(&pool)
                .await;
            if let Err(e) = sent {
                tracing::warn!(target: "capecontrol::store", error = %e,
                    "could not notify other nodes; their watchers will read the rows");
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// Re-broadcasts other nodes' notifications into the local channels. When the connection drops
/// it reconnects (with backoff) and sends a wake-up, since notifications may have been missed
/// meanwhile; missed events are in the rows, where watchers replay them from.
pub(crate) async fn listen(
    node: String,
    listener: PgListener,
    listen_pool: PgPool,
    pool: PgPool,
    events: broadcast::Sender<TaskEvent>,
    wakeups: broadcast::Sender<()>,
) {
    const MIN_BACKOFF: Duration = Duration::from_millis(50);
    let mut listener = Some(listener);
    let mut backoff = MIN_BACKOFF;
    loop {
        if listener.is_none() {
            match connect_listener(&listen_pool).await {
                Ok(l) => {
                    listener = Some(l);
                    backoff = MIN_BACKOFF;
                    let _ = wakeups.send(());
                }
                Err(e) => {
                    tracing::warn!(target: "capecontrol::store", error = %e,
                        "LISTEN reconnect failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let Some(l) = listener.as_mut() else { continue };
        match l.try_recv().await {
            Ok(Some(n)) => dispatch(&node, &n, &pool, &events, &wakeups).await,
            Ok(None) => {
                // sqlx reconnected (or reconnects on the next call).
                tracing::warn!(target: "capecontrol::store", "LISTEN connection lost; reconnecting");
                let _ = wakeups.send(());
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                // Start over on a new connection rather than trust this one.
                tracing::warn!(target: "capecontrol::store", error = %e, "LISTEN failed; reconnecting");
                listener = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

pub(crate) async fn connect_listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn dispatch(
    node: &str,
    n: &PgNotification,
    pool: &PgPool,
    events: &broadcast::Sender<TaskEvent>,
    wakeups: &broadcast::Sender<()>,
) {
    let note = match serde_json::from_str::<Note>(n.payload()) {
        Ok(note) => note,
        Err(e) => {
            tracing::warn!(target: "capecontrol::store", error = %e, "unreadable notification");
            return;
        }
    };
    if note.node == node {
        return; // Announced locally already.
    }
    for e in note.events {
        let _ = events.send(e.into_live());
    }
    for (task_id, seq) in note.refs {
        let row = sqlx::query(
            "SELECT task_id, seq, at, kind FROM task_events WHERE task_id = $1 AND seq = $2",
        )
        .bind(task_id)
        .bind(seq)
        .fetch_optional(pool)
        .await;
        match row
            .map_err(db)
            .and_then(|r| r.map(|r| rows::event(&r)).transpose())
        {
            Ok(Some(e)) => {
                // Read back because it is big: its output stays out of the ring.
                let _ = events.send(e.into_live());
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(target: "capecontrol::store", error = %e, %task_id, seq,
                    "could not read a notified event");
            }
        }
    }
    if note.wake {
        let _ = wakeups.send(());
    }
}

#[cfg(test)]
mod tests {
    use capecontrol_core::events::TaskEventKind;
    use chrono::Utc;
    use serde_json::json;

    use super::*;

    fn event(seq: u64, size: usize) -> TaskEvent {
        TaskEvent {
            task_id: Uuid::nil(),
            seq,
            at: Utc::now(),
            kind: TaskEventKind::Completed {
                output: json!("x".repeat(size)),
            },
        }
    }

    #[test]
    fn payloads_stay_under_the_limit_and_big_events_become_references() {
        let batch = vec![
            ((1..=40).map(|i| event(i, 500)).collect(), false, true),
            (vec![event(41, 20_000)], true, true),
            (vec![event(42, 20_000)], false, false),
        ];
        let out = payloads("n1", batch);
        assert!(out.len() > 2);
        let mut inline = 0;
        let mut refs = 0;
        for p in &out {
            assert!(p.len() < 8000, "{}", p.len());
            let note: Note = serde_json::from_str(p).unwrap();
            assert_eq!(note.node, "n1");
            inline += note.events.len();
            refs += note.refs.len();
        }
        assert_eq!(inline, 40);
        assert_eq!(refs, 1, "the live-only big event is not sent");
        let last: Note = serde_json::from_str(out.last().unwrap()).unwrap();
        assert!(last.wake);
        assert!(payloads("n1", vec![]).is_empty());
        assert_eq!(payloads("n1", vec![(vec![], true, true)]).len(), 1);
    }
}
