//! Mapping sqlx errors onto the core [`Error`] taxonomy.

use capecontrol_core::Error;

/// Maps a sqlx error: unique violation → conflict, foreign-key violation → not-found (the thing
/// referred to does not exist), check / data errors → validation, row not found → not-found,
/// everything else (connections, pool, serialization failures, decoding) → resource; of those,
/// the ones worth repeating (see [`transient_code`], lost connections, pool timeouts) are marked
/// [transient](Error::is_transient).
pub(crate) fn db(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::RowNotFound => Error::not_found("row", "?"),
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            let constraint = d.constraint().unwrap_or("").to_owned();
            let message = d.message().to_owned();
            match code.as_str() {
                "23505" => Error::conflict(format!("duplicate ({constraint}): {message}")),
                "23503" => Error::not_found(referenced(&constraint), constraint),
                "23514" | "23502" => Error::invalid_field("", message),
                c if c.starts_with("22") => Error::invalid_field("", message),
                c if transient_code(c) => {
                    Error::transient(format!("database error {code}: {message}"))
                }
                _ => Error::resource(format!("database error {code}: {message}")),
            }
        }
        sqlx::Error::PoolTimedOut => Error::transient("database pool timed out"),
        sqlx::Error::PoolClosed => Error::resource("database pool closed"),
        e @ (sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_)) => {
            Error::transient(format!("database connection: {e}"))
        }
        other => Error::resource(format!("database: {other}")),
    }
}

/// Refuses inside a transaction: rolls `tx` back, then answers `refusal`. A dropped
/// transaction is rolled back only when the pool takes its connection back, and its row
/// locks stay until then (a claim, which skips locked rows, would pass over a task a refused
/// write had locked); rolled back here, the rows are free when the caller hears the answer.
pub(crate) async fn refuse<T>(
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    refusal: Error,
) -> capecontrol_core::Result<T> {
    tx.rollback().await.map_err(db)?;
    Err(refusal)
}

/// SQLSTATEs after which the same statement may succeed when repeated: connection exceptions
/// (class 08), serialization failure and deadlock (40001, 40P01), too many connections
/// (53300), and a server shutting down, crashed or starting (57P01, 57P02, 57P03).
fn transient_code(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03"
        )
}

/// [`db`], naming `agent_id` when a foreign key found no such agent.
pub(crate) fn db_agent(agent_id: &str) -> impl Fn(sqlx::Error) -> Error + '_ {
    move |e| match db(e) {
        Error::NotFound { kind, .. } if kind == "agent" => Error::not_found("agent", agent_id),
        other => other,
    }
}

/// What a foreign-key constraint refers to, from its name (`tasks_agent_id_fkey` → `agent`).
fn referenced(constraint: &str) -> &'static str {
    if constraint.contains("agent_id") {
        "agent"
    } else if constraint.contains("task_id") || constraint.contains("parent_id") {
        "task"
    } else {
        "referenced row"
    }
}

/// A corrupt or unexpected stored value.
pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::resource(format!("unexpected stored {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_errors_are_resource_errors() {
        assert_eq!(db(sqlx::Error::PoolTimedOut).http_status(), 503);
        assert_eq!(db(sqlx::Error::RowNotFound).http_status(), 404);
        assert_eq!(referenced("tasks_agent_id_fkey"), "agent");
    }

    #[test]
    fn lost_connections_and_pool_timeouts_are_transient() {
        assert!(db(sqlx::Error::PoolTimedOut).is_transient());
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(db(sqlx::Error::Io(reset)).is_transient());
        assert!(!db(sqlx::Error::PoolClosed).is_transient());
        assert!(!db(sqlx::Error::RowNotFound).is_transient());
        for code in ["08006", "40001", "40P01", "57P01", "57P03", "53300"] {
            assert!(transient_code(code), "{code}");
        }
        for code in ["23505", "42P01", "XX000"] {
            assert!(!transient_code(code), "{code}");
        }
    }
}
