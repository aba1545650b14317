//! `config.memory_limit` and `config.cpu_limit`: parsing shared by validation and the
//! container executor. The rules themselves live in `capecontrol-rules` (one implementation
//! for the validator and the macros); these are core's public names for them.

pub use capecontrol_rules::parse_memory_limit;

/// Parses a CPU limit: a decimal string (`"0.5"`, `"2"`) of cores greater than 0.
///
/// Returns `None` when the string is not digits with an optional fraction, is 0, or is too
/// large to be finite.
///
/// ```
/// use capecontrol_core::validate::parse_cpu_limit;
/// assert_eq!(parse_cpu_limit("0.5"), Some(0.5));
/// assert_eq!(parse_cpu_limit("2"), Some(2.0));
/// assert_eq!(parse_cpu_limit("0"), None);
/// assert_eq!(parse_cpu_limit("-1"), None);
/// assert_eq!(parse_cpu_limit("1e3"), None);
/// ```
pub fn parse_cpu_limit(s: &str) -> Option<f64> {
    capecontrol_rules::cpu_limit(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory_limit("1.5GB"), Some(1_500_000_000));
        assert_eq!(parse_memory_limit("0.5GiB"), Some(1 << 29));
        assert_eq!(parse_memory_limit("5MB"), Some(5_000_000));
        assert_eq!(parse_memory_limit("18446744073709551616B"), None);
        assert_eq!(parse_memory_limit("5 MB"), None);
    }

    #[test]
    fn cpu_limits() {
        assert_eq!(parse_cpu_limit("0.5"), Some(0.5));
        assert_eq!(parse_cpu_limit("16"), Some(16.0));
        for bad in ["0", "0.0", "", ".5", "-1", "1e3", "inf"] {
            assert_eq!(parse_cpu_limit(bad), None, "{bad}");
        }
        assert_eq!(parse_cpu_limit(&"9".repeat(400)), None);
    }
}
