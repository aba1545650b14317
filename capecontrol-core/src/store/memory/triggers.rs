//! [`TriggerStore`] for [`MemoryStore`]: schedule cursors, webhook secrets and delivery ids kept
//! beside the rest of the state, under the same lock. An uninstalled installation's trigger
//! state goes with it (the PostgreSQL schema's `ON DELETE CASCADE`).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::MemoryStore;
use crate::error::{Error, Result};
use crate::store::InstallationRecord;
use crate::store::triggers::{MAX_DELIVERY_ID_BYTES, TriggerStore};

/// The triggers' part of the state.
#[derive(Default)]
pub(super) struct TriggerState {
    cursors: HashMap<(Uuid, String), DateTime<Utc>>,
    secrets: HashMap<Uuid, String>,
    deliveries: HashSet<(Uuid, String)>,
}

impl TriggerState {
    /// Forgets what belongs to an installation that is gone.
    pub(super) fn forget(&mut self, installation_id: Uuid) {
        self.cursors.retain(|(i, _), _| *i != installation_id);
        self.secrets.remove(&installation_id);
        self.deliveries.retain(|(i, _)| *i != installation_id);
    }
}

#[async_trait]
impl TriggerStore for MemoryStore {
    async fn all_installations(&self) -> Result<Vec<InstallationRecord>> {
        let state = self.lock();
        let mut all: Vec<InstallationRecord> = state.installations.values().cloned().collect();
        all.sort_by_key(|a| (a.created_at, a.id));
        Ok(all)
    }

    async fn schedule_cursor(
        &self,
        installation_id: Uuid,
        schedule: &str,
    ) -> Result<Option<DateTime<Utc>>> {
        let state = self.lock();
        Ok(state
            .triggers
            .cursors
            .get(&(installation_id, schedule.to_owned()))
            .copied())
    }

    async fn advance_schedule(
        &self,
        installation_id: Uuid,
        schedule: &str,
        to: DateTime<Utc>,
    ) -> Result<()> {
        let mut state = self.lock();
        if !state
            .installations
            .values()
            .any(|i| i.id == installation_id)
        {
            return Err(Error::not_found(
                "installation",
                installation_id.to_string(),
            ));
        }
        let to = super::micros(to);
        let cursor = state
            .triggers
            .cursors
            .entry((installation_id, schedule.to_owned()))
            .or_insert(to);
        if *cursor < to {
            *cursor = to;
        }
        Ok(())
    }

    async fn set_webhook_secret(&self, installation_id: Uuid, secret: &str) -> Result<()> {
        let mut state = self.lock();
        if !state
            .installations
            .values()
            .any(|i| i.id == installation_id)
        {
            return Err(Error::not_found(
                "installation",
                installation_id.to_string(),
            ));
        }
        state
            .triggers
            .secrets
            .insert(installation_id, secret.to_owned());
        Ok(())
    }

    async fn webhook_secret(&self, installation_id: Uuid) -> Result<Option<String>> {
        Ok(self.lock().triggers.secrets.get(&installation_id).cloned())
    }

    async fn claim_delivery(&self, installation_id: Uuid, delivery_id: &str) -> Result<bool> {
        if delivery_id.is_empty() || delivery_id.len() > MAX_DELIVERY_ID_BYTES {
            return Err(Error::invalid_field(
                "/delivery_id",
                format!("must be 1 to {MAX_DELIVERY_ID_BYTES} bytes"),
            ));
        }
        let mut state = self.lock();
        if !state
            .installations
            .values()
            .any(|i| i.id == installation_id)
        {
            return Err(Error::not_found(
                "installation",
                installation_id.to_string(),
            ));
        }
        Ok(state
            .triggers
            .deliveries
            .insert((installation_id, delivery_id.to_owned())))
    }
}
