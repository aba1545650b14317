//! Installation settings: validation against the manifest's `ui.settings_schema`, and their
//! redaction (`"secret": true` properties) through [`crate::validate`]'s shared implementation.

use serde_json::Value;

use crate::error::{Error, FieldError};
use crate::validate::redact_settings_listing_secrets;

/// Validates `settings` against `schema`; every problem is reported at `/settings/...`,
/// with messages that never repeat a value (the value may be a secret).
pub(crate) fn validate_settings(schema: Option<&Value>, settings: &Value) -> Result<(), Error> {
    let mut size = ByteCount(0);
    // Writing to a counter fails only when it refuses: it never does.
    let _ = serde_json::to_writer(&mut size, settings);
    if size.0 > crate::store::MAX_SETTINGS_BYTES {
        return Err(Error::invalid_field(
            "/settings",
            format!(
                "the settings are larger than {} bytes",
                crate::store::MAX_SETTINGS_BYTES
            ),
        ));
    }
    let Some(schema) = schema else {
        return if settings.is_object() || settings.is_null() {
            Ok(())
        } else {
            Err(Error::invalid_field(
                "/settings",
                "settings must be an object",
            ))
        };
    };
    let validator = jsonschema::validator_for(schema).map_err(|e| {
        Error::invalid_field(
            "/ui/settings_schema",
            format!("the manifest's settings schema is invalid: {}", e.masked()),
        )
    })?;
    let errors: Vec<FieldError> = validator
        .iter_errors(settings)
        .map(|e| {
            FieldError::new(
                format!("/settings{}", e.instance_path().as_str()),
                e.masked().to_string(),
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::validation("invalid settings", errors))
    }
}

/// `settings` with every secret that is present replaced by [`crate::validate::REDACTED`],
/// and the JSON pointers of those secrets. Without a schema nothing is secret.
pub(crate) fn redact(schema: Option<&Value>, settings: &Value) -> (Value, Vec<String>) {
    match schema {
        Some(schema) => redact_settings_listing_secrets(schema, settings),
        None => (settings.clone(), Vec::new()),
    }
}

/// Counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validate::REDACTED;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "api_key": {"type": "string", "secret": true},
                "threshold": {"type": "number", "maximum": 1},
                "db": {"type": "object", "properties": {"password": {"type": "string", "secret": true}}}
            },
            "required": ["api_key"],
            "additionalProperties": false
        })
    }

    #[test]
    fn validates_with_pointers_and_never_echoes_values() {
        let s = schema();
        assert!(validate_settings(Some(&s), &json!({"api_key": "k", "threshold": 0.5})).is_ok());
        let err = validate_settings(
            Some(&s),
            &json!({"api_key": 12345678, "threshold": 7, "x": 1}),
        )
        .unwrap_err();
        let mut ptrs: Vec<&str> = err
            .field_errors()
            .iter()
            .map(|e| e.pointer.as_str())
            .collect();
        ptrs.sort();
        assert_eq!(
            ptrs,
            ["/settings", "/settings/api_key", "/settings/threshold"]
        );
        assert!(!err.to_string().contains("12345678"), "{err}");
        let missing = validate_settings(Some(&s), &json!({})).unwrap_err();
        assert_eq!(missing.field_errors()[0].pointer, "/settings");
        assert!(validate_settings(None, &json!({})).is_ok());
        assert!(validate_settings(None, &json!(3)).is_err());
        let remote = json!({"$ref": "https://example.invalid/settings.json"});
        assert!(validate_settings(Some(&remote), &json!({})).is_err());
        let bad_schema = json!({"type": 12});
        assert_eq!(
            validate_settings(Some(&bad_schema), &json!({}))
                .unwrap_err()
                .field_errors()[0]
                .pointer,
            "/ui/settings_schema"
        );
    }

    #[test]
    fn redacts_nested_secrets() {
        let s = schema();
        let (r, present) = redact(
            Some(&s),
            &json!({"api_key": "sk-1", "threshold": 0.3, "db": {"password": "pw"}}),
        );
        assert_eq!(
            r,
            json!({"api_key": REDACTED, "threshold": 0.3, "db": {"password": REDACTED}})
        );
        assert_eq!(present, ["/api_key", "/db/password"]);
        let (r, present) = redact(Some(&s), &json!({"threshold": 0.3}));
        assert_eq!(r, json!({"threshold": 0.3}));
        assert!(present.is_empty());
        let (r, present) = redact(None, &json!({"api_key": "sk-1"}));
        assert_eq!(r, json!({"api_key": "sk-1"}));
        assert!(present.is_empty());
    }
}
