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

mod environment;
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

/// A new agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewAgent {
    /// Display name; the slug is derived from it.
    pub name: String,
    /// What the agent does.
    #[serde(default)]
    pub description: Option<String>,
    /// Marketplace category (`domain-specific`).
    #[serde(default)]
    pub category: Option<String>,
    /// The agent's id (`None`: the slug).
    #[serde(default)]
    pub id: Option<String>,
}

impl NewAgent {
    /// A new agent called `name`.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Sets the category.
    pub fn category(mut self, category: impl Into<String>) -> Self {
        self.category = Some(category.into());
        self
    }
}

/// A new version of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewVersion {
    /// The manifest (validated).
    pub manifest: Value,
    /// The version; it must equal `manifest.version` (written into the manifest when the
    /// manifest has none). `None`: the manifest's own `version`; and when the manifest has no
    /// `version` either, the registry picks the next one from the manifest diff
    /// ([`suggest_next_version`]) and writes it into the stored manifest.
    #[serde(default)]
    pub version: Option<String>,
    /// What changed.
    #[serde(default)]
    pub changelog: Option<String>,
}

impl NewVersion {
    /// A version from `manifest`: its own `version`, or, when it has none, the next version
    /// suggested from the manifest diff.
    pub fn new(manifest: Value) -> Self {
        Self {
            manifest,
            version: None,
            changelog: None,
        }
    }

    /// Sets the version explicitly.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Sets the changelog.
    pub fn changelog(mut self, changelog: impl Into<String>) -> Self {
        self.changelog = Some(changelog.into());
        self
    }
}

/// An install (or upgrade) request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallRequest {
    /// The agent (id or slug).
    pub agent: String,
    /// The version (`None`: the published one).
    #[serde(default)]
    pub version: Option<String>,
    /// The scopes granted to the agent. For an upgrade, `None` keeps the current grant.
    #[serde(default)]
    pub grant: Option<Vec<String>>,
    /// Settings. For an upgrade, `None` keeps the current settings.
    #[serde(default)]
    pub settings: Option<Value>,
}

impl InstallRequest {
    /// The published version of `agent`, nothing granted, no settings.
    pub fn latest(agent: impl Into<String>) -> Self {
        Self {
            agent: agent.into(),
            version: None,
            grant: None,
            settings: None,
        }
    }

    /// A given version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Grants scopes.
    pub fn grant<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.grant = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the settings.
    pub fn settings(mut self, settings: Value) -> Self {
        self.settings = Some(settings);
        self
    }
}

/// An installation as shown to users and written to audit: secret settings redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Installation {
    /// Identifier.
    pub id: Uuid,
    /// The agent.
    pub agent_id: String,
    /// The user it is installed for.
    pub user_id: String,
    /// The installed version.
    pub version: String,
    /// Scopes granted to the agent.
    pub granted_scopes: Vec<String>,
    /// Settings, each secret replaced by [`REDACTED`].
    pub settings: Value,
    /// JSON pointers (within `settings`) of the secrets that are set.
    pub secrets: Vec<String>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last updated at.
    pub updated_at: DateTime<Utc>,
}

/// The part of a manifest the marketplace's detail view shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestExcerpt {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: String,
    /// Placement.
    pub placement: Option<Placement>,
    /// Category.
    pub category: Option<Category>,
    /// Tools.
    pub tools: Vec<String>,
    /// Scopes, roles and data access.
    pub permissions: Permissions,
    /// Execution limits.
    pub config: Config,
}

/// One line of an agent's version history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionSummary {
    /// The version.
    pub version: String,
    /// Its status.
    pub status: VersionStatus,
    /// What changed.
    pub changelog: Option<String>,
    /// When it was published.
    pub published_at: Option<DateTime<Utc>>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// The marketplace's detail view of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDetail {
    /// The agent.
    pub agent: AgentRecord,
    /// The published manifest, if a version is published.
    pub published: Option<ManifestExcerpt>,
    /// Every version, oldest first, with its changelog.
    pub versions: Vec<VersionSummary>,
}

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
fn denied_payload(error: &Error, context: Value) -> Value {
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
                let mut payload = denied_payload(&error, context);
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

    // ----- agents -------------------------------------------------------------------------

    /// Creates an agent in `draft`, with a unique slug from its name (a duplicate is a
    /// conflict).
    pub async fn create_agent(&self, by: &Principal, new: NewAgent) -> Result<AgentRecord> {
        let slug = slugify(&new.name);
        let id = new.id.clone().unwrap_or_else(|| slug.clone());
        let context = json!({ "name": new.name, "slug": slug });
        self.audited(by, Action::CreateAgent, Some(&id), context, async {
            if !by.is_admin() && !by.has_role(PUBLISHER) {
                return Err(Error::forbidden(format!(
                    "creating an agent needs the `{PUBLISHER}` or `{ADMIN}` role"
                )));
            }
            if new.name.trim().is_empty() {
                return Err(Error::invalid_field("/name", "the name must not be blank"));
            }
            if new.name.chars().count() > 64 {
                return Err(Error::invalid_field(
                    "/name",
                    "the name is longer than 64 characters",
                ));
            }
            if let Some(c) = &new.category {
                serde_json::from_value::<Category>(Value::String(c.clone())).map_err(|_| {
                    Error::invalid_field("/category", format!("unknown category `{c}`"))
                })?;
            }
            let now = Utc::now();
            let agent = self
                .store
                .insert_agent(AgentRecord {
                    id: id.clone(),
                    name: new.name.trim().to_owned(),
                    slug: slug.clone(),
                    description: new.description.clone(),
                    category: new.category.clone(),
                    capabilities: None,
                    policy_scopes: Vec::new(),
                    manifest: None,
                    status: AgentStatus::Draft,
                    owner: Some(by.user_id.clone()),
                    created_at: now,
                    updated_at: now,
                })
                .await?;
            let payload = json!({ "name": agent.name, "slug": agent.slug, "owner": agent.owner });
            Ok((agent, payload))
        })
        .await
    }

    /// Updates an agent (PATCH semantics). A status change must be a legal transition; the
    /// slug never changes.
    pub async fn update_agent(
        &self,
        by: &Principal,
        id: &str,
        patch: AgentPatch,
    ) -> Result<AgentRecord> {
        let fields: Vec<&str> = [
            ("name", patch.name.is_some()),
            ("description", patch.description.is_some()),
            ("category", patch.category.is_some()),
            ("capabilities", patch.capabilities.is_some()),
            ("policy_scopes", patch.policy_scopes.is_some()),
            ("manifest", patch.manifest.is_some()),
            ("status", patch.status.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect();
        let context = json!({ "fields": fields });
        self.audited(by, Action::UpdateAgent, Some(id), context.clone(), async {
            let agent = self.store.get_agent(id).await?;
            authorize_manage(by, &agent)?;
            if patch.name.as_ref().is_some_and(|n| n.trim().is_empty()) {
                return Err(Error::invalid_field("/name", "the name must not be blank"));
            }
            if let Some(c) = &patch.category {
                serde_json::from_value::<Category>(Value::String(c.clone())).map_err(|_| {
                    Error::invalid_field("/category", format!("unknown category `{c}`"))
                })?;
            }
            if let Some(to) = patch.status {
                agent.status.transition(to)?;
            }
            let agent = self.store.update_agent(&agent.id, patch).await?;
            Ok((agent, context))
        })
        .await
    }

    /// Validates a manifest (JSON Schema and semantic rules), returning the typed manifest or
    /// an [`Error::Validation`] with every problem.
    pub fn validate_manifest(&self, manifest: &Value) -> Result<Manifest> {
        check_manifest(manifest)
    }

    /// The agent with this id or slug.
    pub async fn get_agent(&self, id_or_slug: &str) -> Result<AgentRecord> {
        self.store.get_agent(id_or_slug).await
    }

    /// Agents matching `filter`, by name.
    pub async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<AgentRecord>> {
        self.store.list_agents(filter).await
    }

    // ----- versions -----------------------------------------------------------------------

    /// The versions of an agent, oldest first.
    pub async fn versions(&self, agent: &str) -> Result<Vec<VersionRecord>> {
        let agent = self.store.get_agent(agent).await?;
        self.store.list_versions(&agent.id).await
    }

    /// The version [`Registry::add_version`] gives a manifest without a version: the next
    /// after the greatest existing one, by [`suggest_next_version`], or `0.1.0` for a first
    /// version. The manifest's own `version` is ignored.
    pub async fn suggest_version(&self, agent: &str, manifest: &Value) -> Result<semver::Version> {
        let mut manifest = manifest.clone();
        if let Some(obj) = manifest.as_object_mut() {
            obj.entry("version")
                .or_insert_with(|| Value::String("0.0.0".into()));
        }
        let next = check_manifest(&manifest)?;
        let agent = self.store.get_agent(agent).await?;
        let versions = self.store.list_versions(&agent.id).await?;
        self.suggest_from(&versions, &next)
    }

    fn suggest_from(&self, versions: &[VersionRecord], next: &Manifest) -> Result<semver::Version> {
        match greatest(versions) {
            None => Ok(semver::Version::new(0, 1, 0)),
            Some((prev, prev_v)) => {
                let prev_manifest = typed_manifest(prev)?;
                Ok(versioning::bump(
                    &prev_v,
                    classify_change(&prev_manifest, next),
                ))
            }
        }
    }

    /// Adds a `draft` version: the manifest is validated; its `version` must equal the version
    /// and be greater (SemVer precedence) than every existing version, else conflict.
    pub async fn add_version(
        &self,
        by: &Principal,
        agent: &str,
        new: NewVersion,
    ) -> Result<VersionRecord> {
        let context =
            json!({ "version": new.version, "manifest_version": new.manifest.get("version") });
        self.audited(by, Action::AddVersion, Some(agent), context, async {
            let agent = self.store.get_agent(agent).await?;
            authorize_manage(by, &agent)?;
            let mut stored = new.manifest.clone();
            let unversioned = stored
                .get("version")
                .and_then(Value::as_str)
                .is_none_or(|v| v.trim().is_empty());
            if let Some(obj) = stored.as_object_mut().filter(|_| unversioned) {
                // A placeholder while validating; replaced below.
                let v = new.version.clone().unwrap_or_else(|| "0.0.0".to_owned());
                obj.insert("version".into(), Value::String(v));
            }
            let mut manifest = check_manifest(&stored)?;
            let versions = self.store.list_versions(&agent.id).await?;
            let version = match &new.version {
                None if !unversioned => parse_version("/version", &manifest.version)?,
                Some(v) => {
                    let parsed = parse_version("/version", v)?;
                    let in_manifest = parse_version("/manifest/version", &manifest.version)?;
                    if parsed != in_manifest {
                        return Err(Error::conflict(format!(
                            "the version {v} differs from the manifest's version {}",
                            manifest.version
                        )));
                    }
                    parsed
                }
                None => {
                    let suggested = self.suggest_from(&versions, &manifest)?;
                    manifest.version = suggested.to_string();
                    if let Some(obj) = stored.as_object_mut() {
                        obj.insert("version".into(), Value::String(manifest.version.clone()));
                    }
                    suggested
                }
            };
            ensure_greatest(&version, &versions)?;
            let record = self
                .store
                .insert_version(VersionRecord {
                    id: Uuid::new_v4(),
                    agent_id: agent.id.clone(),
                    version: version.to_string(),
                    manifest: stored,
                    status: VersionStatus::Draft,
                    changelog: new.changelog.clone(),
                    published_at: None,
                    created_at: Utc::now(),
                })
                .await?;
            let payload = json!({ "version": record.version, "changelog": record.changelog });
            Ok((record, payload))
        })
        .await
    }

    /// Publishes a draft version: the manifest is validated again and its dependencies checked
    /// against the host [`Environment`] (every unmet one reported at its pointer); the previously
    /// published version is archived, atomically.
    pub async fn publish(
        &self,
        by: &Principal,
        agent: &str,
        version: &str,
    ) -> Result<VersionRecord> {
        let context = json!({ "version": version });
        self.audited(by, Action::Publish, Some(agent), context, async {
            let agent = self.store.get_agent(agent).await?;
            authorize_manage(by, &agent)?;
            let record = self.store.get_version(&agent.id, version).await?;
            let manifest = check_manifest(&record.manifest)?;
            let unmet = self
                .env
                .unmet(&manifest.dependencies.clone().unwrap_or_default());
            if !unmet.is_empty() {
                return Err(Error::validation("unmet dependencies", unmet));
            }
            self.publish_checked(&agent, &record, &manifest).await
        })
        .await
    }

    async fn publish_checked(
        &self,
        agent: &AgentRecord,
        record: &VersionRecord,
        manifest: &Manifest,
    ) -> Result<(VersionRecord, Value)> {
        let (published, archived) = self
            .store
            .publish_version(&agent.id, &record.version)
            .await?;
        self.store
            .update_agent(&agent.id, Self::agent_fields(manifest))
            .await?;
        let payload = json!({
            "version": published.version,
            "archived": archived.as_ref().map(|a| a.version.clone()),
        });
        Ok((published, payload))
    }

    /// The agent columns that follow the published manifest.
    fn agent_fields(manifest: &Manifest) -> AgentPatch {
        AgentPatch {
            description: Some(manifest.description.clone()),
            category: manifest.category.and_then(category_string),
            capabilities: Some(json!({
                "tools": manifest.tools,
                "tasks": manifest.tasks.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
            })),
            policy_scopes: Some(manifest.permissions().scopes),
            ..AgentPatch::default()
        }
    }

    /// Archives a version (draft or published). Archiving the published version withdraws the
    /// agent from the marketplace (the agent becomes `archived`).
    pub async fn archive_version(
        &self,
        by: &Principal,
        agent: &str,
        version: &str,
    ) -> Result<VersionRecord> {
        let context = json!({ "version": version });
        self.audited(by, Action::ArchiveVersion, Some(agent), context, async {
            let agent = self.store.get_agent(agent).await?;
            authorize_manage(by, &agent)?;
            let current = self.store.get_version(&agent.id, version).await?;
            let archived = self
                .store
                .set_version_status(&agent.id, version, current.status, VersionStatus::Archived)
                .await?;
            if current.status == VersionStatus::Published {
                self.set_agent_archived(&agent).await?;
            }
            let payload = json!({ "version": archived.version, "was": current.status });
            Ok((archived, payload))
        })
        .await
    }

    async fn set_agent_archived(&self, agent: &AgentRecord) -> Result<AgentRecord> {
        agent.status.transition(AgentStatus::Archived)?;
        let patch = AgentPatch {
            status: Some(AgentStatus::Archived),
            ..AgentPatch::default()
        };
        self.store.update_agent(&agent.id, patch).await
    }

    /// Archives an agent: its published version is archived and the agent leaves the
    /// marketplace. An archived agent comes back when a new version is published.
    pub async fn archive_agent(&self, by: &Principal, agent: &str) -> Result<AgentRecord> {
        self.audited(by, Action::ArchiveAgent, Some(agent), json!({}), async {
            let agent = self.store.get_agent(agent).await?;
            authorize_manage(by, &agent)?;
            agent.status.transition(AgentStatus::Archived)?;
            let versions = self.store.list_versions(&agent.id).await?;
            let mut archived_version = None;
            if let Some(p) = published_of(&versions) {
                self.store
                    .set_version_status(
                        &agent.id,
                        &p.version,
                        VersionStatus::Published,
                        VersionStatus::Archived,
                    )
                    .await?;
                archived_version = Some(p.version.clone());
            }
            let agent = self.set_agent_archived(&agent).await?;
            Ok((agent, json!({ "archived_version": archived_version })))
        })
        .await
    }

    /// Registers an agent compiled into the host: the agent (id = slug of the manifest's name)
    /// is created if needed and the manifest's version added and published. Idempotent: the
    /// same version registered again returns the published version unchanged. Dependencies are
    /// not checked (the host that compiled the agent in vouches for them).
    pub async fn register_native(&self, manifest: &Manifest) -> Result<VersionRecord> {
        let by = Principal::new(SYSTEM_USER);
        let slug = slugify(&manifest.name);
        let context = json!({ "name": manifest.name, "version": manifest.version });
        self.audited(&by, Action::RegisterNative, Some(&slug), context, async {
            let value = serde_json::to_value(manifest)
                .map_err(|e| Error::invalid_field("", format!("manifest: {e}")))?;
            let manifest = check_manifest(&value)?;
            let agent = match self.store.get_agent(&slug).await {
                Ok(a) => a,
                Err(Error::NotFound { .. }) => {
                    let now = Utc::now();
                    let record = AgentRecord {
                        id: slug.clone(),
                        name: manifest.name.clone(),
                        slug: slug.clone(),
                        description: Some(manifest.description.clone()),
                        category: manifest.category.and_then(category_string),
                        capabilities: None,
                        policy_scopes: Vec::new(),
                        manifest: None,
                        status: AgentStatus::Draft,
                        owner: Some(SYSTEM_USER.to_owned()),
                        created_at: now,
                        updated_at: now,
                    };
                    match self.store.insert_agent(record).await {
                        Ok(a) => a,
                        // Registered concurrently: use that one.
                        Err(Error::Conflict { .. }) => self.store.get_agent(&slug).await?,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            let version = parse_version("/version", &manifest.version)?;
            let versions = self.store.list_versions(&agent.id).await?;
            let existing = versions
                .iter()
                .find(|v| semver::Version::parse(&v.version).is_ok_and(|x| x == version));
            let record = match existing {
                Some(v) if v.status == VersionStatus::Published => {
                    let payload = json!({ "version": v.version, "unchanged": true });
                    return Ok((v.clone(), payload));
                }
                Some(v) if v.status == VersionStatus::Archived => {
                    return Err(Error::conflict(format!(
                        "version {} of `{}` is archived",
                        v.version, agent.id
                    )));
                }
                Some(v) => v.clone(),
                None => {
                    ensure_greatest(&version, &versions)?;
                    let inserted = self
                        .store
                        .insert_version(VersionRecord {
                            id: Uuid::new_v4(),
                            agent_id: agent.id.clone(),
                            version: version.to_string(),
                            manifest: value.clone(),
                            status: VersionStatus::Draft,
                            changelog: None,
                            published_at: None,
                            created_at: Utc::now(),
                        })
                        .await;
                    match inserted {
                        Ok(v) => v,
                        // Registered concurrently (nodes starting together): use that one.
                        Err(Error::Conflict { .. }) => {
                            self.store
                                .get_version(&agent.id, &version.to_string())
                                .await?
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            let unchanged = |v: VersionRecord| {
                let payload = json!({ "version": v.version, "unchanged": true });
                (v, payload)
            };
            if record.status == VersionStatus::Published {
                return Ok(unchanged(record));
            }
            match self.publish_checked(&agent, &record, &manifest).await {
                // Published concurrently by another node: the same outcome.
                Err(Error::Conflict { .. }) => {
                    let v = self.store.get_version(&agent.id, &record.version).await?;
                    if v.status == VersionStatus::Published {
                        Ok(unchanged(v))
                    } else {
                        Err(Error::conflict(format!(
                            "version {} of `{}` is {}",
                            v.version, agent.id, v.status
                        )))
                    }
                }
                other => other,
            }
        })
        .await
    }

    // ----- marketplace --------------------------------------------------------------------

    /// Published agents for the marketplace: filters (category, placement, free text over name
    /// and description, case-insensitive), sort and pagination (`limit` 1..=100).
    pub async fn catalog(&self, query: &CatalogQuery) -> Result<Page<CatalogEntry>> {
        if !(1..=100).contains(&query.limit) {
            return Err(Error::invalid_field("/limit", "must be between 1 and 100"));
        }
        let page = self.store.catalog(query).await?;
        // Blueprint §10.1: how often agents are discovered in the marketplace — one count per
        // agent version listed on a catalog page served (labels bounded by the catalog).
        for entry in &page.items {
            metrics::counter!(
                "marketplace_discovery_rate",
                "agent" => entry.agent.id.clone(),
                "version" => entry.version.version.clone()
            )
            .increment(1);
        }
        Ok(page)
    }

    /// The marketplace's detail view: the agent, its published manifest's excerpt and its
    /// version history with changelogs.
    pub async fn detail(&self, agent: &str) -> Result<AgentDetail> {
        let agent = self.store.get_agent(agent).await?;
        let versions = self.store.list_versions(&agent.id).await?;
        let published = match published_of(&versions) {
            Some(v) => {
                let m = typed_manifest(v)?;
                Some(ManifestExcerpt {
                    config: m.config(),
                    permissions: m.permissions(),
                    name: m.name,
                    version: m.version,
                    description: m.description,
                    placement: m.placement,
                    category: m.category,
                    tools: m.tools,
                })
            }
            None => None,
        };
        let versions = versions
            .into_iter()
            .map(|v| VersionSummary {
                version: v.version,
                status: v.status,
                changelog: v.changelog,
                published_at: v.published_at,
                created_at: v.created_at,
            })
            .collect();
        Ok(AgentDetail {
            agent,
            published,
            versions,
        })
    }

    // ----- installations ------------------------------------------------------------------

    /// The version to install: the one asked for (it must be published), or the published one.
    async fn installable(
        &self,
        agent: &AgentRecord,
        version: Option<&str>,
    ) -> Result<VersionRecord> {
        match version {
            Some(v) => {
                let record = self.store.get_version(&agent.id, v).await?;
                if record.status != VersionStatus::Published {
                    return Err(Error::conflict(format!(
                        "version {v} of `{}` is {}, not published",
                        agent.id, record.status
                    )));
                }
                Ok(record)
            }
            None => {
                let versions = self.store.list_versions(&agent.id).await?;
                published_of(&versions).cloned().ok_or_else(|| {
                    Error::conflict(format!("agent `{}` has no published version", agent.id))
                })
            }
        }
    }

    /// Checks roles, grant and settings of `by` for `manifest`.
    fn admit(
        by: &Principal,
        manifest: &Manifest,
        grant: &[String],
        settings: &Value,
    ) -> Result<()> {
        let permissions = manifest.permissions();
        if !by.has_any_role(&permissions.required_roles) {
            return Err(Error::forbidden(format!(
                "one of the roles {} is required",
                permissions.required_roles.join(", ")
            )));
        }
        let granted = parse_grant(grant)?;
        let required = parse_scopes("/permissions/scopes", &permissions.scopes)?;
        let missing = missing_scopes(&granted, &required);
        if !missing.is_empty() {
            return Err(Error::permission(missing.iter().map(ToString::to_string)));
        }
        let schema = manifest
            .ui
            .as_ref()
            .and_then(|u| u.settings_schema.as_ref());
        settings::validate_settings(schema, settings)
    }

    fn view(record: InstallationRecord, manifest: Option<&Manifest>) -> Installation {
        let (settings, secrets) = match manifest {
            Some(m) => settings::redact(
                m.ui.as_ref().and_then(|u| u.settings_schema.as_ref()),
                &record.settings,
            ),
            // Without the schema nothing can be shown safely.
            None => (json!({}), Vec::new()),
        };
        Installation {
            id: record.id,
            agent_id: record.agent_id,
            user_id: record.user_id,
            version: record.version,
            granted_scopes: record.granted_scopes,
            settings,
            secrets,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }

    async fn view_of(&self, record: InstallationRecord) -> Installation {
        let manifest = match self
            .store
            .get_version(&record.agent_id, &record.version)
            .await
        {
            Ok(v) => typed_manifest(&v).ok(),
            Err(_) => None,
        };
        Self::view(record, manifest.as_ref())
    }

    fn request_context(req: &InstallRequest) -> Value {
        json!({ "version": req.version, "grant": req.grant })
    }

    /// Installs an agent for `by`: the principal must hold one of the manifest's
    /// `required_roles` (else a permission error), the grant must cover the manifest's scopes
    /// (else a permission error naming exactly the missing ones), and the settings must fit the
    /// manifest's `ui.settings_schema` (errors under `/settings`). Installed already: conflict
    /// (use [`Registry::upgrade`]).
    pub async fn install(&self, by: &Principal, req: InstallRequest) -> Result<Installation> {
        let context = Self::request_context(&req);
        let agent_ref = req.agent.clone();
        self.audited(by, Action::Install, Some(&agent_ref), context, async {
            let agent = self.store.get_agent(&req.agent).await?;
            let version = self.installable(&agent, req.version.as_deref()).await?;
            let manifest = typed_manifest(&version)?;
            let grant = req.grant.clone().unwrap_or_default();
            let settings = req.settings.clone().unwrap_or_else(|| json!({}));
            Self::admit(by, &manifest, &grant, &settings)?;
            match self.store.get_installation(&agent.id, &by.user_id).await {
                Ok(_) => {
                    return Err(Error::conflict(format!(
                        "`{}` is installed already for {}",
                        agent.id, by.user_id
                    )));
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            let now = Utc::now();
            let record = self
                .store
                .upsert_installation(InstallationRecord {
                    id: Uuid::new_v4(),
                    agent_id: agent.id.clone(),
                    user_id: by.user_id.clone(),
                    version: version.version.clone(),
                    granted_scopes: grant,
                    settings,
                    created_at: now,
                    updated_at: now,
                })
                .await?;
            let view = Self::view(record, Some(&manifest));
            let payload = json!({
                "version": view.version,
                "granted_scopes": view.granted_scopes,
                "settings": view.settings,
            });
            Ok((view, payload))
        })
        .await
    }

    /// Moves an installation to another published version (`None`: the published one). A
    /// version that asks for more scopes needs a grant covering them (else a permission error
    /// listing exactly the new scopes); `grant` and `settings` left `None` keep the current ones.
    pub async fn upgrade(&self, by: &Principal, req: InstallRequest) -> Result<Installation> {
        let context = Self::request_context(&req);
        let agent_ref = req.agent.clone();
        self.audited(by, Action::Upgrade, Some(&agent_ref), context, async {
            let agent = self.store.get_agent(&req.agent).await?;
            let current = self.store.get_installation(&agent.id, &by.user_id).await?;
            let version = self.installable(&agent, req.version.as_deref()).await?;
            let manifest = typed_manifest(&version)?;
            let grant = req
                .grant
                .clone()
                .unwrap_or_else(|| current.granted_scopes.clone());
            let settings = req
                .settings
                .clone()
                .unwrap_or_else(|| current.settings.clone());
            Self::admit(by, &manifest, &grant, &settings)?;
            let from = current.version.clone();
            let record = self
                .store
                .upsert_installation(InstallationRecord {
                    version: version.version.clone(),
                    granted_scopes: grant,
                    settings,
                    ..current
                })
                .await?;
            let view = Self::view(record, Some(&manifest));
            let payload = json!({
                "from": from,
                "to": view.version,
                "granted_scopes": view.granted_scopes,
                "settings": view.settings,
            });
            Ok((view, payload))
        })
        .await
    }

    /// Replaces the settings of an installation (validated against the installed version's
    /// schema).
    pub async fn update_settings(
        &self,
        by: &Principal,
        agent: &str,
        settings: Value,
    ) -> Result<Installation> {
        self.audited(by, Action::UpdateSettings, Some(agent), json!({}), async {
            let agent = self.store.get_agent(agent).await?;
            let current = self.store.get_installation(&agent.id, &by.user_id).await?;
            let version = self.store.get_version(&agent.id, &current.version).await?;
            let manifest = typed_manifest(&version)?;
            let schema = manifest
                .ui
                .as_ref()
                .and_then(|u| u.settings_schema.as_ref());
            settings::validate_settings(schema, &settings)?;
            let record = self
                .store
                .upsert_installation(InstallationRecord {
                    settings,
                    ..current
                })
                .await?;
            let view = Self::view(record, Some(&manifest));
            let payload = json!({ "settings": view.settings });
            Ok((view, payload))
        })
        .await
    }

    /// Removes the installation of `agent` for `by`; not installed → not-found.
    pub async fn uninstall(&self, by: &Principal, agent: &str) -> Result<()> {
        self.audited(by, Action::Uninstall, Some(agent), json!({}), async {
            let agent = self.store.get_agent(agent).await?;
            let current = self.store.get_installation(&agent.id, &by.user_id).await?;
            self.store
                .delete_installation(&agent.id, &by.user_id)
                .await?;
            Ok(((), json!({ "version": current.version })))
        })
        .await
    }

    /// The installation of `agent` for `user_id`, secrets redacted.
    pub async fn installation(&self, agent: &str, user_id: &str) -> Result<Installation> {
        let agent = self.store.get_agent(agent).await?;
        let record = self.store.get_installation(&agent.id, user_id).await?;
        Ok(self.view_of(record).await)
    }

    /// The installations of `user_id`, secrets redacted.
    pub async fn installations(&self, user_id: &str) -> Result<Vec<Installation>> {
        let records = self.store.list_installations(user_id).await?;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            out.push(self.view_of(r).await);
        }
        Ok(out)
    }
}
