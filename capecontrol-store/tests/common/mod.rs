//! A fresh PostgreSQL database per test, created from `DATABASE_URL` (an admin connection) and
//! dropped at the end. Without `DATABASE_URL` a test FAILS with a message that says how to run
//! it (start a throwaway cluster with `eval "$(scripts/pg.sh start)"`); to leave the PostgreSQL
//! tests out, build them with `CAPECONTROL_SKIP_SERVICES=1`, which marks them `#[ignore]`d (see
//! `build.rs`): a test that did not run never reports as passed.

#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};
use std::str::FromStr;

use capecontrol_store::sqlx::postgres::PgConnectOptions;
use capecontrol_store::sqlx::{self, AssertSqlSafe, ConnectOptions, Connection, Executor, PgPool};
use capecontrol_store::{PostgresStore, PostgresStoreOptions};
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
    /// Creates a fresh database; panics, saying how to run the test, when no server is
    /// configured.
    pub async fn create() -> Self {
        let url = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => panic!("{}", missing_service_message()),
        };
        let admin = PgConnectOptions::from_str(&url).expect("DATABASE_URL is a PostgreSQL URL");
        let name = format!("cc_test_{}", Uuid::new_v4().simple());
        let mut conn = admin.connect().await.expect("connect to DATABASE_URL");
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create the test database");
        conn.close().await.ok();
        let options = admin.clone().database(&name);
        Self {
            admin,
            url: with_database(&url, &name),
            name,
            options,
        }
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

/// What a PostgreSQL test says when `DATABASE_URL` is not set.
pub fn missing_service_message() -> String {
    "this test needs PostgreSQL but DATABASE_URL is not set. Run `bash scripts/test.sh` (it \
     starts a throwaway cluster), or `eval \"$(bash scripts/pg.sh start)\"` and run the test \
     again; to leave the PostgreSQL and Docker tests out (reported as ignored), set \
     CAPECONTROL_SKIP_SERVICES=1"
        .to_string()
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

/// A fresh database; the test fails, saying how to run it, when there is no server.
#[macro_export]
macro_rules! test_db {
    () => {
        common::TestDb::create().await
    };
}

/// A worker node in a child process (this test binary run again on one test); killed on drop,
/// so a test never leaves one behind.
pub struct Worker(pub Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs test `test` of this binary alone in a child process with `env` set; its stderr is
/// discarded when `quiet`.
pub fn spawn_test_process(test: &str, env: &[(&str, &str)], quiet: bool) -> Worker {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if quiet {
        command.stderr(Stdio::null());
    }
    Worker(command.spawn().expect("spawn a worker process"))
}

/// Counts the tasks that are not final yet.
pub const UNFINISHED: &str =
    "SELECT count(*) FROM tasks WHERE status NOT IN ('completed', 'failed', 'cancelled')";

/// How many tasks are not final yet.
pub async fn unfinished(pool: &PgPool) -> i64 {
    sqlx::query_scalar(UNFINISHED)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The test kit's fast platform configuration, polling every 50 ms (PostgreSQL round trips).
pub fn fast_config() -> capecontrol_core::runtime::PlatformConfig {
    capecontrol_core::runtime::PlatformConfig {
        poll_interval: std::time::Duration::from_millis(50),
        ..capecontrol_testkit::runtime::fast_config()
    }
}

/// One test per runtime scenario of the test kit's module `$module`: the scenario gets a
/// factory of nodes' stores (each a new `PostgresStore` on one fresh database) and
/// [`fast_config`]; the database is dropped afterwards.
#[macro_export]
macro_rules! node_scenarios {
    ($module:ident; $($name:ident => $scenario:ident($($arg:expr),*);)*) => {$(
        #[cfg_attr(capecontrol_skip_services, ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let db = ::std::sync::Arc::new(test_db!());
            let nodes = {
                let db = db.clone();
                move || {
                    let db = db.clone();
                    async move {
                        ::std::sync::Arc::new(db.store().await)
                            as ::std::sync::Arc<dyn capecontrol_core::store::Store>
                    }
                }
            };
            $module::$scenario(nodes, common::fast_config() $(, $arg)*).await;
            if let Ok(db) = ::std::sync::Arc::try_unwrap(db) {
                db.drop().await;
            }
        }
    )*};
}
