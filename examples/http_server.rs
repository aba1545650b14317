//! A host application that serves CapeControl's HTTP API beside its own routes.
//!
//! `cargo run --example http_server` starts an axum app on 127.0.0.1:3000 (`LISTEN` to change)
//! with its own `/` and `/hello/{name}` routes and the platform's API nested under `/platform`
//! (so `/platform/api/agents`, `/platform/healthz`, …), running the quickstart's onboarding
//! agent natively on the in-memory store. It prints an admin API key (or uses
//! `CAPECONTROL_ADMIN_KEY`); the README's "HTTP API" section shows the curl calls to make a
//! user's key, install the agent, submit a task and follow its event stream. Ctrl-C stops it.

#[path = "../src/bin/capecontrol/demo.rs"]
mod demo;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use capecontrol::http::{Api, ApiKeys};
use capecontrol::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The platform, with the quickstart's agent compiled in (registered and published).
    let platform = Arc::new(
        Platform::builder()
            .agent(demo::OnboardingGuide)
            .build()
            .await?,
    );

    // 2. An admin key: API keys live in the platform's store, hashed.
    let keys = ApiKeys::new(platform.store().clone());
    let admin_key = match std::env::var("CAPECONTROL_ADMIN_KEY") {
        Ok(key) => {
            keys.seed(&key, "admin", &["admin".into()]).await?;
            key
        }
        Err(_) => {
            let host = Principal::new("http-server-example").with_roles(["admin"]);
            keys.create(&host, "admin", &["admin".into()], "example admin")
                .await?
                .key
        }
    };

    // 3. The host's own routes, and the platform's API nested under its prefix.
    let api = Api::new(platform.clone(), keys).router();
    let app = Router::new()
        .route(
            "/",
            get(|| async { "a host application; the platform is under /platform\n" }),
        )
        .route(
            "/hello/{name}",
            get(|Path(name): Path<String>| async move { format!("hello, {name}\n") }),
        )
        .nest("/platform", api);

    let addr: SocketAddr = std::env::var("LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    println!("admin key: {admin_key}");

    // The connection info gives the API the client's IP address for the audit trail.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    platform.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
