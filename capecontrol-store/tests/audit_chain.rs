//! The tamper-evident audit chain on PostgreSQL: `verify_chain` names the first row that was
//! edited, deleted or inserted out of band *in the database directly*, and the chain stays a
//! chain under concurrent appenders. A fresh database per test (see `common`).

mod common;

use std::sync::Arc;

use capecontrol_core::Principal;
use capecontrol_core::audit::{ChainFault, row_hash, verify_chain};
use capecontrol_core::store::{
    AuditEvent, AuditFilter, AuditStore, MAX_VALUE_DEPTH, NewAuditEvent, QueueStore,
};
use capecontrol_store::PostgresStore;
use capecontrol_store::sqlx;
use capecontrol_testkit::poll::until;
use common::TestDb;
use serde_json::json;

/// Gives row `id` the hash of what it holds now and of its link's place (a forger's rehash,
/// with the canonical form `verify_chain` checks), the row read back through the store.
async fn rehash(store: &PostgresStore, id: i64) {
    let seq: i64 = sqlx::query_scalar("SELECT seq FROM audit_links WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    let row = store
        .list_audit(&AuditFilter {
            after: Some(u64::try_from(seq - 1).unwrap()),
            limit: Some(1),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .remove(0);
    assert_eq!(row.id, id);
    sqlx::query("UPDATE audit_links SET hash = $2 WHERE id = $1")
        .bind(id)
        .bind(row_hash(&row))
        .execute(store.pool())
        .await
        .unwrap();
}

/// A store with `n` audit rows appended, and their ids by `seq` (index 0 is seq 1).
async fn chain_of(n: usize) -> (TestDb, PostgresStore, Vec<i64>) {
    let db = TestDb::create().await;
    let store = db.store().await;
    let who = Principal::new("alice").with_ip("10.1.2.3".parse().unwrap());
    let mut ids = Vec::new();
    for i in 0..n {
        let e = store
            .append_audit(NewAuditEvent::by(
                &who,
                "test.row",
                json!({ "i": i, "f": 0.5 }),
            ))
            .await
            .unwrap();
        assert_eq!(e.seq, u64::try_from(i).unwrap() + 1);
        ids.push(e.id);
    }
    let report = verify_chain(&store).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows, u64::try_from(n).unwrap());
    (db, store, ids)
}

/// A fresh database and a migrated store whose background sealer does not run during a test
/// (only reads seal).
async fn store_sealed_by_reads() -> (TestDb, PostgresStore) {
    let db = TestDb::create().await;
    let store = db
        .store_options()
        .audit_seal_interval(std::time::Duration::from_secs(3600))
        .connect()
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (db, store)
}

async fn done(db: TestDb, store: PostgresStore) {
    store.close().await;
    db.drop().await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn an_edited_row_is_named_and_restoring_it_heals_the_chain() {
    let (db, store, ids) = chain_of(10).await;
    for (column, edit, undo) in [
        (
            "payload",
            "UPDATE audit_events SET payload = '{\"i\": 99, \"f\": 0.5}' WHERE id = $1",
            "UPDATE audit_events SET payload = '{\"i\": 3, \"f\": 0.5}' WHERE id = $1",
        ),
        (
            "user_id",
            "UPDATE audit_events SET user_id = 'mallory' WHERE id = $1",
            "UPDATE audit_events SET user_id = 'alice' WHERE id = $1",
        ),
        (
            "created_at",
            "UPDATE audit_events SET created_at = created_at + interval '1 microsecond' WHERE id = $1",
            "UPDATE audit_events SET created_at = created_at - interval '1 microsecond' WHERE id = $1",
        ),
    ] {
        sqlx::query(edit)
            .bind(ids[3])
            .execute(store.pool())
            .await
            .unwrap();
        let report = verify_chain(&store).await.unwrap();
        let bad = report.first_bad.expect("an edit is found");
        assert_eq!(bad.id, Some(ids[3]), "{column}");
        assert_eq!(bad.seq, 4, "{column}");
        assert_eq!(bad.fault, ChainFault::Edited, "{column}");
        assert_eq!(report.last.seq, 3, "the rows before it are good");
        sqlx::query(undo)
            .bind(ids[3])
            .execute(store.pool())
            .await
            .unwrap();
        assert!(verify_chain(&store).await.unwrap().is_intact(), "{column}");
    }
    // Editing a row and recomputing its own hash breaks the next row's link.
    sqlx::query("UPDATE audit_events SET event_type = 'forged' WHERE id = $1")
        .bind(ids[5])
        .execute(store.pool())
        .await
        .unwrap();
    rehash(&store, ids[5]).await;
    let bad = verify_chain(&store).await.unwrap().first_bad.unwrap();
    assert_eq!(
        (bad.id, bad.seq, bad.fault),
        (Some(ids[6]), 7, ChainFault::Unlinked)
    );
    done(db, store).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn a_deleted_row_is_named() {
    let (db, store, ids) = chain_of(10).await;
    sqlx::query("DELETE FROM audit_events WHERE id = $1")
        .bind(ids[5])
        .execute(store.pool())
        .await
        .unwrap();
    let bad = verify_chain(&store).await.unwrap().first_bad.unwrap();
    assert_eq!(bad.id, Some(ids[6]), "the row after the gap");
    assert_eq!(bad.fault, ChainFault::Missing { expected: 6 });
    done(db, store).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn deleting_the_last_rows_is_found_against_the_head() {
    let (db, store, ids) = chain_of(6).await;
    sqlx::query("DELETE FROM audit_events WHERE id = ANY($1)")
        .bind(&ids[4..])
        .execute(store.pool())
        .await
        .unwrap();
    let report = verify_chain(&store).await.unwrap();
    let bad = report.first_bad.unwrap();
    assert_eq!(bad.fault, ChainFault::Truncated { head_seq: 6 });
    assert_eq!(bad.seq, 4, "the chain ends at row 4");
    done(db, store).await;
}

#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn a_row_inserted_out_of_band_is_named() {
    let (db, store, _ids) = chain_of(5).await;
    // Past the chain's trigger: no place in the chain.
    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    let stray: i64 = sqlx::query_scalar(
        "INSERT INTO audit_events (user_id, event_type, payload) \
         VALUES ('mallory', 'policy.allowed', '{}') RETURNING id",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let bad = verify_chain(&store).await.unwrap().first_bad.unwrap();
    assert_eq!((bad.id, bad.fault), (Some(stray), ChainFault::OutOfBand));
    sqlx::query("DELETE FROM audit_events WHERE id = $1")
        .bind(stray)
        .execute(&mut *conn)
        .await
        .unwrap();
    assert!(verify_chain(&store).await.unwrap().is_intact());
    // With a forged place after the head (the head was not moved): out of band too.
    let forged: i64 = sqlx::query_scalar(
        "INSERT INTO audit_events (user_id, event_type, payload) \
         VALUES ('mallory', 'policy.allowed', '{}') RETURNING id",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO audit_links (id, seq, prev_hash, hash) \
         SELECT $1, seq + 1, hash, '' FROM audit_chain",
    )
    .bind(forged)
    .execute(&mut *conn)
    .await
    .unwrap();
    rehash(&store, forged).await;
    sqlx::query("SET session_replication_role = origin")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let bad = verify_chain(&store).await.unwrap().first_bad.unwrap();
    assert_eq!(
        (bad.id, bad.seq, bad.fault),
        (Some(forged), 6, ChainFault::OutOfBand)
    );
    done(db, store).await;
}

/// Writes never wait for the chain: a row committed by a host's own transaction is pending (no
/// place yet, and not out of band) until a seal; every read of the trail seals first, and a
/// store's background sealer seals without any read within its interval.
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn rows_are_sealed_after_their_commit_by_the_sealer_or_the_next_read() {
    let (db, store) = store_sealed_by_reads().await;
    let place = |id: i64| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_as::<_, (Option<i64>, bool)>(
                "SELECT l.seq, EXISTS (SELECT 1 FROM audit_pending p WHERE p.id = a.id) \
                 FROM audit_events a LEFT JOIN audit_links l ON l.id = a.id WHERE a.id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let insert = |event: &'static str| {
        let pool = store.pool().clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO audit_events (event_type) VALUES ($1) RETURNING id",
            )
            .bind(event)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
            id
        }
    };
    let first = insert("host.first").await;
    assert_eq!(place(first).await, (None, true), "pending after its commit");
    let report = verify_chain(&store).await.unwrap();
    assert!(
        report.is_intact(),
        "a pending row is not out of band: {report:?}"
    );
    assert_eq!(place(first).await, (Some(1), false), "sealed by the read");

    let second = insert("host.second").await;
    let listed = store.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        listed.iter().map(|e| (e.id, e.seq)).collect::<Vec<_>>(),
        [(first, 1), (second, 2)],
        "a listing seals first"
    );

    // A store with a short interval seals without any read.
    let sealer = db
        .store_options()
        .audit_seal_interval(std::time::Duration::from_millis(20))
        .connect()
        .await
        .unwrap();
    let third = insert("host.third").await;
    until(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(10),
        "the background sealer seals the row",
        async || place(third).await == (Some(3), false),
    )
    .await;
    assert_eq!(store.audit_head().await.unwrap().seq, 3);
    assert!(verify_chain(&store).await.unwrap().is_intact());
    sealer.close().await;
    done(db, store).await;
}

/// Ids are taken at insert and commits come in any order: a row whose transaction commits
/// after rows with higher ids were sealed is sealed by the next read, after them (the sealer
/// looks for the first pending id afresh on every call).
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn a_row_committed_late_is_sealed_after_the_rows_sealed_before_it() {
    let (db, store) = store_sealed_by_reads().await;
    let insert = "INSERT INTO audit_events (event_type) VALUES ($1) RETURNING id";
    let mut slow = store.pool().begin().await.unwrap();
    let late: i64 = sqlx::query_scalar(insert)
        .bind("host.slow")
        .fetch_one(&mut *slow)
        .await
        .unwrap();
    let early: i64 = sqlx::query_scalar(insert)
        .bind("host.fast")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(late < early);
    let places = |rows: Vec<AuditEvent>| rows.iter().map(|e| (e.id, e.seq)).collect::<Vec<_>>();
    let listed = store.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        places(listed),
        [(early, 1)],
        "an uncommitted row is not read"
    );
    slow.commit().await.unwrap();
    let listed = store.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        places(listed),
        [(early, 1), (late, 2)],
        "the row committed late is sealed by the next read"
    );
    assert!(verify_chain(&store).await.unwrap().is_intact());
    done(db, store).await;
}

/// 2,000 rows appended by 16 concurrent writers, through `append_audit` and through the
/// queue's own statements (enqueue): the chain has every row once, gap-free, and verifies.
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_keep_one_chain() {
    let db = TestDb::create().await;
    let store = Arc::new(db.store().await);
    capecontrol_testkit::fixtures::register(&*store, "chain-agent").await;
    let mut writers = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..125 {
                if i % 5 == 0 {
                    // One task.queued row per enqueue, written by the queue's statement.
                    store
                        .enqueue(capecontrol_testkit::fixtures::task(
                            "chain-agent",
                            &format!("user-{w}"),
                        ))
                        .await
                        .unwrap();
                } else {
                    store
                        .append_audit(NewAuditEvent {
                            event_type: "test.concurrent".into(),
                            payload: json!({ "w": w, "i": i }),
                            ..NewAuditEvent::default()
                        })
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let report = verify_chain(&*store).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows, 2000);
    assert_eq!(store.audit_head().await.unwrap().seq, 2000);
    let unchained = store
        .list_audit(&AuditFilter {
            unchained: true,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(unchained.is_empty());
    store.close().await;
    db.drop().await;
}

/// The chain's cost, measured (not checked): 2,000 enqueues (each a task row and its
/// `task.queued` audit row in one transaction) by 16 concurrent writers, with the chain's
/// trigger and without it, on fresh databases. Run with
/// `cargo test -p capecontrol-store --test audit_chain -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, not a check"]
async fn probe_the_cost_of_the_chain() {
    for round in 0..2 {
        for chained in [true, false] {
            let db = TestDb::create().await;
            let store = Arc::new(db.store().await);
            capecontrol_testkit::fixtures::register(&*store, "probe-agent").await;
            if !chained {
                sqlx::query("ALTER TABLE audit_events DISABLE TRIGGER audit_events_chain")
                    .execute(store.pool())
                    .await
                    .unwrap();
            }
            let started = std::time::Instant::now();
            let mut writers = Vec::new();
            for w in 0..16 {
                let store = store.clone();
                writers.push(tokio::spawn(async move {
                    for _ in 0..125 {
                        store
                            .enqueue(capecontrol_testkit::fixtures::task(
                                "probe-agent",
                                &format!("user-{w}"),
                            ))
                            .await
                            .unwrap();
                    }
                }));
            }
            for w in writers {
                w.await.unwrap();
            }
            let elapsed = started.elapsed();
            eprintln!(
                "round {round}: chain {}: 2000 enqueues by 16 writers in {:.0} ms ({:.0}/s)",
                if chained { "on " } else { "off" },
                elapsed.as_secs_f64() * 1000.0,
                2000.0 / elapsed.as_secs_f64()
            );
            store.close().await;
            db.drop().await;
        }
    }
}

/// Rows sealed under the former schema (their place written into the row itself) keep their
/// places through the migration that moved the links into `audit_links`; a row still pending
/// then is sealed after them, and new rows continue the same chain.
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn rows_sealed_before_the_links_migration_keep_their_places() {
    let db = TestDb::create().await;
    let pool = sqlx::PgPool::connect_with(db.options.clone())
        .await
        .unwrap();
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"));
    let mut before = sqlx::migrate::Migrator::new(dir).await.unwrap();
    let old: Vec<_> = before
        .migrations
        .iter()
        .filter(|m| m.version < 20261130000026)
        .cloned()
        .collect();
    assert!(
        old.len() < before.migrations.len(),
        "the links migration exists"
    );
    before.migrations = old.into();
    before.run(&pool).await.unwrap();
    for i in 0..5 {
        sqlx::query("INSERT INTO audit_events (user_id, event_type, payload) VALUES ('alice', 'old.row', $1)")
            .bind(json!({ "i": i, "f": 0.5 }))
            .execute(&pool)
            .await
            .unwrap();
    }
    let sealed: i32 = sqlx::query_scalar("SELECT capecontrol_audit_seal_pending(100, true)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sealed, 5);
    sqlx::query("INSERT INTO audit_events (event_type) VALUES ('old.pending')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let store = db.store().await;
    store
        .append_audit(NewAuditEvent {
            event_type: "new.row".into(),
            ..NewAuditEvent::default()
        })
        .await
        .unwrap();
    let report = verify_chain(&store).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows, 7);
    let listed = store.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|e| (e.seq, e.event_type.as_str()))
            .collect::<Vec<_>>(),
        [
            (1, "old.row"),
            (2, "old.row"),
            (3, "old.row"),
            (4, "old.row"),
            (5, "old.row"),
            (6, "old.pending"),
            (7, "new.row")
        ]
    );
    done(db, store).await;
}

/// A row deleted in the database between its commit and its seal (the window the sealer
/// leaves) has no place to take: the seal drops it from the pending list and chains the rows
/// around it without a gap.
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test]
async fn a_row_deleted_before_its_seal_leaves_no_gap() {
    let (db, store) = store_sealed_by_reads().await;
    let insert = "INSERT INTO audit_events (event_type) VALUES ($1) RETURNING id";
    let mut ids = Vec::new();
    for event in ["host.a", "host.b", "host.c"] {
        let id: i64 = sqlx::query_scalar(insert)
            .bind(event)
            .fetch_one(store.pool())
            .await
            .unwrap();
        ids.push(id);
    }
    sqlx::query("DELETE FROM audit_events WHERE id = $1")
        .bind(ids[1])
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(store.seal_audit().await.unwrap(), 3, "three ids taken off");
    let listed = store.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        listed.iter().map(|e| (e.id, e.seq)).collect::<Vec<_>>(),
        [(ids[0], 1), (ids[2], 2)]
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_pending")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert!(verify_chain(&store).await.unwrap().is_intact());
    done(db, store).await;
}

/// The log rows have no foreign keys (migration `…029`): deleting a task deletes its events and
/// steps (as the old cascades did) and leaves its audit rows as they were — task id included —
/// so the chain over them stays intact (the old `ON DELETE SET NULL` rewrote them).
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "CAPECONTROL_SKIP_SERVICES=1: needs PostgreSQL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_task_deletes_its_events_and_steps_and_keeps_its_audit_rows() {
    use capecontrol_core::store::JournalWrite;
    use capecontrol_testkit::fixtures::{claim_req, completed, register, step, task};
    let db = TestDb::create().await;
    let store = db.store().await;
    register(&store, "finance").await;
    let id = store
        .enqueue(task("finance", "alice"))
        .await
        .unwrap()
        .task
        .id;
    let c = store
        .claim(&claim_req("w1", 1, 30_000))
        .await
        .unwrap()
        .remove(0);
    store
        .journal(
            &c.lease,
            JournalWrite {
                step: Some(step(1, "one", json!(1))),
                ..JournalWrite::default()
            },
        )
        .await
        .unwrap();
    store.finish(&c.lease, completed(json!(1))).await.unwrap();
    let count = |table: &'static str| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} WHERE task_id = $1"
            )))
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert!(count("task_events").await >= 3);
    assert_eq!(count("runs").await, 1);
    let audit = count("audit_events").await;
    assert!(audit >= 3);
    sqlx::query("DELETE FROM tasks WHERE id = $1")
        .bind(id)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(count("task_events").await, 0, "events go with the task");
    assert_eq!(count("runs").await, 0, "steps go with the task");
    assert_eq!(
        count("audit_events").await,
        audit,
        "audit rows stay, naming it"
    );
    assert!(verify_chain(&store).await.unwrap().is_intact());
    done(db, store).await;
}

/// Payloads whose numbers are hard to carry exactly (floats at the ends of `f64`'s range and
/// with 17 significant digits, the extreme integers, a float with an integral value) and one
/// nested as deep as a stored value may be (`MAX_VALUE_DEPTH`; deeper is refused, see the
/// conformance suite): each row reads back as appended, and the chain, hashed by the database
/// over `jsonb`, verifies against the canonical form computed here from the rows read back.
#[cfg_attr(
    capecontrol_skip_services,
    ignore = "needs PostgreSQL (scripts/test.sh starts one)"
)]
#[tokio::test]
async fn hard_numbers_and_the_deepest_payloads_keep_the_chain_intact() {
    let (db, store) = store_sealed_by_reads().await;
    let who = Principal::new("alice");
    let payloads = [
        json!({"f": [0.30000000000000004, 1.7976931348623157e308, 5e-324,
                     2.2250738585072014e-308, 1e23, 8.98846567431158e307, 2.718281828459046,
                     123456.78901234567, 1.0000000000000002, 0.1, -0.0, 1e-7, 1.5e300]}),
        json!({"i": [u64::MAX, i64::MIN, i64::MAX, 0, -1], "whole": 3.0, "big": 1e21}),
        (0..MAX_VALUE_DEPTH).fold(json!("bottom"), |v, _| json!({ "n": v })),
    ];
    let mut appended = Vec::new();
    for p in &payloads {
        let e = store
            .append_audit(NewAuditEvent::by(&who, "test.numbers", p.clone()))
            .await
            .unwrap();
        appended.push(e.id);
    }
    let report = verify_chain(&store).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows, 3);
    let rows = store
        .list_audit(&AuditFilter {
            event_type: Some("test.numbers".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), appended);
    for (row, p) in rows.iter().zip(&payloads) {
        assert_eq!(&row.payload, p, "row {}", row.id);
        assert_eq!(row.hash, row_hash(row), "row {}", row.id);
    }
    done(db, store).await;
}
