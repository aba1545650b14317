//! The registry and lifecycle service (create → version → publish → install → update or
//! archive; the rules are in `docs/contracts.md`): agents, versions, publishing,
//! the marketplace catalog and installations, over any [`Store`], with an audit event for
//! every action, allowed or denied.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use capecontrol_core::Principal;
//! use capecontrol_core::registry::{Environment, InstallRequest, NewAgent, NewVersion, Registry};
//! use capecontrol_core::store::memory::MemoryStore;
//!
//! let registry = Registry::new(Arc::new(MemoryStore::new()))
//!     .with_environment(Environment::new().with_service("redis"));
//! let admin = Principal::new("admin").with_roles(["admin"]);
//! let agent = registry.create_agent(&admin, NewAgent::named("Finance Agent")).await?;
//! assert_eq!(agent.slug, "finance-agent");
//!
//! let manifest = serde_json::json!({
//!     "name": "Finance Agent", "version": "1.0.0", "description": "Budgets and payments",
//!     "category": "domain-specific", "tools": ["ingest"],
//!     "dependencies": { "services": ["redis"] },
//!     "permissions": { "scopes": ["finance:read"], "required_roles": ["user"] },
//! });
//! registry.add_version(&admin, &agent.id, NewVersion::new(manifest)).await?;
//! registry.publish(&admin, &agent.id, "1.0.0").await?;
//!
//! let user = Principal::new("u1").with_roles(["user"]);
//! let installed = registry
//!     .install(&user, InstallRequest::latest(&agent.id).grant(["finance:read"]))
//!     .await?;
//! assert_eq!(installed.version, "1.0.0");
//! # Ok::<(), capecontrol_core::Error>(())
//! # }).unwrap();
//! ```

mod agents;
mod environment;
mod installs;
mod market;
mod requests;
mod settings;
mod versioning;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

pub use crate::validate::REDACTED;
pub use environment::Environment;
pub use requests::{
    AgentDetail, InstallRequest, Installation, ManifestExcerpt, NewAgent, NewVersion,
    VersionSummary,
};
pub use versioning::{Bump, classify_change, suggest_next_version};

use crate::error::{Error, Result};
use crate::manifest::{Category, Config, Manifest, Permissions, Placement};
use crate::policy::{ADMIN, PUBLISHER, Principal, Scope, missing_scopes, parse_scopes};
use crate::slug::slugify;
use crate::state::{AgentStatus, VersionStatus};
use crate::store::{
    AgentFilter, AgentPatch, AgentRecord, CatalogEntry, CatalogQuery, InstallationRecord,
    NewAuditEvent, Page, Store, VersionRecord,
};
use crate::validate::check_manifest;

/// The user id of actions the platform takes itself (registering native agents).
pub const SYSTEM_USER: &str = "system";
/// The registry and lifecycle service. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    env: Arc<Environment>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("environment", &self.env)
            .finish_non_exhaustive()
    }
}

/// An action of the registry, for the audit trail.
#[derive(Debug, Clone, Copy)]
enum Action {
    CreateAgent,
    UpdateAgent,
    AddVersion,
    Publish,
    ArchiveVersion,
    ArchiveAgent,
    RegisterNative,
    Install,
    Upgrade,
    UpdateSettings,
    Uninstall,
}

impl Action {
    /// The audit event type of the action when allowed; denied, `<name>.denied`.
    fn allowed(self) -> &'static str {
        match self {
            Self::CreateAgent => "agent.created",
            Self::UpdateAgent => "agent.updated",
            Self::AddVersion => "agent.version_added",
            Self::Publish => "agent.version_published",
            Self::ArchiveVersion => "agent.version_archived",
            Self::ArchiveAgent => "agent.archived",
            Self::RegisterNative => "agent.native_registered",
            Self::Install => "installation.created",
            Self::Upgrade => "installation.upgraded",
            Self::UpdateSettings => "installation.settings_updated",
            Self::Uninstall => "installation.deleted",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::CreateAgent => "agent.create",
            Self::UpdateAgent => "agent.update",
            Self::AddVersion => "agent.version_add",
            Self::Publish => "agent.version_publish",
            Self::ArchiveVersion => "agent.version_archive",
            Self::ArchiveAgent => "agent.archive",
            Self::RegisterNative => "agent.native_register",
            Self::Install => "installation.create",
            Self::Upgrade => "installation.upgrade",
            Self::UpdateSettings => "installation.settings_update",
            Self::Uninstall => "installation.delete",
        }
    }

    fn denied(self) -> String {
        format!("{}.denied", self.name())
    }
}

/// The audit payload of a denied action: the error, never a value the caller sent.
fn denied_payload(error: &Error, context: &Value) -> Value {
    json!({
        "request": context,
        "error": {
            "category": error.category(),
            "message": error.to_string(),
            "missing_scopes": error.missing_scopes(),
            "fields": error.field_errors().iter().map(|e| e.pointer.clone()).collect::<Vec<_>>(),
        },
    })
}

fn category_string(c: Category) -> Option<String> {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
}

fn parse_version(pointer: &str, text: &str) -> Result<semver::Version> {
    semver::Version::parse(text).map_err(|e| {
        Error::invalid_field(pointer, format!("`{text}` is not a SemVer version: {e}"))
    })
}

/// The published version among `versions`, if any.
fn published_of(versions: &[VersionRecord]) -> Option<&VersionRecord> {
    versions
        .iter()
        .find(|v| v.status == VersionStatus::Published)
}

/// The greatest version by SemVer precedence (unparsable versions count as lowest).
fn greatest(versions: &[VersionRecord]) -> Option<(&VersionRecord, semver::Version)> {
    versions
        .iter()
        .map(|v| {
            let parsed =
                semver::Version::parse(&v.version).unwrap_or(semver::Version::new(0, 0, 0));
            (v, parsed)
        })
        .max_by(|a, b| a.1.cmp_precedence(&b.1))
}

/// Conflict unless `version` is greater (SemVer precedence) than every one of `versions`.
fn ensure_greatest(version: &semver::Version, versions: &[VersionRecord]) -> Result<()> {
    match greatest(versions) {
        Some((top, top_v)) if version.cmp_precedence(&top_v) != std::cmp::Ordering::Greater => {
            Err(Error::conflict(format!(
                "version {version} is not greater than the existing version {}",
                top.version
            )))
        }
        _ => Ok(()),
    }
}

fn typed_manifest(version: &VersionRecord) -> Result<Manifest> {
    serde_json::from_value(version.manifest.clone()).map_err(|e| {
        Error::invalid_field(
            "",
            format!(
                "the stored manifest of {}@{} does not decode: {e}",
                version.agent_id, version.version
            ),
        )
    })
}

/// Permission error unless `by` may manage `agent` (update or archive it, add, publish or
/// archive its versions): its owner or an admin. An agent without a recorded owner (created
/// before owners were recorded) is an admin's only.
fn authorize_manage(by: &Principal, agent: &AgentRecord) -> Result<()> {
    if by.is_admin() || agent.owner.as_deref().is_some_and(|o| o == by.user_id) {
        return Ok(());
    }
    Err(Error::forbidden(format!(
        "only the owner of agent `{}` or an `{ADMIN}` may manage it",
        agent.id
    )))
}

fn parse_grant(grant: &[String]) -> Result<Vec<Scope>> {
    parse_scopes("/grant", grant)
}

impl Registry {
    /// A registry over `store`, with a host environment that provides nothing.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            env: Arc::new(Environment::new()),
        }
    }

    /// Sets the host environment that publishing checks dependencies against.
    pub fn with_environment(mut self, env: Environment) -> Self {
        self.env = Arc::new(env);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The host environment.
    pub fn environment(&self) -> &Environment {
        &self.env
    }

    /// Runs `action`, then writes its audit event: the action's payload when it succeeds,
    /// `<action>.denied` with the error when it fails.
    async fn audited<T, F>(
        &self,
        by: &Principal,
        action: Action,
        agent_id: Option<&str>,
        context: Value,
        run: F,
    ) -> Result<T>
    where
        F: Future<Output = Result<(T, Value)>>,
    {
        let result = match by.check() {
            Ok(()) => run.await,
            Err(e) => Err(e),
        };
        // An out-of-bounds principal is audited without what was out of bounds.
        let bounded;
        let by = if by.check().is_ok() {
            by
        } else {
            bounded = Principal {
                user_id: by.user_id.chars().take(64).collect(),
                user_agent: None,
                ..by.clone()
            };
            &bounded
        };
        // The audit row refers to the agent only if it exists (a foreign key in SQL stores);
        // the reference as given is in the payload of a denial.
        let resolved = match agent_id {
            Some(r) => self.store.get_agent(r).await.ok().map(|a| a.id),
            None => None,
        };
        match result {
            Ok((value, payload)) => {
                let mut event = NewAuditEvent::by(by, action.allowed(), payload);
                event.agent_id = resolved;
                self.store.append_audit(event).await?;
                Ok(value)
            }
            Err(error) => {
                let mut payload = denied_payload(&error, &context);
                if let (Some(obj), Some(r)) = (payload.as_object_mut(), agent_id) {
                    obj.insert("agent".into(), Value::String(r.to_owned()));
                }
                let mut event = NewAuditEvent::by(by, action.denied(), payload);
                event.agent_id = resolved;
                if let Err(audit_error) = self.store.append_audit(event).await {
                    tracing::warn!(action = action.name(), %audit_error, "could not audit a denied action");
                }
                Err(error)
            }
        }
    }
}
