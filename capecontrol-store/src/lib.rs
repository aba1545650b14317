//! The PostgreSQL store of CapeControl: [`PostgresStore`] implements the core
//! [`Store`](capecontrol_core::store::Store) port with sqlx on PostgreSQL 15+.
//!
//! PostgreSQL is both the durable store and what lets a deployment outgrow one machine: any
//! number of nodes share one database.
//!
//! - **Schema**: embedded sqlx migrations (`migrations/`), applied by
//!   [`PostgresStore::migrate`]; the first is the five original tables exactly as specified (`docs/contracts.md`), the second adds
//!   installations, the queue columns, task events, and the queue's SQL functions.
//! - **Claims**: one call of the PL/pgSQL function `capecontrol_claim`: candidates locked with
//!   `FOR UPDATE SKIP LOCKED` by priority then age, a transaction-scoped advisory lock per
//!   agent (taken in name order) to count the agent's running tasks against its
//!   `concurrency_limit` on every node, leases timed by the database clock.
//! - **Fencing**: every worker write is one statement whose first CTE updates the task only
//!   where `(id, lease_token, status = 'running')` still match; every other write of the
//!   statement (events, step row, audit rows) joins that CTE, so a lost lease writes nothing.
//! - **One round trip, one commit** per operation: enqueue, claim (a batch), heartbeat,
//!   journal (step row + events + audit), finish, release, cancel. With
//!   [`PostgresStoreOptions::batch_writes`] (the default), the journal writes and finishes of
//!   all the store's attempts share them: one writer commits whatever queued while its
//!   previous batch was in flight, one statement per kind of write.
//! - **Events across nodes**: each write returns the events it inserted; once it committed, the
//!   store broadcasts them to local [`subscribe`]rs and [`wakeups`] listeners, and a notifier
//!   task sends them to the other nodes by `NOTIFY` on [`CHANNEL`], in batches, outside the
//!   write transactions (a NOTIFY inside them would serialize all commits); each store LISTENs
//!   on a connection of its own, skips its own notes, and reads back events too big for a
//!   payload. Live delivery is best-effort and unordered across nodes; the rows are the truth.
//!
//! ```no_run
//! # async fn run() -> capecontrol_core::Result<()> {
//! use capecontrol_store::{PostgresStore, PostgresStoreOptions};
//! let store = PostgresStoreOptions::from_url("postgres://app@db.internal/capecontrol")?
//!     .max_connections(20)
//!     .connect()
//!     .await?;
//! store.migrate().await?;
//! # Ok(()) }
//! ```
//!
//! [`subscribe`]: capecontrol_core::store::QueueStore::subscribe
//! [`wakeups`]: capecontrol_core::store::QueueStore::wakeups

mod audit;
mod error;
mod keys;
mod notify;
mod outbox;
mod queue;
mod rating;
mod registry;
mod rows;
mod store;
mod triggers;

pub use notify::CHANNEL;
pub use outbox::OUTBOX_BATCH;
pub use sqlx;
pub use store::{PostgresStore, PostgresStoreOptions};
