//! The value rules of a CapeControl manifest, in one place.
//!
//! `capecontrol-core`'s manifest validator and `capecontrol-macros`' compile-time checks both
//! call these functions, so a value one accepts is a value the other accepts. Each rule returns
//! what is wrong as a small typed error; the callers word their own messages (a JSON pointer and
//! a short message in the validator, a spanned compile error in the macros).
//!
//! [`cases`] is the table of accepted and rejected values both callers are tested against.
//!
//! ```
//! use capecontrol_rules as rules;
//! assert_eq!(rules::memory_limit("1.5GB"), Ok(1_500_000_000));
//! assert_eq!(rules::memory_limit("5MB"), Err(rules::MemoryLimitError::BelowMinimum));
//! assert!(rules::scope("finance:*").is_ok());
//! assert!(rules::cron("0 9 * * MON").is_ok());
//! ```

pub mod cases;
mod cron;
mod units;

pub use cron::{CRON_TZ_PREFIX, CronError, Schedule, cron, schedule};
pub use croner::Cron;
pub use units::{CpuLimitError, MemoryLimitError, cpu_limit, memory_limit, parse_memory_limit};

/// Longest agent `name`, in characters.
pub const NAME_MAX_CHARS: usize = 64;
/// Default `config.timeout`, in seconds.
pub const DEFAULT_TIMEOUT: u32 = 30;
/// Largest `config.timeout` (and task timeout), in seconds; the smallest is 1.
pub const MAX_TIMEOUT: u32 = 300;
/// Largest `config.retries`.
pub const MAX_RETRIES: u32 = 10;
/// Largest `config.ask_timeout`, in seconds (30 days): how long a question asked with
/// `ask_user` waits for an answer by default.
pub const MAX_ASK_TIMEOUT: u32 = 30 * 24 * 60 * 60;
/// Smallest `config.memory_limit`, in bytes (6 MB).
pub const MIN_MEMORY_BYTES: u64 = 6_000_000;

/// Whether `s` has at least one non-whitespace character (`description`, `icon`, ...).
pub fn not_blank(s: &str) -> bool {
    !s.trim().is_empty()
}

/// What is wrong with an agent `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Empty or only whitespace.
    Blank,
    /// Longer than [`NAME_MAX_CHARS`]; carries the length in characters.
    TooLong(usize),
}

/// An agent `name`: not blank, at most [`NAME_MAX_CHARS`] characters.
pub fn name(s: &str) -> Result<(), NameError> {
    let n = s.chars().count();
    if !not_blank(s) {
        Err(NameError::Blank)
    } else if n > NAME_MAX_CHARS {
        Err(NameError::TooLong(n))
    } else {
        Ok(())
    }
}

/// A `version`: strict SemVer 2.0.0 (`1.2.3`, `1.0.0-rc.1+build.5`; not `1.2`, not `v1.2.3`).
pub fn version(s: &str) -> Result<semver::Version, semver::Error> {
    semver::Version::parse(s)
}

fn is_scope_part(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
}

/// A policy scope `resource:action`: each part `[a-z][a-z0-9_-]*`, the action may be `*`.
///
/// Returns the two parts, or the reason the string is not a scope.
pub fn scope(s: &str) -> Result<(&str, &str), &'static str> {
    let (resource, action) = s.split_once(':').ok_or("expected `resource:action`")?;
    if !is_scope_part(resource) {
        return Err("the resource must match [a-z][a-z0-9_-]*");
    }
    if action != "*" && !is_scope_part(action) {
        return Err("the action must be `*` or match [a-z][a-z0-9_-]*");
    }
    Ok((resource, action))
}

/// A task or tool name: `^[a-z_][a-z0-9_]*$`.
pub fn identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

/// A role or a data-access name: `^[A-Za-z_][A-Za-z0-9_-]*$`.
pub fn label(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('A'..='Z' | 'a'..='z' | '_'))
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// An event name: two or more dot-separated parts, each `[a-z][a-z0-9_-]*`
/// (`payment.completed`).
pub fn event(s: &str) -> bool {
    let mut parts = 0;
    let ok = s.split('.').all(|p| {
        parts += 1;
        is_scope_part(p)
    });
    ok && parts >= 2
}

/// Whether the request path `path` is the manifest's webhook path `pattern`: equal segment for
/// segment, `{id}` standing for any one non-empty segment.
pub fn webhook_matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut q) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some("{id}"), Some(seg)) if !seg.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// A webhook path: absolute, made of URL path characters and percent escapes; `{id}` is the
/// only placeholder (`/api/agents/{id}/webhook`).
pub fn webhook(s: &str) -> bool {
    if !s.starts_with('/') {
        return false;
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+'
            | b',' | b';' | b'=' | b':' | b'@' | b'-' => i += 1,
            c if c.is_ascii_alphanumeric() => i += 1,
            b'%' if b.len() > i + 2
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                i += 3;
            }
            b'{' if s[i..].starts_with("{id}") => i += 4,
            _ => return false,
        }
    }
    true
}

/// A UI colour: `#RGB` or `#RRGGBB`.
pub fn color(s: &str) -> bool {
    s.strip_prefix('#')
        .is_some_and(|hex| matches!(hex.len(), 3 | 6) && hex.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// A `timeout` in seconds: `1..=MAX_TIMEOUT`.
pub fn timeout(n: u64) -> bool {
    (1..=u64::from(MAX_TIMEOUT)).contains(&n)
}

/// An `ask_timeout` in seconds: `1..=MAX_ASK_TIMEOUT`.
pub fn ask_timeout(n: u64) -> bool {
    (1..=u64::from(MAX_ASK_TIMEOUT)).contains(&n)
}

/// A `retries` count: at most [`MAX_RETRIES`].
pub fn retries(n: u64) -> bool {
    n <= u64::from(MAX_RETRIES)
}

#[cfg(test)]
mod tests {
    #[test]
    fn webhook_paths_match_their_pattern() {
        use super::webhook_matches as m;
        assert!(m("/api/agents/{id}/webhook", "/api/agents/42/webhook"));
        assert!(m("/payments", "/payments"));
        assert!(!m("/api/agents/{id}/webhook", "/api/agents//webhook"));
        assert!(!m("/api/agents/{id}/webhook", "/api/agents/42/webhook/x"));
        assert!(!m("/payments", "/payments/"));
        assert!(!m("/payments", "/refunds"));
    }

    use super::*;

    #[test]
    fn the_table_holds_here_too() {
        for case in cases::CASES {
            assert_eq!(
                cases::accepts(case.field, case.value),
                case.valid,
                "{case:?}"
            );
        }
    }

    #[test]
    fn names_and_scopes() {
        assert_eq!(name(" "), Err(NameError::Blank));
        assert_eq!(name(&"x".repeat(65)), Err(NameError::TooLong(65)));
        assert_eq!(name(&"é".repeat(64)), Ok(()));
        assert_eq!(scope("finance:read"), Ok(("finance", "read")));
        assert_eq!(scope("finance"), Err("expected `resource:action`"));
        assert_eq!(
            scope("finance:Read"),
            Err("the action must be `*` or match [a-z][a-z0-9_-]*")
        );
        assert!(webhook("/a%2Fb/{id}") && !webhook("/a%2") && !webhook("/{idx}"));
    }
}
