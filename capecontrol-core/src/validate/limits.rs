//! Size and depth limits, checked without recursion before anything else looks at the input.

use std::io;

use serde::Deserialize;

use serde_json::Value;

use crate::error::FieldError;

/// The largest manifest accepted, in bytes: 1 MiB (1,048,576 bytes; exactly 1 MiB is accepted).
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// The deepest nesting of arrays and objects accepted: 128 levels (`[]` and `{}` are 1 level,
/// `{"a": []}` is 2). Deeper documents are rejected before parsing.
pub const MAX_DEPTH: usize = 128;

/// The error for a document of `len` bytes, over [`MAX_MANIFEST_BYTES`] (for callers that
/// learn the size without reading it all, like the CLI).
pub fn too_large_error(len: u64) -> FieldError {
    FieldError::new(
        "",
        format!("is larger than 1 MiB ({len} bytes; at most {MAX_MANIFEST_BYTES} are accepted)"),
    )
}

fn too_deep() -> FieldError {
    FieldError::new("", format!("is nested deeper than {MAX_DEPTH} levels"))
}

/// Checks the size and the nesting depth of a JSON document's bytes, without parsing it.
pub(super) fn check_bytes(bytes: &[u8]) -> Result<(), FieldError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(too_large_error(bytes.len() as u64));
    }
    if bytes_depth_exceeds(bytes, MAX_DEPTH) {
        return Err(too_deep());
    }
    Ok(())
}

/// Whether the brackets of `bytes` (outside strings) nest deeper than `max`.
fn bytes_depth_exceeds(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Checks the depth (iteratively) and then the serialized size of a value.
pub(super) fn check_value(value: &Value) -> Result<(), FieldError> {
    if value_depth_exceeds(value, MAX_DEPTH) {
        return Err(too_deep());
    }
    let mut counter = Counter(0);
    // Serializing recurses, but only as deep as the depth just checked; it stops early.
    if serde_json::to_writer(&mut counter, value).is_err() {
        return Err(too_large_error(counter.0 as u64));
    }
    Ok(())
}

/// Whether arrays and objects in `value` nest deeper than `max`, without recursion. Only
/// arrays and objects are stacked (a value of scalars, the usual task input, allocates nothing):
/// it runs on every enqueue and every finish.
pub(crate) fn value_depth_exceeds(value: &Value, max: usize) -> bool {
    fn container(v: &Value) -> bool {
        matches!(v, Value::Array(_) | Value::Object(_))
    }
    let mut stack: Vec<(&Value, usize)> = Vec::new();
    let mut next = container(value).then_some((value, 1));
    while let Some((v, depth)) = next.take().or_else(|| stack.pop()) {
        if depth > max {
            return true;
        }
        match v {
            Value::Array(items) => {
                stack.extend(
                    items
                        .iter()
                        .filter(|c| container(c))
                        .map(|c| (c, depth + 1)),
                );
            }
            Value::Object(map) => {
                stack.extend(
                    map.values()
                        .filter(|c| container(c))
                        .map(|c| (c, depth + 1)),
                );
            }
            _ => {}
        }
    }
    false
}

/// Counts bytes written and fails once more than [`MAX_MANIFEST_BYTES`] were written.
struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        if self.0 > MAX_MANIFEST_BYTES {
            return Err(io::Error::other("too large"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Parses a JSON document within the limits: at most [`MAX_MANIFEST_BYTES`] bytes and
/// [`MAX_DEPTH`] levels of nesting, both checked before parsing. The error is at pointer `""`.
///
/// A leading UTF-8 byte order mark (which some editors write) is ignored, as RFC 8259 allows.
pub fn parse_json(bytes: &[u8]) -> Result<Value, FieldError> {
    check_bytes(bytes)?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // The depth was checked above, so serde_json's own (lower, 127-level) limit is not needed.
    de.disable_recursion_limit();
    let value = Value::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| FieldError::new("", format!("is not valid JSON: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn byte_depth_is_counted_outside_strings() {
        assert!(!bytes_depth_exceeds(nested(128).as_bytes(), 128));
        assert!(bytes_depth_exceeds(nested(129).as_bytes(), 128));
        let in_string = format!("[\"{}\\\"{}\"]", "[".repeat(500), "{".repeat(500));
        assert!(!bytes_depth_exceeds(in_string.as_bytes(), 1));
        assert!(bytes_depth_exceeds(b"{\"a\":[{}]}", 2));
        assert!(!bytes_depth_exceeds(b"{\"a\":[{}]}", 3));
    }

    #[test]
    fn value_depth_is_counted_iteratively() {
        let mut v = Value::Null;
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        assert!(value_depth_exceeds(&v, 128));
        // Take it apart iteratively: dropping 100,000 levels recursively could overflow.
        let mut cur = v;
        while let Value::Array(mut items) = cur {
            cur = items.pop().unwrap_or(Value::Null);
        }
        let v = parse_json(nested(128).as_bytes()).unwrap();
        assert!(!value_depth_exceeds(&v, 128));
        assert!(value_depth_exceeds(&v, 127));
        assert!(!value_depth_exceeds(&Value::Null, 0));
        // Arrays and objects mixed, scalars beside containers at every level.
        let mixed = serde_json::json!({"a": [1, {"b": 2, "c": [[]]}], "d": "x"});
        assert!(value_depth_exceeds(&mixed, 4));
        assert!(!value_depth_exceeds(&mixed, 5));
        assert!(value_depth_exceeds(&serde_json::json!([]), 0));
        assert!(!value_depth_exceeds(&serde_json::json!({"a": 1}), 1));
    }

    #[test]
    fn size_limit_is_inclusive() {
        let at = vec![b' '; MAX_MANIFEST_BYTES];
        assert!(check_bytes(&at).is_ok());
        let over = vec![b' '; MAX_MANIFEST_BYTES + 1];
        let e = check_bytes(&over).unwrap_err();
        assert_eq!(e.pointer, "");
        assert!(
            e.message.starts_with("is larger than 1 MiB (1048577 bytes"),
            "{e}"
        );
    }
}
