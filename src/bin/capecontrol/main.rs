//! The `capecontrol` command-line tool: the server (`serve`), a client of its HTTP API, and
//! local tools for agent authors, CI pipelines and operators.
//!
//! ```text
//! capecontrol serve [--listen ADDR] [--database-url URL] [--docker] [--demo]   run a node
//! capecontrol agents list|show|create|update|archive|validate                  agents
//! capecontrol versions list|add|suggest|publish|archive                          versions
//! capecontrol catalog [show ID]                                                   marketplace
//! capecontrol installations | install | upgrade | settings | uninstall           installs
//! capecontrol tasks submit|get|list|cancel|answer|watch                         tasks
//! capecontrol audit [--task ID …]                                                the audit trail
//! capecontrol keys create|revoke                                                 API keys
//! capecontrol migrate --database-url URL                                         migrate PostgreSQL
//! capecontrol manifest validate [--json] FILE...                                 validate manifests
//! capecontrol manifest schema                                                    the manifest schema
//! ```
//!
//! The client commands talk to `--server` (env `CAPECONTROL_URL`, default
//! `http://127.0.0.1:8080`) with the API key `--key` (env `CAPECONTROL_KEY`). They print
//! human-readable text, or the server's JSON with `--json`.
//!
//! Exit status: 0 on success; 1 when the server refused the request (its problem is printed on
//! stderr), when a manifest is invalid, or when a watched task failed or was cancelled; 2 for a
//! usage error, an unreadable file or an unreachable server.

mod args;
mod client;
mod commands;
mod demo;
mod demo_slow;
mod output;
mod serve;

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use capecontrol::error::FieldError;
use capecontrol::validate::{
    MAX_MANIFEST_BYTES, manifest_schema_string, too_large_error, validate_manifest_bytes,
};
use clap::{Args, Parser, Subcommand};

use crate::client::CliError;

/// CapeControl: register, version, publish, install and run agents.
#[derive(Debug, Parser)]
#[command(name = "capecontrol", version, arg_required_else_help = true)]
struct Cli {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: Command,
}

/// Where the client commands send their requests, and how they print the answers.
#[derive(Debug, Clone, Args)]
pub(crate) struct Remote {
    /// The server's URL (with the prefix the router is mounted under, if any).
    #[arg(
        long,
        global = true,
        env = "CAPECONTROL_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub(crate) server: String,
    /// The API key, sent as `Authorization: Bearer KEY`.
    #[arg(long, global = true, env = "CAPECONTROL_KEY", hide_env_values = true)]
    pub(crate) key: Option<String>,
    /// Print the server's JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: the HTTP API and the workers in one process.
    Serve(serve::ServeArgs),
    /// Agents: list, show, create, update, archive, validate a manifest.
    #[command(subcommand, arg_required_else_help = true)]
    Agents(args::AgentsCommand),
    /// An agent's versions: list, add, suggest, publish, archive.
    #[command(subcommand, arg_required_else_help = true)]
    Versions(args::VersionsCommand),
    /// Browse the marketplace (published agents), or show one agent's detail.
    Catalog(args::CatalogArgs),
    /// List the current user's installations.
    Installations,
    /// Install an agent for the current user, granting scopes.
    Install(args::InstallArgs),
    /// Upgrade an installation to a newer (or the latest) published version.
    Upgrade(args::UpgradeArgs),
    /// Replace an installation's settings.
    Settings(args::SettingsArgs),
    /// Uninstall an agent for the current user.
    Uninstall {
        /// The agent (id or slug).
        agent: String,
    },
    /// Tasks: submit, get, list, cancel, answer, watch.
    #[command(subcommand, arg_required_else_help = true)]
    Tasks(args::TasksCommand),
    /// Query the audit trail.
    Audit(args::AuditArgs),
    /// API keys: create and revoke (admin).
    #[command(subcommand, arg_required_else_help = true)]
    Keys(args::KeysCommand),
    /// Apply the PostgreSQL migrations.
    Migrate {
        /// The PostgreSQL database.
        #[arg(
            long,
            env = "CAPECONTROL_DATABASE_URL",
            hide_env_values = true,
            value_name = "URL"
        )]
        database_url: String,
    },
    /// Work with agent manifests (manifest.json).
    #[command(subcommand, arg_required_else_help = true)]
    Manifest(ManifestCommand),
}

#[derive(Debug, Subcommand)]
enum ManifestCommand {
    /// Validate manifest files, reporting every problem of each.
    ///
    /// Prints one line per problem, `FILE: POINTER: MESSAGE`; with --json, one JSON object per
    /// file and line: {"file": …, "valid": bool, "errors": [{"pointer": …, "message": …}]}.
    /// Exits 0 when every file is valid, 1 when any is invalid, 2 when a file cannot be read.
    Validate {
        /// The manifest files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema (draft 2020-12) of a manifest.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let remote = cli.remote;
    match cli.command {
        Command::Manifest(ManifestCommand::Schema) => {
            let mut out = io::stdout().lock();
            let _ = out.write_all(manifest_schema_string().as_bytes());
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        Command::Manifest(ManifestCommand::Validate { files }) => validate(remote.json, &files),
        Command::Serve(args) => finish(runtime().and_then(|rt| rt.block_on(serve::run(args)))),
        command => finish(runtime().and_then(|rt| rt.block_on(commands::run(&remote, command)))),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))
}

/// The exit status of a command's result, its error printed on stderr.
fn finish(result: Result<ExitCode, CliError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("capecontrol: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn validate(json: bool, files: &[PathBuf]) -> ExitCode {
    let mut out = io::stdout().lock();
    let mut any_invalid = false;
    let mut any_unreadable = false;
    for path in files {
        let name = path.to_string_lossy();
        let errors = match read_manifest(path) {
            Ok(Ok(bytes)) => match validate_manifest_bytes(&bytes) {
                Ok(_) => Vec::new(),
                Err(errors) => errors,
            },
            Ok(Err(too_large)) => vec![too_large],
            Err(e) => {
                eprintln!("capecontrol: cannot read {name}: {e}");
                any_unreadable = true;
                continue;
            }
        };
        any_invalid |= !errors.is_empty();
        // A closed stdout (`| head`) is not an error worth reporting: stop writing quietly.
        let _ = if json {
            writeln!(out, "{}", json_line(&name, &errors))
        } else {
            write_human(&mut out, &name, &errors)
        };
        if errors.is_empty() && !json && io::stderr().is_terminal() {
            eprintln!("{name}: valid");
        }
    }
    let _ = out.flush();
    if any_unreadable {
        ExitCode::from(2)
    } else if any_invalid {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Reads a file of at most [`MAX_MANIFEST_BYTES`]; a larger one is not read in full but
/// reported as a validation error.
pub(crate) fn read_manifest(path: &Path) -> io::Result<Result<Vec<u8>, FieldError>> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(io::Error::other("is a directory"));
    }
    let limit = MAX_MANIFEST_BYTES as u64;
    if meta.len() > limit {
        return Ok(Err(too_large_error(meta.len())));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        // Grew while being read, or not a regular file: the size is not known exactly.
        return Ok(Err(FieldError::new("", "is larger than 1 MiB")));
    }
    Ok(Ok(bytes))
}

fn write_human(out: &mut impl Write, name: &str, errors: &[FieldError]) -> io::Result<()> {
    for e in errors {
        writeln!(out, "{name}: {}: {}", e.pointer, e.message)?;
    }
    Ok(())
}

fn json_line(name: &str, errors: &[FieldError]) -> String {
    let errors: Vec<serde_json::Value> = errors
        .iter()
        .map(|e| serde_json::json!({"pointer": e.pointer, "message": e.message}))
        .collect();
    serde_json::json!({"file": name, "valid": errors.is_empty(), "errors": errors}).to_string()
}
