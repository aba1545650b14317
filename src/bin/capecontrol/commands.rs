//! The client commands: each one request (or one event stream) to the server's HTTP API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{CliError, Client, Request};
use crate::output;
use crate::{Command, Remote};

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
    agent: Option<String>,
    /// Only agents of this category.
    #[arg(long)]
    category: Option<String>,
    /// Only agents shown in this UI placement.
    #[arg(long)]
    placement: Option<String>,
    /// Text search in names and descriptions.
    #[arg(long, short)]
    q: Option<String>,
    /// Sort order (as the server names it, e.g. name, newest).
    #[arg(long)]
    sort: Option<String>,
    /// List the categories with their counts instead.
    #[arg(long, conflicts_with = "agent")]
    categories: bool,
    #[command(flatten)]
    page: PageArgs,
}

/// `capecontrol install`
#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// The agent (id or slug).
    agent: String,
    /// The version (default: the published one).
    #[arg(long)]
    version: Option<String>,
    /// A scope to grant (repeat, or comma-separate); the manifest's scopes must all be granted.
    #[arg(long, value_delimiter = ',')]
    grant: Vec<String>,
    /// The settings, as a JSON object.
    #[arg(long, value_name = "JSON")]
    settings: Option<String>,
}

/// `capecontrol upgrade`
#[derive(Debug, Args)]
pub(crate) struct UpgradeArgs {
    /// The agent (id or slug).
    agent: String,
    /// The version (default: the published one).
    #[arg(long)]
    version: Option<String>,
    /// A scope to grant (repeat, or comma-separate): the new version's scopes must all be granted.
    #[arg(long, value_delimiter = ',')]
    grant: Vec<String>,
}

/// `capecontrol settings`
#[derive(Debug, Args)]
pub(crate) struct SettingsArgs {
    /// The agent (id or slug).
    agent: String,
    /// The new settings, as a JSON object.
    #[arg(value_name = "JSON")]
    settings: String,
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
    task: Option<String>,
    /// Only events of this agent.
    #[arg(long)]
    agent: Option<String>,
    /// Only events by this user.
    #[arg(long)]
    user: Option<String>,
    /// Only events of this type (e.g. task.submitted).
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Only events before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Continue from this cursor (the `next_cursor` of the previous page).
    #[arg(long)]
    cursor: Option<String>,
    /// At most this many events.
    #[arg(long)]
    limit: Option<u32>,
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
    limit: Option<u32>,
    /// Skip this many items.
    #[arg(long)]
    offset: Option<u32>,
}

impl PageArgs {
    fn apply<'a>(&self, r: Request<'a>) -> Request<'a> {
        r.query("limit", self.limit).query("offset", self.offset)
    }
}

/// Runs a client command.
pub(crate) async fn run(remote: &Remote, command: Command) -> Result<ExitCode, CliError> {
    let client = Client::new(&remote.server, remote.key.clone())?;
    let json = remote.json;
    let (body, print): (Value, fn(&Value)) = match command {
        Command::Agents(c) => agents(&client, c).await?,
        Command::Versions(c) => versions(&client, c).await?,
        Command::Catalog(a) => catalog(&client, a).await?,
        Command::Installations => (
            client.send(Request::get(&["api", "installations"])).await?,
            output::installations,
        ),
        Command::Install(a) => {
            let mut body = json!({"agent": a.agent, "grant": a.grant});
            if let Some(v) = a.version {
                body["version"] = json!(v);
            }
            if let Some(s) = a.settings {
                body["settings"] = parse_json("--settings", &s)?;
            }
            (
                client
                    .send(Request::post(&["api", "installations"], body))
                    .await?,
                output::installation,
            )
        }
        Command::Upgrade(a) => {
            let mut body = json!({"grant": a.grant});
            if let Some(v) = a.version {
                body["version"] = json!(v);
            }
            (
                client
                    .send(Request::post(
                        &["api", "installations", &a.agent, "upgrade"],
                        body,
                    ))
                    .await?,
                output::installation,
            )
        }
        Command::Settings(a) => {
            let settings = parse_json("SETTINGS", &a.settings)?;
            (
                client
                    .send(
                        Request::new(
                            Method::PATCH,
                            &["api", "installations", &a.agent, "settings"],
                        )
                        .body(json!({"settings": settings})),
                    )
                    .await?,
                output::installation,
            )
        }
        Command::Uninstall { agent } => {
            client
                .send(Request::new(
                    Method::DELETE,
                    &["api", "installations", &agent],
                ))
                .await?;
            if !json {
                println!("uninstalled {agent}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Tasks(c) => return tasks(&client, json, c).await,
        Command::Audit(AuditArgs {
            verify: Some(AuditCommand::Verify { database_url }),
            ..
        }) => return verify_audit(&database_url, json).await,
        Command::Audit(a) => {
            let r = Request::get(&["api", "audit"])
                .query("task", a.task)
                .query("agent", a.agent)
                .query("user", a.user)
                .query("type", a.event_type)
                .query("since", a.since)
                .query("until", a.until)
                .query("cursor", a.cursor)
                .query("limit", a.limit);
            (client.send(r).await?, output::audit)
        }
        Command::Keys(KeysCommand::Create {
            user,
            role,
            name,
            database_url: Some(url),
        }) => {
            let keys = local_keys(&url).await?;
            let created = keys
                .create(&local_admin(), &user, &role, name.as_deref().unwrap_or(""))
                .await
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let body = json!({"id": created.id, "key": created.key, "user_id": created.user_id,
                              "roles": created.roles, "name": created.name});
            (body, output::key)
        }
        Command::Keys(KeysCommand::Revoke {
            id,
            database_url: Some(url),
        }) => {
            let keys = local_keys(&url).await?;
            keys.revoke(&local_admin(), &id)
                .await
                .map_err(|e| CliError::Usage(e.to_string()))?;
            if !json {
                println!("revoked {id}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Keys(KeysCommand::Create {
            user, role, name, ..
        }) => {
            let mut body = json!({"user_id": user, "roles": role});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            (
                client.send(Request::post(&["api", "keys"], body)).await?,
                output::key,
            )
        }
        Command::Keys(KeysCommand::Revoke { id, .. }) => {
            client
                .send(Request::new(Method::DELETE, &["api", "keys", &id]))
                .await?;
            if !json {
                println!("revoked {id}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Migrate { database_url } => return migrate(&database_url).await,
        Command::Serve(_) | Command::Manifest(_) => {
            return Err(CliError::Usage("not a client command".into()));
        }
    };
    if json {
        output::json(&body);
    } else {
        print(&body);
    }
    Ok(ExitCode::SUCCESS)
}

type Answer = (Value, fn(&Value));

async fn agents(client: &Client, command: AgentsCommand) -> Result<Answer, CliError> {
    Ok(match command {
        AgentsCommand::List {
            status,
            category,
            owner,
            page,
        } => {
            let r = Request::get(&["api", "agents"])
                .query("status", status)
                .query("category", category)
                .query("owner", owner);
            (client.send(page.apply(r)).await?, output::agents)
        }
        AgentsCommand::Show { agent } => (
            client
                .send(Request::get(&["api", "agents", &agent]))
                .await?,
            output::agent,
        ),
        AgentsCommand::Create {
            name,
            description,
            category,
        } => {
            let mut body = json!({"name": name});
            insert(&mut body, "description", description);
            insert(&mut body, "category", category);
            (
                client.send(Request::post(&["api", "agents"], body)).await?,
                output::agent,
            )
        }
        AgentsCommand::Update {
            agent,
            name,
            description,
            category,
        } => {
            let mut body = json!({});
            insert(&mut body, "name", name);
            insert(&mut body, "description", description);
            insert(&mut body, "category", category);
            (
                client
                    .send(Request::new(Method::PATCH, &["api", "agents", &agent]).body(body))
                    .await?,
                output::agent,
            )
        }
        AgentsCommand::Archive { agent } => (
            client
                .send(Request::new(
                    Method::POST,
                    &["api", "agents", &agent, "archive"],
                ))
                .await?,
            output::agent,
        ),
        AgentsCommand::Validate { agent, file } => {
            let manifest = read_json(&file)?;
            (
                client
                    .send(Request::post(
                        &["api", "agents", &agent, "validate"],
                        manifest,
                    ))
                    .await?,
                output::validation,
            )
        }
    })
}

async fn versions(client: &Client, command: VersionsCommand) -> Result<Answer, CliError> {
    Ok(match command {
        VersionsCommand::List { agent } => (
            client
                .send(Request::get(&["api", "agents", &agent, "versions"]))
                .await?,
            output::versions,
        ),
        VersionsCommand::Add {
            agent,
            file,
            version,
            changelog,
        } => {
            let mut body = json!({"manifest": read_json(&file)?});
            insert(&mut body, "version", version);
            insert(&mut body, "changelog", changelog);
            (
                client
                    .send(Request::post(&["api", "agents", &agent, "versions"], body))
                    .await?,
                output::version,
            )
        }
        VersionsCommand::Suggest { agent, file } => (
            client
                .send(Request::post(
                    &["api", "agents", &agent, "versions", "suggest"],
                    read_json(&file)?,
                ))
                .await?,
            output::suggested,
        ),
        VersionsCommand::Publish { agent, version } => (
            client
                .send(Request::new(
                    Method::POST,
                    &["api", "agents", &agent, "versions", &version, "publish"],
                ))
                .await?,
            output::version,
        ),
        VersionsCommand::Archive { agent, version } => (
            client
                .send(Request::new(
                    Method::POST,
                    &["api", "agents", &agent, "versions", &version, "archive"],
                ))
                .await?,
            output::version,
        ),
    })
}

async fn catalog(client: &Client, a: CatalogArgs) -> Result<Answer, CliError> {
    if a.categories {
        return Ok((
            client
                .send(Request::get(&["api", "marketplace", "categories"]))
                .await?,
            output::categories,
        ));
    }
    if let Some(agent) = a.agent {
        return Ok((
            client
                .send(Request::get(&["api", "marketplace", &agent]))
                .await?,
            output::detail,
        ));
    }
    let r = Request::get(&["api", "marketplace"])
        .query("category", a.category)
        .query("placement", a.placement)
        .query("q", a.q)
        .query("sort", a.sort);
    Ok((client.send(a.page.apply(r)).await?, output::catalog))
}

async fn tasks(client: &Client, json: bool, command: TasksCommand) -> Result<ExitCode, CliError> {
    let (body, print): Answer = match command {
        TasksCommand::Submit {
            agent,
            task,
            input,
            input_file,
            priority,
            run_at,
            idempotency_key,
            watch,
        } => {
            let input = match input_file {
                Some(file) => read_json(&file)?,
                None => parse_json("--input", &input)?,
            };
            let mut body = json!({"task": task, "input": input});
            insert(&mut body, "priority", priority);
            insert(&mut body, "run_at", run_at);
            let submitted = client
                .send(
                    Request::post(&["api", "agents", &agent, "tasks"], body)
                        .header("idempotency-key", idempotency_key),
                )
                .await?;
            if !watch {
                (submitted, output::submitted)
            } else {
                let id = output::task_id(&submitted).ok_or_else(|| {
                    CliError::Usage("the server's answer to the submit names no task id".into())
                })?;
                if json {
                    output::json(&submitted);
                } else {
                    println!("submitted task {id}");
                }
                return watch_task(client, json, &id, 0).await;
            }
        }
        TasksCommand::Get { task_id } => (
            client
                .send(Request::get(&["api", "agents", "tasks", &task_id]))
                .await?,
            output::task,
        ),
        TasksCommand::List {
            status,
            agent,
            page,
        } => {
            let r = Request::get(&["api", "agents", "tasks"])
                .query("status", status)
                .query("agent", agent);
            (client.send(page.apply(r)).await?, output::tasks)
        }
        TasksCommand::Cancel { task_id } => (
            client
                .send(Request::new(
                    Method::POST,
                    &["api", "agents", "tasks", &task_id, "cancel"],
                ))
                .await?,
            output::task,
        ),
        TasksCommand::Answer { task_id, answer } => {
            let answer = parse_json("ANSWER", &answer)?;
            (
                client
                    .send(Request::post(
                        &["api", "agents", "tasks", &task_id, "answer"],
                        json!({ "answer": answer }),
                    ))
                    .await?,
                output::task,
            )
        }
        TasksCommand::Watch { task_id, after } => {
            return watch_task(client, json, &task_id, after).await;
        }
    };
    if json {
        output::json(&body);
    } else {
        print(&body);
    }
    Ok(ExitCode::SUCCESS)
}

async fn watch_task(
    client: &Client,
    json: bool,
    task_id: &str,
    after: u64,
) -> Result<ExitCode, CliError> {
    let terminal = client
        .watch(task_id, after, |event| {
            if json {
                output::json(event);
            } else {
                output::event(event);
            }
        })
        .await?;
    Ok(if terminal == "completed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `capecontrol migrate --database-url URL`: applies PostgreSQL migrations.
async fn migrate(url: &str) -> Result<ExitCode, CliError> {
    let store = capecontrol::postgres::PostgresStore::connect(url)
        .await
        .map_err(|e| CliError::Usage(format!("cannot connect to the database: {e}")))?;
    store
        .migrate()
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    println!("migrated");
    Ok(ExitCode::SUCCESS)
}

/// `capecontrol audit verify --database-url URL`: walks the audit chain
/// (`capecontrol_core::audit::verify_chain`) without migrating anything.
async fn verify_audit(url: &str, json: bool) -> Result<ExitCode, CliError> {
    let store = capecontrol::postgres::PostgresStore::connect(url)
        .await
        .map_err(|e| CliError::Usage(format!("cannot connect to the database: {e}")))?;
    let report = capecontrol::audit::verify_chain(&store)
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if json {
        output::json(&serde_json::to_value(&report).unwrap_or_default());
    } else {
        match &report.first_bad {
            None => println!("audit chain intact: {} rows", report.rows),
            Some(bad) => println!(
                "audit chain broken after {} good rows: row id {} at seq {}: {:?}",
                report.rows,
                bad.id.map_or_else(|| "-".to_owned(), |i| i.to_string()),
                bad.seq,
                bad.fault
            ),
        }
    }
    Ok(if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The operator running a local command: an admin, as seen by the audit trail.
fn local_admin() -> capecontrol::policy::Principal {
    capecontrol::policy::Principal::new("capecontrol-cli").with_roles(["admin"])
}

/// API keys kept in a PostgreSQL database (migrated first).
async fn local_keys(url: &str) -> Result<capecontrol::http::ApiKeys, CliError> {
    let store = capecontrol::postgres::PostgresStore::connect(url)
        .await
        .map_err(|e| CliError::Usage(format!("cannot connect to the database: {e}")))?;
    store
        .migrate()
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(capecontrol::http::ApiKeys::new(std::sync::Arc::new(store)))
}

fn insert(body: &mut Value, name: &str, value: Option<impl Into<Value>>) {
    if let (Some(v), Some(map)) = (value, body.as_object_mut()) {
        map.insert(name.to_string(), v.into());
    }
}

fn parse_json(what: &str, text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text).map_err(|e| CliError::Usage(format!("{what} is not JSON: {e}")))
}

/// Reads a JSON file (a manifest, an input) of at most the manifest size limit.
fn read_json(path: &Path) -> Result<Value, CliError> {
    let name = path.display();
    let bytes = match crate::read_manifest(path) {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => return Err(CliError::Usage(format!("{name}: {}", e.message))),
        Err(e) => return Err(CliError::Usage(format!("cannot read {name}: {e}"))),
    };
    serde_json::from_slice(&bytes).map_err(|e| CliError::Usage(format!("{name} is not JSON: {e}")))
}
