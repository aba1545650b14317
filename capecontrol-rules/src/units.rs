//! `config.memory_limit` and `config.cpu_limit`.

use crate::MIN_MEMORY_BYTES;

/// What is wrong with a `memory_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimitError {
    /// Not a number and a unit, or more than `u64::MAX` bytes.
    Malformed,
    /// Fewer than [`MIN_MEMORY_BYTES`].
    BelowMinimum,
}

/// A `memory_limit`: [`parse_memory_limit`], at least [`MIN_MEMORY_BYTES`]. Returns the bytes.
pub fn memory_limit(s: &str) -> Result<u64, MemoryLimitError> {
    match parse_memory_limit(s) {
        None => Err(MemoryLimitError::Malformed),
        Some(bytes) if bytes < MIN_MEMORY_BYTES => Err(MemoryLimitError::BelowMinimum),
        Some(bytes) => Ok(bytes),
    }
}

/// Parses a memory limit into bytes: a decimal number and a unit, with no space between.
///
/// Units (case-sensitive): `B`; `KB`, `MB`, `GB` (powers of 1000); `KiB`, `MiB`, `GiB`
/// (powers of 1024). A fractional number is allowed (`1.5GB`, `0.5GiB`) and the result is
/// rounded down to whole bytes. Returns `None` for anything else, and when the result does not
/// fit in a `u64`. No minimum is applied (see [`memory_limit`]).
///
/// ```
/// use capecontrol_rules::parse_memory_limit;
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

/// What is wrong with a `cpu_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuLimitError {
    /// Not digits with an optional fraction (`0.5`, `2`).
    Malformed,
    /// Zero.
    Zero,
    /// Too large to be finite, or so small it rounds to zero.
    OutOfRange,
}

/// A `cpu_limit`: a decimal string of cores greater than 0 (`"0.5"`, `"2"`). Returns the cores.
///
/// ```
/// use capecontrol_rules::{CpuLimitError, cpu_limit};
/// assert_eq!(cpu_limit("0.5"), Ok(0.5));
/// assert_eq!(cpu_limit("0"), Err(CpuLimitError::Zero));
/// assert_eq!(cpu_limit("1e3"), Err(CpuLimitError::Malformed));
/// ```
pub fn cpu_limit(s: &str) -> Result<f64, CpuLimitError> {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) {
        return Err(CpuLimitError::Malformed);
    }
    match s.parse::<f64>() {
        Ok(v) if !v.is_finite() => Err(CpuLimitError::OutOfRange),
        Ok(v) if v > 0.0 => Ok(v),
        Ok(_) => {
            if s.bytes().any(|b| matches!(b, b'1'..=b'9')) {
                // A positive number so small that it rounds to 0.0.
                Err(CpuLimitError::OutOfRange)
            } else {
                Err(CpuLimitError::Zero)
            }
        }
        Err(_) => Err(CpuLimitError::Malformed),
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
        assert_eq!(memory_limit("5MB"), Err(MemoryLimitError::BelowMinimum));
        assert_eq!(memory_limit("6MB"), Ok(6_000_000));
    }

    #[test]
    fn cpu_limits() {
        assert_eq!(cpu_limit("0.5"), Ok(0.5));
        assert_eq!(cpu_limit("0.001"), Ok(0.001));
        assert_eq!(cpu_limit("16"), Ok(16.0));
        for bad in [
            "0", "0.0", "00.000", "", ".5", "5.", "-1", "+1", "1e3", "one", " 1", "inf",
        ] {
            assert!(cpu_limit(bad).is_err(), "{bad}");
        }
        assert_eq!(cpu_limit(&"9".repeat(400)), Err(CpuLimitError::OutOfRange));
        assert_eq!(cpu_limit("0"), Err(CpuLimitError::Zero));
    }
}
