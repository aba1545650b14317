//! The client commands' arguments (clap): what each subcommand takes.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::client::Request;

/// `capecontrol agents …`
#[derive(Debug, Subcommand)]
pub(crate) enum AgentsCommand {
    /// List agents.
    List {
        /// Only agents in this status (draft, published, archived).
        #[arg(long)]
        status: Option<String>,
        /// Only agents of this category.
        #[arg(long)]
        category: Option<String>,
        /// Only agents owned by this user.
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one agent.
    Show {
        /// The agent (id or slug).
        agent: String,
    },
    /// Create an agent (a draft; its slug is made from the name).
    Create {
        /// The agent's name.
        name: String,
        /// A description.
        #[arg(long)]
        description: Option<String>,
        /// The category (ai-assisted, domain-specific, middleware, utility).
        #[arg(long)]
        category: Option<String>,
    },
    /// Change an agent's name, description or category.
    Update {
        /// The agent (id or slug).
        agent: String,
        /// The new name.
        #[arg(long)]
        name: Option<String>,
        /// The new description.
        #[arg(long)]
        description: Option<String>,
        /// The new category.
        #[arg(long)]
        category: Option<String>,
    },
    /// Archive an agent.
    Archive {
        /// The agent (id or slug).
        agent: String,
    },
    /// Validate a manifest on the server, printing every problem with its JSON pointer.
    Validate {
        /// The agent (id or slug).
        agent: String,
        /// The manifest file.
        file: PathBuf,
    },
}

/// `capecontrol versions …`
#[derive(Debug, Subcommand)]
pub(crate) enum VersionsCommand {
    /// List an agent's versions.
    List {
        /// The agent (id or slug).
        agent: String,
    },
    /// Add a version (a draft) from a manifest file.
    Add {
        /// The agent (id or slug).
        agent: String,
        /// The manifest file.
        file: PathBuf,
        /// The version (default: the manifest's, or the suggested next one).
        #[arg(long)]
        version: Option<String>,
        /// What changed.
        #[arg(long)]
        changelog: Option<String>,
    },
    /// Suggest the next version number for a manifest (from its differences to the latest).
    Suggest {
        /// The agent (id or slug).
        agent: String,
        /// The manifest file.
        file: PathBuf,
    },
    /// Publish a version (the previously published one is archived).
    Publish {
        /// The agent (id or slug).
        agent: String,
        /// The version.
        version: String,
    },
    /// Archive a version.
    Archive {
        /// The agent (id or slug).
        agent: String,
        /// The version.
        version: String,
    },
}

/// `capecontrol catalog`
#[derive(Debug, Args)]
pub(crate) struct CatalogArgs {
    /// Show this agent's marketplace detail (manifest excerpt, versions, changelog) instead.
    pub(crate) agent: Option<String>,
    /// Only agents of this category.
    #[arg(long)]
    pub(crate) category: Option<String>,
    /// Only agents shown in this UI placement.
    #[arg(long)]
    pub(crate) placement: Option<String>,
    /// Text search in names and descriptions.
    #[arg(long, short)]
    pub(crate) q: Option<String>,
    /// Sort order (as the server names it, e.g. name, newest).
    #[arg(long)]
    pub(crate) sort: Option<String>,
    /// List the categories with their counts instead.
    #[arg(long, conflicts_with = "agent")]
    pub(crate) categories: bool,
    #[command(flatten)]
    pub(crate) page: PageArgs,
}

/// `capecontrol install`
#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// The agent (id or slug).
    pub(crate) agent: String,
    /// The version (default: the published one).
    #[arg(long)]
    pub(crate) version: Option<String>,
    /// A scope to grant (repeat, or comma-separate); the manifest's scopes must all be granted.
    #[arg(long, value_delimiter = ',')]
    pub(crate) grant: Vec<String>,
    /// The settings, as a JSON object.
    #[arg(long, value_name = "JSON")]
    pub(crate) settings: Option<String>,
}

/// `capecontrol upgrade`
#[derive(Debug, Args)]
pub(crate) struct UpgradeArgs {
    /// The agent (id or slug).
    pub(crate) agent: String,
    /// The version (default: the published one).
    #[arg(long)]
    pub(crate) version: Option<String>,
    /// A scope to grant (repeat, or comma-separate): the new version's scopes must all be granted.
    #[arg(long, value_delimiter = ',')]
    pub(crate) grant: Vec<String>,
}

/// `capecontrol settings`
#[derive(Debug, Args)]
pub(crate) struct SettingsArgs {
    /// The agent (id or slug).
    pub(crate) agent: String,
    /// The new settings, as a JSON object.
    #[arg(value_name = "JSON")]
    pub(crate) settings: String,
}

/// `capecontrol tasks …`
#[derive(Debug, Subcommand)]
pub(crate) enum TasksCommand {
    /// Submit a task to an installed agent; prints the task id (or follows it with --watch).
    Submit {
        /// The agent (id or slug).
        agent: String,
        /// The task's name (one of the manifest's tasks).
        task: String,
        /// The input, as JSON.
        #[arg(
            long,
            value_name = "JSON",
            default_value = "{}",
            conflicts_with = "input_file"
        )]
        input: String,
        /// Read the input from a JSON file instead.
        #[arg(long, value_name = "FILE")]
        input_file: Option<PathBuf>,
        /// The priority (higher first).
        #[arg(long)]
        priority: Option<i32>,
        /// Do not run before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        run_at: Option<String>,
        /// An idempotency key: submitting again with it returns the first task.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Follow the task's events until it ends (like `tasks watch`).
        #[arg(long)]
        watch: bool,
    },
    /// Show a task: status, output, error, attempts, steps.
    Get {
        /// The task id.
        task_id: String,
    },
    /// List the current user's tasks.
    List {
        /// Only tasks in this status.
        #[arg(long)]
        status: Option<String>,
        /// Only tasks of this agent.
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Cancel a task.
    Cancel {
        /// The task id.
        task_id: String,
    },
    /// Answer the question a waiting task asked (`ask_user`); the task is queued again.
    Answer {
        /// The task id.
        task_id: String,
        /// The answer, JSON matching the question's schema (see the `waiting_for_input` event).
        answer: String,
    },
    /// Follow a task's events as they happen, until it completes, fails or is cancelled.
    ///
    /// Exits 0 when it completed, 1 when it failed or was cancelled.
    Watch {
        /// The task id.
        task_id: String,
        /// Start after this event sequence number (0: from the first event).
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}

/// `capecontrol audit`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AuditArgs {
    /// `verify`: check the audit chain of a PostgreSQL database (local, no server).
    #[command(subcommand)]
    pub(crate) verify: Option<AuditCommand>,
    /// Only events of this task.
    #[arg(long)]
    pub(crate) task: Option<String>,
    /// Only events of this agent.
    #[arg(long)]
    pub(crate) agent: Option<String>,
    /// Only events by this user.
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Only events of this type (e.g. task.submitted).
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) event_type: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Only events before this time (RFC 3339).
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// Continue from this cursor (the `next_cursor` of the previous page).
    #[arg(long)]
    pub(crate) cursor: Option<String>,
    /// At most this many events.
    #[arg(long)]
    pub(crate) limit: Option<u32>,
}

/// `capecontrol audit verify`
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Walk the tamper-evident audit chain and name the first row that was edited, deleted or
    /// inserted out of band. Exits 0 when the chain is intact, 1 when it is not.
    Verify {
        /// The PostgreSQL database.
        #[arg(
            long,
            env = "CAPECONTROL_DATABASE_URL",
            hide_env_values = true,
            value_name = "URL"
        )]
        database_url: String,
    },
}

/// `capecontrol keys …`
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Create an API key bound to a user and roles; the key is printed once.
    Create {
        /// The user the key authenticates as.
        #[arg(long)]
        user: String,
        /// A role of that user (repeat, or comma-separate).
        #[arg(long, value_delimiter = ',')]
        role: Vec<String>,
        /// A name to recognise the key by.
        #[arg(long)]
        name: Option<String>,
        /// Create it directly in this PostgreSQL database instead of through the server.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Revoke an API key by its id.
    Revoke {
        /// The key's id.
        id: String,
        /// Revoke it directly in this PostgreSQL database instead of through the server.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
}

/// `--limit` and `--offset`.
#[derive(Debug, Args)]
pub(crate) struct PageArgs {
    /// At most this many items (the server caps it at 100).
    #[arg(long)]
    pub(crate) limit: Option<u32>,
    /// Skip this many items.
    #[arg(long)]
    pub(crate) offset: Option<u32>,
}

impl PageArgs {
    pub(crate) fn apply<'a>(&self, r: Request<'a>) -> Request<'a> {
        r.query("limit", self.limit).query("offset", self.offset)
    }
}
