//! [`TriggerStore`]: what the triggers (events, schedules, webhooks; see
//! [`crate::runtime::triggers`]) keep in the store.
//!
//! - **Installations of every user**, for an event or a schedule to find its subscribers.
//! - **Schedule cursors**: per installation and cron expression, the latest instant the scheduler
//!   has dealt with. A cursor only moves forward ([`TriggerStore::advance_schedule`] keeps the
//!   later of the two instants), so nodes racing on it cannot move it back. That a fire happens
//!   exactly once does not rest on the cursor but on the fire's deterministic idempotency key,
//!   claimed by [`QueueStore::enqueue`](super::QueueStore::enqueue).
//! - **Webhook secrets**, one per installation (a secret: never listed, logged or audited).
//! - **Webhook delivery ids**, claimed once per installation: a second delivery with the same id
//!   is a replay.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::InstallationRecord;
use crate::error::Result;

/// The longest webhook delivery id, in bytes.
pub const MAX_DELIVERY_ID_BYTES: usize = 128;

/// The triggers' state.
#[async_trait]
pub trait TriggerStore: Send + Sync {
    /// Every installation, of every user, oldest first.
    async fn all_installations(&self) -> Result<Vec<InstallationRecord>>;
    /// The latest instant dealt with of `schedule` for the installation (`None`: never).
    async fn schedule_cursor(
        &self,
        installation_id: Uuid,
        schedule: &str,
    ) -> Result<Option<DateTime<Utc>>>;
    /// Moves the cursor to `to` unless it is already later.
    async fn advance_schedule(
        &self,
        installation_id: Uuid,
        schedule: &str,
        to: DateTime<Utc>,
    ) -> Result<()>;
    /// Sets (replaces) the installation's webhook secret.
    async fn set_webhook_secret(&self, installation_id: Uuid, secret: &str) -> Result<()>;
    /// The installation's webhook secret (`None`: none was ever set).
    async fn webhook_secret(&self, installation_id: Uuid) -> Result<Option<String>>;
    /// Records a delivery id for the installation: `true` the first time, `false` for a replay.
    async fn claim_delivery(&self, installation_id: Uuid, delivery_id: &str) -> Result<bool>;
}
