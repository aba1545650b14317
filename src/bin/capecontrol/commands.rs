//! The client commands: each one request (or one event stream) to the server's HTTP API.

use std::path::Path;
use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use crate::args::{
    AgentsCommand, AuditArgs, AuditCommand, CatalogArgs, KeysCommand, TasksCommand, VersionsCommand,
};
use crate::client::{CliError, Client, Request};
use crate::output;
use crate::{Command, Remote};

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
