//! Compile-time checks of attribute values, mirroring the manifest validator's rules
//! (`capecontrol_core::validate`): a value these accept is one the validator accepts, so every
//! macro-generated manifest is valid. Each check returns the message of the problem, if any;
//! the caller attaches it to the literal's span.

/// `name`: 1–64 characters, not blank.
pub(crate) fn name(s: &str) -> Result<(), String> {
    let n = s.chars().count();
    if s.trim().is_empty() {
        Err("the agent name must not be blank".into())
    } else if n > 64 {
        Err(format!(
            "the agent name must be at most 64 characters, found {n}"
        ))
    } else {
        Ok(())
    }
}

/// `version`: strict SemVer 2.0.0.
pub(crate) fn version(s: &str) -> Result<(), String> {
    semver::Version::parse(s)
        .map(|_| ())
        .map_err(|e| format!("`{s}` is not a SemVer version like `1.2.0`: {e}"))
}

/// Free text that must not be blank (`description`, `description_short`, `icon`).
pub(crate) fn not_blank(what: &str, s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
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

fn is_scope_part(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
}

/// A policy scope `resource:action`, each part `[a-z][a-z0-9_-]*`, the action may be `*`.
pub(crate) fn scope(s: &str) -> Result<(), String> {
    let Some((resource, action)) = s.split_once(':') else {
        return Err(format!(
            "malformed scope `{s}`: expected `resource:action`, like `finance:read`"
        ));
    };
    if !is_scope_part(resource) {
        return Err(format!(
            "malformed scope `{s}`: the resource must match [a-z][a-z0-9_-]*"
        ));
    }
    if action != "*" && !is_scope_part(action) {
        return Err(format!(
            "malformed scope `{s}`: the action must be `*` or match [a-z][a-z0-9_-]*"
        ));
    }
    Ok(())
}

/// A tool or task name: `^[a-z_][a-z0-9_]*$`.
pub(crate) fn identifier(what: &str, s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    let ok = matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!("{what} `{s}` must match ^[a-z_][a-z0-9_]*$"))
    }
}

/// A role or a data-access kind: a lowercase identifier.
pub(crate) fn label(what: &str, s: &str) -> Result<(), String> {
    identifier(what, s)
}

/// `timeout` in seconds: 1..=300.
pub(crate) fn timeout(n: u64) -> Result<u32, String> {
    if (1..=300).contains(&n) {
        Ok(n as u32)
    } else {
        Err(format!(
            "timeout must be between 1 and 300 seconds, found {n}"
        ))
    }
}

/// `retries`: 0..=10.
pub(crate) fn retries(n: u64) -> Result<u32, String> {
    if n <= 10 {
        Ok(n as u32)
    } else {
        Err(format!("retries must be at most 10, found {n}"))
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

/// `memory_limit`: an integer and a unit (B, KB, MB, GB, KiB, MiB, GiB), at least 6 MB.
pub(crate) fn memory_limit(s: &str) -> Result<(), String> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    let unit = &s[digits.len()..];
    let factor: u64 = match unit {
        "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "memory_limit `{s}` must be an integer and a unit (B, KB, MB, GB, KiB, MiB, GiB), like `512MB`"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("memory_limit `{s}` must start with an integer, like `512MB`"))?;
    match n.checked_mul(factor) {
        Some(bytes) if bytes >= 6_000_000 => Ok(()),
        Some(_) => Err(format!("memory_limit `{s}` must be at least 6MB")),
        None => Err(format!("memory_limit `{s}` is too large")),
    }
}

/// `cpu_limit`: a decimal number of cores greater than 0.
pub(crate) fn cpu_limit(s: &str) -> Result<(), String> {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let digits = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    if !digits(int) || !digits(frac) {
        return Err(format!(
            "cpu_limit `{s}` must be a decimal number of cores, like \"0.5\""
        ));
    }
    if s.chars().all(|c| c == '0' || c == '.') {
        return Err("cpu_limit must be greater than 0".into());
    }
    Ok(())
}

/// An event name: dotted lowercase, at least two parts (`payment.completed`).
pub(crate) fn event(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split('.').collect();
    let ok = parts.len() >= 2
        && parts.iter().all(|p| {
            let mut c = p.chars();
            matches!(c.next(), Some('a'..='z'))
                && c.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "event `{s}` must be a dotted lowercase name, like `payment.completed`"
        ))
    }
}

/// A webhook path: absolute, `{id}` allowed.
pub(crate) fn webhook(s: &str) -> Result<(), String> {
    let rest = s.replace("{id}", "id");
    let ok = s.starts_with('/')
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "webhook `{s}` must be an absolute path, like `/api/agents/{{id}}/webhook`"
        ))
    }
}

/// `ui.color`: `#RGB` or `#RRGGBB`.
pub(crate) fn color(s: &str) -> Result<(), String> {
    let ok = s.strip_prefix('#').is_some_and(|hex| {
        matches!(hex.len(), 3 | 6) && hex.chars().all(|c| c.is_ascii_hexdigit())
    });
    if ok {
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
/// names (`JAN`, `MON`) allowed.
pub(crate) fn cron(s: &str) -> Result<(), String> {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "schedule `{s}` must be a 5-field cron expression (minute hour day month weekday), found {} fields",
            fields.len()
        ));
    }
    let specs: [(&str, u32, u32, &[&str], u32); 5] = [
        ("minute", 0, 59, &[], 0),
        ("hour", 0, 23, &[], 0),
        ("day of month", 1, 31, &[], 0),
        ("month", 1, 12, &MONTHS, 1),
        ("day of week", 0, 6, &DAYS, 0),
    ];
    for (field, (what, lo, hi, names, base)) in fields.iter().zip(specs) {
        let value = |v: &str| -> Option<u32> {
            if let Ok(n) = v.parse::<u32>() {
                return (lo..=hi).contains(&n).then_some(n);
            }
            let upper = v.to_ascii_uppercase();
            names
                .iter()
                .position(|n| *n == upper)
                .map(|i| i as u32 + base)
        };
        let bad = || format!("schedule `{s}`: bad {what} field `{field}`");
        for item in field.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, st)) => (r, Some(st)),
                None => (item, None),
            };
            if let Some(st) = step {
                if !matches!(st.parse::<u32>(), Ok(n) if n >= 1) {
                    return Err(bad());
                }
            }
            if range == "*" {
                continue;
            }
            match range.split_once('-') {
                Some((a, b)) => match (value(a), value(b)) {
                    (Some(a), Some(b)) if a <= b => {}
                    _ => return Err(bad()),
                },
                None => {
                    if value(range).is_none() {
                        return Err(bad());
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_fields() {
        assert!(cron("0 9 * * MON").is_ok());
        assert!(cron("0 */6 * * *").is_ok());
        assert!(cron("*/15 8-18 1,15 JAN-MAR mon-fri").is_ok());
        assert!(cron("0 9 * * 7").is_err());
        assert!(cron("0 9 * *").is_err());
        assert!(cron("60 9 * * *").is_err());
        assert!(cron("0 9 * * FUNDAY").is_err());
        assert!(cron("0 9 * */0 *").is_err());
    }

    #[test]
    fn limits() {
        assert!(memory_limit("512MB").is_ok());
        assert!(memory_limit("6MB").is_ok());
        assert!(memory_limit("5MB").is_err());
        assert!(memory_limit("1GiB").is_ok());
        assert!(memory_limit("512 MB").is_err());
        assert!(cpu_limit("0.5").is_ok());
        assert!(cpu_limit("2").is_ok());
        assert!(cpu_limit("0.0").is_err());
        assert!(cpu_limit("-1").is_err());
        assert!(timeout(0).is_err() && timeout(301).is_err() && timeout(300).is_ok());
    }

    #[test]
    fn names_and_scopes() {
        assert!(scope("finance:read").is_ok());
        assert!(scope("finance:*").is_ok());
        assert!(scope("finance").is_err());
        assert!(scope("Finance:read").is_err());
        assert!(version("1.2.0").is_ok());
        assert!(version("1.0.0-rc.1+build.5").is_ok());
        assert!(version("1.2").is_err());
        assert!(version("v1.2.3").is_err());
        assert!(event("payment.completed").is_ok());
        assert!(event("Payment").is_err());
        assert!(webhook("/api/agents/{id}/webhook").is_ok());
        assert!(webhook("api").is_err());
        assert!(color("#3B82F6").is_ok() && color("#fff").is_ok() && color("blue").is_err());
        assert!(name(&"x".repeat(65)).is_err() && name(" ").is_err());
    }
}
