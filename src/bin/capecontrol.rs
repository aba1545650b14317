//! The `capecontrol` command-line tool, for agent authors and CI pipelines.
//!
//! ```text
//! capecontrol manifest validate [--json] FILE...   validate manifest files
//! capecontrol manifest schema                      print the manifest JSON Schema
//! ```
//!
//! Exit status: 0 when every file is valid, 1 when any file is invalid (a file that is not JSON
//! is invalid), 2 for a usage error or a file that cannot be read.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use capecontrol::FieldError;
use capecontrol::validate::{
    MAX_MANIFEST_BYTES, manifest_schema_string, too_large_error, validate_manifest_bytes,
};
use clap::{Parser, Subcommand};

/// CapeControl: register, version, publish, install and run agents.
#[derive(Debug, Parser)]
#[command(name = "capecontrol", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        /// Print one JSON object per file, one per line.
        #[arg(long)]
        json: bool,
        /// The manifest files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema (draft 2020-12) of a manifest.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Manifest(ManifestCommand::Schema) => {
            let mut out = io::stdout().lock();
            let _ = out.write_all(manifest_schema_string().as_bytes());
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        Command::Manifest(ManifestCommand::Validate { json, files }) => validate(json, &files),
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
fn read_manifest(path: &Path) -> io::Result<Result<Vec<u8>, FieldError>> {
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
