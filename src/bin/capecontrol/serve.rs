//! `capecontrol serve`: the HTTP API and the workers of one node, in one process.
//!
//! Start-up: logs (stderr; text or JSON), the store (in memory, or PostgreSQL migrated on
//! start), the container executor (`--docker`), the platform and its workers, the admin key
//! (`CAPECONTROL_ADMIN_KEY` or `--admin-key-file`, stored hashed like any other), the demo
//! agent and a demo user's key (`--demo`), then the listener. The first line on stdout is
//! `listening on http://ADDR` (the bound address, so that `--listen 127.0.0.1:0` can be used by
//! scripts); with `--demo`, the next one is `demo key: KEY`. SIGTERM or SIGINT stop accepting
//! connections, let the open requests finish (event streams are closed), then stop the workers
//! with a grace period for the running tasks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use capecontrol::docker::ContainerExecutor;
use capecontrol::http::{Api, ApiKeys, HttpConfig, ReadyCheck};
use capecontrol::postgres::PostgresStore;
use capecontrol::prelude::*;
use capecontrol::registry::InstallRequest;
use capecontrol::store::Store;
use clap::{Args, ValueEnum};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::client::CliError;
use crate::demo::OnboardingGuide;
use crate::demo_slow::SlowCounter;

/// `capecontrol serve`'s options.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on (port 0: any free port, printed on start).
    #[arg(
        long,
        env = "CAPECONTROL_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    listen: SocketAddr,
    /// Use this PostgreSQL database (migrated on start) instead of the in-memory store.
    #[arg(
        long,
        env = "CAPECONTROL_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    database_url: Option<String>,
    /// Run container agents (`runtime.type = "container"`) on the local Docker engine, straight
    /// from their published manifests.
    #[arg(long)]
    docker: bool,
    /// The Docker engine's URL (default: the local socket, or DOCKER_HOST).
    #[arg(long, requires = "docker", value_name = "URL")]
    docker_url: Option<String>,
    /// Register the quickstart's agent and create a demo user (printed key) who installed it.
    #[arg(long)]
    demo: bool,
    /// Read the admin key from this file (instead of CAPECONTROL_ADMIN_KEY).
    #[arg(long, value_name = "FILE")]
    admin_key_file: Option<PathBuf>,
    /// Worker tasks of this node.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Trust `X-Forwarded-For` from this proxy address (repeat for several).
    #[arg(long, value_name = "IP")]
    trusted_proxy: Vec<std::net::IpAddr>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Seconds the running tasks get to finish on shutdown before they are released.
    #[arg(long, default_value_t = 10)]
    shutdown_grace: u64,
}

/// How `serve` logs.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// The demo user's id and roles.
const DEMO_USER: &str = "demo";

/// Runs the node until SIGTERM or SIGINT.
pub(crate) async fn run(args: ServeArgs) -> Result<ExitCode, CliError> {
    init_logs(args.log_format);
    let admin_key = admin_key(&args)?;
    let fail = |what: &str, e: &dyn std::fmt::Display| CliError::Usage(format!("{what}: {e}"));

    let store: Arc<dyn Store> = match &args.database_url {
        Some(url) => {
            let store = PostgresStore::connect(url)
                .await
                .map_err(|e| fail("cannot connect to the database", &e))?;
            store.migrate().await.map_err(|e| fail("migration", &e))?;
            tracing::info!("PostgreSQL store, migrated");
            Arc::new(store)
        }
        None => {
            tracing::info!("in-memory store");
            Arc::new(MemoryStore::new())
        }
    };

    let mut builder = Platform::builder()
        .store(store.clone())
        .workers(args.workers.max(1));
    let mut containers = None;
    if args.docker {
        let mut exec = ContainerExecutor::builder();
        if let Some(url) = &args.docker_url {
            exec = exec.docker_url(url.clone());
        }
        let exec = Arc::new(
            exec.build()
                .await
                .map_err(|e| fail("cannot use the Docker engine", &e))?,
        );
        tracing::info!(node = exec.node_id(), "container executor");
        builder = builder.executor(exec.clone());
        containers = Some(exec);
    }
    if args.demo {
        builder = builder.agent(OnboardingGuide).agent(SlowCounter);
    }
    let platform = builder
        .build()
        .await
        .map_err(|e| fail("cannot start the platform", &e))?;

    let platform = Arc::new(platform);
    let keys = ApiKeys::new(store.clone());
    if let Some(key) = &admin_key {
        keys.seed(key, "admin", &["admin".to_string()])
            .await
            .map_err(|e| fail("cannot store the admin key", &e))?;
    }
    let demo_key = if args.demo {
        Some(demo_user(&platform, &keys).await?)
    } else {
        None
    };

    let config = HttpConfig {
        trusted_proxies: args.trusted_proxy.clone(),
        ..HttpConfig::default()
    };
    let mut api = Api::new(platform.clone(), keys).config(config);
    if let Some(exec) = &containers {
        let exec = exec.clone();
        let check: ReadyCheck = Arc::new(move || {
            let exec = exec.clone();
            Box::pin(async move {
                exec.docker()
                    .ping()
                    .await
                    .map(drop)
                    .map_err(|e| format!("the Docker engine does not answer: {e}"))
            })
        });
        api = api.ready_check("docker", check);
    }
    let app = api.router();

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| fail(&format!("cannot listen on {}", args.listen), &e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| fail("cannot read the bound address", &e))?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}");
        if let Some(key) = &demo_key {
            let _ = writeln!(out, "demo key: {key}");
        }
        let _ = out.flush();
    }
    tracing::info!(%addr, demo = args.demo, "serving");

    // On SIGTERM/SIGINT: stop accepting, let the open requests finish; connections still open
    // after the grace period (a client that keeps an event stream open) are dropped.
    let grace = Duration::from_secs(args.shutdown_grace);
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(true);
    });
    let drained = async move {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    let served = tokio::select! {
        r = server => r,
        () = drained => {
            tracing::warn!("connections still open after the grace period: closing them");
            Ok(())
        }
    };
    tracing::info!("stopped accepting requests; stopping the workers");
    platform
        .shutdown(Duration::from_secs(args.shutdown_grace))
        .await;
    if let Some(exec) = containers {
        exec.shutdown().await;
    }
    tracing::info!("stopped");
    served.map_err(|e| fail("server error", &e))?;
    Ok(ExitCode::SUCCESS)
}

/// The admin key from `--admin-key-file` or `CAPECONTROL_ADMIN_KEY`, if any.
fn admin_key(args: &ServeArgs) -> Result<Option<String>, CliError> {
    let key = match &args.admin_key_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?,
        ),
        None => std::env::var("CAPECONTROL_ADMIN_KEY").ok(),
    };
    match key.map(|k| k.trim().to_string()) {
        Some(k) if k.is_empty() => Err(CliError::Usage("the admin key is empty".into())),
        other => Ok(other),
    }
}

/// Installs the demo agent for the demo user and creates that user's key.
async fn demo_user(platform: &Platform, keys: &ApiKeys) -> Result<String, CliError> {
    let demo = Principal::new(DEMO_USER).with_roles(["user"]);
    let installed = platform
        .registry()
        .install(
            &demo,
            InstallRequest::latest("onboarding-guide").grant(["profile:read", "checklist:write"]),
        )
        .await;
    match installed {
        Ok(_) => {}
        // Already installed (a PostgreSQL store that ran --demo before).
        Err(e) if e.category() == ErrorCategory::Conflict => {}
        Err(e) => {
            return Err(CliError::Usage(format!(
                "cannot install the demo agent: {e}"
            )));
        }
    }
    let by = Principal::new("capecontrol-serve").with_roles(["admin"]);
    let created = keys
        .create(&by, DEMO_USER, &["user".to_string()], "demo (serve --demo)")
        .await
        .map_err(|e| CliError::Usage(format!("cannot create the demo key: {e}")))?;
    Ok(created.key)
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_env("CAPECONTROL_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,bollard=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs.json().try_init(),
    };
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT"),
        () = terminate => tracing::info!("SIGTERM"),
    }
}
