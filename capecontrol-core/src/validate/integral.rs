//! Integers read as JSON Schema defines them.

use serde::Deserialize as _;
use serde::de::Error as _;

/// Reads an integer as JSON Schema's `integer` is defined: any number whose fractional part is
/// zero, so `2` and `2.0` alike (JSON does not tell them apart, and producers whose numbers are
/// all floats write the latter), within `T`'s range. `2.5`, a string or an out-of-range number
/// is a deserialization error naming the value. For `#[serde(deserialize_with = "integral")]`.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Limits {
///     #[serde(deserialize_with = "capecontrol_core::validate::integral")]
///     timeout: u32,
/// }
/// let read = |s: &str| serde_json::from_str::<Limits>(s).map(|l| l.timeout);
/// assert_eq!(read(r#"{"timeout": 30}"#).unwrap(), 30);
/// assert_eq!(read(r#"{"timeout": 30.0}"#).unwrap(), 30);
/// assert!(read(r#"{"timeout": 30.5}"#).is_err());
/// assert!(read(r#"{"timeout": -1.0}"#).is_err());
/// assert!(read(r#"{"timeout": "30"}"#).is_err());
/// ```
pub fn integral<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    let n = serde_json::Number::deserialize(de)?;
    number::<T>(&n).map_err(D::Error::custom)
}

/// [`integral`] for an optional field: `null` (or, with `#[serde(default)]`, a missing field)
/// is `None`.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Task {
///     #[serde(default, deserialize_with = "capecontrol_core::validate::integral_opt")]
///     timeout: Option<u32>,
/// }
/// let read = |s: &str| serde_json::from_str::<Task>(s).map(|t| t.timeout);
/// assert_eq!(read(r#"{"timeout": 20.0}"#).unwrap(), Some(20));
/// assert_eq!(read(r#"{"timeout": null}"#).unwrap(), None);
/// assert_eq!(read("{}").unwrap(), None);
/// assert!(read(r#"{"timeout": 0.5}"#).is_err());
/// ```
pub fn integral_opt<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    Option::<serde_json::Number>::deserialize(de)?
        .map(|n| number::<T>(&n).map_err(D::Error::custom))
        .transpose()
}

/// The whole number `value` stands for, if it is one: an integer, or a float with no
/// fractional part below 2^64 in magnitude.
pub(crate) fn whole(value: &serde_json::Value) -> Option<i128> {
    value.as_number().and_then(whole_number)
}

fn whole_number(n: &serde_json::Number) -> Option<i128> {
    if let Some(i) = n.as_i64() {
        return Some(i128::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(i128::from(u));
    }
    let f = n.as_f64()?;
    // Whole and below 2^64 in magnitude: the cast is exact.
    (f.fract() == 0.0 && f.abs() < 2f64.powi(64)).then_some(f as i128)
}

fn number<T: TryFrom<i64> + TryFrom<u64>>(n: &serde_json::Number) -> Result<T, String> {
    let out_of_range = || format!("invalid value: {n}, out of range");
    match whole_number(n) {
        Some(i) => match (i64::try_from(i), u64::try_from(i)) {
            (Ok(i), _) => T::try_from(i).map_err(|_| out_of_range()),
            (_, Ok(u)) => T::try_from(u).map_err(|_| out_of_range()),
            _ => Err(out_of_range()),
        },
        None if n.as_f64().is_some_and(|f| f.fract() == 0.0) => Err(out_of_range()),
        None => Err(format!("invalid value: {n}, expected an integer")),
    }
}
