//! What the registry takes and gives back: new agents and versions, install requests, an
//! installation as its user sees it, and the marketplace detail of an agent.

use super::*;

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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub permissions: Permissions,
    /// Execution limits.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: Config,
}

/// One line of an agent's version history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl From<VersionRecord> for VersionSummary {
    /// A stored version without its manifest.
    fn from(v: VersionRecord) -> Self {
        Self {
            version: v.version,
            status: v.status,
            changelog: v.changelog,
            published_at: v.published_at,
            created_at: v.created_at,
        }
    }
}

/// The marketplace's detail view of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentDetail {
    /// The agent.
    pub agent: AgentRecord,
    /// The published manifest, if a version is published.
    pub published: Option<ManifestExcerpt>,
    /// Every version, oldest first, with its changelog.
    pub versions: Vec<VersionSummary>,
}
