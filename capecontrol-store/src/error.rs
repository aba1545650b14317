//! Mapping sqlx errors onto the core [`Error`] taxonomy.

use capecontrol_core::Error;

/// Maps a sqlx error: unique violation → conflict, foreign-key violation → not-found (the thing
/// referred to does not exist), check / data errors → validation, row not found → not-found,
/// everything else (connections, pool, serialization failures, decoding) → resource.
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
                _ => Error::resource(format!("database error {code}: {message}")),
            }
        }
        sqlx::Error::PoolTimedOut => Error::resource("database pool timed out"),
        sqlx::Error::PoolClosed => Error::resource("database pool closed"),
        other => Error::resource(format!("database: {other}")),
    }
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
    } else if constraint.contains("task_id") {
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
}
