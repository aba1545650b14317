//! `config.memory_limit` and `config.cpu_limit`: parsing shared by validation and the
//! container executor.

/// Parses a memory limit into bytes: a decimal number and a unit, with no space between.
///
/// Units (case-sensitive): `B`; `KB`, `MB`, `GB` (powers of 1000); `KiB`, `MiB`, `GiB`
/// (powers of 1024). A fractional number is allowed (`1.5GB`, `0.5GiB`) and the result is
/// rounded down to whole bytes. Returns `None` for anything else, and when the result does not
/// fit in a `u64`.
///
/// ```
/// use capecontrol_core::validate::parse_memory_limit;
/// assert_eq!(parse_memory_limit("512MB"), Some(512_000_000));
/// assert_eq!(parse_memory_limit("1GiB"), Some(1 << 30));
/// assert_eq!(parse_memory_limit("1.5KB"), Some(1500));
/// assert_eq!(parse_memory_limit("512 MB"), None);
/// assert_eq!(parse_memory_limit("512mb"), None);
/// assert_eq!(parse_memory_limit("512"), None);
/// ```
pub fn parse_memory_limit(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = s.split_at(split);
    let multiplier: u128 = match unit {
        "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    let (int, frac) = match number.split_once('.') {
        Some((int, frac)) => {
            if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (int, frac)
        }
        None => (number, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int = int.trim_start_matches('0');
    if int.len() > 30 {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut bytes = int.checked_mul(multiplier)?;
    if !frac.is_empty() {
        // 18 digits are more precision than any unit here needs; the rest is rounded down.
        let digits = &frac[..frac.len().min(18)];
        let value: u128 = digits.parse().ok()?;
        let scale = 10u128.pow(u32::try_from(digits.len()).ok()?);
        bytes = bytes.checked_add(value * multiplier / scale)?;
    }
    u64::try_from(bytes).ok()
}

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
    match cpu_limit(s) {
        CpuLimit::Cores(c) => Some(c),
        _ => None,
    }
}

/// What a `cpu_limit` string is.
pub(super) enum CpuLimit {
    /// A valid number of cores.
    Cores(f64),
    /// Not a decimal string.
    Malformed,
    /// Zero.
    Zero,
    /// Too large or too small to be represented.
    OutOfRange,
}

pub(super) fn cpu_limit(s: &str) -> CpuLimit {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) {
        return CpuLimit::Malformed;
    }
    match s.parse::<f64>() {
        Ok(v) if !v.is_finite() => CpuLimit::OutOfRange,
        Ok(v) if v > 0.0 => CpuLimit::Cores(v),
        Ok(_) => {
            if s.bytes().any(|b| matches!(b, b'1'..=b'9')) {
                // A positive number so small that it rounds to 0.0.
                CpuLimit::OutOfRange
            } else {
                CpuLimit::Zero
            }
        }
        Err(_) => CpuLimit::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        let cases = [
            ("1B", Some(1)),
            ("6MB", Some(6_000_000)),
            ("5MB", Some(5_000_000)),
            ("6KB", Some(6_000)),
            ("2GB", Some(2_000_000_000)),
            ("1KiB", Some(1024)),
            ("6MiB", Some(6 * 1024 * 1024)),
            ("4GiB", Some(4 << 30)),
            ("0.5GiB", Some(1 << 29)),
            ("1.0000001MB", Some(1_000_000)),
            ("0MB", Some(0)),
            ("007MB", Some(7_000_000)),
            ("18446744073709551615B", Some(u64::MAX)),
            ("18446744073709551616B", None),
            ("99999999999999999999999999999999999999999GB", None),
            ("", None),
            ("MB", None),
            (".5MB", None),
            ("5.MB", None),
            ("1.2.3MB", None),
            ("5 MB", None),
            ("5mb", None),
            ("5Mb", None),
            ("5TB", None),
            ("5", None),
            ("-5MB", None),
            ("5MBB", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_memory_limit(s), want, "{s}");
        }
    }

    #[test]
    fn cpu_limits() {
        assert_eq!(parse_cpu_limit("0.5"), Some(0.5));
        assert_eq!(parse_cpu_limit("0.001"), Some(0.001));
        assert_eq!(parse_cpu_limit("16"), Some(16.0));
        for bad in [
            "0", "0.0", "00.000", "", ".5", "5.", "-1", "+1", "1e3", "one", " 1", "inf",
        ] {
            assert_eq!(parse_cpu_limit(bad), None, "{bad}");
        }
        assert!(matches!(cpu_limit(&"9".repeat(400)), CpuLimit::OutOfRange));
        assert!(matches!(cpu_limit("0"), CpuLimit::Zero));
    }
}
