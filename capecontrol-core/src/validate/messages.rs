//! The messages of the value rules (`capecontrol-rules`), worded for a manifest field: shared
//! by the schema layer (which rewrites a failed pattern) and the semantic rules.

use capecontrol_rules::CronError;

use crate::policy::Scope;

/// The message for a version that is not strict SemVer 2.0.0.
pub(super) fn semver_message(s: &str) -> String {
    match capecontrol_rules::version(s) {
        Err(e) => format!("is not valid SemVer 2.0.0 ({e})"),
        Ok(_) => "is not valid SemVer 2.0.0".into(),
    }
}

/// The message for a scope that does not parse.
pub(super) fn scope_message(s: &str) -> String {
    match s.parse::<Scope>() {
        Err(e) => format!("must be a scope resource:action ({})", e.reason),
        Ok(_) => "must be a scope resource:action".into(),
    }
}

/// The message for a schedule that is not a 5-field cron expression.
pub(super) fn cron_message(s: &str) -> String {
    cron_problem(s).unwrap_or_else(|| "is not a valid 5-field cron expression".into())
}

/// What is wrong with a cron expression: it must have exactly 5 fields (minute, hour, day of
/// month, month, day of week; day and month names allowed) and parse.
pub(super) fn cron_problem(s: &str) -> Option<String> {
    match capecontrol_rules::cron(s) {
        Ok(()) => None,
        Err(CronError::FieldCount(fields)) => Some(format!(
            "must be a 5-field cron expression (minute hour day-of-month month day-of-week), not {fields} {}",
            if fields == 1 { "field" } else { "fields" }
        )),
        Err(CronError::Invalid(e)) => Some(format!("is not a valid cron expression ({e})")),
        Err(CronError::UnknownTimeZone(tz)) => Some(format!(
            "CRON_TZ={tz} names no IANA time zone (like Europe/Paris)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which expressions are valid is `capecontrol-rules`' to test; these are the wordings.
    #[test]
    fn cron_messages() {
        assert_eq!(cron_problem("0 9 * * MON"), None);
        assert_eq!(
            cron_problem("0 0 9 * * MON").unwrap(),
            "must be a 5-field cron expression (minute hour day-of-month month day-of-week), not 6 fields"
        );
        assert_eq!(
            cron_problem("@daily").unwrap(),
            "must be a 5-field cron expression (minute hour day-of-month month day-of-week), not 1 field"
        );
        assert!(
            cron_problem("60 * * * *")
                .unwrap()
                .starts_with("is not a valid cron expression (")
        );
    }

    #[test]
    fn semver_messages_name_the_reason() {
        assert_eq!(
            semver_message("1.2"),
            "is not valid SemVer 2.0.0 (unexpected end of input while parsing minor version number)"
        );
    }
}
