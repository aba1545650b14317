//! A fresh PostgreSQL database per test, created from `DATABASE_URL` (an admin connection) and
//! dropped at the end. Without `DATABASE_URL` the tests fail when `CI` is set and are skipped
//! loudly otherwise (start a throwaway cluster with `eval "$(scripts/pg.sh start)"`).

#![allow(dead_code, unreachable_pub)]

use std::str::FromStr;
use std::time::Duration;

use capecontrol_core::AgentStatus;
use capecontrol_core::Principal;
use capecontrol_core::store::{AgentRecord, NewTask, RegistryStore};
use capecontrol_store::sqlx::postgres::PgConnectOptions;
use capecontrol_store::sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};
use capecontrol_store::{PostgresStore, PostgresStoreOptions};
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

/// One test database.
pub struct TestDb {
    admin: PgConnectOptions,
    name: String,
    url: String,
    /// Connection options of the test database.
    pub options: PgConnectOptions,
}

impl TestDb {
    /// Creates a fresh database, or `None` (with a loud message) when no server is configured.
    pub async fn create() -> Option<Self> {
        let url = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                if std::env::var_os("CI").is_some() {
                    panic!(
                        "DATABASE_URL is not set but CI is: the PostgreSQL tests must run in CI \
                         (scripts/test.sh starts a throwaway cluster with scripts/pg.sh)"
                    );
                }
                eprintln!(
                    "SKIPPED: PostgreSQL test skipped because DATABASE_URL is not set; run \
                     `eval \"$(scripts/pg.sh start)\"` first (or scripts/test.sh)"
                );
                return None;
            }
        };
        let admin = PgConnectOptions::from_str(&url).expect("DATABASE_URL is a PostgreSQL URL");
        let name = format!("cc_test_{}", Uuid::new_v4().simple());
        let mut conn = admin.connect().await.expect("connect to DATABASE_URL");
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create the test database");
        conn.close().await.ok();
        let options = admin.clone().database(&name);
        Some(Self {
            admin,
            url: with_database(&url, &name),
            name,
            options,
        })
    }

    /// The URL of the test database (for another process).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Options for a store on this database.
    pub fn store_options(&self) -> PostgresStoreOptions {
        PostgresStoreOptions::new(self.options.clone()).max_connections(8)
    }

    /// A new store ("node") on this database, migrated.
    pub async fn store(&self) -> PostgresStore {
        let store = self.store_options().connect().await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }

    /// Drops the database (connections still open are terminated).
    pub async fn drop(self) {
        let mut conn = self.admin.connect().await.expect("connect to DATABASE_URL");
        conn.execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .await
        .expect("drop the test database");
        conn.close().await.ok();
    }
}

/// `url` with its database (the path) replaced by `name`, the query string kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let prefix = match base[host_start..].find('/') {
        Some(i) => &base[..host_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// Skips the test (loudly) when there is no server.
#[macro_export]
macro_rules! test_db {
    () => {
        match common::TestDb::create().await {
            Some(db) => db,
            None => return,
        }
    };
}

/// An agent record with id and slug `id`.
pub fn agent(id: &str) -> AgentRecord {
    let now = Utc::now();
    AgentRecord {
        id: id.into(),
        name: format!("Agent {id}"),
        slug: id.into(),
        description: Some(format!("The {id} agent")),
        category: Some("domain-specific".into()),
        capabilities: Some(json!({ "tools": [] })),
        policy_scopes: vec!["finance:read".into()],
        manifest: None,
        status: AgentStatus::Draft,
        created_at: now,
        updated_at: now,
    }
}

/// Registers agent `id`.
pub async fn register<S: RegistryStore>(store: &S, id: &str) {
    store.insert_agent(agent(id)).await.expect("insert agent");
}

/// A task of `agent` for `user`.
pub fn task(agent: &str, user: &str) -> NewTask {
    NewTask {
        id: Uuid::new_v4(),
        agent_id: agent.into(),
        version: "1.0.0".into(),
        task: "run".into(),
        input: json!({ "n": 1 }),
        principal: Principal::new(user).with_roles(["user"]),
        priority: 0,
        run_at: None,
        idempotency_key: None,
        max_attempts: 3,
        concurrency_limit: 1000,
        timeout: Duration::from_secs(30),
        traceparent: None,
        audit: Vec::new(),
    }
}
