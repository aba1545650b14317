//! [`PostgresStore`]: pools, migrations and the LISTEN/NOTIFY bridge.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use capecontrol_core::events::TaskEvent;
use capecontrol_core::{Error, Result};
use chrono::SubsecRound;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::db;
use crate::notify::{self, Message};

/// The embedded migrations (`capecontrol-store/migrations`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How to connect a [`PostgresStore`]: the primary, pool sizes, an optional read replica.
///
/// ```
/// # fn main() -> capecontrol_core::Result<()> {
/// use std::time::Duration;
/// use capecontrol_store::PostgresStoreOptions;
/// let options = PostgresStoreOptions::from_url("postgres://app@db.internal/capecontrol")?
///     .max_connections(20)
///     .min_connections(2)
///     .acquire_timeout(Duration::from_secs(5))
///     .read_replica_url("postgres://app@replica.internal/capecontrol")?;
/// assert_eq!(options.max_connections_value(), 20);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStoreOptions {
    primary: PgConnectOptions,
    max_connections: u32,
    min_connections: u32,
    acquire_timeout: Duration,
    replica: Option<PgConnectOptions>,
    replica_max_connections: u32,
    event_capacity: usize,
    listen: bool,
    notify: bool,
    notify_window: Duration,
    ping_idle_after: Duration,
    batch_writes: bool,
    audit_seal_interval: Duration,
}

impl fmt::Debug for PostgresStoreOptions {
    // Connection options may hold a password: only host, port and database are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |o: &PgConnectOptions| {
            format!(
                "{}:{}/{}",
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or("")
            )
        };
        f.debug_struct("PostgresStoreOptions")
            .field("primary", &show(&self.primary))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("replica", &self.replica.as_ref().map(show))
            .field("replica_max_connections", &self.replica_max_connections)
            .field("event_capacity", &self.event_capacity)
            .field("listen", &self.listen)
            .field("notify", &self.notify)
            .field("notify_window", &self.notify_window)
            .field("ping_idle_after", &self.ping_idle_after)
            .field("batch_writes", &self.batch_writes)
            .field("audit_seal_interval", &self.audit_seal_interval)
            .finish()
    }
}

impl PostgresStoreOptions {
    /// Options for the primary at `connect` (10 connections at most, none kept idle, 10 s to
    /// acquire one, no replica, 4096 buffered live events, LISTEN on).
    ///
    /// The connections carry `connect`'s `application_name` (`?application_name=` in a URL),
    /// `capecontrol` when it has none; the store's own connections add a suffix
    /// (`-heartbeat`, `-listen`, `-notify`), so `pg_stat_activity` tells one node's backends
    /// from another's.
    pub fn new(connect: PgConnectOptions) -> Self {
        let connect = if connect.get_application_name().is_some() {
            connect
        } else {
            connect.application_name(DEFAULT_APPLICATION_NAME)
        };
        Self {
            primary: connect,
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(10),
            replica: None,
            replica_max_connections: 10,
            event_capacity: 4096,
            listen: true,
            notify: true,
            notify_window: Duration::from_millis(1),
            ping_idle_after: Duration::from_secs(10),
            batch_writes: true,
            audit_seal_interval: Duration::from_millis(200),
        }
    }

    /// Options for the primary at `url` (`postgres://user:pass@host:port/db`).
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(Self::new(parse_url(url)?))
    }

    /// Connections to the primary at most in the main pool. Besides it, a store opens a
    /// LISTEN connection, a NOTIFY connection and up to two heartbeat connections (leases are
    /// renewed even when the main pool is saturated).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// The configured maximum of primary connections.
    pub fn max_connections_value(&self) -> u32 {
        self.max_connections
    }

    /// Connections to the primary kept open when idle.
    pub fn min_connections(mut self, n: u32) -> Self {
        self.min_connections = n;
        self
    }

    /// How long an operation waits for a free connection before failing with a resource error.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// A read-only replica for catalog and listing queries (agents, versions, the marketplace,
    /// installations, audit). Tasks are always read from the primary.
    pub fn read_replica(mut self, connect: PgConnectOptions) -> Self {
        self.replica = Some(if connect.get_application_name().is_some() {
            connect
        } else {
            connect.application_name(&format!("{DEFAULT_APPLICATION_NAME}-read"))
        });
        self
    }

    /// [`Self::read_replica`] from a URL.
    pub fn read_replica_url(self, url: &str) -> Result<Self> {
        Ok(self.read_replica(parse_url(url)?))
    }

    /// Connections to the replica at most.
    pub fn replica_max_connections(mut self, n: u32) -> Self {
        self.replica_max_connections = n.max(1);
        self
    }

    /// How many live events a slow subscriber may lag behind before it misses some.
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n.max(1);
        self
    }

    /// Whether to LISTEN for events and wake-ups of other nodes (default: yes). Without it,
    /// [`PostgresStore::subscribe`](capecontrol_core::store::QueueStore::subscribe) and
    /// `wakeups` stay silent.
    pub fn listen(mut self, on: bool) -> Self {
        self.listen = on;
        self
    }

    /// Whether to send this store's events and wake-ups to the other nodes (default: yes).
    /// A single node can turn it off: its own subscribers are served all the same.
    pub fn notify(mut self, on: bool) -> Self {
        self.notify = on;
        self
    }

    /// How long the notifier waits after a first announcement for others to batch with it
    /// (default 1 ms): fewer NOTIFY transactions for a little latency between nodes (local
    /// subscribers are not delayed).
    pub fn notify_window(mut self, window: Duration) -> Self {
        self.notify_window = window.min(Duration::from_secs(1));
        self
    }

    /// A pooled connection idle for longer than this is pinged before use (default 10 s;
    /// `Duration::ZERO`: before every use, one more round trip per operation). A connection that
    /// died while idle for less fails its operation with a retryable resource error, and is
    /// replaced.
    pub fn ping_idle_after(mut self, after: Duration) -> Self {
        self.ping_idle_after = after;
        self
    }

    /// Whether the journal writes and finishes of all this store's attempts go through one
    /// writer that batches them (default: yes). The writer takes every write queued while its
    /// previous batch was in flight (up to 256, one per task; no timer: a lone write goes out at
    /// once) and commits them together: one statement per kind of write, one commit per batch,
    /// instead of one per write. Past 1,024 queued writes, writers wait (back-pressure). Each
    /// attempt learns its own result (committed, fenced out, or a transient error of the whole
    /// batch, which its host repeats); a batch that fails deterministically is split in halves
    /// down to single writes, so a bad write fails alone. A write returns only once committed,
    /// so a completed step is durable before the next one starts, as without batching; what
    /// batching adds is the time a write waits for the batch in flight (a crash then loses it
    /// uncommitted, as it would an inline write not yet sent). Off: one statement and one commit
    /// per write, from the attempt's own task.
    pub fn batch_writes(mut self, on: bool) -> Self {
        self.batch_writes = on;
        self
    }

    /// How often this store seals the audit rows committed since its last round into the
    /// chain (default 200 ms; at least 10 ms). Writes never wait for the chain: an insert only
    /// marks its row pending, and the sealer chains the pending rows of every node in batches
    /// (one node at a time holds the chain's head). Every read of the trail or its head seals
    /// first, so a reader always sees the rows committed before its read in the chain; this
    /// interval bounds how long a row committed without a reader waits for its place. The first
    /// round comes one interval after the store connects.
    pub fn audit_seal_interval(mut self, interval: Duration) -> Self {
        self.audit_seal_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Connects (see [`PostgresStore::connect_with`]).
    pub async fn connect(self) -> Result<PostgresStore> {
        PostgresStore::connect_with(self).await
    }
}

/// Connections of the heartbeat pool, besides `max_connections` (one would do: a heartbeat
/// holds its connection for one short statement; the second covers a reconnect).
pub(crate) const HEARTBEAT_CONNECTIONS: u32 = 2;

/// Pool options: a pooled connection is pinged before use only when it sat idle for longer than
/// `ping_idle_after` (sqlx's default pings on every acquire: a round trip per operation).
fn pool_options(ping_idle_after: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= ping_idle_after {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// The `application_name` of a store's connections when its options name none.
const DEFAULT_APPLICATION_NAME: &str = "capecontrol";

/// `<application_name>-<suffix>`: the name of one of the store's own connections.
fn suffixed(primary: &PgConnectOptions, suffix: &str) -> String {
    format!(
        "{}-{suffix}",
        primary
            .get_application_name()
            .unwrap_or(DEFAULT_APPLICATION_NAME)
    )
}

fn parse_url(url: &str) -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(url)
        .map_err(|e| Error::invalid_field("/database_url", format!("invalid PostgreSQL URL: {e}")))
}

/// The PostgreSQL implementation of the [`Store`](capecontrol_core::store::Store) port.
///
/// Cheap to clone (the pools and the channels are shared). Any number of stores, in any number
/// of processes, can share one database: claims, leases and concurrency limits are enforced by
/// the database, and events and wake-ups travel between them by LISTEN/NOTIFY.
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) read: PgPool,
    /// Heartbeats' own connection(s): a lease is renewed even when `pool` is saturated
    /// (by watchers, listings, long writes), so that a busy node does not lose its leases.
    pub(crate) heartbeat: PgPool,
    pub(crate) primary: PgConnectOptions,
    /// This store's id in notifications (its own listener skips them).
    pub(crate) node: String,
    pub(crate) events: broadcast::Sender<TaskEvent>,
    pub(crate) wakeups: broadcast::Sender<()>,
    /// The notifier's queue (`None`: not notifying other nodes).
    notifier: Option<mpsc::Sender<Message>>,
    /// Lease tokens whose fenced write failed with a transient error: whether it committed is
    /// unknown, so a repeat that matches no lease is checked for having been applied. Only
    /// these: a write repeated after a known outcome is fenced as before.
    pub(crate) uncertain: std::sync::Mutex<std::collections::HashSet<Uuid>>,
    /// The batched completer's queue (`None`: every write is made by its caller alone).
    pub(crate) completer: Option<mpsc::Sender<crate::queue::completer::Job>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for h in &self.tasks {
            h.abort();
        }
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool_size", &self.inner.pool.size())
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` with default options. Does not migrate: call [`Self::migrate`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(PostgresStoreOptions::from_url(url)?).await
    }

    /// Connects with `options`: opens the pools and, if listening, the LISTEN connection (so
    /// that every event committed after this returns reaches [`subscribe`]rs).
    ///
    /// [`subscribe`]: capecontrol_core::store::QueueStore::subscribe
    pub async fn connect_with(options: PostgresStoreOptions) -> Result<Self> {
        let pool = pool_options(options.ping_idle_after)
            .max_connections(options.max_connections)
            .min_connections(options.min_connections.min(options.max_connections))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(options.primary.clone())
            .await
            .map_err(db)?;
        let read = match &options.replica {
            Some(r) => pool_options(options.ping_idle_after)
                .max_connections(options.replica_max_connections)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(r.clone())
                .await
                .map_err(db)?,
            None => pool.clone(),
        };
        let heartbeat = pool_options(options.ping_idle_after)
            .max_connections(HEARTBEAT_CONNECTIONS)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(
                options
                    .primary
                    .clone()
                    .application_name(&suffixed(&options.primary, "heartbeat")),
            );
        let (events, _) = broadcast::channel(options.event_capacity);
        let (wakeups, _) = broadcast::channel(64);
        let node = Uuid::new_v4().to_string();
        let mut tasks = Vec::new();
        if options.listen {
            // Its own small pool: a listener holds its connection for good.
            let listen_pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(options.acquire_timeout)
                .connect_lazy_with(
                    options
                        .primary
                        .clone()
                        .application_name(&suffixed(&options.primary, "listen")),
                );
            let listener = notify::connect_listener(&listen_pool).await.map_err(db)?;
            tasks.push(tokio::spawn(notify::listen(
                node.clone(),
                listener,
                listen_pool,
                pool.clone(),
                events.clone(),
                wakeups.clone(),
            )));
        }
        // The notifier's connection commits its NOTIFY-only transactions without waiting for
        // the WAL flush (see the `notify` module).
        let notify_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("SET synchronous_commit = off").await?;
                    Ok(())
                })
            })
            .connect_lazy_with(
                options
                    .primary
                    .clone()
                    .application_name(&suffixed(&options.primary, "notify")),
            );
        let (notifier, rx) = mpsc::channel(notify::QUEUE);
        if options.notify {
            tasks.push(tokio::spawn(notify::notifier(
                node.clone(),
                notify_pool,
                rx,
                options.notify_window,
            )));
        }
        tasks.push(tokio::spawn(crate::audit::sealer(
            pool.clone(),
            options.audit_seal_interval,
        )));
        let completer = if options.batch_writes {
            let (tx, rx) = mpsc::channel(crate::queue::completer::QUEUE);
            tasks.push(tokio::spawn(crate::queue::completer::run(pool.clone(), rx)));
            Some(tx)
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                read,
                heartbeat,
                primary: options.primary,
                node,
                events,
                wakeups,
                notifier: options.notify.then_some(notifier),
                uncertain: std::sync::Mutex::default(),
                completer,
                tasks,
            }),
        })
    }

    /// Announces committed (or, for `publish`, live) events and maybe a wake-up: to local
    /// subscribers at once, to the other nodes through the notifier. Never blocks.
    pub(crate) fn announce(&self, events: Vec<TaskEvent>, wake: bool, persisted: bool) {
        if events.is_empty() && !wake {
            return;
        }
        // As stored: PostgreSQL keeps microseconds, so live and replayed events are equal.
        let events: Vec<TaskEvent> = events
            .into_iter()
            .map(|mut e| {
                e.at = e.at.trunc_subsecs(6);
                e
            })
            .collect();
        for e in &events {
            // Large outputs travel by reference: the ring keeps its last events.
            let _ = self.inner.events.send(e.clone().into_live());
        }
        if wake {
            let _ = self.inner.wakeups.send(());
        }
        let Some(notifier) = &self.inner.notifier else {
            return;
        };
        let sent = notifier.try_send(Message::Announce {
            events,
            wake,
            persisted,
        });
        if sent.is_err() {
            tracing::warn!(target: "capecontrol::store",
                "notifier queue full; other nodes miss live events (they are in the rows)");
        }
    }

    /// Applies the embedded migrations that are not applied yet. Safe to run from several nodes
    /// at once: sqlx's migrator holds a PostgreSQL advisory lock while it works, so the others
    /// wait and then find nothing left to do. Runs on a connection of its own, closed afterwards,
    /// so that a failed migration cannot leave the lock held on a pooled connection.
    pub async fn migrate(&self) -> Result<()> {
        let mut conn = self.inner.primary.connect().await.map_err(db)?;
        let result = MIGRATOR.run(&mut conn).await;
        let _ = conn.close().await;
        result.map_err(|e| Error::resource(format!("migration failed: {e}")))
    }

    /// The primary pool, to open a transaction for [`Self::enqueue_in`] or to run the host's own
    /// queries.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The pool used for catalog and listing queries (the replica's, or the primary's).
    pub fn read_pool(&self) -> &PgPool {
        &self.inner.read
    }

    /// Sends the notifications still queued, closes the pools and stops listening.
    pub async fn close(&self) {
        if let Some(notifier) = &self.inner.notifier {
            let (done, flushed) = oneshot::channel();
            if notifier.send(Message::Flush(done)).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(5), flushed).await;
            }
        }
        for h in &self.inner.tasks {
            h.abort();
        }
        self.inner.pool.close().await;
        self.inner.read.close().await;
        self.inner.heartbeat.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_never_show_the_password() {
        let o = PostgresStoreOptions::from_url("postgres://app:hunter2@db.internal:6543/cc")
            .unwrap()
            .read_replica_url("postgres://ro:swordfish@replica.internal/cc")
            .unwrap()
            .max_connections(0);
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("swordfish"),
            "{shown}"
        );
        assert!(shown.contains("db.internal:6543/cc"), "{shown}");
        assert_eq!(o.max_connections_value(), 1);
        assert_eq!(
            PostgresStoreOptions::from_url("postgres://db:notaport/cc")
                .unwrap_err()
                .category(),
            capecontrol_core::ErrorCategory::Validation
        );
    }
}
