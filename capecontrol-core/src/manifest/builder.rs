//! [`ManifestBuilder`]: a manifest written in code and validated like a `manifest.json`.

use serde_json::Value;

use super::{
    Category, Config, Manifest, Permissions, Placement, Runtime, TaskDecl, ToolDecl, Triggers, Ui,
};
use crate::error::FieldError;

/// Builds a [`Manifest`] in code; [`build`](Self::build) validates it with every rule a
/// `manifest.json` goes through ([`crate::validate::validate_manifest`]) and returns every
/// problem at once, as JSON pointers into the manifest it would serialize to.
///
/// ```
/// use capecontrol_core::manifest::{Category, Manifest};
///
/// let manifest = Manifest::builder("FinanceAgent", "1.2.0", "Budgets and payments.")
///     .category(Category::DomainSpecific)
///     .tool("get_budget")
///     .scope("finance:read")
///     .timeout(60)
///     .memory_limit("1.5GB")
///     .schedule("0 9 * * MON")
///     .build()
///     .unwrap();
/// assert_eq!(manifest.config().timeout, 60);
///
/// let errors = Manifest::builder("FinanceAgent", "1.2", "Budgets.")
///     .scope("Finance")
///     .memory_limit("5MB")
///     .build()
///     .unwrap_err();
/// let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
/// assert_eq!(pointers, ["/version", "/config/memory_limit", "/permissions/scopes/0"]);
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ManifestBuilder {
    manifest: Manifest,
}

impl Manifest {
    /// A builder of a manifest with these required fields; see [`ManifestBuilder`].
    pub fn builder(
        name: impl Into<String>,
        version: impl Into<String>,
        description: impl Into<String>,
    ) -> ManifestBuilder {
        ManifestBuilder {
            manifest: Manifest {
                name: name.into(),
                version: version.into(),
                description: description.into(),
                placement: None,
                category: None,
                tools: Vec::new(),
                dependencies: None,
                config: None,
                permissions: None,
                triggers: None,
                ui: None,
                runtime: None,
                tasks: Vec::new(),
                tool_specs: Vec::new(),
            },
        }
    }
}

impl ManifestBuilder {
    fn config_mut(&mut self) -> &mut Config {
        self.manifest.config.get_or_insert_with(Config::default)
    }

    fn permissions_mut(&mut self) -> &mut Permissions {
        self.manifest
            .permissions
            .get_or_insert_with(Permissions::default)
    }

    fn triggers_mut(&mut self) -> &mut Triggers {
        self.manifest.triggers.get_or_insert_with(Triggers::default)
    }

    /// `placement`.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.manifest.placement = Some(placement);
        self
    }

    /// `category`.
    pub fn category(mut self, category: Category) -> Self {
        self.manifest.category = Some(category);
        self
    }

    /// Adds a name to `tools`.
    pub fn tool(mut self, name: impl Into<String>) -> Self {
        self.manifest.tools.push(name.into());
        self
    }

    /// `config.timeout`, in seconds.
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.config_mut().timeout = seconds;
        self
    }

    /// `config.retries`.
    pub fn retries(mut self, retries: u32) -> Self {
        self.config_mut().retries = retries;
        self
    }

    /// `config.memory_limit` (`512MB`, `1.5GB`, `1GiB`).
    pub fn memory_limit(mut self, limit: impl Into<String>) -> Self {
        self.config_mut().memory_limit = Some(limit.into());
        self
    }

    /// `config.cpu_limit` (`"0.5"`).
    pub fn cpu_limit(mut self, cores: impl Into<String>) -> Self {
        self.config_mut().cpu_limit = Some(cores.into());
        self
    }

    /// `config.ask_timeout`, in seconds: how long `ask_user` waits by default.
    pub fn ask_timeout(mut self, seconds: u32) -> Self {
        self.config_mut().ask_timeout = Some(seconds);
        self
    }

    /// `config.concurrent_tasks`.
    pub fn concurrent_tasks(mut self, n: u32) -> Self {
        self.config_mut().concurrent_tasks = n;
        self
    }

    /// Adds a scope to `permissions.scopes`.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.permissions_mut().scopes.push(scope.into());
        self
    }

    /// Adds a role to `permissions.required_roles`.
    pub fn required_role(mut self, role: impl Into<String>) -> Self {
        self.permissions_mut().required_roles.push(role.into());
        self
    }

    /// Adds an entry to `permissions.data_access`.
    pub fn data_access(mut self, data: impl Into<String>) -> Self {
        self.permissions_mut().data_access.push(data.into());
        self
    }

    /// Adds an event to `triggers.events`.
    pub fn event(mut self, event: impl Into<String>) -> Self {
        self.triggers_mut().events.push(event.into());
        self
    }

    /// Adds a 5-field cron expression to `triggers.schedules`.
    pub fn schedule(mut self, cron: impl Into<String>) -> Self {
        self.triggers_mut().schedules.push(cron.into());
        self
    }

    /// Adds a path to `triggers.webhooks`.
    pub fn webhook(mut self, path: impl Into<String>) -> Self {
        self.triggers_mut().webhooks.push(path.into());
        self
    }

    /// `ui`.
    pub fn ui(mut self, ui: Ui) -> Self {
        self.manifest.ui = Some(ui);
        self
    }

    /// `runtime`: a container image and its command (empty: the image's entrypoint).
    pub fn container<I, S>(mut self, image: impl Into<String>, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.manifest.runtime = Some(Runtime::Container {
            image: image.into(),
            command: command.into_iter().map(Into::into).collect(),
            env: Default::default(),
        });
        self
    }

    /// Adds a task declaration to `tasks`.
    pub fn task(mut self, task: TaskDecl) -> Self {
        self.manifest.tasks.push(task);
        self
    }

    /// Adds a tool declaration to `tool_specs`.
    pub fn tool_spec(mut self, spec: ToolDecl) -> Self {
        self.manifest.tool_specs.push(spec);
        self
    }

    /// The manifest, validated with every rule of a `manifest.json`, or every problem found.
    pub fn build(self) -> Result<Manifest, Vec<FieldError>> {
        let value = serde_json::to_value(&self.manifest).unwrap_or(Value::Null);
        crate::validate::validate_manifest(&value)
    }
}
