//! Compile-time checks of attribute values. The rules are `capecontrol-rules`, the same
//! implementation the manifest validator (`capecontrol_core::validate`) calls, so a value these
//! accept is one the validator accepts and every macro-generated manifest is valid. Each check
//! returns the message of the problem, if any; the caller attaches it to the literal's span.

use capecontrol_rules::{CpuLimitError, CronError, MemoryLimitError, NameError};

/// `name`: 1–64 characters, not blank.
pub(crate) fn name(s: &str) -> Result<(), String> {
    match capecontrol_rules::name(s) {
        Ok(()) => Ok(()),
        Err(NameError::Blank) => Err("the agent name must not be blank".into()),
        Err(NameError::TooLong(n)) => Err(format!(
            "the agent name must be at most {} characters, found {n}",
            capecontrol_rules::NAME_MAX_CHARS
        )),
    }
}

/// `version`: strict SemVer 2.0.0.
pub(crate) fn version(s: &str) -> Result<(), String> {
    capecontrol_rules::version(s)
        .map(|_| ())
        .map_err(|e| format!("`{s}` is not a SemVer version like `1.2.0`: {e}"))
}

/// Free text that must not be blank (`description`, `description_short`, `icon`).
pub(crate) fn not_blank(what: &str, s: &str) -> Result<(), String> {
    if !capecontrol_rules::not_blank(s) {
        Err(format!("{what} must not be blank"))
    } else {
        Ok(())
    }
}

/// The manifest's `category` values, with the variant of `Category` each maps to.
pub(crate) const CATEGORIES: [(&str, &str); 4] = [
    ("ai-assisted", "AiAssisted"),
    ("domain-specific", "DomainSpecific"),
    ("middleware", "Middleware"),
    ("utility", "Utility"),
];

/// The manifest's `placement` values, with the variant of `Placement` each maps to.
pub(crate) const PLACEMENTS: [(&str, &str); 4] = [
    ("chat", "Chat"),
    ("dashboard", "Dashboard"),
    ("workflow", "Workflow"),
    ("background", "Background"),
];

/// Looks `s` up in `table`, or explains which values are allowed.
pub(crate) fn one_of(
    what: &str,
    s: &str,
    table: &[(&str, &'static str)],
) -> Result<&'static str, String> {
    table
        .iter()
        .find(|(k, _)| *k == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let allowed: Vec<String> = table.iter().map(|(k, _)| format!("`{k}`")).collect();
            format!(
                "unknown {what} `{s}`; expected one of {}",
                allowed.join(", ")
            )
        })
}

/// A policy scope `resource:action`, each part `[a-z][a-z0-9_-]*`, the action may be `*`.
pub(crate) fn scope(s: &str) -> Result<(), String> {
    match capecontrol_rules::scope(s) {
        Ok(_) => Ok(()),
        Err(reason) if !s.contains(':') => Err(format!(
            "malformed scope `{s}`: {reason}, like `finance:read`"
        )),
        Err(reason) => Err(format!("malformed scope `{s}`: {reason}")),
    }
}

/// A tool or task name: `^[a-z_][a-z0-9_]*$`.
pub(crate) fn identifier(what: &str, s: &str) -> Result<(), String> {
    if capecontrol_rules::identifier(s) {
        Ok(())
    } else {
        Err(format!("{what} `{s}` must match ^[a-z_][a-z0-9_]*$"))
    }
}

/// A role or a data-access name: `^[A-Za-z_][A-Za-z0-9_-]*$`.
pub(crate) fn label(what: &str, s: &str) -> Result<(), String> {
    if capecontrol_rules::label(s) {
        Ok(())
    } else {
        Err(format!("{what} `{s}` must match ^[A-Za-z_][A-Za-z0-9_-]*$"))
    }
}

/// `timeout` in seconds: 1..=300.
pub(crate) fn timeout(n: u64) -> Result<u32, String> {
    match u32::try_from(n) {
        Ok(t) if capecontrol_rules::timeout(n) => Ok(t),
        _ => Err(format!(
            "timeout must be between 1 and {} seconds, found {n}",
            capecontrol_rules::MAX_TIMEOUT
        )),
    }
}

/// `retries`: 0..=10.
pub(crate) fn retries(n: u64) -> Result<u32, String> {
    match u32::try_from(n) {
        Ok(r) if capecontrol_rules::retries(n) => Ok(r),
        _ => Err(format!(
            "retries must be at most {}, found {n}",
            capecontrol_rules::MAX_RETRIES
        )),
    }
}

/// `ask_timeout` in seconds: 1..=2,592,000 (30 days).
pub(crate) fn ask_timeout(n: u64) -> Result<u32, String> {
    match u32::try_from(n) {
        Ok(t) if capecontrol_rules::ask_timeout(n) => Ok(t),
        _ => Err(format!(
            "ask_timeout must be between 1 and {} seconds, found {n}",
            capecontrol_rules::MAX_ASK_TIMEOUT
        )),
    }
}

/// `concurrent_tasks`: at least 1.
pub(crate) fn concurrent_tasks(n: u64) -> Result<u32, String> {
    match u32::try_from(n) {
        Ok(0) => Err("concurrent_tasks must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("concurrent_tasks {n} is too large")),
    }
}

/// `memory_limit`: a number and a unit (B, KB, MB, GB, KiB, MiB, GiB), at least 6 MB.
pub(crate) fn memory_limit(s: &str) -> Result<(), String> {
    match capecontrol_rules::memory_limit(s) {
        Ok(_) => Ok(()),
        Err(MemoryLimitError::BelowMinimum) => {
            Err(format!("memory_limit `{s}` must be at least 6MB"))
        }
        Err(MemoryLimitError::Malformed) => Err(format!(
            "memory_limit `{s}` must be a number and a unit (B, KB, MB, GB, KiB, MiB, GiB) of at most 2^64 bytes, like `512MB` or `1.5GB`"
        )),
    }
}

/// `cpu_limit`: a decimal number of cores greater than 0.
pub(crate) fn cpu_limit(s: &str) -> Result<(), String> {
    match capecontrol_rules::cpu_limit(s) {
        Ok(_) => Ok(()),
        Err(CpuLimitError::Zero) => Err("cpu_limit must be greater than 0".into()),
        Err(CpuLimitError::OutOfRange) => Err(format!("cpu_limit `{s}` is out of range")),
        Err(CpuLimitError::Malformed) => Err(format!(
            "cpu_limit `{s}` must be a decimal number of cores, like \"0.5\""
        )),
    }
}

/// An event name: dotted lowercase, at least two parts (`payment.completed`).
pub(crate) fn event(s: &str) -> Result<(), String> {
    if capecontrol_rules::event(s) {
        Ok(())
    } else {
        Err(format!(
            "event `{s}` must be a dotted lowercase name, like `payment.completed`"
        ))
    }
}

/// A webhook path: absolute, `{id}` allowed.
pub(crate) fn webhook(s: &str) -> Result<(), String> {
    if capecontrol_rules::webhook(s) {
        Ok(())
    } else {
        Err(format!(
            "webhook `{s}` must be an absolute path, like `/api/agents/{{id}}/webhook`"
        ))
    }
}

/// `ui.color`: `#RGB` or `#RRGGBB`.
pub(crate) fn color(s: &str) -> Result<(), String> {
    if capecontrol_rules::color(s) {
        Ok(())
    } else {
        Err(format!("color `{s}` must be `#RGB` or `#RRGGBB`"))
    }
}

/// A container image reference: not blank, no whitespace.
pub(crate) fn image(s: &str) -> Result<(), String> {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        Err(format!(
            "image `{s}` must be an image reference, like `capecontrol/finance-agent:1.2.0`"
        ))
    } else {
        Ok(())
    }
}

/// A 5-field cron expression (minute hour day-of-month month day-of-week); month and day
/// names (`JAN`, `MON`) allowed; an optional `CRON_TZ=<IANA zone>` prefix.
pub(crate) fn cron(s: &str) -> Result<(), String> {
    match capecontrol_rules::cron(s) {
        Ok(()) => Ok(()),
        Err(CronError::FieldCount(n)) => Err(format!(
            "schedule `{s}` must be a 5-field cron expression (minute hour day month weekday), found {n} fields"
        )),
        Err(CronError::Invalid(e)) => Err(format!("schedule `{s}`: {e}")),
        Err(CronError::UnknownTimeZone(tz)) => Err(format!(
            "schedule `{s}`: `CRON_TZ={tz}` names no IANA time zone (like Europe/Paris)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capecontrol_rules::cases::{CASES, Field};

    /// The macros' check of `field`, as they call it from `#[agent(...)]`.
    fn check(field: Field, value: &str) -> Result<(), String> {
        match field {
            Field::Name => name(value),
            Field::Version => version(value),
            Field::Scope => scope(value),
            Field::Role => label("role", value),
            Field::Identifier => identifier("tool", value),
            Field::MemoryLimit => memory_limit(value),
            Field::CpuLimit => cpu_limit(value),
            Field::Schedule => cron(value),
            Field::Event => event(value),
            Field::Webhook => webhook(value),
            Field::Color => color(value),
        }
    }

    /// The same table the manifest validator is tested against (`capecontrol-core`'s
    /// `tests/rules_table.rs`).
    #[test]
    fn the_checks_agree_with_the_table() {
        for case in CASES {
            let got = check(case.field, case.value);
            assert_eq!(got.is_ok(), case.valid, "{case:?}: {got:?}");
        }
    }

    #[test]
    fn messages() {
        assert_eq!(
            memory_limit("5MB").unwrap_err(),
            "memory_limit `5MB` must be at least 6MB"
        );
        assert!(memory_limit("1.5GB").is_ok());
        assert_eq!(
            scope("finance").unwrap_err(),
            "malformed scope `finance`: expected `resource:action`, like `finance:read`"
        );
        assert_eq!(
            cron("0 9 * *").unwrap_err(),
            "schedule `0 9 * *` must be a 5-field cron expression (minute hour day month weekday), found 4 fields"
        );
        assert!(timeout(0).is_err() && timeout(301).is_err() && timeout(300).is_ok());
        assert!(ask_timeout(0).is_err() && ask_timeout(1).is_ok());
        assert!(ask_timeout(2_592_000).is_ok() && ask_timeout(2_592_001).is_err());
        assert!(retries(11).is_err() && retries(10).is_ok());
        assert!(cpu_limit("0.0").is_err() && cpu_limit("2").is_ok());
        assert!(name(&"x".repeat(65)).is_err() && name(" ").is_err());
    }
}
